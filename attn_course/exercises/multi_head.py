"""Exercises on multi-head attention and the Transformer block: splitting and merging heads, one multi-head
attention from given weights, and a pre-LN encoder block.

Weights follow ``nn.Linear`` (and ``nn.MultiheadAttention``): a projection is stored (out, in) and applied as
``x @ W.T``. So the formula's ``head_i = Attention(X W_i^Q, X W_i^K, X W_i^V)`` (Vaswani et al. 2017,
section 3.2.2) computes ``X W_i^Q`` as ``x @ w_q[i*Dh:(i+1)*Dh].T``, and all heads at once as ``x @ w_q.T``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from .. import attention, masking, multihead, transformer
from . import Case, Exercise, Mistake, register
from ._grader import randn

# The checker's cases have other sizes than the notebook's examples: a view built from the notebook's
# globals (H, Dh, E...) fails there with torch's "shape '[...]' is invalid for input of size N".
_SIZES_HINT = ("take the sizes from x.shape (and num_heads), not from the notebook's globals such as H or Dh: "
               "the checker tries other sizes. E.g. b, n, e = x.shape, then Dh = e // num_heads.")

# --- 1. split heads ------------------------------------------------------------------------------------


def _split_cases(gen):
    def case(label, b, n, h, d, dtype=torch.float32):
        return Case(label, (randn(gen, b, n, h * d, dtype=dtype), h))

    return [
        case("random (B=2, L=5, H=2, Dh=3)", 2, 5, 2, 3),
        case("as many positions as heads (L=H=3, Dh=4)", 2, 3, 3, 4),
        case("one head", 3, 4, 1, 5),
        case("batch of one, four heads", 1, 6, 4, 2),
        case("float64", 2, 4, 3, 2, dtype=torch.float64),
        case("heads of size one (Dh=1)", 2, 5, 4, 1),
    ]


def _split_no_transpose_view(x, num_heads):
    b, n, e = x.shape
    return x.reshape(b, num_heads, n, e // num_heads)


def _split_no_transpose(x, num_heads):
    b, n, e = x.shape
    return x.reshape(b, n, num_heads, e // num_heads)


def _split_wrong_axes(first, second):
    def variant(x, num_heads):
        b, n, e = x.shape
        return x.reshape(b, n, num_heads, e // num_heads).transpose(first, second)
    return variant


def _split_interleaved(x, num_heads):
    b, n, e = x.shape
    return x.reshape(b, n, e // num_heads, num_heads).permute(0, 3, 1, 2)


register(Exercise(
    id="split-heads",
    title="Split the heads",
    reference=multihead.split_heads,
    cases=_split_cases,
    outputs=("heads",),
    error_hints=(("is invalid for input of size", _SIZES_HINT),),
    mistakes=(
        Mistake("reshaped straight to (B, H, L, Dh), without a transpose",
                "the features of one position are contiguous: view as (B, L, H, Dh) first, then swap the L and "
                "H axes with .transpose(1, 2). Reshaping straight to (B, H, L, Dh) mixes positions into heads.",
                _split_no_transpose_view),
        Mistake("the transpose is missing: the result is (B, L, H, Dh)",
                "after .view(B, L, H, Dh), swap the positions and heads axes: .transpose(1, 2).",
                _split_no_transpose),
        Mistake("the wrong axes were swapped",
                "from (B, L, H, Dh), swap axes 1 (L) and 2 (H): .transpose(1, 2) gives (B, H, L, Dh).",
                _split_wrong_axes(2, 3), _split_wrong_axes(1, 3)),
        Mistake("the features were split as (Dh, H) instead of (H, Dh)",
                "head i owns the features i·Dh .. (i+1)·Dh - 1, a contiguous block: view the last axis as "
                "(H, Dh), not (Dh, H), which deals the features out to the heads like cards.",
                _split_interleaved),
    ),
))


# --- 2. merge heads ------------------------------------------------------------------------------------

def _merge_cases(gen):
    def case(label, b, h, n, d, dtype=torch.float32):
        return Case(label, (randn(gen, b, h, n, d, dtype=dtype),))

    return [
        case("random (B=2, H=3, L=5, Dh=2)", 2, 3, 5, 2),
        case("as many positions as heads (H=L=4, Dh=3)", 2, 4, 4, 3),
        case("one head", 2, 1, 5, 4),
        case("batch of one", 1, 2, 6, 3),
        case("float64", 2, 2, 3, 4, dtype=torch.float64),
        case("one position (L=1)", 2, 3, 1, 4),
    ]


def _merge_no_transpose(x):
    b, h, n, d = x.shape
    return x.reshape(b, n, h * d)


def _merge_interleaved(x):
    b, h, n, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, n, h * d)


def _merge_view(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).view(b, n, h * d)


register(Exercise(
    id="merge-heads",
    title="Merge (concatenate) the heads",
    reference=multihead.merge_heads,
    cases=_merge_cases,
    outputs=("merged",),
    error_hints=(("is invalid for input of size", _SIZES_HINT),),
    mistakes=(
        Mistake("the transpose back is missing: (B, H, L, Dh) was reshaped straight to (B, L, H·Dh)",
                "first bring the positions next to the batch, .transpose(1, 2) -> (B, L, H, Dh), then "
                ".reshape(B, L, H * Dh). Without it, one position's output is made of several positions.",
                _merge_no_transpose),
        Mistake("the heads were interleaved: the features came out in the order (Dh, H)",
                "concatenate whole heads, head 0's Dh features first: (B, L, H, Dh) -> (B, L, H·Dh), not "
                "(B, L, Dh, H).", _merge_interleaved),
        Mistake("the heads were averaged (or summed) instead of concatenated",
                "keep every head: Concat(head_1, ..., head_H) has H·Dh features; W^O mixes them afterwards.",
                lambda x: x.mean(dim=1), lambda x: x.sum(dim=1)),
        Mistake(".view was used after .transpose",
                "a transposed tensor is not contiguous in memory, so .view cannot flatten it: use "
                ".reshape(...), or .contiguous().view(...).", _merge_view),
    ),
))


# --- 3. one multi-head attention from given weights ------------------------------------------------------

def _mha_reference(x, w_q, w_k, w_v, w_o, num_heads, mask):
    """MultiHead(X) = Concat(head_1..head_H) W^O with head_i = Attention(X W_i^Q, X W_i^K, X W_i^V): the
    package's pieces, as ``MultiHeadAttention(bias=False, impl="reference")`` computes it."""
    q, k, v = (multihead.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))  # (B, H, L, Dh)
    context, weights = attention.attend(q, k, v, mask=mask)  # (B, H, L, Dh), (B, H, L, L)
    return multihead.merge_heads(context) @ w_o.T, weights  # (B, L, E)


