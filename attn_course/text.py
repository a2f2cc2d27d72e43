"""Text for translation: tokenising, vocabularies and padded batches.

Word-level throughout: ``tokenize`` lower-cases (after Unicode NFC, so an accented letter is one
character however it was typed), splits off punctuation, Spanish ¿ and ¡ included, keeps accents and
expands English contractions (*don't* -> *do not*); ``detokenize`` glues punctuation back. A ``Vocab``
maps tokens to ids with four special tokens first: ``PAD`` = 0 (padding), ``BOS`` = 1 (begin), ``EOS`` = 2
(end) and ``UNK`` = 3 (a word the vocabulary lacks). ``batches`` yields padded (src, tgt_in, tgt_out)
triples for ``seq2seq.train``: tgt_in = BOS + target, tgt_out = target + EOS; ``real_tokens`` gives the
mask (True on real tokens, the course's convention).

Shapes: B sentences, Ls source tokens, Lt target tokens (each padded to the longest in the batch).
"""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

import torch

from . import _checks

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocab", "batches", "detokenize", "encode_pairs",
           "make_batch", "normalize", "pad_sequences", "real_tokens", "tokenize"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

_CONTRACTIONS = (  # specific forms first, then the general n't, 're, 'm, 'll, 've, 'd
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bain't\b", "is not"), (r"\bshan't\b", "shall not"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"\bi'm\b", "i am"), (r"'ll\b", " will"), (r"'ve\b", " have"),
    (r"\b(he|she|it|that|what|where|who|there)'s\b", r"\1 is"), (r"\b(i|you|he|she|we|they)'d\b", r"\1 would"),
)
_QUOTES = str.maketrans({"’": "'", "‘": "'", "´": "'", "“": '"', "”": '"', "«": '"', "»": '"', "\u00a0": " "})
_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*|[^\w\s]", re.UNICODE)
_NO_SPACE_BEFORE = set(".,;:!?)…%")
_NO_SPACE_AFTER = set("¿¡(")


def normalize(text: str, lang: str = "en") -> str:
    """Unicode NFC, straight quotes, lower case, single spaces; English contractions expanded."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if lang not in ("en", "es"):
        raise ValueError(f"lang must be 'en' or 'es', got {lang!r}")
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).lower()
    if lang == "en":
        for pattern, replacement in _CONTRACTIONS:
            text = re.sub(pattern, replacement, text)
    return " ".join(text.split())


def tokenize(text: str, lang: str = "en") -> list[str]:
    """Split a sentence into lower-case word and punctuation tokens.

    >>> tokenize("¿Dónde está el gato?", "es")
    ['¿', 'dónde', 'está', 'el', 'gato', '?']
    >>> tokenize("I don't see him.")
    ['i', 'do', 'not', 'see', 'him', '.']
    """
    return _TOKEN.findall(normalize(text, lang))


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, except before closing punctuation and after ¿ ¡ (: "¿ dónde ?" -> "¿dónde?")."""
    out = ""
    for token in tokens:
        if out and token not in _NO_SPACE_BEFORE and out[-1] not in _NO_SPACE_AFTER:
            out += " "
        out += token
    return out


