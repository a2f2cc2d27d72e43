"""Exercises on hard attention and how to train it: hard attention by argmax, a Gumbel-softmax sample
from given uniform noise, and the REINFORCE surrogate loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import attention
from . import Case, Exercise, Mistake, register
from ._grader import randn


def _uniform(gen, *shape, dtype=torch.float32):
    """Uniform noise kept away from 0 and 1, so that -log(-log u) is finite in float32."""
    return (1e-4 + (1 - 2e-4) * torch.rand(*shape, generator=gen, dtype=torch.float64)).to(dtype)


# --- 1. hard attention by argmax ----------------------------------------------------------------------

def _hard_case(gen, label, b, lq, lk, dv, dtype=torch.float32):
    # Lq <= Lk in every case: a realistic slip (argmax over the queries) then still runs, and is named.
    return Case(label, (randn(gen, b, lq, lk, dtype=dtype, scale=2.0), randn(gen, b, lk, dv, dtype=dtype)))


def _hard_cases(gen):
    return [
        _hard_case(gen, "random (B=2, Lq=3, Lk=6, Dv=4)", 2, 3, 6, 4),
        _hard_case(gen, "square (B=3, Lq=Lk=5, Dv=2)", 3, 5, 5, 2),
        _hard_case(gen, "batch of one, one query", 1, 1, 7, 3),
        _hard_case(gen, "float64", 2, 4, 8, 5, dtype=torch.float64),
        _hard_case(gen, "many keys (Lk=20)", 2, 2, 20, 3),
    ]


def _hard_reference(scores, values):
    return attention.hard_attention(scores, values)


def _one_hot(index, size, like):
    return F.one_hot(index, size).to(like.dtype)


def _argmax_over_queries(scores, values):
    weights = _one_hot(scores.argmax(dim=-2), scores.size(-1), values)  # (B, Lk, Lk): wrong axis
    return weights @ values, weights


def _soft_weights(scores, values):
    weights = torch.softmax(scores, dim=-1)
    return weights @ values, weights


def _soft_context(scores, values):
    weights = _one_hot(scores.argmax(dim=-1), scores.size(-1), values)
    return torch.softmax(scores, dim=-1) @ values, weights


def _index_as_weights(scores, values):
    weights = _one_hot(scores.argmax(dim=-1), scores.size(-1), values)
    return weights @ values, scores.argmax(dim=-1)


def _integer_weights(scores, values):
    index = scores.argmax(dim=-1)
    weights = F.one_hot(index, scores.size(-1))  # int64: F.one_hot's dtype
    return weights.to(values.dtype) @ values, weights


def _argmin(scores, values):
    weights = _one_hot(scores.argmin(dim=-1), scores.size(-1), values)
    return weights @ values, weights


def _weights_times_scores(scores, values):
    weights = _one_hot(scores.argmax(dim=-1), scores.size(-1), values) * scores
    return weights @ values, weights


# F.one_hot(index) without num_classes makes max(index) + 1 columns, fewer than Lk unless the last key
# happens to win somewhere: `weights @ values` then fails with one of these messages.
_ONE_HOT_HINT = ("the one-hot weights have fewer columns than there are keys: F.one_hot(index) guesses the "
                 "number of classes from the largest index it sees. Pass num_classes=scores.size(-1).")
_HARD_ERROR_HINTS = (("Expected size for first two dimensions of batch2 tensor", _ONE_HOT_HINT),
                     ("cannot be multiplied", _ONE_HOT_HINT))


register(Exercise(
    id="hard-attention-argmax",
    title="Hard attention by argmax",
    reference=_hard_reference,
    cases=_hard_cases,
    outputs=("context", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the argmax ran over the queries instead of the keys",
                "each query picks one key: argmax over the last axis (dim=-1) of the (B, Lq, Lk) scores.",
                _argmax_over_queries),
        Mistake("these are soft attention weights, not a hard choice",
                "hard attention keeps only the best key: a one-hot row, F.one_hot(scores.argmax(-1), Lk).",
                _soft_weights),
        Mistake("the context is the soft average, not the chosen value",
                "compute the context from the one-hot weights (weights @ values): it must equal the value of "
                "the chosen key.", _soft_context),
        Mistake("the weights are the chosen index, not a one-hot row",
                "turn the index into a one-hot row over the keys: F.one_hot(index, scores.size(-1)), "
                "shape (B, Lq, Lk).", _index_as_weights),
        Mistake("the one-hot weights are integers",
                "F.one_hot returns int64; convert with .to(values.dtype) so the weights are in the inputs' "
                "dtype.", _integer_weights),
        Mistake("the worst key was chosen (argmin)", "a higher score is a better match: use argmax.",
                _argmin),
        Mistake("the one-hot row was multiplied by the scores",
                "the chosen key's weight is exactly 1, so the context is the chosen value itself.",
                _weights_times_scores),
    ),
    error_hints=_HARD_ERROR_HINTS,
))


# --- 2. a Gumbel-softmax sample from given uniform noise ---------------------------------------------

def _gumbel_reference(logits, uniform, tau):
    return attention.gumbel_softmax(logits, tau, uniform=uniform)


def _gumbel_case(gen, label, shape, tau, dtype=torch.float32):
    return Case(label, (randn(gen, *shape, dtype=dtype, scale=1.5), _uniform(gen, *shape, dtype=dtype), tau))


def _gumbel_cases(gen):
    return [
        _gumbel_case(gen, "random logits (4, 6), τ = 0.5", (4, 6), 0.5),
        _gumbel_case(gen, "attention scores (B=2, Lq=3, Lk=5), τ = 2", (2, 3, 5), 2.0),
        _gumbel_case(gen, "one row, τ = 1", (1, 7), 1.0),
        _gumbel_case(gen, "float64, τ = 0.3", (3, 4), 0.3, dtype=torch.float64),
        _gumbel_case(gen, "high temperature, τ = 10", (3, 5), 10.0),
    ]


def _gumbel_max(logits, uniform, tau):
    g = -torch.log(-torch.log(uniform))
    return F.one_hot((logits + g).argmax(dim=-1), logits.size(-1)).to(logits.dtype)


def _gumbel_variant(noise=lambda u: -torch.log(-torch.log(u)), temper=lambda z, t: z / t, after=False,
                    only_logits=False, dim=-1):
    def variant(logits, uniform, tau):
        g = noise(uniform)
        if after:  # the noise added to the probabilities, not to the logits
            return torch.softmax(logits / tau, dim=-1) + g
        z = logits / tau + g if only_logits else temper(logits + g, tau)
        return torch.softmax(z, dim=dim)
    return variant


register(Exercise(
    id="gumbel-softmax",
    title="A Gumbel-softmax sample",
    reference=_gumbel_reference,
    cases=_gumbel_cases,
    outputs=("sample",),
    mistakes=(
        Mistake("the Gumbel noise is not -log(-log u)",
                "turn uniform noise into Gumbel noise with two logs and two minus signs: g = -log(-log(u)).",
                _gumbel_variant(noise=torch.log),
                _gumbel_variant(noise=lambda u: -torch.log(u)),
                _gumbel_variant(noise=lambda u: torch.log(-torch.log(u)))),
        Mistake("the uniform noise was added as it is",
                "u is uniform; the Gumbel-max trick needs Gumbel noise g = -log(-log(u)).",
                _gumbel_variant(noise=lambda u: u)),
        Mistake("the temperature was ignored", "divide the noisy logits by τ before the softmax.",
                _gumbel_variant(temper=lambda z, t: z)),
        Mistake("the noisy logits were multiplied by the temperature",
                "divide by τ: a small τ must make the sample nearly one-hot.",
                _gumbel_variant(temper=lambda z, t: z * t)),
        Mistake("only the logits were divided by the temperature, not the noise",
                "divide the sum by τ: softmax((logits + g) / τ).", _gumbel_variant(only_logits=True)),
        Mistake("the noise was added after the softmax",
                "add g to the logits, then take the softmax: the sample must be positive and sum to 1.",
                _gumbel_variant(after=True)),
        Mistake("this is the hard Gumbel-max sample, not its soft relaxation",
                "keep the softmax of (logits + g) / τ instead of the one-hot of its argmax: the soft sample "
                "is what gradients flow through.", _gumbel_max),
        Mistake("the softmax ran over the wrong axis",
                "the sample is a distribution over the keys: softmax over the last axis (dim=-1).",
                _gumbel_variant(dim=0), _gumbel_variant(dim=-2)),
    ),
))


# --- 3. the REINFORCE surrogate loss ------------------------------------------------------------------

def _reinforce_case(gen, label, b, baseline, binary=False, dtype=torch.float32, per_choice_baseline=False):
    logits = randn(gen, b, 5, dtype=torch.float64)
    choices = torch.randint(5, (b,), generator=gen)
    log_probs = torch.log_softmax(logits, dim=-1)[torch.arange(b), choices].to(dtype)
    if binary:
        rewards = (torch.rand(b, generator=gen, dtype=torch.float64) < 0.4).to(dtype)
    else:
        rewards = randn(gen, b, dtype=dtype) + 1.0
    if per_choice_baseline:
        baseline = (0.5 + 0.2 * torch.randn(b, generator=gen, dtype=torch.float64)).to(dtype)
    return Case(label, (log_probs, rewards, baseline))


def _reinforce_cases(gen):
    return [
        _reinforce_case(gen, "8 choices, rewards around 1, baseline 0.6", 8, 0.6),
        _reinforce_case(gen, "right/wrong rewards (0 or 1), baseline 0.4", 16, 0.4, binary=True),
        _reinforce_case(gen, "a baseline per choice (a tensor)", 6, None, per_choice_baseline=True),
        _reinforce_case(gen, "float64, baseline 1.5", 5, 1.5, dtype=torch.float64),
        _reinforce_case(gen, "batch of one, baseline 0.25", 1, 0.25),
    ]


def _reinforce_reference(log_probs, rewards, baseline):
    # reinforce_loss detaches the rewards and the baseline: the gradient check (gradients=... below) then
    # expects a gradient on log_probs only, of the loss, the first output.
    return attention.reinforce_loss(log_probs, rewards, baseline), rewards - baseline


def _reinforce_variant(advantage=lambda r, b: r - b, sign=-1.0, reduce=torch.mean, score=lambda lp: lp):
    def variant(log_probs, rewards, baseline):
        advantages = advantage(rewards, baseline)
        return sign * reduce(advantages.detach() * score(log_probs)), advantages
    return variant


register(Exercise(
    id="reinforce-surrogate",
    title="The REINFORCE surrogate loss",
    reference=_reinforce_reference,
    cases=_reinforce_cases,
    outputs=("loss", "advantages"),
    diagnose_first="advantages",
    mistakes=(
        Mistake("the baseline was ignored",
                "weight each log-probability by (reward - baseline): without the baseline the estimate is "
                "still unbiased, but far noisier.", _reinforce_variant(advantage=lambda r, b: r)),
        Mistake("the baseline was added instead of subtracted",
                "the advantage is reward - baseline: how much better than usual this choice did.",
                _reinforce_variant(advantage=lambda r, b: r + b)),
        Mistake("the sign is flipped: minimising this loss makes rewarded choices less likely",
                "the optimiser minimises the loss, so return minus the mean of (reward - baseline) * log p.",
                _reinforce_variant(sign=1.0)),
        Mistake("the loss is summed over the choices instead of averaged",
                "take the mean over the choices, so the step size does not grow with the batch size.",
                _reinforce_variant(reduce=torch.sum)),
        Mistake("probabilities were used instead of log-probabilities",
                "the score function is ∇ log p, so weight log_probs themselves (do not exponentiate them).",
                _reinforce_variant(score=torch.exp)),
        Mistake("the batch's mean reward was used as the baseline, not the given one",
                "subtract the baseline you were given (a number or one per choice), not rewards.mean().",
                _reinforce_variant(advantage=lambda r, b: r - r.mean())),
    ),
    # Right values are not enough: a loss built from `.item()` or with log_probs detached has no useful
    # gradient, and one without `.detach()` on the advantages pushes on the rewards.
    gradients=("log_probs", "rewards"),
))
