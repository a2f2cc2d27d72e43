"""Exercises on scoring functions: scaled dot-product attention (Vaswani et al. 2017), Bahdanau's additive
score and Luong's general (bilinear) score."""

from __future__ import annotations

import math

import torch

from .. import attention, scoring
from . import Case, Exercise, Mistake, register
from ._grader import randn

# Shape errors learners hit on the cases with a head axis (or with no batch axis), and what to do instead.
TRANSPOSE_HINT = ("transpose the last two axes: k.transpose(-2, -1) (or k.mT), which works for any number of "
                  "leading batch/head axes; index from the end. k.T reverses every axis, and k.transpose(1, 2) "
                  "or k.permute(0, 2, 1) swap the wrong ones once there is a head axis.")
_TRANSPOSE_ERRORS = (
    ("number of dimensions in the tensor input does not match", TRANSPOSE_HINT),  # permute(0, 2, 1) on 4-D
    ("must be a 3D tensor", "torch.bmm takes 3-D tensors only; use @ (torch.matmul), which broadcasts over any "
                            "leading axes, with k.transpose(-2, -1)."),
    ("no ellipsis was given", "start the einsum subscripts with '...' to cover any leading axes, e.g. "
                              "'...qd,...kd->...qk'."),
)


# --- 1. scaled dot-product attention -----------------------------------------------------------------

def _sdpa_case(gen, label, batch, lq, lk, d, dv, dtype=torch.float32):
    return Case(label, (randn(gen, *batch, lq, d, dtype=dtype), randn(gen, *batch, lk, d, dtype=dtype),
                        randn(gen, *batch, lk, dv, dtype=dtype)))


def _sdpa_cases(gen):
    # D, √D, Lk and Dv all differ in every case, so each wrong scale gives different numbers.
    return [
        _sdpa_case(gen, "random (B=2, Lq=3, Lk=5, D=8, Dv=4)", (2,), 3, 5, 8, 4),
        _sdpa_case(gen, "with heads (B=2, H=3, Lq=4, Lk=6, D=16, Dv=5)", (2, 3), 4, 6, 16, 5),
        _sdpa_case(gen, "batch of one, one query (Lq=1, Lk=7, D=6, Dv=3)", (1,), 1, 7, 6, 3),
        _sdpa_case(gen, "float64 (Lq=5, Lk=3, D=32, Dv=2)", (2,), 5, 3, 32, 2, dtype=torch.float64),
        _sdpa_case(gen, "large D (Lq=3, Lk=9, D=256, Dv=4)", (2,), 3, 9, 256, 4),
    ]


def _sdpa_variant(scale=lambda q, k, v: 1 / math.sqrt(q.size(-1)), dim=-1, after=False):
    """Scaled dot-product attention with the scale, the softmax axis or the order of the two changed."""
    def variant(q, k, v):
        scores = q @ k.transpose(-2, -1)
        if after:
            weights = torch.softmax(scores, dim=-1) * scale(q, k, v)
        else:
            weights = torch.softmax(scores * scale(q, k, v), dim=dim)
        return weights @ v, weights
    return variant


register(Exercise(
    id="scaled-dot-product",
    title="Scaled dot-product attention",
    reference=attention.attend,
    cases=_sdpa_cases,
    outputs=("context", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the scores were not scaled by 1/√D",
                "divide q @ kᵀ by math.sqrt(D), D = q.size(-1): without it the scores' variance grows with D "
                "and the softmax saturates.", _sdpa_variant(scale=lambda q, k, v: 1.0)),
        Mistake("the scores were divided by D instead of √D",
                "the variance of a dot product of D unit-variance terms is D, so its standard deviation is √D: "
                "divide by math.sqrt(D).", _sdpa_variant(scale=lambda q, k, v: 1 / q.size(-1))),
        Mistake("the scores were multiplied by √D instead of divided",
                "divide q @ kᵀ by math.sqrt(D); multiplying makes the softmax saturate even faster.",
                _sdpa_variant(scale=lambda q, k, v: math.sqrt(q.size(-1)))),
        Mistake("the scores were scaled by the square root of the wrong size",
                "D is the size of the queries and keys, q.size(-1); not the number of keys k.size(-2) or the "
                "value size v.size(-1).",
                _sdpa_variant(scale=lambda q, k, v: 1 / math.sqrt(k.size(-2))),
                _sdpa_variant(scale=lambda q, k, v: 1 / math.sqrt(v.size(-1)))),
        Mistake("the softmax ran over the wrong axis",
                "each query's weights must sum to 1 over the keys: softmax over the last axis, dim=-1, of the "
                "(..., Lq, Lk) scores. Count from the end: dim=0, 1 or 2 is the batch, a head axis or the "
                "queries, depending on how many leading axes the inputs have.",
                _sdpa_variant(dim=-2), _sdpa_variant(dim=0), _sdpa_variant(dim=1), _sdpa_variant(dim=2)),
        Mistake("the weights were scaled after the softmax",
                "scale the scores, then take the softmax: weights = softmax(q @ kᵀ / √D). Scaling afterwards "
                "leaves weights that no longer sum to 1.", _sdpa_variant(after=True)),
    ),
    error_hints=(
        # q @ k.T or k.transpose(1, 2) on the cases with a head axis; keepdim for a hand-written softmax.
        ("must match the size of tensor", "two shapes do not line up. For q @ kᵀ, " + TRANSPOSE_HINT
         + " For a softmax written by hand, keep the summed axis: e.sum(dim=-1, keepdim=True)."),
        *_TRANSPOSE_ERRORS,
    ),
))