def _mha_cases(gen):
    def case(label, b, n, e, h, mask=None, dtype=torch.float32):
        x = randn(gen, b, n, e, dtype=dtype)
        w_q, w_k, w_v, w_o = (randn(gen, e, e, dtype=dtype, scale=1.5 / math.sqrt(e)) for _ in range(4))
        return Case(label, (x, w_q, w_k, w_v, w_o, h, mask))

    lengths = torch.tensor([5, 3, 4])
    return [
        case("random (B=2, L=5, E=8, H=2), no mask", 2, 5, 8, 2),
        case("causal mask (L, L), four heads of size 3", 2, 6, 12, 4, masking.causal_mask(6)),
        case("padding mask (B, 1, 1, L), lengths 5, 3, 4", 3, 5, 8, 2,
             masking.padding_mask(lengths, 5)[:, None]),
        case("one head, causal", 2, 4, 6, 1, masking.causal_mask(4)),
        case("batch of one", 1, 3, 8, 4),
        case("float64, padding mask", 3, 5, 6, 3, masking.padding_mask(lengths, 5)[:, None],
             dtype=torch.float64),
    ]


def _mha_variant(project=lambda x, w: x @ w.T, scale="head", mask_after=False, ignore_mask=False,
                 softmax_dim=-1, split="correct", merge="concat", out_proj=True, invert_mask=False,
                 fill_zero=False, swap_qk=False):
    """A wrong multi-head attention: each argument switches one mistake on."""
    def variant(x, w_q, w_k, w_v, w_o, num_heads, mask):
        b, n, e = x.shape
        d = e // num_heads
        if invert_mask and mask is not None:  # PyTorch's key_padding_mask convention: True = ignore
            mask = ~mask
        if swap_qk:
            w_q, w_k = w_k, w_q
        if split == "correct":
            q, k, v = (multihead.split_heads(project(x, w), num_heads) for w in (w_q, w_k, w_v))
        else:  # reshape straight to (B, H, L, Dh)
            q, k, v = (project(x, w).reshape(b, num_heads, n, d) for w in (w_q, w_k, w_v))
        scores = q @ k.transpose(-2, -1)  # (B, H, L, L)
        scores = scores / math.sqrt({"head": d, "model": e, "none": 1, "head squared": d * d}[scale])
        if mask is None or ignore_mask:
            weights = torch.softmax(scores, dim=softmax_dim)
        elif fill_zero:  # a score of 0 is an ordinary score: the masked keys keep a weight
            weights = torch.softmax(scores.masked_fill(~mask, 0.0), dim=softmax_dim)
        elif mask_after:
            weights = torch.softmax(scores, dim=softmax_dim).masked_fill(~mask, 0.0)
        else:
            weights = masking.masked_softmax(scores, mask, dim=softmax_dim)
        context = weights @ v  # (B, H, L, Dh)
        if merge == "mean":
            merged = context.mean(dim=1)  # (B, L, Dh): W^O no longer fits
        elif split == "correct":
            merged = multihead.merge_heads(context)
        else:
            merged = context.reshape(b, n, e)
        if not out_proj:
            return merged, weights
        out = project(merged, w_o)
        return (out / num_heads if merge == "average" else out), weights
    return variant


