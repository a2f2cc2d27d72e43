"""Hard attention and its gradient estimators (attn_course.attention): hard_attention, gumbel_noise,
gumbel_softmax, straight_through, reinforce_loss, update_baseline.

The estimators are tested for what they claim: on E_{i ~ softmax(θ)}[f_i], whose gradient is known in closed
form, REINFORCE's mean estimate is unbiased (with or without a baseline) and a baseline cuts its variance;
Gumbel-softmax's mean gradient is the exact gradient of its relaxed objective (computed by quadrature) and
approaches the true gradient as τ falls. Tolerances come from the estimators' standard errors.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from attn_course.attention import (
    gumbel_noise,
    gumbel_softmax,
    hard_attention,
    hard_lookup,
    reinforce_loss,
    straight_through,
    update_baseline,
)
from attn_course.exercises import check

F64 = torch.float64
EULER_GAMMA = 0.5772156649015329


def gen(seed):
    return torch.Generator().manual_seed(seed)


def scores_values(g, batch, lq, lk, dv, dtype=F64):
    return (torch.randn(*batch, lq, lk, generator=g, dtype=dtype),
            torch.randn(*batch, lk, dv, generator=g, dtype=dtype))


def assert_within_standard_errors(samples, expected, z=4.5):
    """Mean of ``samples`` (N, ...) equals ``expected`` within z standard errors, entry by entry."""
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.size(0))
    assert torch.all((mean - expected).abs() <= z * se + 1e-12), (mean, expected, se)


# --- hard attention ---------------------------------------------------------------------------------

SHAPES = [((2,), 3, 6, 4), ((2, 3), 4, 5, 2), ((1,), 1, 9, 3), ((), 5, 5, 5)]


@pytest.mark.parametrize(("batch", "lq", "lk", "dv"), SHAPES)
@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_context_is_the_chosen_value(batch, lq, lk, dv, mode):
    scores, values = scores_values(gen(0), batch, lq, lk, dv)
    context, weights = hard_attention(scores, values, mode=mode, generator=gen(1))
    assert context.shape == (*batch, lq, dv) and weights.shape == (*batch, lq, lk)
    assert weights.dtype == context.dtype == values.dtype
    assert torch.all((weights == 0) | (weights == 1)) and torch.all(weights.sum(-1) == 1)
    index = weights.argmax(-1)
    picked = torch.gather(values.expand(*batch, lk, dv), -2, index[..., None].expand(*index.shape, dv))
    assert torch.equal(context, picked)
    if mode == "argmax":
        assert torch.equal(index, scores.argmax(-1))


def test_argmax_mode_is_the_hard_lookup():
    g = gen(2)
    q, k, v = (torch.randn(3, n, 4, generator=g) for n in (2, 7, 7))
    got = hard_attention(q @ k.transpose(-2, -1), v)
    for a, b in zip(got, hard_lookup(q, k, v)):
        assert torch.equal(a, b)


def test_samples_follow_the_softmax_probabilities():
    """Gumbel-max: argmax(scores + g) is a draw from softmax(scores)."""
    n, scores = 40_000, torch.tensor([1.0, 0.0, -0.5, 2.0, 0.3], dtype=F64)
    values = torch.eye(5, dtype=F64)  # context = the one-hot of the choice
    context, _ = hard_attention(scores.expand(n, 1, 5), values, mode="sample", generator=gen(3))
    assert_within_standard_errors(context[:, 0], torch.softmax(scores, -1))


def test_sampling_is_reproducible_with_a_generator():
    scores, values = scores_values(gen(4), (8,), 3, 6, 2)
    first = hard_attention(scores, values, "sample", generator=gen(5))[1]
    assert torch.equal(first, hard_attention(scores, values, "sample", generator=gen(5))[1])
    assert not torch.equal(first, hard_attention(scores, values, "sample", generator=gen(6))[1])


@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_masked_keys_are_never_chosen_and_empty_rows_give_zeros(mode):
    g = gen(7)
    scores, values = scores_values(g, (200,), 3, 6, 2)
    mask = torch.rand(200, 3, 6, generator=g) < 0.5
    mask[:, 0] = False  # the first query of every example may attend to nothing
    context, weights = hard_attention(scores, values, mode=mode, mask=mask, generator=g)
    assert torch.all(weights[~mask] == 0)
    has_key = mask.any(-1)
    assert torch.all(weights.sum(-1) == has_key.to(F64))
    assert torch.all(context[~has_key] == 0)


def test_no_gradient_reaches_the_scores():
    """The choice is a step function of the scores: backpropagation gives them nothing."""
    scores, values = scores_values(gen(8), (2,), 3, 5, 4)
    scores.requires_grad_(True)
    values.requires_grad_(True)
    context, weights = hard_attention(scores, values)
    assert not weights.requires_grad
    grad_scores, grad_values = torch.autograd.grad(context.sum(), (scores, values), allow_unused=True)
    assert grad_scores is None and grad_values.abs().sum() > 0  # the chosen values do get a gradient


# --- Gumbel noise, Gumbel-softmax, straight-through ----------------------------------------------------

def test_gumbel_noise_has_the_gumbel_mean_and_variance():
    g = gumbel_noise(torch.zeros(200_000, dtype=F64), generator=gen(9))
    assert abs(g.mean().item() - EULER_GAMMA) < 4.5 * g.std().item() / math.sqrt(g.numel())
    assert g.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)


def test_gumbel_noise_from_given_uniform_noise():
    u = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    torch.testing.assert_close(gumbel_noise(u, uniform=u), -torch.log(-torch.log(u)))


@pytest.mark.parametrize("tau", [0.1, 1.0, 7.0])
def test_gumbel_softmax_rows_are_distributions(tau):
    logits = 3 * torch.randn(4, 5, 7, generator=gen(10), dtype=F64)
    y = gumbel_softmax(logits, tau, generator=gen(11))
    assert y.shape == logits.shape and y.dtype == F64 and bool((y >= 0).all())
    torch.testing.assert_close(y.sum(-1), torch.ones(4, 5, dtype=F64))


def test_gumbel_softmax_is_reproducible_and_follows_the_formula():
    logits = torch.randn(3, 6, generator=gen(12), dtype=F64)
    u = torch.rand(3, 6, generator=gen(13), dtype=F64)
    expected = torch.softmax((logits - torch.log(-torch.log(u))) / 0.7, -1)
    torch.testing.assert_close(gumbel_softmax(logits, 0.7, uniform=u), expected)
    assert torch.equal(gumbel_softmax(logits, generator=gen(14)), gumbel_softmax(logits, generator=gen(14)))


def test_gumbel_max_argmax_follows_the_categorical_distribution():
    """The argmax of a Gumbel-softmax sample is a draw from softmax(logits), whatever τ."""
    n, logits = 40_000, torch.tensor([0.5, -1.0, 1.5, 0.0], dtype=F64)
    for tau in (0.3, 3.0):
        y = gumbel_softmax(logits.expand(n, 4), tau, generator=gen(15))
        one_hot = F.one_hot(y.argmax(-1), 4).to(F64)
        assert_within_standard_errors(one_hot, torch.softmax(logits, -1))


def test_low_temperature_gives_the_one_hot_of_the_gumbel_max():
    logits = torch.randn(5, 6, generator=gen(16), dtype=F64)
    u = torch.rand(5, 6, generator=gen(17), dtype=F64)
    y = gumbel_softmax(logits, 1e-3, uniform=u)
    winner = (logits + gumbel_noise(u, uniform=u)).argmax(-1)
    torch.testing.assert_close(y, F.one_hot(winner, 6).to(F64), atol=1e-6, rtol=0)


def test_hard_gumbel_softmax_is_one_hot_forward_with_the_soft_gradient():
    logits = torch.randn(4, 3, 6, generator=gen(18), dtype=F64, requires_grad=True)
    upstream = torch.randn(4, 3, 6, generator=gen(19), dtype=F64)
    soft = gumbel_softmax(logits, 0.5, generator=gen(20))
    hard = gumbel_softmax(logits, 0.5, hard=True, generator=gen(20))  # the same noise
    assert torch.equal(hard, F.one_hot(soft.argmax(-1), 6).to(F64))  # exactly one-hot
    (grad_soft,) = torch.autograd.grad((soft * upstream).sum(), logits)
    (grad_hard,) = torch.autograd.grad((hard * upstream).sum(), logits)
    assert grad_soft.abs().sum() > 0
    torch.testing.assert_close(grad_hard, grad_soft)


def test_straight_through_is_one_hot_forward_and_identity_backward():
    weights = torch.softmax(torch.randn(3, 5, generator=gen(21), dtype=F64), -1).requires_grad_(True)
    upstream = torch.randn(3, 5, generator=gen(22), dtype=F64)
    out = straight_through(weights)
    assert torch.equal(out, F.one_hot(weights.argmax(-1), 5).to(F64))
    (grad,) = torch.autograd.grad((out * upstream).sum(), weights)
    torch.testing.assert_close(grad, upstream)


# --- the estimators, on a toy objective with a known gradient --------------------------------------------
#
# J(θ) = E_{i ~ softmax(θ)}[f_i] = Σ_i p_i f_i, so ∂J/∂θ_j = p_j (f_j - J).

THETA = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], dtype=F64)
F_VALUES = torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0], dtype=F64)  # a large common offset: baselines matter


def exact_gradient(theta=THETA, f=F_VALUES):
    p = torch.softmax(theta, -1)
    return p * (f - p @ f)


def reinforce_estimates(n, baseline, seed):
    """n independent one-sample REINFORCE estimates of ∇J, (n, K)."""
    theta = THETA.repeat(n, 1).requires_grad_(True)  # one copy of θ per estimate
    _, weights = hard_attention(theta[:, None, :], F_VALUES[:, None], mode="sample", generator=gen(seed))
    choice = weights[:, 0]  # (n, K) one-hot
    log_probs = (choice * torch.log_softmax(theta, -1)).sum(-1)
    rewards = choice @ F_VALUES
    (grad,) = torch.autograd.grad(reinforce_loss(log_probs, rewards, baseline) * n, theta)
    return -grad  # the loss is minus the objective


def gumbel_estimates(n, tau, seed, hard=False, theta=THETA, f=F_VALUES):
    theta = theta.repeat(n, 1).requires_grad_(True)
    y = gumbel_softmax(theta, tau, hard=hard, generator=gen(seed))
    (grad,) = torch.autograd.grad((y @ f).sum(), theta)
    return grad


@pytest.mark.parametrize("baseline", [0.0, 11.0, torch.tensor(12.5, dtype=F64)])
def test_reinforce_is_unbiased(baseline):
    assert_within_standard_errors(reinforce_estimates(20_000, baseline, seed=23), exact_gradient())


def test_a_baseline_cuts_the_variance_of_reinforce():
    without = reinforce_estimates(5_000, 0.0, seed=24).var(0).sum()
    mean_reward = float(torch.softmax(THETA, -1) @ F_VALUES)
    with_baseline = reinforce_estimates(5_000, mean_reward, seed=24).var(0).sum()
    assert with_baseline < without / 20


def relaxed_gradient_two_keys(delta, tau, f1, f2):
    """Exact ∂/∂θ_1 of E[f · softmax((θ + g) / τ)] for two keys, θ = (delta, 0), by quadrature.

    With two keys y_1 = σ((delta + L) / τ), L = g_1 - g_2 ~ Logistic(0, 1) with density σ(l) σ(-l)."""
    lgrid = torch.linspace(-60, 60, 400_001, dtype=F64)
    density = torch.sigmoid(lgrid) * torch.sigmoid(-lgrid)
    s = torch.sigmoid((delta + lgrid) / tau)
    integrand = (f1 - f2) / tau * s * (1 - s) * density
    return torch.trapezoid(integrand, lgrid).item()


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_softmax_gradient_is_the_exact_gradient_of_the_relaxed_objective(tau, hard):
    """Pathwise gradients are unbiased for the relaxed objective E[f · y_τ] (and, f being linear,
    straight-through gives the same gradient)."""
    theta, f = torch.tensor([0.7, 0.0], dtype=F64), torch.tensor([1.0, 3.0], dtype=F64)
    grads = gumbel_estimates(20_000, tau, seed=25, hard=hard, theta=theta, f=f)
    exact = relaxed_gradient_two_keys(0.7, tau, 1.0, 3.0)
    assert_within_standard_errors(grads, torch.tensor([exact, -exact], dtype=F64))


def test_gumbel_softmax_gradient_approaches_the_true_gradient_as_tau_falls():
    exact = exact_gradient()
    bias = {}
    for tau in (2.0, 1.0, 0.1):
        grads = gumbel_estimates(20_000, tau, seed=26)
        bias[tau] = (grads.mean(0) - exact).norm().item()
        if tau == 0.1:
            assert_within_standard_errors(grads, exact)  # small τ: the bias is below the noise
    assert bias[2.0] > bias[1.0] > 0.1 > bias[0.1]


# --- the REINFORCE surrogate and the baseline ---------------------------------------------------------

def test_reinforce_loss_value_and_gradient():
    g = gen(27)
    log_probs = torch.log(torch.rand(6, generator=g, dtype=F64)).requires_grad_(True)
    rewards = torch.randn(6, generator=g, dtype=F64, requires_grad=True)
    loss = reinforce_loss(log_probs, rewards, 0.3)
    torch.testing.assert_close(loss, -((rewards - 0.3) * log_probs).mean())
    loss.backward()
    torch.testing.assert_close(log_probs.grad, -(rewards.detach() - 0.3) / 6)
    assert rewards.grad is None  # rewards weight the gradient; they are not differentiated


def test_reinforce_loss_with_a_baseline_per_choice():
    lp, r, b = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.5, -0.5])
    torch.testing.assert_close(reinforce_loss(lp, r, b), torch.tensor(-(0.5 * -1.0 + 0.5 * -2.0) / 2))


def test_update_baseline_is_a_moving_average():
    b = update_baseline(0.0, torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(b, torch.tensor(0.2))
    b = update_baseline(b, torch.tensor([2.0]), momentum=0.5)
    torch.testing.assert_close(b, torch.tensor(1.1))
    assert not b.requires_grad and b.dim() == 0


# --- bad input ---------------------------------------------------------------------------------------

def z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: hard_attention(z(2, 3, 5), z(2, 4, 2)), ValueError,
     "scores and values must have the same number of keys Lk (scores' last dimension, values' second-to-last): "
     "scores has shape (2, 3, 5), values has shape (2, 4, 2)"),
    (lambda: hard_attention(z(2, 3, 5), z(2, 5, 2), mode="soft"), ValueError,
     "mode must be one of 'argmax', 'sample', got 'soft'"),
    (lambda: hard_attention(z(5), z(5, 2)), ValueError,
     "scores must have at least 2 dimensions (..., L, size), got shape (5,)"),
    (lambda: hard_attention(z(3, 5), z(5, 2, dtype=F64)), TypeError,
     "scores and values must share one dtype, got torch.float32 and torch.float64"),
    (lambda: hard_attention(z(2, 3, 5), z(3, 5, 2)), ValueError,
     "the leading (batch) dimensions of scores and values must broadcast"),
    (lambda: hard_attention(z(3, 5, dtype=torch.long), z(5, 2)), TypeError,
     "scores must be a floating-point tensor, got dtype torch.int64"),
    (lambda: hard_attention(z(3, 5), z(5, 2), mask=torch.ones(3, 4, dtype=torch.bool)), ValueError,
     "mask of shape (3, 4) does not broadcast to the scores' shape (3, 5)"),
    (lambda: hard_attention(z(3, 5), z(5, 2), mode="sample", generator=0), TypeError,
     "generator must be a torch.Generator or None, got int"),
    (lambda: gumbel_softmax(z(3, 5), tau=0), ValueError, "tau must be > 0, got 0"),
    (lambda: gumbel_softmax(z(3, 5), tau=-0.5), ValueError, "tau must be > 0, got -0.5"),
    (lambda: gumbel_softmax(z(3, 5), tau=float("nan")), ValueError, "tau must be finite, got nan"),
    (lambda: gumbel_softmax(z(3, 5), tau="1"), TypeError, "tau must be a number, got str"),
    (lambda: gumbel_softmax(z(3, 5), hard="yes"), TypeError, "hard must be True or False, got str"),
    (lambda: gumbel_softmax([1.0, 2.0]), TypeError, "logits must be a torch.Tensor, got list"),
    (lambda: gumbel_softmax(z(3, 5), uniform=z(3, 4)), ValueError,
     "uniform must have the shape of the logits (3, 5), got (3, 4)"),
    (lambda: reinforce_loss(z(4), z(5)), ValueError,
     "log_probs and rewards must have the same shape (one reward per choice), got (4,) and (5,)"),
    (lambda: reinforce_loss(z(4), z(4), baseline="mean"), TypeError, "baseline must be a number, got str"),
    (lambda: reinforce_loss(z(4), z(4), baseline=z(4, 1)), ValueError,
     "the baseline must broadcast to the rewards' shape (4,), but rewards - baseline has shape (4, 4)"),
    (lambda: gumbel_softmax(z(3, 5), generator=gen(0), uniform=z(3, 5) + 0.5), ValueError,
     "pass either a generator or the uniform noise, not both"),
    (lambda: update_baseline(0.0, z(4), momentum=1.0), ValueError, "momentum must be < 1, got 1.0"),
    (lambda: update_baseline(0.0, z(4), momentum=-0.1), ValueError, "momentum must be >= 0, got -0.1"),
])
def test_bad_input_says_what_was_expected(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# --- the exercises' graders: wrong answers that the outputs alone would let through ----------------------

def _advantages(rewards, baseline):
    return rewards - baseline


def _no_detach(log_probs, rewards, baseline):
    advantages = _advantages(rewards, baseline)
    return -(advantages * log_probs).mean(), advantages


def _log_probs_detached(log_probs, rewards, baseline):
    advantages = _advantages(rewards, baseline)
    return -(advantages * log_probs.detach()).mean(), advantages


def _through_item(log_probs, rewards, baseline):
    advantages = _advantages(rewards, baseline)
    loss = torch.tensor(-(advantages * log_probs).mean().item(), dtype=log_probs.dtype)
    return loss, advantages


@pytest.mark.parametrize(("wrong", "message"), [
    (_no_detach, "a gradient reaches `rewards`, which the reference treats as a constant"),
    (_log_probs_detached, "no gradient reaches `log_probs`"),
    (_through_item, "no gradient flows back through your result"),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_exercise_checks_the_gradient(wrong, message, seed):
    result = check("reinforce-surrogate", wrong, seed=seed)
    assert result.status == "wrong" and message in str(result), str(result)


def test_one_hot_without_num_classes_gets_a_hint():
    def no_num_classes(scores, values):
        weights = F.one_hot(scores.argmax(-1)).to(values.dtype)  # max(index) + 1 columns
        return weights @ values, weights

    result = check("hard-attention-argmax", no_num_classes, seed=0)
    assert result.status == "error" and "num_classes=scores.size(-1)" in str(result), str(result)