# --- 2. Bahdanau's additive score --------------------------------------------------------------------

def _additive_case(gen, label, batch, lq, lk, d, dk, a, dtype=torch.float32, spread=1.0):
    q, k = randn(gen, *batch, lq, d, dtype=dtype), randn(gen, *batch, lk, dk, dtype=dtype)
    w_q = randn(gen, a, d, dtype=dtype, scale=spread / math.sqrt(d))
    w_k = randn(gen, a, dk, dtype=dtype, scale=spread / math.sqrt(dk))
    return Case(label, (q, k, w_q, w_k, randn(gen, a, dtype=dtype)))


def _additive_cases(gen):
    # Queries, keys and the hidden layer have different sizes (as in Bahdanau et al.: Dk = 2·D for a
    # bidirectional encoder), so a swapped matrix or a missing transpose fails loudly on the shapes.
    return [
        _additive_case(gen, "random (B=2, Lq=3, Lk=5, D=4, Dk=6, A=8)", (2,), 3, 5, 4, 6, 8),
        _additive_case(gen, "bidirectional keys, Dk = 2·D (Lq=4, Lk=7, D=5, Dk=10, A=6)", (2,), 4, 7, 5, 10, 6),
        _additive_case(gen, "batch of one, one query (Lq=1, Lk=6, D=3, Dk=4, A=5)", (1,), 1, 6, 3, 4, 5),
        _additive_case(gen, "float64 (Lq=3, Lk=4, D=6, Dk=3, A=7)", (2,), 3, 4, 6, 3, 7, dtype=torch.float64),
        _additive_case(gen, "no batch dimension: q (Lq, D), k (Lk, Dk)", (), 4, 6, 3, 5, 4),
        _additive_case(gen, "large projections, tanh saturates (A=9)", (2,), 3, 5, 4, 6, 9, spread=4.0),
    ]


PAIR_HINT = ("the inputs may have no batch axis or several: index from the end, q[..., :, None, :] and "
             "k[..., None, :, :] (or .unsqueeze(-2) and .unsqueeze(-3) of the projected queries and keys), "
             "so that every query meets every key in a (..., Lq, Lk, A) array.")


def _additive_variant(tanh=True, use_v=True, tanh_last=False, softmax=False, activation=torch.tanh):
    def variant(q, k, W_q, W_k, v):
        pre = (q @ W_q.T).unsqueeze(-2) + (k @ W_k.T).unsqueeze(-3)  # (..., Lq, Lk, A)
        hidden = activation(pre) if tanh else pre
        scores = hidden @ v if use_v else hidden.sum(-1)
        if tanh_last:
            scores = torch.tanh(scores)
        return torch.softmax(scores, dim=-1) if softmax else scores
    return variant


def _additive_mean(q, k, W_q, W_k, v):
    return torch.tanh((q @ W_q.T).unsqueeze(-2) + (k @ W_k.T).unsqueeze(-3)).mean(-1)


