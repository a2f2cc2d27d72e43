"""Scoring functions: how well does each key match each query?

Attention turns scores into weights with a softmax over the keys (``masking.masked_softmax``) and
averages the values with them. This module holds the scores of the three papers the course follows:

- **dot**          ``qᵀ k``                              (Luong et al. 2015, eq. 8, "dot")
- **general**      ``qᵀ W k``                            (Luong et al. 2015, eq. 8, "general")
- **concat**       ``vᵀ tanh(W [q; k])``                 (Luong et al. 2015, eq. 8, "concat")
- **additive**     ``vᵀ tanh(W_q q + W_k k)``            (Bahdanau et al. 2015, eq. 6 and appendix A.1.2)
- **scaled dot**   ``qᵀ k / √D``                         (Vaswani et al. 2017, eq. 1)

Concat and additive are the same function: splitting ``W = [W_q  W_k]`` column-wise gives
``W [q; k] = W_q q + W_k k``.

Every function takes q: (..., Lq, D) and k: (..., Lk, Dk) (the leading dimensions, B or B and H,
broadcast) and returns scores (..., Lq, Lk); Dk = D where the score needs it. The ``nn.Module`` shells hold
the learned parameters and call the functions; ``score_cost`` counts what each one costs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _checks

__all__ = [
    "KINDS", "AdditiveScore", "ConcatScore", "DotScore", "GeneralScore", "ScaledDotScore", "additive_score",
    "concat_score", "dot_score", "general_score", "scaled_dot_score", "score_cost",
]

KINDS = ("dot", "scaled_dot", "general", "additive", "concat")


# --- argument checks ---------------------------------------------------------------------------------

def _check_qk(q, k, same_size: bool) -> None:
    for name, x in (("q", q), ("k", k)):
        _checks.tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., L, size), got shape {tuple(x.shape)}")
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must share one dtype, got {q.dtype} and {k.dtype}")
    if same_size:
        _checks.same_size("q", q, -1, "k", k, -1, "feature size D (last dimension)")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch) dimensions of q and k must broadcast, got shapes "
                         f"{tuple(q.shape)} and {tuple(k.shape)}") from None


def _check_weight(name: str, w, shape: tuple[int, ...], meaning: str, like: torch.Tensor) -> None:
    """Check one parameter tensor: floating point, the inputs' dtype, and exactly ``shape``."""
    _checks.tensor(name, w)
    if tuple(w.shape) != shape:
        raise ValueError(f"{name} must have shape {meaning} = {shape} for these q and k, got {tuple(w.shape)}")
    if w.dtype != like.dtype:
        raise TypeError(f"{name} must have the inputs' dtype {like.dtype}, got {w.dtype}")


def _attn_size(**weights: torch.Tensor) -> int:
    """The hidden size A that additive's weights agree on: the first dimension shared by most of them.

    With W_q: (A, D), W_k: (A, Dk) and v: (A,), the odd one out is then the one named in the error, rather
    than whichever was checked first. Without a majority, say that they disagree.
    """
    sizes = {name: w.size(0) for name, w in weights.items()}
    counts = {a: list(sizes.values()).count(a) for a in sizes.values()}
    best = max(counts.values())
    if best * 2 <= len(sizes):  # no majority: all different (or a 1-1 tie)
        shapes = ", ".join(f"{name} {tuple(w.shape)}" for name, w in weights.items())
        raise ValueError(f"{', '.join(sizes)} must share the attention size A (their first dimension), "
                         f"got {shapes}")
    return next(a for a, n in counts.items() if n == best)


def _check_additive_weights(q, k, **weights: torch.Tensor) -> int:
    """Check additive's (or concat's) weights against q and k; return the attention size A.

    Each weight is checked for kind and number of dimensions first, then A is taken from the weights that
    agree (``_attn_size``), so a wrong size is blamed on the weight that has it.
    """
    wanted = {"W_q": ("(A, D)", (q.size(-1),)), "W_k": ("(A, Dk)", (k.size(-1),)), "v": ("(A,)", ()),
              "W": ("(A, D + Dk)", (q.size(-1) + k.size(-1),))}
    for name, w in weights.items():
        _checks.tensor(name, w)
        meaning, rest = wanted[name]
        if w.dim() != 1 + len(rest):
            what = ", one weight per hidden unit" if name == "v" else ""
            raise ValueError(f"{name} must have shape {meaning}{what}, got {tuple(w.shape)}")
    attn_size = _attn_size(**weights)
    for name, w in weights.items():
        meaning, rest = wanted[name]
        _check_weight(name, w, (attn_size, *rest), meaning, q)
    return attn_size


