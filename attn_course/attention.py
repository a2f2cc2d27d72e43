"""The functional core: attention as a soft lookup, and hard attention with its training tricks.

A dictionary lookup returns the value whose key equals the query. Attention relaxes it: score every key
against the query, turn the scores into weights that are positive and sum to 1 (a softmax), and return the
weighted average of the values. Shapes: q (..., Lq, D), k (..., Lk, D), v (..., Lk, Dv); the leading
dimensions (B, or B and H) broadcast.

Hard attention returns one value instead of an average (``hard_attention``); it is trained with the
REINFORCE surrogate (``reinforce_loss``, ``update_baseline``) or relaxed with ``gumbel_softmax``.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from .masking import check_mask, masked_softmax


def softmax(scores: torch.Tensor, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """Softmax with a temperature: ``exp(s_i / T) / sum_j exp(s_j / T)`` over ``dim``.

    scores: any shape. Low T sharpens the weights towards the argmax (a hard choice); high T flattens them
    towards uniform. ``torch.softmax`` subtracts the row maximum first, so large scores do not overflow.
    """
    _checks.tensor("scores", scores)
    _checks.positive("temperature", temperature)
    return torch.softmax(scores / temperature, dim=dim)


def _check_qkv(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., L, size), got shape {tuple(x.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    _checks.same_size("q", q, -1, "k", k, -1, "feature size D (last dimension)")
    _checks.same_size("k", k, -2, "v", v, -2, "number of keys Lk (second-to-last dimension)")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch) dimensions of q, k and v must broadcast, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}") from None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
           scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, the readable reference (Vaswani et al. 2017, eq. 1).

    ``weights = softmax(q kᵀ · scale)`` with ``scale = 1/√D`` by default; ``context = weights v``.

    q: (..., Lq, D), k: (..., Lk, D), v: (..., Lk, Dv); mask: boolean, True = may attend, broadcastable to
    (..., Lq, Lk). Returns context (..., Lq, Dv) and weights (..., Lq, Lk).
    """
    _check_qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1))
    _checks.positive("scale", scale)
    scores = q @ k.transpose(-2, -1) * scale  # (..., Lq, D) @ (..., D, Lk) -> (..., Lq, Lk)
    weights = masked_softmax(scores, mask)
    return weights @ v, weights  # (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv)


