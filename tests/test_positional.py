"""Positional encodings: the sinusoids match Vaswani et al.'s formula computed independently, a shift is a
rotation of each frequency pair, self-attention is permutation equivariant without positions and not with
them, shapes, dtypes and devices follow the inputs, and bad input gets a clear error."""

import math

import pytest
import torch

from attn_course import positional
from attn_course.attention import attend
from attn_course.exercises.self_attention import self_attention

F64 = torch.float64


def formula(length, d_model, base=10000.0):
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d)), element by element."""
    table = [[0.0] * d_model for _ in range(length)]
    for pos in range(length):
        for i in range(d_model // 2):
            angle = pos / base ** (2 * i / d_model)
            table[pos][2 * i] = math.sin(angle)
            table[pos][2 * i + 1] = math.cos(angle)
    return torch.tensor(table, dtype=F64)


# --- the formula -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("length", "d_model"), [(1, 2), (7, 4), (50, 16), (3, 64)])
def test_sinusoidal_matches_the_formula(length, d_model):
    expected = formula(length, d_model)
    got = positional.sinusoidal_encoding(torch.arange(length, dtype=F64), d_model)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    table = positional.sinusoidal_table(length, d_model)
    assert table.dtype == torch.float32 and table.shape == (length, d_model)
    torch.testing.assert_close(table, expected.float())


def test_other_base_and_first_rows():
    torch.testing.assert_close(positional.sinusoidal_encoding(torch.arange(9, dtype=F64), 6, base=100.0),
                               formula(9, 6, base=100.0), rtol=0, atol=1e-12)
    pe = positional.sinusoidal_table(3, 8)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 4))  # sin 0 = 0, cos 0 = 1
    torch.testing.assert_close(pe[1, :2], torch.tensor([math.sin(1), math.cos(1)]))  # ω_0 = 1


def test_frequencies_fall_geometrically_from_one():
    omega = positional.sinusoidal_frequencies(8, dtype=F64)
    torch.testing.assert_close(omega, torch.tensor([1.0, 10.0**-1, 10.0**-2, 10.0**-3], dtype=F64))


def test_positions_may_be_any_numbers_with_leading_axes():
    positions = torch.tensor([[3, 0, 100], [7, 7, 1]])  # (2, 3) integers
    pe = positional.sinusoidal_encoding(positions, 10)
    assert pe.shape == (2, 3, 10) and pe.dtype == torch.float32
    table = positional.sinusoidal_table(101, 10)
    torch.testing.assert_close(pe, table[positions])
    torch.testing.assert_close(pe[0, 1], pe.new_tensor([0.0, 1.0] * 5))


def test_far_positions_are_accurate_in_float32():
    """Angles are computed in float64 and cast at the end, so PE(10000) is right to float32 precision."""
    got = positional.sinusoidal_encoding(torch.tensor([10_000.0, 123_456.0]), 16)
    expected = positional.sinusoidal_encoding(torch.tensor([10_000.0, 123_456.0], dtype=F64), 16)
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-6)


# --- PE(pos + k) is a linear function (a rotation) of PE(pos) ------------------------------------------------

@pytest.mark.parametrize("offset", [1, 5, -3, 40, 2.5])
def test_shift_is_the_encoding_of_the_shifted_positions(offset):
    positions = torch.arange(30, dtype=F64)
    pe = positional.sinusoidal_encoding(positions, 16)
    torch.testing.assert_close(positional.shift_sinusoidal(pe, offset),
                               positional.sinusoidal_encoding(positions + offset, 16))


def test_shift_is_one_rotation_per_frequency_pair_whatever_the_position():
    """For each pair i, [sin, cos](pos + k) = R(k ω_i) [sin, cos](pos) with R the same for every pos."""
    d_model, k = 12, 7
    pe = positional.sinusoidal_encoding(torch.arange(200, dtype=F64), d_model)
    later = positional.sinusoidal_encoding(torch.arange(200, dtype=F64) + k, d_model)
    for i, omega in enumerate(positional.sinusoidal_frequencies(d_model, dtype=F64).tolist()):
        a = k * omega
        rotation = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=F64)
        pair = pe[:, 2 * i: 2 * i + 2]  # (200, 2): one (sin, cos) point per position
        torch.testing.assert_close(pair @ rotation.T, later[:, 2 * i: 2 * i + 2])
        # the matrix is found from the positions alone: least squares recovers it, with no residual
        fitted = torch.linalg.lstsq(pair, later[:, 2 * i: 2 * i + 2]).solution.T
        torch.testing.assert_close(fitted, rotation)


def test_shift_is_linear_and_keeps_lengths():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 8, generator=gen, dtype=F64), torch.randn(2, 4, 8, generator=gen, dtype=F64)
    shift = positional.shift_sinusoidal
    torch.testing.assert_close(shift(2 * a + b, 3), 2 * shift(a, 3) + shift(b, 3))
    torch.testing.assert_close(shift(a, 3).norm(dim=-1), a.norm(dim=-1))  # rotations keep lengths
    torch.testing.assert_close(shift(shift(a, 3), -3), a)


def test_dot_product_between_positions_depends_only_on_the_offset():
    pe = positional.sinusoidal_table(64, 32, dtype=F64)
    gram = pe @ pe.T  # (L, L)
    for k in (0, 1, 5, 20):
        diagonal = torch.diagonal(gram, offset=k)
        expected = torch.cos(k * positional.sinusoidal_frequencies(32, dtype=F64)).sum()
        torch.testing.assert_close(diagonal, expected.expand_as(diagonal))


# --- permutation equivariance, and positions break it ------------------------------------------------------

def _projections(gen, e, d, dv):
    return tuple(torch.randn(e, size, generator=gen, dtype=F64) / math.sqrt(e) for size in (d, d, dv))


def test_self_attention_without_positions_is_permutation_equivariant():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 8, generator=gen, dtype=F64)
    w = _projections(gen, 8, 4, 5)
    perm = torch.randperm(6, generator=gen)
    out, weights = self_attention(x, *w)
    out_p, weights_p = self_attention(x[:, perm], *w)
    torch.testing.assert_close(out_p, out[:, perm])  # permute the inputs: the outputs permute the same way
    torch.testing.assert_close(weights_p, weights[:, perm][:, :, perm])


def test_positions_break_permutation_equivariance():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 8, generator=gen, dtype=F64)
    w = _projections(gen, 8, 4, 5)
    perm = torch.tensor([1, 0, 2, 3, 5, 4])
    for module in (positional.SinusoidalPositionalEncoding(8), positional.LearnedPositionalEmbedding(8, 16,
                                                                                                     init_std=1.0)):
        module = module.double()
        out, _ = self_attention(module(x), *w)
        out_p, _ = self_attention(module(x[:, perm]), *w)
        assert (out_p - out[:, perm]).abs().max() > 1e-2, type(module).__name__


def test_self_attention_reference_is_attend_of_the_projections():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 6, generator=gen)
    w_q, w_k, w_v = _projections(gen, 6, 4, 2)
    w_q, w_k, w_v = w_q.float(), w_k.float(), w_v.float()
    out, weights = self_attention(x, w_q, w_k, w_v)
    expected_out, expected_weights = attend(x @ w_q, x @ w_k, x @ w_v)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(weights, expected_weights)
    assert out.shape == (3, 5, 2) and weights.shape == (3, 5, 5)


# --- the modules --------------------------------------------------------------------------------------------

def test_sinusoidal_module_adds_the_table():
    module = positional.SinusoidalPositionalEncoding(16, max_len=32)
    x = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module(x), x + positional.sinusoidal_table(10, 16))
    torch.testing.assert_close(module(x[0]), x[0] + positional.sinusoidal_table(10, 16))  # no batch axis
    assert list(module.parameters()) == [] and "pe" not in module.state_dict()
    assert "d_model=16, max_len=32" in repr(module)


def test_learned_module_adds_its_trainable_rows():
    torch.manual_seed(0)
    module = positional.LearnedPositionalEmbedding(d_model=4, max_len=12)
    assert module.weight.shape == (12, 4) and module.weight.requires_grad
    assert 0.005 < float(module.weight.detach().std()) < 0.05  # N(0, 0.02²) at the start
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(module(x), x + module.weight[:5])
    module(x).sum().backward()
    assert torch.all(module.weight.grad[:5] == 3.0) and torch.all(module.weight.grad[5:] == 0)  # 3 = batch


def test_both_modules_take_d_model_then_max_len():
    """The same order and keywords for both, so one can replace the other."""
    for cls in (positional.SinusoidalPositionalEncoding, positional.LearnedPositionalEmbedding):
        by_position, by_keyword = cls(8, 12), cls(max_len=12, d_model=8)
        for module in (by_position, by_keyword):
            assert (module.d_model, module.max_len) == (8, 12), cls.__name__
            assert "d_model=8, max_len=12" in repr(module)
            assert module(torch.zeros(12, 8)).shape == (12, 8)


def test_offset_may_be_a_0d_tensor():
    pe = positional.sinusoidal_table(6, 8)
    expected = positional.shift_sinusoidal(pe, 3)
    torch.testing.assert_close(positional.shift_sinusoidal(pe, torch.tensor(3)), expected)
    torch.testing.assert_close(positional.shift_sinusoidal(pe, torch.tensor([5, 3])[1]), expected)
    torch.testing.assert_close(positional.shift_sinusoidal(pe, torch.tensor(3.0, dtype=F64)), expected)


@pytest.mark.parametrize("make", [lambda: positional.SinusoidalPositionalEncoding(8, max_len=20, dropout=0.5),
                                  lambda: positional.LearnedPositionalEmbedding(8, 20, dropout=0.5)])
def test_dropout_acts_in_training_only(make):
    module = make()
    x = torch.ones(4, 20, 8)
    module.eval()
    clean = module(x)
    module.train()
    torch.manual_seed(0)
    noisy = module(x)
    assert (noisy == 0).float().mean() > 0.3
    kept = noisy != 0
    torch.testing.assert_close(noisy[kept], 2 * clean[kept])  # survivors scaled by 1 / (1 - p)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
def test_dtype_follows_the_input(dtype):
    x = torch.zeros(2, 5, 8, dtype=dtype)
    for module in (positional.SinusoidalPositionalEncoding(8, max_len=10),
                   positional.LearnedPositionalEmbedding(8, 10)):
        assert module(x).dtype == dtype
    assert positional.sinusoidal_encoding(torch.arange(5, dtype=dtype), 8).dtype == dtype
    assert positional.shift_sinusoidal(x, 2).dtype == dtype


def test_integer_positions_give_float32():
    assert positional.sinusoidal_encoding(torch.arange(4), 6).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_follows_the_input_on_cuda():
    positions = torch.arange(7, device="cuda")
    pe = positional.sinusoidal_encoding(positions, 8)
    assert pe.device.type == "cuda"
    torch.testing.assert_close(pe.cpu(), positional.sinusoidal_table(7, 8))
    assert positional.shift_sinusoidal(pe, 3).device.type == "cuda"
    module = positional.SinusoidalPositionalEncoding(8, max_len=10).cuda()
    assert module(torch.zeros(1, 7, 8, device="cuda")).device.type == "cuda"
    assert positional.sinusoidal_table(7, 8, device="cuda").device.type == "cuda"


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: positional.sinusoidal_table(5, 7), ValueError, "d_model must be even"),
    (lambda: positional.sinusoidal_table(5, 0), ValueError, "d_model must be > 0"),
    (lambda: positional.sinusoidal_table(-1, 4), ValueError, "length must be >= 0"),
    (lambda: positional.sinusoidal_table(3.5, 4), TypeError, "length must be a whole number"),
    (lambda: positional.sinusoidal_table(3, 4, dtype=torch.int64), TypeError, "floating-point torch.dtype"),
    (lambda: positional.sinusoidal_encoding([0, 1, 2], 4), TypeError, "positions must be a torch.Tensor"),
    (lambda: positional.sinusoidal_encoding(torch.tensor([True]), 4), TypeError, "real"),
    (lambda: positional.sinusoidal_encoding(torch.tensor(3), 4), ValueError, "at least 1 dimension"),
    (lambda: positional.sinusoidal_encoding(torch.arange(3), 4, base=0.5), ValueError, "base must be > 1"),
    (lambda: positional.sinusoidal_encoding(torch.tensor([0.0, math.nan]), 4), ValueError, "finite"),
    (lambda: positional.sinusoidal_encoding(torch.tensor([math.inf]), 4), ValueError, "finite"),
    (lambda: positional.shift_sinusoidal(torch.zeros(3, 4), torch.tensor([1, 2])), ValueError, "one number"),
    (lambda: positional.shift_sinusoidal(torch.zeros(3, 4), torch.tensor(True)), TypeError, "real number"),
    (lambda: positional.shift_sinusoidal(torch.zeros(3, 4), math.nan), ValueError, "offset must be finite"),
    (lambda: positional.SinusoidalPositionalEncoding(8, 10, 0.1), TypeError, "positional argument"),
    (lambda: positional.LearnedPositionalEmbedding(8, 10, 0.1), TypeError, "positional argument"),
    (lambda: positional.shift_sinusoidal(torch.zeros(3, 5), 1), ValueError, "d_model must be even"),
    (lambda: positional.shift_sinusoidal(torch.zeros(3, 4, dtype=torch.long), 1), TypeError, "floating-point"),
    (lambda: positional.shift_sinusoidal(torch.zeros(3, 4), "1"), TypeError, "offset must be a number"),
    (lambda: positional.SinusoidalPositionalEncoding(9), ValueError, "d_model must be even"),
    (lambda: positional.SinusoidalPositionalEncoding(8, max_len=0), ValueError, "max_len must be > 0"),
    (lambda: positional.SinusoidalPositionalEncoding(8, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    (lambda: positional.LearnedPositionalEmbedding(4, 8, dropout=-0.1), ValueError, "dropout must be >= 0"),
    (lambda: positional.LearnedPositionalEmbedding(4, 0), ValueError, "max_len must be > 0"),
])
def test_bad_settings_are_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("module", [positional.SinusoidalPositionalEncoding(8, max_len=6),
                                    positional.LearnedPositionalEmbedding(8, 6)], ids=["sinusoidal", "learned"])
def test_bad_inputs_to_the_modules_are_explained(module):
    with pytest.raises(ValueError, match=r"7 positions .* at most max_len=6; build it with a larger max_len"):
        module(torch.zeros(2, 7, 8))
    with pytest.raises(ValueError, match=r"d_model=8 features in its last dimension, got shape \(2, 5, 4\)"):
        module(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="x must have 2 or 3 dimensions"):
        module(torch.zeros(8))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        module(torch.zeros(2, 5, 8, dtype=torch.long))
    assert module(torch.zeros(2, 6, 8)).shape == (2, 6, 8)  # max_len itself is fine