# --- the functional core -------------------------------------------------------------------------------

def dot_score(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dot-product scores ``s_ij = q_iᵀ k_j`` (Luong et al. 2015, eq. 8, "dot").

    q: (..., Lq, D), k: (..., Lk, D) -> scores (..., Lq, Lk). No parameters; queries and keys must have the
    same size, and the scores grow with it (see ``scaled_dot_score``).
    """
    _check_qk(q, k, same_size=True)
    return q @ k.transpose(-2, -1)  # (..., Lq, D) @ (..., D, Lk) -> (..., Lq, Lk)


def scaled_dot_score(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product scores ``s_ij = q_iᵀ k_j / √D`` (Vaswani et al. 2017, eq. 1).

    q: (..., Lq, D), k: (..., Lk, D) -> scores (..., Lq, Lk). ``scale`` defaults to ``1/√D``: if the entries
    of q and k have variance 1, ``q_iᵀ k_j`` has variance D, and dividing by √D brings it back to 1 so the
    softmax does not saturate as D grows. ``attention.attend`` uses exactly these scores.
    """
    _check_qk(q, k, same_size=True)
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1))
    _checks.positive("scale", scale)
    return q @ k.transpose(-2, -1) * scale  # (..., Lq, Lk)


def general_score(q: torch.Tensor, k: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Bilinear ("general") scores ``s_ij = q_iᵀ W k_j`` (Luong et al. 2015, eq. 8, "general").

    q: (..., Lq, D), k: (..., Lk, Dk), W: (D, Dk) -> scores (..., Lq, Lk). W decides which directions of
    a key match which directions of a query; ``W = I`` gives the dot product. The keys are projected
    (``W k_j``, once per key) and then dotted with every query.
    """
    _check_qk(q, k, same_size=False)
    _check_weight("W", W, (q.size(-1), k.size(-1)), "(D, Dk)", q)
    keys = k @ W.transpose(-2, -1)  # W k_j for every key: (..., Lk, Dk) @ (Dk, D) -> (..., Lk, D)
    return q @ keys.transpose(-2, -1)  # (..., Lq, D) @ (..., D, Lk) -> (..., Lq, Lk)


def additive_score(q: torch.Tensor, k: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                   v: torch.Tensor) -> torch.Tensor:
    """Additive scores ``s_ij = vᵀ tanh(W_q q_i + W_k k_j)`` (Bahdanau et al. 2015, eq. 6; the alignment
    model ``v_aᵀ tanh(W_a s_{i-1} + U_a h_j)`` of their appendix A.1.2).

    q: (..., Lq, D), k: (..., Lk, Dk), W_q: (A, D), W_k: (A, Dk), v: (A,) -> scores (..., Lq, Lk), where A
    is the size of the hidden layer ("attention size"). A one-hidden-layer network of the query and the key;
    the scores are bounded, ``|s_ij| <= sum(|v|)``. The projections are computed once per query and once per
    key (Bahdanau et al. precompute ``U_a h_j``), but the hidden layer is (..., Lq, Lk, A): memory grows
    with A, unlike the dot-product scores.
    """
    _check_qk(q, k, same_size=False)
    _check_additive_weights(q, k, W_q=W_q, W_k=W_k, v=v)
    queries = q @ W_q.transpose(-2, -1)  # (..., Lq, D) @ (D, A) -> (..., Lq, A)
    keys = k @ W_k.transpose(-2, -1)  # (..., Lk, Dk) @ (Dk, A) -> (..., Lk, A)
    hidden = torch.tanh(queries.unsqueeze(-2) + keys.unsqueeze(-3))  # (..., Lq, 1, A) + (..., 1, Lk, A)
    return hidden @ v  # (..., Lq, Lk, A) @ (A,) -> (..., Lq, Lk)


def concat_score(q: torch.Tensor, k: torch.Tensor, W: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Concat scores ``s_ij = vᵀ tanh(W [q_i; k_j])`` (Luong et al. 2015, eq. 8, "concat").

    q: (..., Lq, D), k: (..., Lk, Dk), W: (A, D + Dk), v: (A,) -> scores (..., Lq, Lk). Bahdanau's additive
    score in one matrix: the first D columns of W act on the query and the last Dk on the key, so this is
    ``additive_score(q, k, W[:, :D], W[:, D:], v)``, computed that way to avoid building every [q_i; k_j].
    """
    _check_qk(q, k, same_size=False)
    _check_additive_weights(q, k, W=W, v=v)
    d = q.size(-1)
    return additive_score(q, k, W[:, :d], W[:, d:], v)


# --- thin nn.Module shells -------------------------------------------------------------------------------

def _uniform(*shape: int, fan_in: int) -> nn.Parameter:
    """A parameter drawn like nn.Linear's weights, U(-1/√fan_in, 1/√fan_in); seed torch to repeat it."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def _check_module_inputs(module: nn.Module, q, k) -> None:
    """Say what a learned score was built for when its inputs do not fit it: the feature sizes given to
    the constructor, and the parameters' dtype (convert the module, or the inputs)."""
    name = type(module).__name__
    for arg, x, size_name, what in (("q", q, "query_size", "queries"), ("k", k, "key_size", "keys")):
        _checks.tensor(arg, x)
        built = getattr(module, size_name)
        if x.dim() >= 1 and x.size(-1) != built:
            raise ValueError(f"{name} was built for {size_name}={built}, got {what} of size {x.size(-1)} "
                             f"({arg} has shape {tuple(x.shape)})")
    dtype = next(module.parameters()).dtype
    for arg, x in (("q", q), ("k", k)):
        if x.dtype != dtype:
            raise TypeError(f"{name}'s parameters are {dtype} but {arg} is {x.dtype}: convert the module "
                            f"with module.to({x.dtype}) (e.g. module.double()), or the inputs with "
                            f"{arg}.to({dtype})")


class DotScore(nn.Module):
    """``dot_score`` as a module (no parameters). forward(q (..., Lq, D), k (..., Lk, D)) -> (..., Lq, Lk)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return dot_score(q, k)


class ScaledDotScore(nn.Module):
    """``scaled_dot_score`` as a module (no parameters). forward(q (..., Lq, D), k (..., Lk, D))
    -> (..., Lq, Lk)."""

    def extra_repr(self) -> str:
        return "scale=1/sqrt(D)"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return scaled_dot_score(q, k)


class GeneralScore(nn.Module):
    """``general_score`` with a learned W: (query_size, key_size) (Luong et al. 2015, eq. 8).

    forward(q (..., Lq, query_size), k (..., Lk, key_size)) -> scores (..., Lq, Lk).
    """

    def __init__(self, query_size: int, key_size: int):
        super().__init__()
        _checks.positive("query_size", query_size, integer=True)
        _checks.positive("key_size", key_size, integer=True)
        self.query_size, self.key_size = query_size, key_size
        self.W = _uniform(query_size, key_size, fan_in=key_size)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_module_inputs(self, q, k)
        return general_score(q, k, self.W)


class AdditiveScore(nn.Module):
    """``additive_score`` with learned W_q: (attn_size, query_size), W_k: (attn_size, key_size) and
    v: (attn_size,) (Bahdanau et al. 2015, appendix A.1.2).

    forward(q (..., Lq, query_size), k (..., Lk, key_size)) -> scores (..., Lq, Lk).
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int):
        super().__init__()
        for name, size in (("query_size", query_size), ("key_size", key_size), ("attn_size", attn_size)):
            _checks.positive(name, size, integer=True)
        self.query_size, self.key_size, self.attn_size = query_size, key_size, attn_size
        self.W_q = _uniform(attn_size, query_size, fan_in=query_size)
        self.W_k = _uniform(attn_size, key_size, fan_in=key_size)
        self.v = _uniform(attn_size, fan_in=attn_size)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, attn_size={self.attn_size}"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_module_inputs(self, q, k)
        return additive_score(q, k, self.W_q, self.W_k, self.v)


