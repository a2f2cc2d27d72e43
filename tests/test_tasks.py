"""The synthetic tasks of chapter 10: the look-back batch and accuracy by distance."""

import math

import pytest
import torch

from attn_course.tasks import accuracy_by_distance, lookback_batch


@pytest.mark.parametrize(("batch_size", "length", "num_symbols"), [(1, 1, 2), (16, 8, 4), (64, 32, 8)])
def test_lookback_batch_shapes_and_answers(batch_size, length, num_symbols):
    tokens, distance, target = lookback_batch(batch_size, length, num_symbols,
                                              generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (batch_size, length + 1) and tokens.dtype == torch.long
    assert distance.shape == target.shape == (batch_size,)
    assert distance.min() >= 1 and distance.max() <= length
    symbols, question = tokens[:, :length], tokens[:, length]
    assert symbols.min() >= 0 and symbols.max() < num_symbols
    assert torch.equal(question, num_symbols + distance - 1)  # the question token encodes k
    for b in range(batch_size):  # the answer is the symbol k positions before the question
        assert target[b] == tokens[b, length - distance[b]]


def test_lookback_batch_covers_every_distance_and_is_seeded():
    _, distance, _ = lookback_batch(2000, 16, generator=torch.Generator().manual_seed(1))
    assert set(distance.tolist()) == set(range(1, 17))
    first = lookback_batch(8, 6, generator=torch.Generator().manual_seed(2))
    again = lookback_batch(8, 6, generator=torch.Generator().manual_seed(2))
    other = lookback_batch(8, 6, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(("args", "error"), [
    ((0, 4), ValueError), ((4, 0), ValueError), ((4, 4, 0), ValueError), ((2.5, 4), TypeError),
])
def test_lookback_batch_rejects_bad_sizes(args, error):
    with pytest.raises(error):
        lookback_batch(*args)


def test_accuracy_by_distance_counts_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1.0, 0.0]])  # argmax 0 1 0 1 0
    targets = torch.tensor([0, 0, 0, 1, 1])                                               # right: y n y y n
    distance = torch.tensor([1, 1, 3, 3, 3])
    accuracy, count = accuracy_by_distance(logits, targets, distance, 4)
    assert torch.equal(count, torch.tensor([0.0, 2.0, 0.0, 3.0, 0.0]))
    assert math.isnan(accuracy[0]) and math.isnan(accuracy[2]) and math.isnan(accuracy[4])
    assert accuracy[1] == 0.5 and torch.isclose(accuracy[3], torch.tensor(2 / 3))


def test_accuracy_by_distance_follows_the_logits_dtype():
    logits = torch.randn(6, 3, dtype=torch.float64)
    accuracy, count = accuracy_by_distance(logits, torch.zeros(6, dtype=torch.long), torch.arange(6) % 2, 1)
    assert accuracy.dtype == count.dtype == torch.float64 and count.sum() == 6


@pytest.mark.parametrize(("logits", "targets", "distance", "max_distance", "error", "match"), [
    (torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 5]), 4, ValueError, "0 .. max_distance"),
    (torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.tensor([0, -1, 1]), 4, ValueError, "0 .. max_distance"),
    (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long), 1, ValueError, "batch"),
    (torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, dtype=torch.long), 1, TypeError, "integer"),
    (torch.zeros(3), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 1, ValueError, "dimension"),
])
def test_accuracy_by_distance_rejects_bad_input(logits, targets, distance, max_distance, error, match):
    with pytest.raises(error, match=match):
        accuracy_by_distance(logits, targets, distance, max_distance)


def test_accuracy_by_distance_agrees_with_bincount_on_a_lookback_batch():
    tokens, distance, target = lookback_batch(500, 12, generator=torch.Generator().manual_seed(4))
    logits = torch.randn(500, 8, generator=torch.Generator().manual_seed(5))
    accuracy, count = accuracy_by_distance(logits, target, distance, 12)
    correct = (logits.argmax(dim=-1) == target).float()
    expected_count = torch.bincount(distance, minlength=13).float()
    right = torch.bincount(distance, weights=correct, minlength=13)
    assert torch.equal(count, expected_count) and count[0] == 0 and count.sum() == 500
    assert torch.allclose(accuracy, right / expected_count, equal_nan=True) and math.isnan(accuracy[0])