register(Exercise(
    id="multi-head-attention",
    title="Multi-head self-attention from given weights",
    reference=_mha_reference,
    cases=_mha_cases,
    outputs=("output", "weights"),
    diagnose_first="weights",
    error_hints=(
        ("bad operand type for unary ~: 'NoneType'",
         "mask may be None (no mask): test `if mask is not None:` before using it, or pass it on as it is to "
         "attention.attend(q, k, v, mask=mask), which handles None."),
        ("Boolean value of Tensor",
         "`if mask:` asks a whole tensor for one truth value; to ask whether there is a mask, write "
         "`if mask is not None:`."),
    ),
    mistakes=(
        Mistake("the output projection W^O is missing",
                "after concatenating the heads, multiply by W^O: merged @ w_o.T. It mixes what the heads found.",
                _mha_variant(out_proj=False)),
        Mistake("the scores were scaled by √E (the model size), not √Dh (the head size)",
                "each head's dot products have Dh = E / H terms: divide by math.sqrt(E // num_heads).",
                _mha_variant(scale="model")),
        Mistake("the scores were divided by Dh, not by √Dh",
                "divide by the square root of the head size: scores / math.sqrt(Dh), with Dh = E // num_heads.",
                _mha_variant(scale="head squared")),
        Mistake("the scores were not scaled",
                "divide the scores by √Dh, the size of one head, before the softmax (Vaswani et al. eq. 1).",
                _mha_variant(scale="none")),
        Mistake("the mask was applied after the softmax",
                "mask the scores before the softmax (masking.masked_softmax or attention.attend do it), so that "
                "each row of weights still sums to 1 over the allowed keys.", _mha_variant(mask_after=True)),
        Mistake("the mask was ignored", "pass the mask on: attention.attend(q, k, v, mask=mask).",
                _mha_variant(ignore_mask=True)),
        Mistake("the mask was read the PyTorch way round (True = ignore)",
                "in this course True means *may attend*, as in F.scaled_dot_product_attention; "
                "nn.MultiheadAttention's key_padding_mask means the opposite. Pass the mask as it is, "
                "without ~.", _mha_variant(invert_mask=True)),
        Mistake("the masked scores were set to 0, not to -inf",
                "a score of 0 is an ordinary score: after the softmax the masked keys still get weight. Fill "
                "with torch.finfo(scores.dtype).min (or use masking.masked_softmax / attention.attend).",
                _mha_variant(fill_zero=True)),
        Mistake("w_q and w_k were swapped",
                "queries come from w_q and keys from w_k: q = x @ w_q.T, k = x @ w_k.T. Swapped, every "
                "head's score matrix is transposed: query i scores key j as query j scored key i.",
                _mha_variant(swap_qk=True)),
        Mistake("the softmax ran over the queries instead of the keys",
                "normalise over the last axis of the (B, H, L, L) scores: each query's weights sum to 1.",
                _mha_variant(softmax_dim=-2)),
        Mistake("the heads were split (and merged) without a transpose",
                "split with .view(B, L, H, Dh).transpose(1, 2); reshaping straight to (B, H, L, Dh) mixes "
                "positions into heads.", _mha_variant(split="reshape")),
        Mistake("the heads were averaged instead of concatenated",
                "concatenate the heads (merge them back to (B, L, E)) and apply W^O once: "
                "Concat(head_1, ..., head_H) W^Oᵀ sums the heads' contributions, it does not average them.",
                _mha_variant(merge="average"), _mha_variant(merge="mean")),
        Mistake("the weights were applied as x @ W, not x @ Wᵀ",
                "the weights are stored (out, in), as in nn.Linear: project with x @ w.T.",
                _mha_variant(project=lambda x, w: x @ w)),
    ),
))