register(Exercise(
    id="additive-score",
    title="Additive (Bahdanau) scores",
    reference=scoring.additive_score,
    cases=_additive_cases,
    outputs=("scores",),
    mistakes=(
        Mistake("the tanh is missing",
                "apply torch.tanh to W_q q + W_k k before the dot product with v. Without it the score is "
                "linear, vᵀW_q q + vᵀW_k k: a query term plus a key term, so every query ranks the keys alike.",
                _additive_variant(tanh=False)),
        Mistake("another non-linearity in place of tanh",
                "the additive score uses torch.tanh: vᵀ tanh(W_q q + W_k k). tanh is centred on 0 and bounded "
                "in (-1, 1); sigmoid and relu give other scores.",
                _additive_variant(activation=torch.sigmoid), _additive_variant(activation=torch.relu)),
        Mistake("v was not applied: the hidden units were summed or averaged",
                "the score is the dot product of v with the hidden layer: hidden @ v, with v of shape (A,).",
                _additive_variant(use_v=False), _additive_mean),
        Mistake("the tanh was applied to the score instead of the hidden layer",
                "tanh goes inside: vᵀ tanh(W_q q + W_k k), not tanh(vᵀ (W_q q + W_k k)).",
                _additive_variant(tanh=False, tanh_last=True)),
        Mistake("the softmax was applied: these are weights, not scores",
                "return the scores themselves; the softmax over the keys comes afterwards, in the attention.",
                _additive_variant(softmax=True)),
    ),
    error_hints=(
        ("too many indices", PAIR_HINT),  # queries[:, :, None, :] on the case with no batch axis
        ("Dimension out of range", PAIR_HINT),  # unsqueeze(3) on the case with no batch axis
        # unsqueeze(2) / unsqueeze(1) on the case with no batch axis, or q and k added without pairing
        ("must match the size of tensor", PAIR_HINT),
    ),
))


# --- 3. Luong's general (bilinear) score -------------------------------------------------------------

def _general_case(gen, label, batch, lq, lk, d, dtype=torch.float32):
    return Case(label, (randn(gen, *batch, lq, d, dtype=dtype), randn(gen, *batch, lk, d, dtype=dtype),
                        randn(gen, d, d, dtype=dtype, scale=1 / math.sqrt(d))))


def _general_cases(gen):
    # Luong et al. use decoder and encoder states of one size, so W is square here (D = Dk), and a
    # transposed W gives wrong numbers rather than a shape error: the grader can name it.
    return [
        _general_case(gen, "random (B=2, Lq=3, Lk=5, D=4)", (2,), 3, 5, 4),
        _general_case(gen, "more keys (B=3, Lq=2, Lk=8, D=6)", (3,), 2, 8, 6),
        _general_case(gen, "batch of one, one query (Lq=1, Lk=6, D=5)", (1,), 1, 6, 5),
        _general_case(gen, "float64 (Lq=4, Lk=3, D=7)", (2,), 4, 3, 7, dtype=torch.float64),
        _general_case(gen, "with heads (B=2, H=2, Lq=3, Lk=4, D=5)", (2, 2), 3, 4, 5),
    ]


register(Exercise(
    id="general-score",
    title="General (Luong) scores",
    reference=scoring.general_score,
    cases=_general_cases,
    outputs=("scores",),
    mistakes=(
        Mistake("W is transposed: it meets the queries, not the keys",
                "s_ij = q_iᵀ W k_j: compute W k_j for every key as k @ W.T (shape (..., Lk, D)), then "
                "q @ that.transpose(-2, -1). Or q @ W @ k.transpose(-2, -1).",
                lambda q, k, W: q @ W.T @ k.transpose(-2, -1)),
        Mistake("W was ignored: this is the plain dot product",
                "put W between the query and the key: q @ W @ k.transpose(-2, -1).",
                lambda q, k, W: q @ k.transpose(-2, -1)),
        Mistake("the scores were scaled by 1/√D",
                "Luong's general score has no scaling: return q @ W @ k.transpose(-2, -1) as it is.",
                lambda q, k, W: q @ W @ k.transpose(-2, -1) / math.sqrt(q.size(-1))),
        Mistake("W was applied to both the queries and the keys",
                "apply W once: q_iᵀ W k_j. Projecting both sides computes (q W)(k W)ᵀ = q W Wᵀ kᵀ instead.",
                lambda q, k, W: (q @ W) @ (k @ W).transpose(-2, -1)),
        Mistake("the softmax was applied: these are weights, not scores",
                "return the scores themselves; the softmax over the keys comes afterwards, in the attention.",
                lambda q, k, W: torch.softmax(q @ W @ k.transpose(-2, -1), dim=-1)),
    ),
    error_hints=(("must match the size of tensor", TRANSPOSE_HINT), *_TRANSPOSE_ERRORS),
))
