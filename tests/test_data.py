"""The generated datasets: the copy task and the toy regression problem."""

import math
import re

import pytest
import torch

from attn_course.data import BOS, DIGIT_OFFSET, copy_batch, toy_function, toy_regression


@pytest.mark.parametrize(("batch_size", "length", "num_symbols"), [(1, 1, 10), (4, 5, 10), (16, 9, 3), (8, 6, 1)])
def test_copy_batch_shapes_and_shift(batch_size, length, num_symbols):
    gen = torch.Generator().manual_seed(0)
    src, tgt_in, tgt_out = copy_batch(batch_size, length, num_symbols, generator=gen)
    for t in (src, tgt_in, tgt_out):
        assert t.shape == (batch_size, length) and t.dtype == torch.long
    assert torch.equal(tgt_out, src)
    assert torch.all(tgt_in[:, 0] == BOS)
    assert torch.equal(tgt_in[:, 1:], tgt_out[:, :-1])
    assert src.min() >= DIGIT_OFFSET and src.max() < DIGIT_OFFSET + num_symbols


def test_copy_batch_uses_every_symbol():
    src, _, _ = copy_batch(64, 20, generator=torch.Generator().manual_seed(1))
    assert set(src.unique().tolist()) == set(range(DIGIT_OFFSET, DIGIT_OFFSET + 10))


def test_copy_batch_is_deterministic_with_a_seeded_generator():
    first = copy_batch(8, 6, generator=torch.Generator().manual_seed(2))
    again = copy_batch(8, 6, generator=torch.Generator().manual_seed(2))
    other = copy_batch(8, 6, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_copy_batch_target_is_not_the_source_tensor():
    src, _, tgt_out = copy_batch(2, 3, generator=torch.Generator().manual_seed(4), device="cpu")
    assert src.device.type == "cpu"
    tgt_out[0, 0] = 99
    assert src[0, 0] != 99


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"batch_size": 0, "length": 3}, ValueError, "batch_size must be > 0, got 0"),
    ({"batch_size": 2, "length": -1}, ValueError, "length must be > 0, got -1"),
    ({"batch_size": 2, "length": 3, "num_symbols": 0}, ValueError, "num_symbols must be > 0, got 0"),
    ({"batch_size": 2.0, "length": 3}, TypeError, "batch_size must be a whole number, got float"),
    ({"batch_size": 2, "length": "3"}, TypeError, "length must be a whole number, got str"),
    ({"batch_size": True, "length": 3}, TypeError, "batch_size must be a whole number, got bool"),
])
def test_copy_batch_errors(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        copy_batch(**kwargs)


@pytest.mark.parametrize(("n", "low", "high"), [(1, 0.0, 1.0), (50, 0.0, 2 * math.pi), (200, -3.0, 4.5)])
def test_toy_regression_sorted_in_range(n, low, high):
    x, y = toy_regression(n, low=low, high=high, generator=torch.Generator().manual_seed(5))
    assert x.shape == y.shape == (n,)
    assert torch.all(x[1:] >= x[:-1])
    assert x.min() >= low and x.max() < high
    assert torch.isfinite(y).all()


def test_toy_regression_noise_is_added_to_the_toy_function():
    x, y = toy_regression(2000, noise=0.0, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(y, toy_function(x))
    x, y = toy_regression(2000, noise=0.3, generator=torch.Generator().manual_seed(6))
    residual = y - toy_function(x)
    assert abs(residual.std().item() - 0.3) < 0.03 and abs(residual.mean().item()) < 0.03


def test_toy_regression_is_deterministic_with_a_seeded_generator():
    first = toy_regression(30, generator=torch.Generator().manual_seed(7))
    again = toy_regression(30, generator=torch.Generator().manual_seed(7))
    other = toy_regression(30, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"n": 0}, ValueError, "n must be > 0, got 0"),
    ({"n": 5.0}, TypeError, "n must be a whole number, got float"),
    ({"noise": -0.1}, ValueError, "noise must be >= 0, got -0.1"),
    ({"noise": float("nan")}, ValueError, "noise must be finite, got nan"),
    ({"low": 1.0, "high": 1.0}, ValueError, "high must be greater than low, got low=1.0, high=1.0"),
    ({"low": 2.0, "high": 1.0}, ValueError, "high must be greater than low, got low=2.0, high=1.0"),
])
def test_toy_regression_errors(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        toy_regression(**kwargs)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"noise": "a"}, TypeError, "noise must be a number, got str"),
    ({"noise": True}, TypeError, "noise must be a number, got bool"),
    ({"noise": float("inf")}, ValueError, "noise must be finite"),
    ({"low": "0"}, TypeError, "low must be a number, got str"),
])
def test_toy_regression_argument_kinds(kwargs, error, message):
    with pytest.raises(error, match=message):
        toy_regression(**kwargs)