# --- 4. a pre-LN encoder block ---------------------------------------------------------------------------

def _block_reference(x, self_attn, feed_forward, norm1, norm2):
    """Pre-LN: x + SelfAttn(LN1(x)), then h + FFN(LN2(h)) (``transformer.residual`` with norm_first)."""
    h = transformer.residual(x, self_attn, norm1, norm_first=True)
    return transformer.residual(h, feed_forward, norm2, norm_first=True)


def _toy_self_attention(h, w_v, w_o):
    """One-head self-attention without query/key projections: enough to stand for the sub-layer."""
    context, _ = attention.attend(h, h, h @ w_v.T)
    return context @ w_o.T


def _toy_feed_forward(h, w_1, w_2):
    return torch.relu(h @ w_1.T) @ w_2.T


def _layer_norm(gen, e, dtype):
    norm = nn.LayerNorm(e, dtype=dtype)  # initialised to ones and zeros: no draw from the global generator
    with torch.no_grad():
        norm.weight.copy_(1 + randn(gen, e, dtype=dtype, scale=0.3))
        norm.bias.copy_(randn(gen, e, dtype=dtype, scale=0.3))
    return norm.requires_grad_(False)


def _block_cases(gen):
    def case(label, b, n, e, dtype=torch.float32):
        x = randn(gen, b, n, e, dtype=dtype, scale=2.0)
        w_v, w_o = (randn(gen, e, e, dtype=dtype, scale=1 / math.sqrt(e)) for _ in range(2))
        w_1 = randn(gen, 2 * e, e, dtype=dtype, scale=1 / math.sqrt(e))
        w_2 = randn(gen, e, 2 * e, dtype=dtype, scale=1 / math.sqrt(2 * e))
        return Case(label, (x, partial(_toy_self_attention, w_v=w_v, w_o=w_o),
                            partial(_toy_feed_forward, w_1=w_1, w_2=w_2),
                            _layer_norm(gen, e, dtype), _layer_norm(gen, e, dtype)))

    return [
        case("random (B=2, L=5, E=8)", 2, 5, 8),
        case("batch of one", 1, 4, 6),
        case("one position", 3, 1, 8),
        case("float64", 2, 3, 4, dtype=torch.float64),
    ]


def _post_ln(x, self_attn, feed_forward, norm1, norm2):
    h = norm1(x + self_attn(x))
    return norm2(h + feed_forward(h))


def _no_residual(x, self_attn, feed_forward, norm1, norm2):
    return feed_forward(norm2(self_attn(norm1(x))))


def _no_residual_ffn(x, self_attn, feed_forward, norm1, norm2):
    h = x + self_attn(norm1(x))
    return feed_forward(norm2(h))


