"""Spot the bug: additive (Bahdanau) attention as a Keras-style tutorial layer writes it, and as it should be.

The tutorial layer computes ``score = V(tanh(W1(features)))`` and ``softmax(score, axis=-1)``: the decoder
state never enters the score, and the softmax runs over an axis of size one, so every weight is exactly 1.
The functions here are the correct references for chapter 6's exercises, plus the buggy layer itself
(``buggy_attention``) so that the chapter and the graders can show what it does.

Shapes, in this chapter's words and in the course legend: B batch; T time steps (the keys, Lk); F feature
size (the features are both keys and values, so D = Dv = F); A attention size (the width of the small
scoring network); Dh decoder state size (the Keras code calls it ``hidden_size``; the decoder state is the
single query, Lq = 1). Weight matrices follow ``nn.Linear``: ``y = x Wᵀ``, so W1 is (A, F).
"""

from __future__ import annotations

import torch

from .. import _checks, scoring
from ..masking import masked_softmax
from . import Case, Exercise, Mistake, register
from ._grader import randn

# --- the references ----------------------------------------------------------------------------------


def attention_weights(scores: torch.Tensor) -> torch.Tensor:
    """Attention weights from one score per time step, normalised over time (Bahdanau et al. 2015, eq. 6).

    scores: (B, T, 1) -> weights (B, T, 1), positive, each example's T weights summing to 1. The softmax
    runs over dim=1, the time axis: the last axis has size one, and a softmax over it is always 1.
    """
    _checks.tensor("scores", scores, ndim=3)
    if scores.size(-1) != 1:
        raise ValueError(f"scores must have shape (B, T, 1), one score per time step, got {tuple(scores.shape)}")
    return masked_softmax(scores, dim=1)  # over the T time steps, not the size-one last axis


def _check_layer_inputs(features, hidden, W1, W2, V) -> None:
    _checks.tensor("features", features, ndim=3)
    _checks.tensor("hidden", hidden, ndim=2)
    for name, w in (("W1", W1), ("W2", W2), ("V", V)):
        _checks.tensor(name, w, ndim=2)
    dtypes = {x.dtype for x in (features, hidden, W1, W2, V)}
    if len(dtypes) > 1:
        raise TypeError(f"features, hidden, W1, W2 and V must share one dtype, got {sorted(map(str, dtypes))}")
    _checks.same_size("features", features, 0, "hidden", hidden, 0, "batch size B (first dimension)")
    _checks.same_size("W1", W1, 1, "features", features, -1, "feature size F (W1 is (A, F), y = x W1ᵀ)")
    _checks.same_size("W2", W2, 1, "hidden", hidden, -1, "state size Dh (W2 is (A, Dh), y = h W2ᵀ)")
    _checks.same_size("W1", W1, 0, "W2", W2, 0, "attention size A (first dimension)")
    _checks.same_size("V", V, 1, "W1", W1, 0, "attention size A (V is (1, A))")
    if V.size(0) != 1:
        raise ValueError(f"V must have shape (1, A): one score per time step, got {tuple(V.shape)}")


def additive_scores(features: torch.Tensor, hidden: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor,
                    V: torch.Tensor) -> torch.Tensor:
    """Additive (Bahdanau) attention scores: ``e_t = V tanh(W1 f_t + W2 h)`` for every time step t.

    The alignment model of Bahdanau et al. 2015 (eq. 6 and appendix A.1.2, ``vₐᵀ tanh(Wₐ s + Uₐ h_j)``),
    without biases. features: (B, T, F), hidden: (B, Dh), W1: (A, F), W2: (A, Dh), V: (1, A)
    -> scores (B, T, 1). The decoder state is projected once and broadcast over the T time steps.
    """
    _check_layer_inputs(features, hidden, W1, W2, V)
    # The package's additive score with the decoder state as the one query: (B, 1, T), then time first.
    return scoring.additive_score(hidden[:, None, :], features, W2, W1, V[0]).transpose(-2, -1)  # (B, T, 1)


