"""Quality of generated text, through sacrebleu (Post 2018) so the numbers mean what they mean elsewhere.

- ``bleu``        corpus BLEU (Papineni et al. 2002), 0-100
- ``chrf``        corpus chrF (Popović 2015), 0-100
- ``exact_match`` the fraction of hypotheses identical to their reference, 0-1

Each takes the hypotheses and one reference per hypothesis, as detokenised strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu


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