def _stream_normalised(x, self_attn, feed_forward, norm1, norm2):
    x = norm1(x)
    h = x + self_attn(x)
    h = norm2(h)
    return h + feed_forward(h)


def _parallel(x, self_attn, feed_forward, norm1, norm2):
    return x + self_attn(norm1(x)) + feed_forward(norm2(x))


def _one_norm(x, self_attn, feed_forward, norm1, norm2):
    h = x + self_attn(norm1(x))
    return h + feed_forward(norm1(h))


def _norm2_for_both(x, self_attn, feed_forward, norm1, norm2):
    h = x + self_attn(norm2(x))
    return h + feed_forward(norm2(h))


def _norms_swapped(x, self_attn, feed_forward, norm1, norm2):
    h = x + self_attn(norm2(x))
    return h + feed_forward(norm1(h))


def _second_residual_from_x(x, self_attn, feed_forward, norm1, norm2):
    h = x + self_attn(norm1(x))
    return x + feed_forward(norm2(h))


def _output_normalised(norm):
    def variant(x, self_attn, feed_forward, norm1, norm2):
        h = x + self_attn(norm1(x))
        return {"norm1": norm1, "norm2": norm2}[norm](h + feed_forward(norm2(h)))
    return variant


def _sublayer_outputs_normalised(x, self_attn, feed_forward, norm1, norm2):
    h = x + norm1(self_attn(x))
    return h + norm2(feed_forward(h))


def _swapped(x, self_attn, feed_forward, norm1, norm2):
    h = x + feed_forward(norm1(x))
    return h + self_attn(norm2(h))


register(Exercise(
    id="pre-ln-block",
    title="A pre-LN encoder block",
    reference=_block_reference,
    cases=_block_cases,
    outputs=("output",),
    mistakes=(
        Mistake("this is post-LN: the LayerNorm comes after the residual sum",
                "pre-LN normalises what each sub-layer reads and adds its output to the raw stream: "
                "h = x + self_attn(norm1(x)), then h + feed_forward(norm2(h)).", _post_ln),
        Mistake("a residual connection is missing",
                "add each sub-layer's output to its input: h = x + self_attn(norm1(x)), not self_attn(norm1(x)).",
                _no_residual, _no_residual_ffn),
        Mistake("the residual stream itself was normalised",
                "keep x as it is on the residual path: x + self_attn(norm1(x)), not norm1(x) + "
                "self_attn(norm1(x)).", _stream_normalised),
        Mistake("the two sub-layers ran side by side on x, not one after the other",
                "the feed-forward network reads the attention's result h = x + self_attn(norm1(x)), not x. "
                "(Parallel blocks exist, in GPT-J and PaLM, but they are a different design.)", _parallel),
        Mistake("one LayerNorm was used for both sub-layers",
                "each sub-layer has its own LayerNorm (own scale and shift): norm1 before the attention, norm2 "
                "before the feed-forward network.", _one_norm, _norm2_for_both),
        Mistake("the two LayerNorms were swapped",
                "norm1 belongs to the attention, norm2 to the feed-forward network: "
                "h = x + self_attn(norm1(x)), then h + feed_forward(norm2(h)).", _norms_swapped),
        Mistake("the second residual adds the feed-forward output to x, not to h",
                "the feed-forward sub-layer's residual is its own input h = x + self_attn(norm1(x)): return "
                "h + feed_forward(norm2(h)). Adding it to x drops the attention's output from the stream.",
                _second_residual_from_x),
        Mistake("the block's output was normalised",
                "a pre-LN block returns the raw residual stream, h + feed_forward(norm2(h)); the one "
                "LayerNorm on the stream comes after the last block of the stack (transformer.Encoder's "
                "final norm).", _output_normalised("norm2"), _output_normalised("norm1")),
        Mistake("each sub-layer's output was normalised, not its input",
                "pre-LN normalises what a sub-layer reads: x + self_attn(norm1(x)), not "
                "x + norm1(self_attn(x)).", _sublayer_outputs_normalised),
        Mistake("the sub-layers are in the wrong order",
                "attention first, then the feed-forward network.", _swapped),
    ),
))
