"""Translating with a trained model: the ``Translator`` keeps a model with its two vocabularies, trains it,
turns a sentence into a translation with the attention that produced it, measures a test set (BLEU, chrF,
exact match and the alignment error rate of the attention), and saves and loads itself.

Bad input gets a one-line ``ValueError``: an empty sentence, one longer than the model takes, or words the
vocabulary lacks (named, with the nearest known words), unless ``on_unknown="unk"`` asks to translate
them as ``<unk>``.

**Alignments.** The attention of the step that *emits* Spanish word i is row i of the model's weights; the
alignment error rate compares each row's argmax (the English word that step looked at most) with the gold
links, teacher-forced on the reference translation (so every test sentence is scored on the same words,
whatever the model would have said). The row of the end-of-sentence token is left out: it is no word.

Shapes: Ls source tokens, Lt target tokens.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from matplotlib.patches import Rectangle
from torch import nn

from . import _checks, metrics, viz
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .decoding import Hypothesis, beam_search, greedy_decode
from .seq2seq import build_translator, train
from .text import PAD, SPECIALS, UNK, Vocab, batches, detokenize, encode_pairs, make_batch, tokenize

__all__ = ["Translation", "Translator", "plot_alignment", "token_pairs"]


@dataclass
class Translation:
    """A translated sentence: the source tokens as the model saw them (unknown words as ``<unk>``), the
    target tokens, the attention that emitted each target token (Lt, Ls), the unknown source words, and
    the log-probability of the output."""

    source: list[str]
    target: list[str]
    weights: torch.Tensor
    unknown: list[str]
    log_prob: float

    @property
    def text(self) -> str:
        return detokenize(self.target)

    def __str__(self) -> str:
        return self.text


def token_pairs(pairs) -> list[tuple[list[str], list[str]]]:
    """(English tokens, Spanish tokens) from ``spanish.Pair`` objects, token lists or raw strings (which
    are tokenised)."""
    out = []
    for pair in pairs:
        if hasattr(pair, "en") and hasattr(pair, "es"):
            en, es = pair.en, pair.es
        else:
            en, es = pair
        out.append((tokenize(en, "en") if isinstance(en, str) else list(en),
                    tokenize(es, "es") if isinstance(es, str) else list(es)))
    return out


_DROPPABLE = frozenset({".", "!", ","})


class Translator:
    """A translation model with its vocabularies.

    model: a ``seq2seq`` translation model (``RNNTranslator``, ``TransformerTranslator``) sized for the
    vocabularies; src_vocab, tgt_vocab: ``text.Vocab``; max_len: the longest sentence accepted, in tokens;
    max_output: the most tokens a translation may have (default 2 · source length + 5).
    """

    def __init__(self, model: nn.Module, src_vocab: Vocab, tgt_vocab: Vocab, *, max_len: int = 20,
                 max_output: int | None = None):
        for name, vocab in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
            if not isinstance(vocab, Vocab):
                raise TypeError(f"{name} must be a text.Vocab, got {type(vocab).__name__}")
        sizes = (getattr(model, "src_vocab_size", None), getattr(model, "tgt_vocab_size", None))
        if sizes != (len(src_vocab), len(tgt_vocab)):
            raise ValueError(f"the model was built for vocabularies of {sizes[0]} and {sizes[1]} tokens, but "
                             f"src_vocab has {len(src_vocab)} and tgt_vocab {len(tgt_vocab)}")
        self.model, self.src_vocab, self.tgt_vocab = model, src_vocab, tgt_vocab
        self.max_len = _checks.positive("max_len", max_len, integer=True)
        self.max_output = None if max_output is None else _checks.positive("max_output", max_output, integer=True)
        positions = getattr(model, "max_len", None)  # a Transformer knows max_len positions, no more
        if positions is not None and max(self.max_len, self._max_output(self.max_len)) > positions:
            raise ValueError(f"the model has {positions} positions, but this Translator accepts {self.max_len} "
                             f"source tokens and writes up to {self._max_output(self.max_len)}: lower max_len "
                             f"(or max_output)")

    def __repr__(self) -> str:
        return (f"Translator({type(self.model).__name__}, {len(self.src_vocab)} English and "
                f"{len(self.tgt_vocab)} Spanish tokens, max_len={self.max_len})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- training --
    def fit(self, pairs, steps: int, *, batch_size: int = 64, lr: float = 3e-3, warmup: int = 0,
            schedule: str = "cosine", seed: int = 0, progress: bool = True, desc: str = "training") -> list[float]:
        """Train on ``pairs`` (see ``token_pairs``) for ``steps`` steps with ``seq2seq.train`` (Adam,
        cross-entropy without the padding, gradient clipping), on length-bucketed batches drawn in a
        ``seed``-fixed order. Returns the loss of every step."""
        examples = encode_pairs(token_pairs(pairs), self.src_vocab, self.tgt_vocab)
        stream = batches(examples, batch_size, seed=seed, device=self.device, bucket=20)
        return train(self.model, stream, steps, lr=lr, progress=progress, desc=desc, ignore_index=PAD,
                     warmup=warmup, schedule=schedule)

    # -- translating --
    def source_tokens(self, sentence: str | Sequence[str], on_unknown: str = "raise") -> tuple[list[str], list[str]]:
        """Tokenise an English sentence and check it: returns (tokens, unknown words). Raises ``ValueError``
        with a one-line reason for empty input, input over ``max_len`` tokens, or (``on_unknown="raise"``)
        unknown words."""
        if on_unknown not in ("raise", "unk"):
            raise ValueError(f"on_unknown must be 'raise' or 'unk', got {on_unknown!r}")
        if isinstance(sentence, str):
            tokens = tokenize(sentence, "en")
        elif isinstance(sentence, Sequence) and all(isinstance(t, str) for t in sentence):
            tokens = list(sentence)
        else:
            raise TypeError(f"sentence must be a string (or a list of tokens), got {type(sentence).__name__}")
        # Final punctuation the vocabulary lacks ("I love you.") says nothing the model could use: drop it.
        tokens = [t for t in tokens if t not in _DROPPABLE or t in self.src_vocab]
        if not tokens:
            raise ValueError("the sentence is empty: type an English sentence, e.g. 'I love you'")
        if len(tokens) > self.max_len:
            raise ValueError(f"the sentence has {len(tokens)} tokens; this model translates at most "
                             f"{self.max_len}: split it into shorter sentences")
        unknown = self.src_vocab.unknown(tokens)
        if unknown and on_unknown == "raise":
            raise ValueError(self._unknown_message(unknown))
        return tokens, unknown

    def _unknown_message(self, unknown: list[str]) -> str:
        known = [t for t in self.src_vocab.tokens if t not in SPECIALS]
        hints = []
        for word in unknown[:3]:
            close = difflib.get_close_matches(word, known, n=2, cutoff=0.7)
            if close:
                hints.append(f"for {word!r}, did you mean {' or '.join(map(repr, close))}?")
        words = ", ".join(map(repr, unknown))
        verb = "are" if len(unknown) > 1 else "is"
        return (f"{words} {verb} not in the vocabulary of {len(known)} English words (e.g. "
                f"{', '.join(repr(w) for w in known[10:15])}){'; ' + ' '.join(hints) if hints else ''}")

    def _max_output(self, length: int) -> int:
        return self.max_output or 2 * length + 5

    def translate(self, sentence: str | Sequence[str], *, beam_size: int = 1, on_unknown: str = "raise",
                  length_penalty: float = 1.0) -> Translation:
        """Translate one sentence, greedily (``beam_size=1``) or with beam search. Unknown words raise
        ``ValueError`` by default; ``on_unknown="unk"`` translates them as ``<unk>`` and lists them in
        ``Translation.unknown``."""
        tokens, unknown = self.source_tokens(sentence, on_unknown)
        _checks.positive("beam_size", beam_size, integer=True)
        src = torch.tensor([self.src_vocab.encode(tokens)], device=self.device)
        limit = self._max_output(len(tokens))
        if beam_size == 1:
            hyp = greedy_decode(self.model, src, max_len=limit)[0]
        else:
            hyp = beam_search(self.model, src, beam_size=beam_size, max_len=limit, length_penalty=length_penalty)[0]
        shown = [t if t in self.src_vocab else SPECIALS[UNK] for t in tokens]
        return Translation(shown, self.tgt_vocab.decode(hyp.tokens), hyp.weights, unknown, hyp.log_prob)

    def translate_many(self, sentences, batch_size: int = 256) -> list[Hypothesis]:
        """Greedy translations of many token lists at once (unknown words as ``<unk>``)."""
        out = []
        sentences = [list(s) for s in sentences]
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start:start + batch_size]
            src = make_batch([(self.src_vocab.encode(s), []) for s in chunk], self.device)[0]
            out += greedy_decode(self.model, src, max_len=self._max_output(max(len(s) for s in chunk)))
        return out

    @torch.no_grad()
    def attention(self, pairs, batch_size: int = 256) -> list[torch.Tensor]:
        """Teacher-forced attention for each pair: (Lt, Ls), row i the step that emits target word i (the
        end-of-sentence row left out)."""
        pairs = token_pairs(pairs)
        examples = encode_pairs(pairs, self.src_vocab, self.tgt_vocab)
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            src, tgt_in, _ = make_batch(chunk, self.device)
            _, weights = self.model(src, tgt_in, return_weights=True)
            out += [weights[b, :len(t), :len(s)].float().cpu() for b, (s, t) in enumerate(chunk)]
        self.model.train(was_training)
        return out

    def alignment_error_rate(self, pairs, threshold: float | None = None) -> float:
        """AER of the attention (``metrics.alignment_links``: argmax per row, or above ``threshold``)
        against the gold links of ``spanish.Pair`` objects."""
        pairs = list(pairs)
        if not all(hasattr(p, "sure") and hasattr(p, "possible") for p in pairs):
            raise TypeError("alignment_error_rate needs pairs with gold links (spanish.Pair objects)")
        predicted = [metrics.alignment_links(w, threshold) for w in self.attention(pairs)]
        return metrics.alignment_error_rate(predicted, [p.sure for p in pairs], [p.possible for p in pairs])

    def evaluate(self, pairs, batch_size: int = 256) -> dict[str, float]:
        """Greedy translations of ``pairs`` scored against their references: BLEU and chrF (0-100, through
        sacrebleu, on detokenised text), exact match (0-1), and AER (0-1) when the pairs carry gold links."""
        pairs = list(pairs)
        if not pairs:
            raise ValueError("evaluate needs at least one sentence pair")
        tokens = token_pairs(pairs)
        empty = next((k for k, (en, _) in enumerate(tokens) if not en), None)
        if empty is not None:
            raise ValueError(f"pair {empty} has an empty English sentence: nothing to translate")
        hyps = [detokenize(self.tgt_vocab.decode(h.tokens))
                for h in self.translate_many([en for en, _ in tokens], batch_size)]
        refs = [detokenize(es) for _, es in tokens]
        scores = {"bleu": metrics.bleu(hyps, refs), "chrf": metrics.chrf(hyps, refs),
                  "exact": metrics.exact_match(hyps, refs)}
        if all(hasattr(p, "sure") for p in pairs):
            scores["aer"] = self.alignment_error_rate(pairs)
        return scores

    # -- saving --
    def save(self, path: str | os.PathLike, **extra) -> os.PathLike:
        """Save the model, its configuration and both vocabularies (``checkpoint.save_checkpoint``)."""
        config = {"model": self.model.config, "src_vocab": self.src_vocab.tokens, "tgt_vocab": self.tgt_vocab.tokens,
                  "max_len": self.max_len, "max_output": self.max_output}
        return save_checkpoint(path, self.model, config=config, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Translator:
        """Rebuild a saved Translator. Raises ``checkpoint.CheckpointError`` (a ``ValueError``) with the
        reason for a missing, corrupt, foreign or mismatched file."""
        payload = load_checkpoint(path, map_location=map_location)
        config = payload.get("config")
        if not (isinstance(config, dict) and {"model", "src_vocab", "tgt_vocab"} <= set(config)):
            raise CheckpointError(f"{str(path)!r} is a checkpoint but not of a Translator (its config has "
                                  f"{sorted(config) if isinstance(config, dict) else type(config).__name__})")
        try:
            model = build_translator(config["model"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{str(path)!r} has a model config that builds no model: {err}") from None
        load_checkpoint(path, model, map_location=map_location)
        model.eval()
        try:
            return cls(model.to(map_location), Vocab(config["src_vocab"]), Vocab(config["tgt_vocab"]),
                       max_len=config.get("max_len", 20), max_output=config.get("max_output"))
        except (TypeError, ValueError) as err:  # duplicated words, vocabularies that do not fit the model...
            raise CheckpointError(f"{str(path)!r} holds vocabularies or settings that do not fit its model: "
                                  f"{err}") from None


def plot_alignment(weights, source: Sequence[str], target: Sequence[str], ax=None, *, sure=None, possible=None,
                   title: str | None = None, colorbar: bool = False):
    """Heatmap of an alignment (``viz.heatmap``): rows the target (Spanish) words, columns the source
    (English) words. Gold links, if given, are marked: sure links with a square, possible-only links
    with a dot. Returns the Axes."""
    ax = viz.heatmap(weights, list(target), list(source), ax=ax, title=title, xlabel="English (source)",
                     ylabel="Spanish (target)", colorbar=colorbar, cmap="Blues")
    ax.tick_params(axis="x", labelrotation=45)
    sure = set(sure or ())
    for i, j in sure:
        ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="tab:red", linewidth=1.6))
    for i, j in set(possible or ()) - sure:
        ax.plot(j, i, "o", color="tab:orange", markersize=4)
    return ax
