"""Attention pooling: the Nadaraya-Watson estimate, checked against the textbook double loop and its two
limits (a tiny width interpolates the training targets, a huge one averages them)."""

import math
import re

import pytest
import torch

from attn_course.pooling import gaussian_scores, kernel_regression

F64 = torch.float64


def sample(seed, lq=6, lk=9, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    queries = 5 * torch.rand(lq, generator=gen, dtype=dtype)
    keys = 5 * torch.rand(lk, generator=gen, dtype=dtype)
    return queries, keys, torch.randn(lk, generator=gen, dtype=dtype)


def separated_keys(seed, n=8):
    """Training inputs at least 0.9 apart, with random targets."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.arange(n, dtype=F64) + 0.1 * torch.rand(n, generator=gen, dtype=F64)
    return keys, torch.randn(n, generator=gen, dtype=F64)


@pytest.mark.parametrize("width", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_weights_rows_sum_to_one(width, dtype):
    queries, keys, values = sample(0, dtype=dtype)
    estimates, weights = kernel_regression(queries, keys, values, width)
    assert estimates.shape == (6,) and weights.shape == (6, 9)
    assert estimates.dtype == weights.dtype == dtype
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, dtype=dtype))


@pytest.mark.parametrize("width", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_the_nadaraya_watson_double_loop(width, seed):
    queries, keys, values = sample(seed)
    estimates, weights = kernel_regression(queries, keys, values, width)
    for i, x in enumerate(queries.tolist()):
        kernel = [math.exp(-((x - xi) ** 2) / (2 * width**2)) for xi in keys.tolist()]
        total = sum(kernel)
        expected = sum(kv * y for kv, y in zip(kernel, values.tolist(), strict=True)) / total
        assert estimates[i].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
        for j, kv in enumerate(kernel):
            assert weights[i, j].item() == pytest.approx(kv / total, rel=1e-10, abs=1e-300)


def test_gaussian_scores_are_minus_squared_distance_over_two_sigma_squared():
    queries, keys, _ = sample(3)
    scores = gaussian_scores(queries, keys, 0.7)
    torch.testing.assert_close(scores, -((queries[:, None] - keys[None, :]) ** 2) / 0.98)


def test_tiny_width_reproduces_each_training_target():
    keys, values = separated_keys(4)
    estimates, weights = kernel_regression(keys, keys, values, width=0.05)
    torch.testing.assert_close(estimates, values, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, torch.eye(8, dtype=F64), rtol=0, atol=1e-12)


def test_huge_width_approaches_the_mean_of_the_values():
    keys, values = separated_keys(5)
    queries = torch.linspace(-3, 10, 7, dtype=F64)
    gaps = [(kernel_regression(queries, keys, values, w)[0] - values.mean()).abs().max().item()
            for w in (1.0, 10.0, 1e2, 1e4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 0.01
    assert gaps[-1] < 1e-6


@pytest.mark.parametrize(("width", "dtype"), [(1e-30, torch.float32), (1e200, torch.float32), (1e200, torch.float64),
                                              (1e-170, torch.float64)])
def test_width_the_dtype_cannot_represent_is_refused(width, dtype):
    keys, values = separated_keys(6)
    with pytest.raises(ValueError, match=r"width must be between .* for torch.float(32|64) inputs"):
        kernel_regression(keys.to(dtype), keys.to(dtype), values.to(dtype), width)


@pytest.mark.parametrize(("width", "dtype"), [(1e-15, torch.float32), (1e15, torch.float32), (1e-100, torch.float64)])
def test_extreme_accepted_widths_give_finite_weights(width, dtype):
    keys, values = separated_keys(6)
    queries = keys.to(dtype) + 0.1  # nearest key is unambiguous
    _, weights = kernel_regression(queries, keys.to(dtype), values.to(dtype), width)
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights.sum(dim=-1), torch.ones(len(keys), dtype=dtype))
    if width < 1:  # a vanishing kernel is nearest-neighbour lookup
        assert torch.equal(weights.argmax(dim=-1), torch.arange(len(keys)))
        assert float(weights.max(dim=-1).values.min()) == pytest.approx(1.0)


@pytest.mark.parametrize(("args", "error", "message"), [
    ((torch.zeros(3), torch.zeros(5), torch.zeros(5), 0), ValueError, "width must be > 0, got 0"),
    ((torch.zeros(3), torch.zeros(5), torch.zeros(5), -1.5), ValueError, "width must be > 0, got -1.5"),
    ((torch.zeros(3), torch.zeros(5), torch.zeros(5), "1"), TypeError, "width must be a number, got str"),
    ((torch.zeros(3, 1), torch.zeros(5), torch.zeros(5), 1.0), ValueError,
     "queries must have 1 dimension, got shape (3, 1)"),
    ((torch.zeros(3), torch.zeros(5, 1), torch.zeros(5), 1.0), ValueError,
     "keys must have 1 dimension, got shape (5, 1)"),
    ((torch.zeros(3), torch.zeros(5), torch.zeros(4), 1.0), ValueError,
     "keys and values must have the same length (one value per key): keys has shape (5,), values has shape (4,)"),
    ((torch.zeros(3), torch.zeros(5), torch.arange(5), 1.0), TypeError,
     "values must be a floating-point tensor, got dtype torch.int64"),
    (([0.0], torch.zeros(5), torch.zeros(5), 1.0), TypeError, "queries must be a torch.Tensor, got list"),
])
def test_bad_inputs(args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        kernel_regression(*args)
