"""Argument checks shared by the public functions, so bad input gets one clear message.

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong shape or
value) and names what was expected and what came.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch


def tensor(name: str, x, *, ndim: int | Sequence[int] | None = None, kind: str = "float") -> torch.Tensor:
    """Check that ``x`` is a tensor of the given kind ("float" or "int") with an allowed number of dims."""
    if kind not in ("float", "int"):
        raise ValueError(f"kind must be 'float' or 'int', got {kind!r}")  # a bug in the caller, not the user
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if kind == "float" and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(n) for n in allowed)
            plural = "" if allowed == (1,) else "s"
            raise ValueError(f"{name} must have {want} dimension{plural}, got shape {tuple(x.shape)}")
    return x


def same_size(name_a: str, a: torch.Tensor, dim_a: int, name_b: str, b: torch.Tensor, dim_b: int, what: str):
    """Check that two tensors agree on one dimension (``what`` says what that dimension means)."""
    if a.size(dim_a) != b.size(dim_b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same {what}: "
            f"{name_a} has shape {tuple(a.shape)}, {name_b} has shape {tuple(b.shape)}"
        )


def number(name: str, value, *, integer: bool = False, minimum: float | None = None, strict: bool = True):
    """Check that a scalar setting is a finite number (a whole number if ``integer``), above ``minimum``
    (or at least ``minimum`` when ``strict`` is False)."""
    if integer and not isinstance(value, bool):
        try:  # a NumPy integer or a 0-d integer tensor (e.g. lengths.max()) is a whole number too
            value = operator.index(value)
        except TypeError:
            pass
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "a whole number" if integer else "a number"
        raise TypeError(f"{name} must be {want}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value}")
    return value


def positive(name: str, value, *, integer: bool = False):
    """Check that a scalar setting is a finite number above zero (a whole number if ``integer``)."""
    return number(name, value, integer=integer, minimum=0)