def soft_lookup(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, temperature: float = 1.0,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft dictionary lookup with dot-product similarity and a temperature.

    ``weights = softmax(query · keysᵀ / T)`` over the keys; ``context = weights · values``.
    query: (..., Lq, D), keys: (..., Lk, D), values: (..., Lk, Dv) -> context (..., Lq, Dv),
    weights (..., Lq, Lk). The same as ``attend`` with ``scale = 1/T``.
    """
    _checks.positive("temperature", temperature)
    return attend(query, keys, values, mask=mask, scale=1.0 / temperature)


def hard_lookup(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard lookup: return the value of the single best-matching key (largest dot product).

    query: (..., Lq, D), keys: (..., Lk, D), values: (..., Lk, Dv) -> context (..., Lq, Dv) and one-hot
    weights (..., Lq, Lk). The limit of ``soft_lookup`` as the temperature goes to 0; its weights have no
    useful gradient, which is why attention is usually soft.
    """
    _check_qkv(query, keys, values)
    scores = query @ keys.transpose(-2, -1)  # (..., Lq, Lk)
    best = scores.argmax(dim=-1)  # (..., Lq)
    weights = torch.nn.functional.one_hot(best, keys.size(-2)).to(values.dtype)
    return weights @ values, weights


# --- hard attention and how to train it ------------------------------------------------------------
#
# Soft attention returns a weighted average of the values; hard attention returns ONE value, chosen by
# argmax or sampled (Xu et al. 2015, "Show, Attend and Tell", section 4.1). The choice is a step function
# of the scores, so backpropagation gives the scores no gradient: training needs an estimator instead,
# either the score function (REINFORCE, Williams 1992) or a relaxation (Gumbel-softmax, Jang et al. 2017;
# Maddison et al. 2017) with the straight-through trick (Bengio et al. 2013).

HARD_MODES = ("argmax", "sample")


def _check_scores_values(scores, values):
    for name, x in (("scores", scores), ("values", values)):
        _checks.tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., L, size), "
                             f"got shape {tuple(x.shape)}")
    if scores.dtype != values.dtype:
        raise TypeError(f"scores and values must share one dtype, got {scores.dtype} and {values.dtype}")
    _checks.same_size("scores", scores, -1, "values", values, -2,
                      "number of keys Lk (scores' last dimension, values' second-to-last)")
    try:
        torch.broadcast_shapes(scores.shape[:-2], values.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch) dimensions of scores and values must broadcast, got shapes "
                         f"{tuple(scores.shape)} and {tuple(values.shape)}") from None


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise in the open interval (0, 1), shaped like ``like``, on its device and in its dtype."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else like.device
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)
    info = torch.finfo(like.dtype)
    return u.clamp(min=info.tiny, max=1 - info.eps)  # log(0) and log(log(1)) would be infinite


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None,
                 uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``g = -log(-log u)`` with ``u ~ Uniform(0, 1)`` (Jang et al. 2017, section 2).

    like: any shape; the noise has its shape, dtype and device. Pass a ``torch.Generator`` to reproduce a
    draw, or the ``uniform`` noise itself (same shape as ``like``, values in (0, 1)), not both.
    """
    _checks.tensor("like", like)
    if generator is not None and uniform is not None:
        raise ValueError("pass either a generator or the uniform noise, not both: with the noise given, "
                         "the generator would be silently ignored")
    if uniform is None:
        uniform = _uniform(like, generator)
    else:
        _checks.tensor("uniform", uniform)
        if uniform.shape != like.shape:
            raise ValueError(f"uniform must have the shape of the logits {tuple(like.shape)}, "
                             f"got {tuple(uniform.shape)}")
    return -torch.log(-torch.log(uniform))


def straight_through(weights: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator (Bengio et al. 2013): one-hot argmax forward, the gradient of ``weights``
    backward.

    weights: (..., Lk), e.g. soft attention weights. Returns ``one_hot + (weights - weights.detach())``:
    its value is exactly the one-hot of the argmax (the bracket is exactly 0), its gradient is that of
    ``weights`` (the identity).
    """
    _checks.tensor("weights", weights)
    one_hot = torch.nn.functional.one_hot(weights.argmax(dim=-1), weights.size(-1)).to(weights.dtype)
    return one_hot + (weights - weights.detach())


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = False,
                   generator: torch.Generator | None = None,
                   uniform: torch.Tensor | None = None) -> torch.Tensor:
    """A Gumbel-softmax (Concrete) sample: ``y = softmax((logits + g) / tau)``, ``g`` Gumbel noise.

    Jang et al. 2017, eq. 2; Maddison et al. 2017 (the Concrete distribution). logits: (..., Lk),
    unnormalised log-probabilities, e.g. attention scores (B, Lq, Lk). Returns weights (..., Lk) that are
    positive and sum to 1 over the last axis. As ``tau -> 0`` the sample becomes the one-hot of
    ``argmax(logits + g)``, which is an exact sample of ``softmax(logits)`` (the Gumbel-max trick, eq. 1);
    a large ``tau`` flattens it towards uniform. The sample is differentiable in the logits, but its mean
    differs from ``softmax(logits)`` for ``tau > 0``: the gradient it gives is biased, less so as tau falls.

    hard: if True, return the one-hot of the sample's argmax forward with the soft sample's gradient
    backward (straight-through Gumbel-softmax, Jang et al. 2017, section 2.2).
    generator: a ``torch.Generator`` to reproduce the noise (``F.gumbel_softmax`` takes none); or pass the
    ``uniform`` noise in (0, 1) directly, shaped like the logits (one or the other, not both).
    """
    _checks.tensor("logits", logits)
    _checks.positive("tau", tau)
    if not isinstance(hard, bool):
        raise TypeError(f"hard must be True or False, got {type(hard).__name__}")
    soft = torch.softmax((logits + gumbel_noise(logits, generator, uniform)) / tau, dim=-1)
    return straight_through(soft) if hard else soft


