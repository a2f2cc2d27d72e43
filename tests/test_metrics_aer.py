"""The alignment error rate (Och & Ney 2003) and reading links out of attention (``metrics``' alignment
half; the sacrebleu half is tested in test_metrics.py)."""

import numpy as np
import pytest
import torch

from attn_course import metrics

# "i love you" -> "te quiero": te-you and quiero-love sure (a crossing), quiero-i possible (dropped pronoun)
SURE = {(0, 2), (1, 1)}
POSSIBLE = SURE | {(1, 0)}


def test_perfect_and_hopeless_alignments():
    assert metrics.alignment_error_rate(SURE, SURE, POSSIBLE) == 0.0
    assert metrics.alignment_error_rate({(0, 0), (1, 2)}, SURE, POSSIBLE) == 1.0


def test_possible_links_are_not_errors_but_do_not_count_as_recall():
    # quiero -> "i" is possible: precision stays perfect, but the sure link quiero-love is missed
    predicted = {(0, 2), (1, 0)}
    aer = metrics.alignment_error_rate(predicted, SURE, POSSIBLE)
    assert aer == pytest.approx(1 - (1 + 2) / (2 + 2))
    # without possible links the same prediction is judged more harshly
    assert metrics.alignment_error_rate(predicted, SURE) == pytest.approx(1 - (1 + 1) / (2 + 2))


def test_without_possible_links_aer_is_one_minus_f1():
    predicted, sure = {(0, 0), (1, 1), (2, 2)}, {(0, 0), (1, 1), (2, 1), (3, 3)}
    precision, recall = 2 / 3, 2 / 4
    f1 = 2 * precision * recall / (precision + recall)
    assert metrics.alignment_error_rate(predicted, sure) == pytest.approx(1 - f1)


def test_sure_links_are_always_possible():
    """P ⊇ S by definition: a possible set that forgets a sure link gets it added."""
    assert metrics.alignment_error_rate(SURE, SURE, {(1, 0)}) == 0.0


def test_a_corpus_sums_counts_before_dividing():
    predicted = [{(0, 2), (1, 1)}, {(0, 0)}]
    sure = [SURE, {(0, 1), (1, 0), (2, 2)}]
    possible = [POSSIBLE, {(0, 1), (1, 0), (2, 2)}]
    expected = 1 - (2 + 0 + 2 + 0) / (3 + 5)  # not the mean of the two sentences' AERs (0 and 1)
    assert metrics.alignment_error_rate(predicted, sure, possible) == pytest.approx(expected)
    lists = [[(0, 2), (1, 1)], [(0, 0)]]  # lists of tuples work as well as sets
    assert metrics.alignment_error_rate(lists, sure, possible) == pytest.approx(expected)


def test_numpy_integers_are_links_too():
    predicted = [(np.int64(0), np.int64(2)), (np.int64(1), np.int64(1))]
    assert metrics.alignment_error_rate(predicted, SURE, POSSIBLE) == 0.0


def test_errors_are_explained():
    with pytest.raises(ValueError, match="nothing to score"):
        metrics.alignment_error_rate(set(), set())
    with pytest.raises(ValueError, match="one set of links per sentence"):
        metrics.alignment_error_rate([SURE, SURE], [SURE])
    with pytest.raises(TypeError, match=r"pairs of integers"):
        metrics.alignment_error_rate({"ab"}, SURE)


def test_links_from_attention():
    weights = torch.tensor([[0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])  # te -> you, quiero -> love
    assert metrics.alignment_links(weights) == SURE
    assert metrics.alignment_links(weights.tolist()) == SURE  # a nested list
    assert metrics.alignment_links(weights, threshold=0.3) == {(0, 2), (1, 1), (1, 2)}
    assert metrics.alignment_links(torch.zeros(0, 3)) == set()
    with pytest.raises(ValueError, match=r"a matrix \(Lt, Ls\)"):
        metrics.alignment_links(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="threshold must be a number between 0 and 1"):
        metrics.alignment_links(weights, threshold=2)


def test_matrices_none_and_nan_are_refused():
    matrix = torch.eye(3)
    with pytest.raises(TypeError, match="use metrics.alignment_links"):
        metrics.alignment_error_rate(matrix, {(0, 0)})
    with pytest.raises(TypeError, match="got None"):
        metrics.alignment_error_rate(None, {(0, 0)})
    with pytest.raises(ValueError, match="NaN"):
        metrics.alignment_links(torch.tensor([[0.5, float("nan")]]))
