"""Positional encodings: telling attention where each token is.

Self-attention is permutation equivariant: shuffle the tokens and its outputs shuffle the same way, so on its
own it sees a sentence as a bag of words. Adding a vector that depends on the position to each token's
embedding breaks the symmetry. Two kinds (Vaswani et al. 2017, section 3.5):

- **sinusoidal** (fixed): ``PE(pos, 2i) = sin(pos / base^(2i/d_model))`` and
  ``PE(pos, 2i+1) = cos(pos / base^(2i/d_model))``, base 10000. Each pair of dimensions (2i, 2i+1) is a point
  turning on a circle with frequency ``ω_i = base^(-2i/d_model)``, so ``PE(pos + k)`` is ``PE(pos)`` rotated
  by the angle ``k ω_i`` in every pair: a linear function of ``PE(pos)`` (``shift_sinusoidal``). It is
  defined for any position, even one never seen in training.
- **learned**: a trainable table of ``max_len`` vectors (as in BERT and GPT-2); it knows no position past
  ``max_len``.

Both modules take ``(d_model, max_len, ...)`` in that order, the options after them by keyword only.

Shapes: L positions (the sequence length), d_model the embedding size; x: (B, L, d_model) or (L, d_model).
"""

from __future__ import annotations

import torch
from torch import nn

from . import _checks

DEFAULT_BASE = 10000.0


def _check_d_model(d_model) -> int:
    _checks.positive("d_model", d_model, integer=True)
    if d_model % 2:
        raise ValueError(f"d_model must be even for sinusoidal encodings (dimensions 2i and 2i+1 hold the sin "
                         f"and cos of one frequency), got {d_model}")
    return int(d_model)


def _check_base(base) -> float:
    _checks.number("base", base, minimum=1)
    return float(base)


def sinusoidal_frequencies(d_model: int, *, base: float = DEFAULT_BASE, dtype: torch.dtype = torch.float32,
                           device=None) -> torch.Tensor:
    """The angular frequencies ``ω_i = 1 / base^(2i/d_model)``, i = 0 .. d_model/2 - 1 (Vaswani et al. 2017,
    section 3.5). Returns (d_model/2,): from 1 (wavelength 2π) down to nearly 1/base (wavelength nearly
    2π·base)."""
    d_model, base = _check_d_model(d_model), _check_base(base)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # 0, 2, 4, ...: the exponent is 2i / d_model
    return (base ** (-two_i / d_model)).to(dtype=dtype, device=device)


def _work_dtype(device: torch.device) -> torch.dtype:
    # Angles pos·ω lose digits in float32 at large positions: compute in float64, cast at the end (MPS has
    # no float64).
    return torch.float32 if device.type == "mps" else torch.float64


def _check_positions(positions) -> None:
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor of numbers, e.g. torch.arange(L), got "
                        f"{type(positions).__name__}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"positions must be a real (integer or floating-point) tensor, got dtype {positions.dtype}")
    if positions.dim() < 1:
        raise ValueError("positions must have at least 1 dimension (..., L), got a 0-d tensor; "
                         "use positions[None] for a single position")
    if positions.is_floating_point() and not bool(torch.isfinite(positions).all()):
        raise ValueError("positions must be finite numbers, got NaN or infinity (a NaN position would "
                         "silently give a NaN encoding)")


def sinusoidal_encoding(positions: torch.Tensor, d_model: int, *,
                        base: float = DEFAULT_BASE) -> torch.Tensor:
    """Sinusoidal positional encoding of the given positions (Vaswani et al. 2017, section 3.5):

    ``PE(pos, 2i) = sin(pos / base^(2i/d_model))``, ``PE(pos, 2i+1) = cos(pos / base^(2i/d_model))``.

    positions: (..., L), any numbers (usually ``torch.arange(L)``; an offset such as ``arange(L) + 100``
    encodes a later stretch of a sequence). d_model: even. Returns (..., L, d_model) on the positions'
    device, in their dtype if floating point, else float32. Computed in float64, then cast.
    """
    _check_positions(positions)
    d_model, base = _check_d_model(d_model), _check_base(base)
    out_dtype = positions.dtype if positions.is_floating_point() else torch.float32
    work = _work_dtype(positions.device)
    omega = sinusoidal_frequencies(d_model, base=base, dtype=work, device=positions.device)  # (d_model/2,)
    angles = positions.to(work)[..., None] * omega  # (..., L, 1) * (d_model/2,) -> (..., L, d_model/2)
    # interleave: (..., L, d_model/2, 2) with sin then cos in the last axis -> (..., L, d_model)
    encoding = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-2)
    return encoding.to(out_dtype)