def hard_attention(scores: torch.Tensor, values: torch.Tensor, mode: str = "argmax",
                   mask: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard attention: each query takes the value of ONE key (Xu et al. 2015, section 4.1).

    ``mode="argmax"`` picks the best-scoring key; ``mode="sample"`` draws key i with probability
    ``softmax(scores)_i`` (the "multinoulli" location variable of Xu et al.), using the Gumbel-max trick
    ``argmax(scores + g)`` (Jang et al. 2017, eq. 1) so that a ``torch.Generator`` reproduces the draw.

    scores: (..., Lq, Lk); values: (..., Lk, Dv); mask: boolean, True = may attend, broadcastable to
    (..., Lq, Lk) (masked keys are never chosen; a row with no key allowed gets zero weights and context).
    Returns context (..., Lq, Dv), the chosen value, and one-hot weights (..., Lq, Lk). The chosen index is
    ``weights.argmax(-1)`` and its log-probability ``(weights * log_softmax(scores)).sum(-1)``.

    The weights are a step function of the scores: no gradient flows back to the scores (train them with
    ``reinforce_loss`` or replace this by ``gumbel_softmax(..., hard=True)``).
    """
    _check_scores_values(scores, values)
    if mode not in HARD_MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in HARD_MODES)}, got {mode!r}")
    filled = scores.detach()  # the choice is not differentiable: say so rather than pretend
    if mask is not None:
        check_mask(mask, scores)
        filled = filled.masked_fill(~mask, torch.finfo(scores.dtype).min)
    if mode == "sample":
        filled = filled + gumbel_noise(filled, generator)
    weights = torch.nn.functional.one_hot(filled.argmax(dim=-1), scores.size(-1)).to(values.dtype)
    if mask is not None:
        weights = weights * mask.any(dim=-1, keepdim=True)  # nothing to attend to: zeros
    return weights @ values, weights  # (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv)


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor,
                   baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """The REINFORCE surrogate loss ``-mean((reward - baseline) * log p(choice))`` (Williams 1992).

    log_probs: (...,) log-probabilities of the choices that were made (differentiable); rewards: the same
    shape (higher is better); baseline: a number or a tensor that broadcasts to the rewards' shape without
    growing it (e.g. one baseline per choice). Returns a scalar whose gradient is the score-function
    estimate of ``-∇ E[reward]``: minimising it raises the expected reward. Rewards and baseline are
    detached: they weight the gradient, they are not differentiated. A baseline leaves the estimate
    unbiased (``E[∇ log p] = 0``) and, near the mean reward, cuts its variance. Only the loss is returned;
    the advantages are ``rewards - baseline``.
    """
    _checks.tensor("log_probs", log_probs)
    _checks.tensor("rewards", rewards)
    if log_probs.shape != rewards.shape:
        raise ValueError(f"log_probs and rewards must have the same shape (one reward per choice), got "
                         f"{tuple(log_probs.shape)} and {tuple(rewards.shape)}")
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.detach()
    else:
        _checks.number("baseline", baseline)
    advantage = (rewards.detach() - baseline).to(log_probs.dtype)
    if advantage.shape != rewards.shape:  # e.g. a (B, 1) baseline against (B,) rewards gives (B, B)
        raise ValueError(f"the baseline must broadcast to the rewards' shape {tuple(rewards.shape)}, but "
                         f"rewards - baseline has shape {tuple(advantage.shape)} (baseline shape "
                         f"{tuple(baseline.shape)})")
    return -(advantage * log_probs).mean()


def update_baseline(baseline: float | torch.Tensor, rewards: torch.Tensor,
                    momentum: float = 0.9) -> torch.Tensor:
    """Moving-average baseline ``b <- momentum * b + (1 - momentum) * mean(rewards)`` (Xu et al. 2015,
    section 4.1, use momentum 0.9). rewards: any shape. Returns a detached 0-dim tensor."""
    _checks.tensor("rewards", rewards)
    _checks.number("momentum", momentum, minimum=0, strict=False)
    if momentum >= 1:
        raise ValueError(f"momentum must be < 1, got {momentum}")
    if not isinstance(baseline, torch.Tensor):
        _checks.number("baseline", baseline)
    return (momentum * baseline + (1 - momentum) * rewards.detach().mean()).detach()