class Vocab:
    """Tokens <-> ids, with the special tokens ``SPECIALS`` at ids 0-3.

    ``Vocab.build(sentences)`` counts the tokens and orders them by frequency (ties alphabetically), so the
    same data always gives the same ids. ``vocab.tokens`` is the list of all tokens (save it to rebuild the
    vocabulary with ``Vocab(tokens)``).
    """

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            tokens = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        if len(set(tokens)) != len(tokens):
            repeated = [t for t, n in collections.Counter(tokens).items() if n > 1]
            raise ValueError(f"a vocabulary lists each token once; repeated: {repeated[:5]}")
        self.tokens = tokens
        self._index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Every token seen at least ``min_freq`` times, the ``max_size`` most frequent at most (specials
        not counted)."""
        _checks.positive("min_freq", min_freq, integer=True)
        counts = collections.Counter(token for sentence in sentences for token in sentence)
        ranked = sorted((t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
                        key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[:_checks.positive("max_size", max_size, integer=True)]
        return cls(list(SPECIALS) + ranked)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self._index

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {', '.join(self.tokens[4:9])}, ...)"

    def index(self, token: str) -> int:
        return self._index.get(token, UNK)

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The tokens this vocabulary lacks, each once, in order."""
        return list(dict.fromkeys(t for t in tokens if t not in self._index))

    def encode(self, tokens: Sequence[str], bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids (``UNK`` for an unknown token), optionally with BOS first and EOS last."""
        return [BOS] * bos + [self.index(t) for t in tokens] + [EOS] * eos

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of the ids, up to the first EOS, without PAD and BOS."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else SPECIALS[UNK])
        return out


def pad_sequences(sequences: Sequence[Sequence[int]], device=None) -> torch.Tensor:
    """Pad lists of ids with ``PAD`` to the longest: (B, L) int64 on ``device``."""
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out.to(device)


def real_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """True on real tokens, False on ``PAD``: tokens (B, L) -> bool (B, L), the padding mask of a batch
    of token ids. (``masking.padding_mask`` builds the same from lengths, shaped (B, 1, L) to broadcast
    over the queries.)"""
    _checks.tensor("tokens", tokens, ndim=2, kind="int")
    return tokens != PAD


def encode_pairs(pairs: Iterable[tuple[Sequence[str], Sequence[str]]], src_vocab: Vocab,
                 tgt_vocab: Vocab) -> list[tuple[list[int], list[int]]]:
    """(source tokens, target tokens) pairs -> (source ids, target ids) pairs, without BOS/EOS."""
    return [(src_vocab.encode(src), tgt_vocab.encode(tgt)) for src, tgt in pairs]


def make_batch(examples: Sequence[tuple[Sequence[int], Sequence[int]]], device=None):
    """One padded batch: src (B, Ls), tgt_in (B, Lt + 1) = BOS + target, tgt_out (B, Lt + 1) = target +
    EOS; ``PAD`` fills the rest."""
    src = pad_sequences([s for s, _ in examples], device)
    tgt_in = pad_sequences([[BOS, *t] for _, t in examples], device)
    tgt_out = pad_sequences([[*t, EOS] for _, t in examples], device)
    return src, tgt_in, tgt_out


def batches(examples: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int, *, seed: int = 0,
            device=None, shuffle: bool = True, repeat: bool = True, bucket: int = 0) -> Iterator:
    """Padded batches (src, tgt_in, tgt_out) of ``make_batch``, drawn without replacement in a shuffled
    order (a new order each epoch, fixed by ``seed``); forever if ``repeat`` (for ``seq2seq.train``),
    else one pass. Empty sentences are refused (a source needs at least one token).

    bucket: if > 0, every ``bucket`` batches' worth of shuffled examples are sorted by length before
    being cut into batches (whose order is then shuffled), so a batch holds sentences of similar
    lengths: less padding, and a recurrent decoder runs fewer steps.
    """
    _checks.positive("batch_size", batch_size, integer=True)
    _checks.number("bucket", bucket, integer=True, minimum=0, strict=False)
    examples = list(examples)
    if not examples:
        raise ValueError("batches needs at least one example")
    empty = next((i for i, (s, _) in enumerate(examples) if len(s) == 0), None)
    if empty is not None:
        raise ValueError(f"example {empty} has an empty source sentence")
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(examples), generator=gen).tolist() if shuffle else list(range(len(examples)))
        chunks = []
        pool = batch_size * bucket if bucket else len(order)
        for start in range(0, len(order), pool):
            part = order[start:start + pool]
            if bucket:
                part.sort(key=lambda i: (len(examples[i][1]), len(examples[i][0])))
            chunks += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        if bucket and shuffle:
            chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=gen).tolist()]
        for chunk in chunks:
            yield make_batch([examples[i] for i in chunk], device)
        if not repeat:
            return
