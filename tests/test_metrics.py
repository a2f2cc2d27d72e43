"""sacrebleu wrappers: the numbers agree with sacrebleu, and bad input gets a clear message."""

import pytest
import sacrebleu

from attn_course import metrics

HYPS = ["la casa roja es grande .", "te quiero .", "no lo veo ."]
REFS = ["la casa roja es grande .", "te quiero mucho .", "no la veo ."]


def test_bleu_and_chrf_are_sacrebleus_corpus_scores():
    assert metrics.bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert metrics.chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert metrics.bleu(REFS, REFS) == pytest.approx(100.0)
    assert 0 < metrics.bleu(HYPS, REFS) < 100


def test_exact_match_counts_identical_sentences():
    assert metrics.exact_match(HYPS, REFS) == pytest.approx(1 / 3)
    assert metrics.exact_match([" te quiero . "], ["te quiero ."]) == 1.0


@pytest.mark.parametrize("hyps, refs, error, words", [
    ([], [], ValueError, "no hypotheses"),
    (["a"], ["a", "b"], ValueError, "1 hypotheses and 2 references"),
    ("te quiero", ["te quiero"], TypeError, "one string"),
    ([["te", "quiero"]], ["te quiero"], TypeError, "must hold strings"),
    (None, ["a"], TypeError, "list of strings"),
])
def test_bad_input_is_named(hyps, refs, error, words):
    for fn in (metrics.bleu, metrics.chrf, metrics.exact_match):
        with pytest.raises(error, match=words):
            fn(hyps, refs)
