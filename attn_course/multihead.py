"""Multi-head attention (Vaswani et al. 2017, section 3.2.2) for self-, cross- and causal attention.

``MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W^O`` with ``head_i = Attention(Q W_i^Q, K W_i^K,
V W_i^V)`` and ``Attention`` the scaled dot-product attention of eq. 1. The H projections of size
D = E / H are one E x E matrix each for queries, keys and values, so the heads are computed together:
project, split the last axis into H heads, attend in every head at once, merge the heads back and apply
the output projection.

Masks follow the course convention, True = may attend. ``key_padding_mask`` has the name of
``nn.MultiheadAttention``'s but the OPPOSITE meaning: True marks a real key. From torch's convention, pass
``key_padding_mask=~torch_mask`` (and ``attn_mask=~torch_bool_mask``).

Two paths compute the heads' attention, chosen explicitly with ``impl``:

- ``"reference"``: the scores, the masked softmax (``masking.masked_softmax``) and the weighted sum written
  out; it materialises the (B, H, Lq, Lk) weights, so its memory grows as Lq · Lk.
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel
  (FlashAttention or memory-efficient attention on a GPU, a blocked flash kernel on the CPU) that never
  stores the weights: memory grows as L · D. Self-attention fuses the three input projections into one
  matrix product, cross-attention over one memory (``key is value``) the key and value projections into
  one. SDPA does not return weights, so ``return_weights=True`` takes the reference path.

Where the fast path still costs O(Lq · Lk) memory:

- a mask that varies over the queries (an ``attn_mask``, or ``is_causal`` together with a key padding
  mask, whose triangle is folded into a (B, 1, Lq, Lk) mask): SDPA turns a boolean mask into a float mask
  of that size, and on CUDA a mask rules out FlashAttention. A padding mask without any padding is
  dropped, so ``is_causal`` keeps the fast kernel. (FlexAttention's block masks would avoid the rest.)
- training with dropout on the CPU: no fused CPU kernel supports dropout, SDPA falls back to its math
  path, which holds the weights.

Shapes: B batch, H heads, Lq queries, Lk keys, E = H · D the embedding size, D = E / H the size of one head.
A query with no key to attend to gets a zero context in both paths, so its output is the output
projection's bias. The parameters are laid out as in ``torch.nn.MultiheadAttention``, so its weights can
be copied over one for one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .attention import _check_qkv
from .masking import causal_mask, check_mask, combine_masks, masked_softmax

__all__ = ["IMPLS", "MultiHeadAttention", "attention_mask", "heads_attention", "merge_heads", "split_heads"]

IMPLS = ("reference", "sdpa")


# --- heads ------------------------------------------------------------------------------------------------

def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Split the last axis into heads: x (B, L, H·D) -> (B, H, L, D). A view, no copy."""
    _checks.tensor("x", x, ndim=3)
    num_heads = _checks.positive("num_heads", num_heads, integer=True)
    if x.size(-1) % num_heads:
        raise ValueError(f"the last axis of x ({x.size(-1)}) must be divisible by num_heads ({num_heads}), "
                         f"got shape {tuple(x.shape)}")
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # (B, L, H, D) -> (B, H, L, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the heads: x (B, H, L, D) -> (B, L, H·D). Copies only if the heads are not already
    interleaved in memory (SDPA's CPU and flash kernels return them interleaved, so no copy there)."""
    _checks.tensor("x", x, ndim=4)
    return x.transpose(1, 2).flatten(2)  # (B, L, H, D) -> (B, L, H·D)


# --- masks ------------------------------------------------------------------------------------------------

def _bool_mask(name: str, mask, device: torch.device) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a boolean torch.Tensor (True = may attend), got {got}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the query is on {device}")
    return mask


def attention_mask(batch: int, heads: int, lq: int, lk: int, *, key_padding_mask: torch.Tensor | None = None,
                   attn_mask: torch.Tensor | None = None, device=None) -> torch.Tensor | None:
    """One boolean mask for all heads from a key padding mask and an attention mask (True = may attend).

    key_padding_mask: (B, Lk), True on real keys (the opposite of ``nn.MultiheadAttention``).
    attn_mask: (Lq, Lk) shared by the batch and the heads, or (B, H, Lq, Lk); an axis of size 1
    broadcasts. A 3-D mask is refused: (B, Lq, Lk) and (H, Lq, Lk) cannot be told apart.
    Returns a mask broadcastable to (B, H, Lq, Lk), or None when both are None. Causal masking is not
    folded in here: ``heads_attention(..., is_causal=True)`` lets SDPA skip the upper triangle instead.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    padding = None
    if key_padding_mask is not None:
        _bool_mask("key_padding_mask", key_padding_mask, device)
        if tuple(key_padding_mask.shape) != (batch, lk):
            raise ValueError(f"key_padding_mask must have shape (B, Lk) = ({batch}, {lk}), True on real "
                             f"keys, got shape {tuple(key_padding_mask.shape)}")
        padding = key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
    if attn_mask is not None:
        _bool_mask("attn_mask", attn_mask, device)
        if attn_mask.dim() == 3:
            raise ValueError(f"attn_mask must have 2 dimensions (Lq, Lk) or 4 (B, H, Lq, Lk), got shape "
                             f"{tuple(attn_mask.shape)}; for a (B, Lq, Lk) mask add a head axis: "
                             f"attn_mask[:, None]")
        target = (lq, lk) if attn_mask.dim() == 2 else (batch, heads, lq, lk)
        if attn_mask.dim() not in (2, 4) or _broadcast(attn_mask.shape, target) != target:
            raise ValueError(f"attn_mask must broadcast to (Lq, Lk) = ({lq}, {lk}) or to (B, H, Lq, Lk) = "
                             f"({batch}, {heads}, {lq}, {lk}), got shape {tuple(attn_mask.shape)}")
    return combine_masks(padding, attn_mask)


def _broadcast(shape, target):
    try:
        return tuple(torch.broadcast_shapes(shape, target))
    except RuntimeError:
        return None


# --- attention in every head ----------------------------------------------------------------------------

def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def _impl(impl) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    return impl


def _dropout(p, name: str = "dropout") -> float:
    p = _checks.number(name, p, minimum=0, strict=False)
    if p >= 1:
        raise ValueError(f"{name} must be a probability below 1, got {p}")
    return p


def _check_heads(q, k, v, mask):
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.tensor(name, x, ndim=4)
    _check_qkv(q, k, v)
    if mask is not None:  # an expanded 0-d tensor has the scores' shape and costs no memory
        check_mask(mask, q.new_empty(()).expand(*q.shape[:-1], k.size(-2)))


def heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                    is_causal: bool = False, dropout_p: float = 0.0, impl: str = "sdpa",
                    return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention in every head at once (Vaswani et al. 2017, eq. 1).

    q: (B, H, Lq, D), k: (B, H, Lk, D), v: (B, H, Lk, Dv); mask: boolean, True = may attend, broadcastable
    to (B, H, Lq, Lk); is_causal adds the causal mask (query i sees keys 0..i, aligned top-left); with a
    mask too, a key must be allowed by both (AND); dropout_p: the probability of dropping a weight (pass 0
    outside training).
    Returns context (B, H, Lq, Dv) and, if ``return_weights``, the weights (B, H, Lq, Lk) before dropout
    (``nn.MultiheadAttention`` returns them after dropout); else None. ``return_weights`` forces the
    reference path: the fused kernels never hold the weights.

    Memory on the SDPA path: SDPA takes either a mask or ``is_causal``, so with both the triangle is folded
    into the mask, which becomes (B|1, H|1, Lq, Lk): O(Lq · Lk), and no FlashAttention on CUDA. A mask that
    does not vary over the queries and allows every key (a padding mask with no padding) is dropped
    instead, at the cost of one check (a device synchronisation on a GPU). With ``dropout_p > 0`` on the
    CPU, SDPA falls back to its math path, which holds the (B, H, Lq, Lk) weights.
    """
    _check_heads(q, k, v, mask)
    _impl(impl)
    _flag("is_causal", is_causal)
    _flag("return_weights", return_weights)
    _dropout(dropout_p, "dropout_p")
    fast = impl == "sdpa" and not return_weights
    if is_causal and mask is not None:
        if fast and (mask.dim() < 2 or mask.size(-2) == 1) and bool(mask.all()):
            mask = None  # nothing to mask beyond the triangle: keep is_causal, SDPA's fastest kernels
        else:  # SDPA takes one or the other: fold the triangle into the mask (O(Lq·Lk), see above)
            mask = mask & causal_mask(q.size(-2), k.size(-2), device=q.device)
            is_causal = False
    if not fast:
        context, weights = _reference(q, k, v, mask, is_causal, dropout_p)
        return context, (weights if return_weights else None)
    return _sdpa(q, k, v, mask, is_causal, dropout_p), None


def _reference(q, k, v, mask, is_causal, dropout_p):
    """The readable path: the same computation as ``attention.attend``, plus dropout on the weights."""
    if is_causal:
        mask = causal_mask(q.size(-2), k.size(-2), device=q.device)
    q = q / math.sqrt(q.size(-1))  # scaling q costs Lq·D divisions, scaling the scores Lq·Lk
    scores = q @ k.transpose(-2, -1)  # (B, H, Lq, D) @ (B, H, D, Lk) -> (B, H, Lq, Lk)
    weights = masked_softmax(scores, mask)  # a query with no allowed key gets zero weights
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # (B, H, Lq, Lk) @ (B, H, Lk, Dv) -> (B, H, Lq, Dv)


def _sdpa(q, k, v, mask, is_causal, dropout_p):
    """The fast path. Without a mask beyond causal, ``is_causal=True`` lets SDPA pick its fastest kernel."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)
    # Backends disagree on queries with no allowed key (zeros, NaN or uniform weights): let such a query see
    # every key, so every backend computes something finite, then zero its context (the course convention).
    mask = mask.view((1,) * (4 - mask.dim()) + mask.shape)  # SDPA wants 2-D or more; a view, no copy
    has_key = mask.any(dim=-1, keepdim=True)  # (B|1, H|1, Lq|1, 1)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has_key, dropout_p=dropout_p)
    return context * has_key  # (B, H, Lq, Dv); unlike masked_fill, keeps the kernel's (B, Lq, H, Dv) layout


# --- the module -----------------------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, section 3.2.2): self-, cross- or causal attention.

    Masks: True = may attend. ``key_padding_mask`` is True on REAL keys, the OPPOSITE of
    ``nn.MultiheadAttention``'s (True = padding there): pass ``key_padding_mask=~torch_mask``. ``is_causal``
    and ``attn_mask`` combine with AND (in ``nn.MultiheadAttention`` ``is_causal`` is only a hint that
    ``attn_mask`` is causal).

    embed_dim: E, the size of queries and outputs; num_heads: H, which must divide E (each head has
    D = E / H features); kdim, vdim: sizes of keys and values (default E; other sizes need cross-attention,
    with key and value given); dropout: probability of dropping an attention weight while training;
    bias: biases on the projections; impl: "sdpa" (fast) or "reference" (readable). Parameters as in
    ``nn.MultiheadAttention``: ``in_proj_weight`` (3E, E) when kdim = vdim = E, else ``q_proj_weight``
    (E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim); ``in_proj_bias`` (3E,); ``out_proj``
    an ``nn.Linear(E, E)``. Returned weights are taken before dropout (``nn.MultiheadAttention`` returns
    them after). For when the fast path still costs O(Lq · Lk) memory (a mask that varies over the
    queries, causal with padding, dropout on the CPU), see the module's docstring.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, kdim: int | None = None, vdim: int | None = None,
                 dropout: float = 0.0, bias: bool = True, impl: str = "sdpa"):
        super().__init__()
        embed_dim = _checks.positive("embed_dim", embed_dim, integer=True)
        num_heads = _checks.positive("num_heads", num_heads, integer=True)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads (each head gets embed_dim / "
                             f"num_heads features), got embed_dim={embed_dim} and num_heads={num_heads}")
        kdim = embed_dim if kdim is None else _checks.positive("kdim", kdim, integer=True)
        vdim = embed_dim if vdim is None else _checks.positive("vdim", vdim, integer=True)
        dropout = _dropout(dropout)
        _impl(impl)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim, self.dropout, self.impl = kdim, vdim, dropout, impl
        if kdim == vdim == embed_dim:  # one (3E, E) matrix: self-attention projects with one product
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, vdim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform input projections and zero biases, as ``nn.MultiheadAttention`` does."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        sizes = "" if self.kdim == self.vdim == self.embed_dim else f", kdim={self.kdim}, vdim={self.vdim}"
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{sizes}, dropout={self.dropout}, "
                f"impl={self.impl!r}")

    def _check_inputs(self, query, key, value):
        _checks.tensor("query", query, ndim=3)
        if query.size(-1) != self.embed_dim:
            raise ValueError(f"query must have shape (B, Lq, {self.embed_dim}) (its size is embed_dim), "
                             f"got shape {tuple(query.shape)}")
        self._check_like_parameters(query)
        if key is None:
            if value is not None:
                raise ValueError("value was given without key: pass key too (key=None means "
                                 "self-attention, where query is also key and value)")
            if (self.kdim, self.vdim) != (self.embed_dim, self.embed_dim):
                raise ValueError(f"self-attention (key=None) needs kdim = vdim = embed_dim, but this "
                                 f"module has embed_dim={self.embed_dim}, kdim={self.kdim}, "
                                 f"vdim={self.vdim}: pass key (B, Lk, {self.kdim}) and value "
                                 f"(B, Lk, {self.vdim}) for cross-attention")
            return query, query
        value = key if value is None else value
        for name, x, size in (("key", key, self.kdim), ("value", value, self.vdim)):
            _checks.tensor(name, x, ndim=3)
            if x.size(-1) != size:
                raise ValueError(f"{name} must have shape (B, Lk, {size}) (its size is "
                                 f"{'kdim' if name == 'key' else 'vdim'}), got shape {tuple(x.shape)}")
            if x.dtype != query.dtype and not _autocast_enabled(query.device):
                raise TypeError(f"query and {name} must share one dtype, got {query.dtype} and {x.dtype}")
            if x.device != query.device:
                raise ValueError(f"query and {name} must be on one device, got {query.device} and {x.device}")
            _checks.same_size("query", query, 0, name, x, 0, "batch size B (first dimension)")
        _checks.same_size("key", key, 1, "value", value, 1, "number of keys Lk (second dimension)")
        return key, value

    def _check_like_parameters(self, query):
        """The inputs must be on the parameters' device and, outside autocast, of their dtype: else torch
        stops deep inside a matrix product ("mat1 and mat2 must have the same dtype")."""
        weight = self.out_proj.weight
        if query.device != weight.device:
            raise ValueError(f"query is on {query.device} but the module's parameters are on "
                             f"{weight.device}: move one to the other, e.g. "
                             f"module.to({str(query.device)!r}) or query.to({str(weight.device)!r})")
        if query.dtype != weight.dtype and not _autocast_enabled(query.device):
            method = {torch.float64: "double", torch.float32: "float", torch.float16: "half",
                      torch.bfloat16: "bfloat16"}.get(query.dtype)
            to_module = f"module.{method}()" if method else f"module.to({query.dtype})"
            raise TypeError(f"query is {query.dtype} but the module's parameters are {weight.dtype}: call "
                            f"{to_module} or convert the inputs, e.g. query.to({weight.dtype})")

    def _project(self, query, key, value):
        """q = query W_qᵀ + b_q, and so on: (B, L, E|kdim|vdim) -> (B, L, E) each."""
        if self.in_proj_weight is None:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
            return self._project_separate(query, key, value, weights)
        return self._project_packed(query, key, value)

    def _project_packed(self, query, key, value):
        """With the packed (3E, E) ``in_proj_weight``, the fast path does fewer, larger products (as
        ``nn.MultiheadAttention``): self-attention one (B, L, 3E) product, cross-attention over one memory
        (``key is value``) a (B, Lq, E) and a (B, Lk, 2E) one. The reference path keeps the three products
        of the equations."""
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if self.impl == "sdpa" and value is key:
            if key is query:  # one (3E, E) product, then three views
                return F.linear(query, weight, bias).chunk(3, dim=-1)
            e = self.embed_dim
            q = F.linear(query, weight[:e], None if bias is None else bias[:e])  # (B, Lq, E)
            kv = F.linear(key, weight[e:], None if bias is None else bias[e:])  # (B, Lk, 2E)
            return (q, *kv.chunk(2, dim=-1))
        return self._project_separate(query, key, value, weight.chunk(3))

    def _project_separate(self, query, key, value, weights):
        """Three products, one per input: (B, L, E|kdim|vdim) @ (E|kdim|vdim, E) -> (B, L, E)."""
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                *, key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False, return_weights: bool = False,
                average_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """key_padding_mask is True on REAL keys, the OPPOSITE of ``nn.MultiheadAttention`` (True = padding
        there): from torch's convention pass ``key_padding_mask=~torch_mask``. is_causal and attn_mask
        combine with AND (in ``nn.MultiheadAttention`` is_causal is only a hint about attn_mask).

        query: (B, Lq, E); key: (B, Lk, kdim) or None for self-attention (then key = value = query);
        value: (B, Lk, vdim), None meaning value = key. key_padding_mask: bool (B, Lk), True on real keys;
        attn_mask: bool (Lq, Lk) or (B, H, Lq, Lk), True = may attend; is_causal: query i sees keys 0..i
        (aligned top-left when Lq != Lk). With is_causal and real padding, the fast path folds the triangle
        into a (B, 1, Lq, Lk) mask: O(Lq · Lk) memory (see ``heads_attention``).

        Returns output (B, Lq, E) and weights: None, or with ``return_weights`` the weights before dropout
        (``nn.MultiheadAttention`` returns them after), (B, Lq, Lk) averaged over the heads if
        ``average_weights`` else (B, H, Lq, Lk) per head.
        """
        key, value = self._check_inputs(query, key, value)
        for name, flag in (("is_causal", is_causal), ("return_weights", return_weights),
                           ("average_weights", average_weights)):
            _flag(name, flag)
        mask = attention_mask(query.size(0), self.num_heads, query.size(1), key.size(1),
                              key_padding_mask=key_padding_mask, attn_mask=attn_mask, device=query.device)
        q, k, v = (split_heads(x, self.num_heads) for x in self._project(query, key, value))  # (B, H, L, D)
        context, weights = heads_attention(q, k, v, mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           impl=self.impl, return_weights=return_weights)
        output = self.out_proj(merge_heads(context))  # (B, Lq, E)
        if weights is not None and average_weights:
            weights = weights.mean(dim=1)  # (B, H, Lq, Lk) -> (B, Lq, Lk)
        return output, weights


def _autocast_enabled(device: torch.device) -> bool:
    """Under autocast, inputs of another dtype than the parameters are expected (torch casts them)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled()