def sinusoidal_table(length: int, d_model: int, *, base: float = DEFAULT_BASE,
                     dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The sinusoidal encodings of positions 0 .. length-1: (length, d_model), row ``pos`` = PE(pos).
    Same as ``sinusoidal_encoding(torch.arange(length), d_model)``, in ``dtype`` on ``device``."""
    _checks.number("length", length, integer=True, minimum=0, strict=False)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    positions = torch.arange(int(length), device=device)
    return sinusoidal_encoding(positions, d_model, base=base).to(dtype)


def _check_offset(offset) -> float:
    """A number, or a 0-d real tensor holding one (read with ``.item()``), finite."""
    if isinstance(offset, torch.Tensor):
        if offset.dim() != 0:
            raise ValueError(f"offset must be one number (a 0-d tensor at most), got a tensor of shape "
                             f"{tuple(offset.shape)}")
        if offset.dtype == torch.bool or offset.is_complex():
            raise TypeError(f"offset must be a real number, got a tensor of dtype {offset.dtype}")
        offset = offset.item()
    return _checks.number("offset", offset)


def shift_sinusoidal(encoding: torch.Tensor, offset: float, *, base: float = DEFAULT_BASE) -> torch.Tensor:
    """Move sinusoidal encodings ``offset`` positions on, by a linear map: ``PE(pos) -> PE(pos + offset)``.

    The property Vaswani et al. (2017, section 3.5) chose the sinusoids for: "for any fixed offset k,
    PE(pos+k) can be represented as a linear function of PE(pos)". In each pair (2i, 2i+1), with
    ``a = offset·ω_i``:

        sin(p + a) =  sin(p)·cos(a) + cos(p)·sin(a)
        cos(p + a) = -sin(p)·sin(a) + cos(p)·cos(a)

    a rotation of the point (sin, cos) by the angle ``a``; the matrix depends on the offset only, not on pos.

    encoding: (..., L, d_model), d_model even; any vectors (the map is linear), PE(pos) rows in particular.
    offset: a number (negative moves back), or a 0-d tensor holding one (e.g. ``lengths[0]``). Returns a
    tensor of the encoding's shape, dtype and device.
    """
    _checks.tensor("encoding", encoding)
    if encoding.dim() < 1:
        raise ValueError("encoding must have at least 1 dimension (..., d_model), got a 0-d tensor")
    offset = _check_offset(offset)
    d_model = _check_d_model(encoding.size(-1))
    angle = offset * sinusoidal_frequencies(d_model, base=base, dtype=torch.float64)  # (d_model/2,)
    cos, sin = torch.cos(angle).to(encoding), torch.sin(angle).to(encoding)
    pairs = encoding.unflatten(-1, (d_model // 2, 2))  # (..., d_model/2, 2): [sin part, cos part]
    s, c = pairs[..., 0], pairs[..., 1]
    return torch.stack((s * cos + c * sin, c * cos - s * sin), dim=-1).flatten(-2)


def _check_sequence(x, d_model: int, max_len: int) -> int:
    """Check x: (B, L, d_model) or (L, d_model) with L <= max_len; return L."""
    _checks.tensor("x", x, ndim=(2, 3))
    if x.size(-1) != d_model:
        raise ValueError(f"x must have d_model={d_model} features in its last dimension, got shape "
                         f"{tuple(x.shape)}")
    length = x.size(-2)
    if length > max_len:
        raise ValueError(f"the sequence has {length} positions but this encoding was built for at most "
                         f"max_len={max_len}; build it with a larger max_len")
    return length


class SinusoidalPositionalEncoding(nn.Module):
    """Add sinusoidal positional encodings to embeddings, then dropout (Vaswani et al. 2017, section 3.5;
    they apply dropout, rate 0.1, to these sums, section 5.4).

    ``SinusoidalPositionalEncoding(d_model, max_len=5000, *, dropout=0.0, base=10000)``: the same argument
    order as ``LearnedPositionalEmbedding``, so the two can replace each other.
    ``forward(x)``: x (B, L, d_model) or (L, d_model), L <= max_len. Returns ``dropout(x + PE[:L])``, of
    x's shape and dtype. The table is a fixed buffer (not a parameter, not saved in the state dict), moved
    with the module by ``.to(device)``. Vaswani et al. also multiply the token embeddings by √d_model
    before the sum (section 3.4); that is the embedding's job, not done here.
    """

    def __init__(self, d_model: int, max_len: int = 5000, *, dropout: float = 0.0,
                 base: float = DEFAULT_BASE):
        super().__init__()
        self.d_model = _check_d_model(d_model)
        self.max_len = _checks.positive("max_len", max_len, integer=True)
        _checks.number("dropout", dropout, minimum=0, strict=False)
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = _check_base(base)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(self.max_len, self.d_model, base=self.base),
                             persistent=False)  # (max_len, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = _check_sequence(x, self.d_model, self.max_len)
        return self.dropout(x + self.pe[:length].to(x.dtype))  # (.., L, d_model) + (L, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, base={self.base:g}"


class LearnedPositionalEmbedding(nn.Module):
    """Add a trainable vector per position to embeddings, then dropout (learned positional embeddings, as in
    Gehring et al. 2017, BERT and GPT-2; Vaswani et al. 2017, section 3.5, found them about as good as the
    sinusoids).

    ``LearnedPositionalEmbedding(d_model, max_len, *, dropout=0.0, init_std=0.02)``: d_model first, as in
    ``SinusoidalPositionalEncoding``. The table ``weight`` (max_len, d_model) starts as N(0, init_std²)
    noise, 0.02 as in BERT (GPT-2 used 0.01 for its position table), and is trained with the rest of the
    model. ``forward(x)``: x (B, L, d_model) or (L, d_model). Returns ``dropout(x + weight[:L])`` in x's
    dtype. A position >= max_len has no vector: longer inputs raise.
    """

    def __init__(self, d_model: int, max_len: int, *, dropout: float = 0.0, init_std: float = 0.02):
        super().__init__()
        self.d_model = _checks.positive("d_model", d_model, integer=True)
        self.max_len = _checks.positive("max_len", max_len, integer=True)
        _checks.number("dropout", dropout, minimum=0, strict=False)
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        _checks.number("init_std", init_std, minimum=0, strict=False)
        self.weight = nn.Parameter(torch.randn(self.max_len, self.d_model) * init_std)  # (max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = _check_sequence(x, self.d_model, self.max_len)
        return self.dropout(x + self.weight[:length].to(x.dtype))  # (.., L, d_model) + (L, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"
