"""Quality of generated text, through sacrebleu (Post 2018) so the numbers mean what they mean elsewhere.

- ``bleu``        corpus BLEU (Papineni et al. 2002), 0-100
- ``chrf``        corpus chrF (Popović 2015), 0-100
- ``exact_match`` the fraction of hypotheses identical to their reference, 0-1

Each takes the hypotheses and one reference per hypothesis, as detokenised strings.

Word alignments, as sets of links (i, j) from target word i to source word j (the row and column of an
attention matrix whose rows are the target words):

- ``alignment_links``       the links an attention matrix proposes: each row's argmax (or every weight
  above a threshold)
- ``alignment_error_rate``  AER (Och & Ney 2003) of proposed links against gold sure and possible links, 0-1
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import sacrebleu
import torch


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    """Two equally long, non-empty lists of strings: say what was expected and what came."""
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a list of sentences, got one string; wrap it: [{texts[:30]!r}]")
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}") from None
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{name} must hold strings, got a {type(bad).__name__}: {bad!r:.60}")
    hypotheses, references = list(hypotheses), list(references)
    if not hypotheses:
        raise ValueError("there are no hypotheses to score (an empty list)")
    if len(hypotheses) != len(references):
        raise ValueError(f"one reference per hypothesis is needed: got {len(hypotheses)} hypotheses and "
                         f"{len(references)} references")
    return hypotheses, references


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU-4 with sacrebleu's defaults (0-100). ``tokenize`` is sacrebleu's tokenizer name."""
    hypotheses, references = _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (character n-gram F-score, β = 2) with sacrebleu's defaults (0-100)."""
    hypotheses, references = _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_chrf(hypotheses, [references]).score)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The fraction (0-1) of hypotheses equal to their reference after stripping outer whitespace."""
    hypotheses, references = _check_pairs(hypotheses, references)
    return sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / len(hypotheses)


# --- word alignments --------------------------------------------------------------------------------------

Links = Iterable[tuple[int, int]]


def alignment_links(weights, threshold: float | None = None) -> set[tuple[int, int]]:
    """The links (i, j) an attention matrix proposes. weights: (Lt, Ls), row i the attention of target
    word i over the source words (a tensor, array or nested list).

    threshold None: one link per row, to the most attended source word (the argmax; ties go to the first);
    else every weight >= ``threshold``. Both are common ways to read an alignment out of attention.
    """
    w = torch.as_tensor(weights, dtype=torch.float64) if not isinstance(weights, torch.Tensor) else weights
    if w.dim() != 2:
        raise ValueError(f"weights must be a matrix (Lt, Ls), one row per target word, got shape "
                         f"{tuple(w.shape)}")
    if w.numel() == 0:
        return set()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weights hold NaN or infinite values: no link can be read from them")
    if threshold is None:
        return {(i, int(j)) for i, j in enumerate(w.argmax(dim=1).tolist())}
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number between 0 and 1 (or None for the argmax), got {threshold!r}")
    return {(int(i), int(j)) for i, j in (w >= threshold).nonzero().tolist()}


def _link_set(name: str, links) -> set[tuple[int, int]]:
    if links is None:
        raise TypeError(f"{name} must be a collection of (i, j) links, got None")
    if isinstance(links, torch.Tensor) or hasattr(links, "__array__"):
        raise TypeError(f"{name} must be a collection of (i, j) links, got a {type(links).__name__} of shape "
                        f"{tuple(links.shape)}: for a 0/1 link matrix or an attention matrix, use "
                        f"metrics.alignment_links(matrix) first")
    try:
        out = {(int(i), int(j)) for i, j in links}
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a collection of (i, j) pairs of integers, got {links!r:.80}") from None
    return out


def _is_corpus(links) -> bool:
    """A list of link sets (one per sentence), rather than one set of (i, j) pairs."""
    if isinstance(links, (set, frozenset)):
        return False
    items = list(links)
    return bool(items) and all(isinstance(x, (set, frozenset, list, tuple)) and not
                               (len(x) == 2 and all(isinstance(v, numbers.Integral) for v in x)) for x in items)


def alignment_error_rate(predicted, sure, possible=None) -> float:
    """The alignment error rate of Och & Ney (2003), from 0 (perfect) to 1:

        AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)

    with A the predicted links, S the gold *sure* links and P the gold *possible* links (P ⊇ S: a sure
    link is also possible, so S is added to P if missing; with ``possible=None``, P = S and AER is 1 - F1).
    precision = |A ∩ P| / |A| (a proposed link is fine if it is possible), recall = |A ∩ S| / |S| (every sure
    link should be found).

    Each argument is one sentence's set of (i, j) links, or a list of such sets, one per sentence of a
    corpus; then the counts are summed over the sentences before dividing, as Och & Ney do.
    """
    for name, links in (("predicted", predicted), ("sure", sure)):
        if links is None or isinstance(links, torch.Tensor) or hasattr(links, "__array__"):
            _link_set(name, links)  # raises, saying what was expected
    corpus = _is_corpus(predicted) or _is_corpus(sure)
    if corpus:
        predicted, sure = list(predicted), list(sure)
        possible = [None] * len(sure) if possible is None else list(possible)
        if not len(predicted) == len(sure) == len(possible):
            raise ValueError(f"one set of links per sentence is needed: got {len(predicted)} predicted, "
                             f"{len(sure)} sure and {len(possible)} possible")
    else:
        predicted, sure, possible = [predicted], [sure], [possible]
    hits_sure = hits_possible = n_predicted = n_sure = 0
    for a, s, p in zip(predicted, sure, possible):
        a, s = _link_set("predicted", a), _link_set("sure", s)
        p = s if p is None else _link_set("possible", p) | s
        hits_sure += len(a & s)
        hits_possible += len(a & p)
        n_predicted += len(a)
        n_sure += len(s)
    if n_predicted + n_sure == 0:
        raise ValueError("there is nothing to score: no predicted links and no sure links")
    return 1.0 - (hits_sure + hits_possible) / (n_predicted + n_sure)