class ConcatScore(nn.Module):
    """``concat_score`` with learned W: (attn_size, query_size + key_size) and v: (attn_size,)
    (Luong et al. 2015, eq. 8).

    forward(q (..., Lq, query_size), k (..., Lk, key_size)) -> scores (..., Lq, Lk).
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int):
        super().__init__()
        for name, size in (("query_size", query_size), ("key_size", key_size), ("attn_size", attn_size)):
            _checks.positive(name, size, integer=True)
        self.query_size, self.key_size, self.attn_size = query_size, key_size, attn_size
        self.W = _uniform(attn_size, query_size + key_size, fan_in=query_size + key_size)
        self.v = _uniform(attn_size, fan_in=attn_size)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, attn_size={self.attn_size}"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_module_inputs(self, q, k)
        return concat_score(q, k, self.W, self.v)


# --- what they cost -------------------------------------------------------------------------------------

def score_cost(kind: str, lq: int, lk: int, d: int, dk: int | None = None,
               attn_size: int | None = None) -> dict[str, int]:
    """Parameters and work of one score matrix (Lq, Lk), for one sequence (multiply by B, and by H).

    kind: one of ``KINDS``; d: query size D; dk: key size Dk (default D; dot and scaled_dot need Dk = D);
    attn_size: hidden size A of additive/concat (default D; the other kinds have none and refuse it).
    The counts start from the queries and keys as given: the dot products include no projection of their
    own (a Transformer's W_Q, W_K are counted with its layers), additive and concat include W_q and W_k.
    Returns a dict of:

    - ``params``: learned numbers (W: D·Dk; additive: A·D + A·Dk + A; concat the same);
    - ``mult_adds``: multiply-adds of the matrix products, counted as the functions here compute them:
      every projection once per query or per key (``W k_j`` and ``W_k k_j`` are not redone for each
      query), then Lq·Lk·D for a dot product or Lq·Lk·A for additive's ``vᵀ tanh(...)``;
    - ``flops``: 2 per multiply-add, plus 1 per other element-wise operation on an (Lq, Lk)-sized or
      (Lq, Lk, A)-sized tensor (the 1/√D scaling; additive's broadcast add and its tanh: counting a tanh
      as 1 FLOP is a convention, it takes many instructions to evaluate);
    - ``memory``: number of elements of the largest tensor built, Lq·Lk for the scores, Lq·Lk·A for
      additive's hidden layer.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    for name, value in (("lq", lq), ("lk", lk), ("d", d)):
        _checks.positive(name, value, integer=True)
    dk = d if dk is None else _checks.positive("dk", dk, integer=True)
    if attn_size is not None and kind not in ("additive", "concat"):
        raise ValueError(f"attn_size is the hidden size of additive and concat; {kind} has no hidden layer, "
                         f"so leave it out (got attn_size={attn_size!r})")
    a = d if attn_size is None else _checks.positive("attn_size", attn_size, integer=True)
    if kind in ("dot", "scaled_dot") and dk != d:
        raise ValueError(f"{kind} needs queries and keys of one size, got d={d} and dk={dk}")
    pairs = lq * lk
    if kind in ("dot", "scaled_dot"):
        params, mult_adds, elementwise, memory = 0, pairs * d, pairs * (kind == "scaled_dot"), pairs
    elif kind == "general":
        params, mult_adds, elementwise, memory = d * dk, lk * dk * d + pairs * d, 0, pairs
    else:  # additive and concat: the same function
        params = a * d + a * dk + a
        mult_adds = lq * d * a + lk * dk * a + pairs * a
        elementwise, memory = 2 * pairs * a, pairs * a
    return {"params": params, "mult_adds": mult_adds, "flops": 2 * mult_adds + elementwise, "memory": memory}