def fixed_attention(features: torch.Tensor, hidden: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor,
                    V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tutorial layer with both bugs fixed: additive attention over time (Bahdanau et al. 2015, eqs. 5-6).

    features: (B, T, F), hidden: (B, Dh), W1: (A, F), W2: (A, Dh), V: (1, A). Returns the context (B, F),
    ``c = Σ_t α_t f_t``; the weights α (B, T, 1), summing to 1 over time; and the scores (B, T, 1) they
    come from (the scores are what tell a missing decoder state apart once the weights are all 1).
    """
    scores = additive_scores(features, hidden, W1, W2, V)  # (B, T, 1)
    weights = attention_weights(scores)                    # (B, T, 1), sums to 1 over T
    context = (weights * features).sum(dim=1)              # (B, T, 1) * (B, T, F), summed over T -> (B, F)
    return context, weights, scores


def buggy_attention(features: torch.Tensor, hidden: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor,
                    V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tutorial layer as written, **both bugs included**: do not use it, study it.

    ``scores = V tanh(W1 f_t)`` ignores ``hidden`` and ``W2``; ``softmax(scores, dim=-1)`` normalises over the
    size-one last axis, so every weight is 1 and the context is the plain sum of the features over time.
    Same shapes as ``fixed_attention``; returns (context (B, F), weights (B, T, 1), scores (B, T, 1)).
    """
    _check_layer_inputs(features, hidden, W1, W2, V)
    scores = torch.tanh(features @ W1.T) @ V.T   # (B, T, 1); bug 2: the decoder state is never added
    weights = torch.softmax(scores, dim=-1)      # bug 1: over an axis of size one, so every weight is 1
    return (weights * features).sum(dim=1), weights, scores


# --- shared by the cases --------------------------------------------------------------------------------

def _layer_case(gen, label, b, t, f, a, dh, dtype=torch.float32):
    """Random inputs for the layer; weights scaled by 1/√(fan-in) so the tanh is not saturated."""
    return Case(label, (randn(gen, b, t, f, dtype=dtype), randn(gen, b, dh, dtype=dtype),
                        randn(gen, a, f, dtype=dtype, scale=f ** -0.5),
                        randn(gen, a, dh, dtype=dtype, scale=2 * dh ** -0.5),
                        randn(gen, 1, a, dtype=dtype, scale=2 * a ** -0.5)))


def _layer_cases(gen):
    # Every size differs from every other (B, T, F, A, Dh), so a mixed-up axis shows in the shapes.
    return [
        _layer_case(gen, "random (B=3, T=7, F=5, A=4, Dh=6)", 3, 7, 5, 4, 6),
        _layer_case(gen, "batch of one (B=1, T=6, F=3, A=5, Dh=2)", 1, 6, 3, 5, 2),
        _layer_case(gen, "float64 (B=2, T=4, F=6, A=3, Dh=5)", 2, 4, 6, 3, 5, dtype=torch.float64),
        _layer_case(gen, "longer sequence (B=2, T=12, F=4, A=8, Dh=3)", 2, 12, 4, 8, 3),
    ]


def _projections(features, hidden, W1, W2):
    return features @ W1.T, (hidden @ W2.T)[:, None, :]  # (B, T, A), (B, 1, A)


# --- 1. the weights, over the right axis -----------------------------------------------------------------

def _weights_cases(gen):
    return [
        Case("random scores (B=3, T=7)", (randn(gen, 3, 7, 1, scale=2.0),)),
        Case("batch of one (B=1, T=5)", (randn(gen, 1, 5, 1, scale=2.0),)),
        Case("float64 (B=2, T=6)", (randn(gen, 2, 6, 1, dtype=torch.float64, scale=2.0),)),
        Case("large scores (about 1000)", (1000.0 + randn(gen, 2, 4, 1, scale=5.0),)),
        Case("one time step (T=1: the only weight is 1)", (randn(gen, 3, 1, 1),)),
    ]


def _exp_normalised(dims):
    def variant(scores):
        e = scores.exp()
        return e / e.sum(dim=dims, keepdim=True)
    return variant


register(Exercise(
    id="attention-weights-axis",
    title="Attention weights over the right axis",
    reference=attention_weights,
    cases=_weights_cases,
    outputs=("weights",),
    mistakes=(
        Mistake("the softmax ran over the last axis, of size one: every weight is 1",
                "the scores are (B, T, 1): normalise over the T time steps, softmax(scores, dim=1). "
                "A softmax over a single number is always exp(s) / exp(s) = 1.",
                lambda s: torch.softmax(s, dim=-1), _exp_normalised(-1)),
        Mistake("the weights are not normalised",
                "divide exp(scores) by its sum over the time axis (dim=1), or use softmax(scores, dim=1).",
                lambda s: s.exp()),
        Mistake("the softmax ran over the batch axis",
                "dim=0 mixes different examples; each example's T weights must sum to 1: dim=1.",
                lambda s: torch.softmax(s, dim=0)),
        Mistake("the weights were normalised over the whole tensor, not each example",
                "sum over the time axis only: e.sum(dim=1, keepdim=True).",
                _exp_normalised((0, 1, 2))),
        Mistake("exp overflowed on large scores (NaN)",
                "subtract each example's maximum over time before exp (the softmax does not change), or use "
                "torch.softmax(scores, dim=1), which does it for you.",
                _exp_normalised(1)),
        Mistake("the size-one axis was squeezed away: the weights are (B, T)",
                "keep the shape (B, T, 1) so the weights broadcast against features (B, T, F); "
                "softmax(scores, dim=1) needs no squeeze.",
                lambda s: torch.softmax(s.squeeze(-1), dim=1)),
    ),
))


# --- 2. the score, with the decoder state -----------------------------------------------------------------

def _score_variant(combine, inside_tanh=True):
    """Scores with the projections combined by ``combine`` and V applied after (or before) the tanh."""
    def variant(features, hidden, W1, W2, V):
        mixed = combine(*_projections(features, hidden, W1, W2))  # (B, T, A)
        return torch.tanh(mixed) @ V.T if inside_tanh else torch.tanh(mixed @ V.T)
    return variant


def _no_tanh(features, hidden, W1, W2, V):
    keys, query = _projections(features, hidden, W1, W2)
    return (keys + query) @ V.T


def _state_outside_tanh(features, hidden, W1, W2, V):
    keys, query = _projections(features, hidden, W1, W2)
    return (torch.tanh(keys) + query) @ V.T


def _scores_softmaxed(dim):
    def variant(features, hidden, W1, W2, V):
        return torch.softmax(additive_scores(features, hidden, W1, W2, V), dim=dim)
    return variant


# Adding the (B, A) projected state to the (B, T, A) projected features without a time axis.
_STATE_HINTS = (("must match the size of tensor",
                 "two tensors' shapes do not line up. The projected state is (B, A) and the projected features "
                 "(B, T, A): give the state a time axis before adding, (hidden @ W2.T)[:, None, :], as the "
                 "tutorial's hidden_with_time_axis does."),)


register(Exercise(
    id="additive-score-with-state",
    title="Additive scores that use the decoder state",
    reference=additive_scores,
    cases=_layer_cases,
    outputs=("scores",),
    error_hints=_STATE_HINTS,
    mistakes=(
        Mistake("the decoder state is never used",
                "add the projected state inside the tanh: tanh(features @ W1.T + (hidden @ W2.T)[:, None, :]). "
                "Without it every decoder step gets the same scores.",
                _score_variant(lambda keys, query: keys)),
        Mistake("the tanh is missing",
                "the score is V tanh(W1 f + W2 h): without the tanh it is linear in the features, and the "
                "state adds the same number to every time step (which a softmax ignores).",
                _no_tanh),
        Mistake("the tanh was applied after V",
                "apply V to tanh(W1 f + W2 h): tanh(...) @ V.T, not tanh((...) @ V.T).",
                _score_variant(lambda keys, query: keys + query, inside_tanh=False)),
        Mistake("the state was added after the tanh",
                "add both projections first, then take the tanh: tanh(W1 f + W2 h). Added outside, the state "
                "shifts every time step's score by the same amount, so the weights ignore it.",
                _state_outside_tanh),
        Mistake("the projections were multiplied, not added",
                "additive attention adds them: tanh(W1 f + W2 h). Multiplying is a different score.",
                _score_variant(lambda keys, query: keys * query)),
        Mistake("these are weights (a softmax was applied), not scores",
                "return the raw scores V tanh(W1 f + W2 h), shape (B, T, 1); the softmax is the next step.",
                _scores_softmaxed(1), _scores_softmaxed(-1)),
    ),
))


# --- 3. the whole layer, fixed ---------------------------------------------------------------------------

def _layer_variant(use_state=True, weights_dim=1, pool=lambda w, f: (w * f).sum(dim=1)):
    def variant(features, hidden, W1, W2, V):
        keys, query = _projections(features, hidden, W1, W2)
        scores = torch.tanh(keys + query if use_state else keys) @ V.T  # (B, T, 1)
        weights = torch.softmax(scores, dim=weights_dim)
        return pool(weights, features), weights, scores
    return variant


def _layer_from_scores(score_fn):
    def variant(features, hidden, W1, W2, V):
        scores = score_fn(features, hidden, W1, W2, V)  # (B, T, 1)
        weights = torch.softmax(scores, dim=1)
        return (weights * features).sum(dim=1), weights, scores
    return variant


def _unnormalised_layer(features, hidden, W1, W2, V):
    scores = additive_scores(features, hidden, W1, W2, V)
    weights = scores.exp()
    return (weights * features).sum(dim=1), weights, scores


register(Exercise(
    id="fixed-attention-layer",
    title="The attention layer, fixed",
    reference=fixed_attention,
    cases=_layer_cases,
    outputs=("context", "weights", "scores"),
    diagnose_first="weights",
    error_hints=_STATE_HINTS,
    mistakes=(
        Mistake("the softmax still runs over the size-one axis (every weight is 1)",
                "the decoder state is in now, but normalise over time: softmax(scores, dim=1). Over the "
                "last axis, of size one, every weight is 1 and the context is the plain sum of the features.",
                _layer_variant(weights_dim=-1)),
        Mistake("the decoder state is never used",
                "the weights sum to 1 now, but they are the same for every decoder step: add "
                "(hidden @ W2.T)[:, None, :] to features @ W1.T inside the tanh.",
                _layer_variant(use_state=False)),
        Mistake("both bugs are still there: the state is unused and every weight is 1",
                "two fixes: add the projected decoder state inside the tanh, and take the softmax over time "
                "(dim=1), not over the size-one last axis.",
                buggy_attention),
        Mistake("the tanh is missing from the score",
                "the score is V tanh(W1 f + W2 h): without the tanh it is linear, and the state adds the same "
                "number to every time step (which the softmax ignores).",
                _layer_from_scores(_no_tanh)),
        Mistake("the state was added after the tanh",
                "put the state inside: tanh(W1 f + W2 h). Added after the tanh it shifts every time step's "
                "score by the same amount, so the weights ignore it.",
                _layer_from_scores(_state_outside_tanh)),
        Mistake("the softmax ran over the batch axis",
                "dim=0 mixes different examples; each example's T weights must sum to 1: softmax(scores, dim=1).",
                _layer_variant(weights_dim=0)),
        Mistake("the context was summed over the features instead of over time",
                "the context is Σ_t α_t f_t, one F-vector per example: (weights * features).sum(dim=1), "
                "shape (B, F).",
                _layer_variant(pool=lambda w, f: (w * f).sum(dim=-1))),
        Mistake("the context is an average over time, not the weighted sum",
                "the weights already sum to 1: sum the weighted features over time, do not divide by T.",
                _layer_variant(pool=lambda w, f: (w * f).mean(dim=1))),
        Mistake("the weights are not normalised",
                "exp(scores) must be divided by its sum over time: softmax(scores, dim=1).",
                _unnormalised_layer),
    ),
))
