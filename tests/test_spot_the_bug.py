"""Chapter 6's references (the fixed layer and the buggy one it replaces) and its graders: each bug of the
tutorial layer is recognised on its own, and independent correct answers pass."""

import pytest
import torch
import torch.nn.functional as F

from attn_course import masking
from attn_course.exercises import check, spot_the_bug
from attn_course.exercises.spot_the_bug import (
    additive_scores,
    attention_weights,
    buggy_attention,
    fixed_attention,
)

SEEDS = [0, 1, 2, 12345]


def _inputs(b=3, t=7, f=5, a=4, dh=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return randn(b, t, f), randn(b, dh), randn(a, f), randn(a, dh), randn(1, a)


# --- the references -----------------------------------------------------------------------------------

def test_weights_sum_to_one_over_time_and_keep_their_shape():
    scores = torch.randn(3, 7, 1, generator=torch.Generator().manual_seed(0))
    weights = attention_weights(scores)
    assert weights.shape == (3, 7, 1)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 1))
    # The course's layout puts the keys last, (B, Lq=1, Lk=T): the same weights.
    torch.testing.assert_close(weights, masking.masked_softmax(scores.transpose(1, 2)).transpose(1, 2))


def test_scores_match_nn_linear_layers_without_bias():
    features, hidden, W1, W2, V = _inputs()
    lin1, lin2, lin_v = (torch.nn.Linear(w.size(1), w.size(0), bias=False) for w in (W1, W2, V))
    with torch.no_grad():
        for lin, w in ((lin1, W1), (lin2, W2), (lin_v, V)):
            lin.weight.copy_(w)
        expected = lin_v(torch.tanh(lin1(features) + lin2(hidden)[:, None, :]))
    torch.testing.assert_close(additive_scores(features, hidden, W1, W2, V), expected)


def test_fixed_layer_is_a_weighted_average_over_time_that_depends_on_the_state():
    features, hidden, W1, W2, V = _inputs()
    context, weights, scores = fixed_attention(features, hidden, W1, W2, V)
    assert context.shape == (3, 5) and weights.shape == scores.shape == (3, 7, 1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 1))
    # attend-style: one query per example, weights (B, 1, T) @ values (B, T, F)
    torch.testing.assert_close(context, (weights.transpose(1, 2) @ features).squeeze(1))
    other, _, _ = fixed_attention(features, hidden + 1.0, W1, W2, V)
    assert (other - context).abs().max() > 1e-3


def test_buggy_layer_gives_weights_of_one_and_ignores_the_state():
    features, hidden, W1, W2, V = _inputs()
    context, weights, scores = buggy_attention(features, hidden, W1, W2, V)
    assert torch.equal(weights, torch.ones_like(weights))
    torch.testing.assert_close(weights.sum(dim=1), torch.full((3, 1), 7.0))
    torch.testing.assert_close(context, features.sum(dim=1))
    other = buggy_attention(features, torch.randn_like(hidden), W1, W2, V)
    for a, b in zip((context, weights, scores), other):
        assert torch.equal(a, b)


def test_buggy_layer_passes_no_gradient_to_its_own_parameters():
    features, hidden, W1, W2, V = (x.requires_grad_() for x in _inputs())
    context, _, _ = buggy_attention(features, hidden, W1, W2, V)
    context.sum().backward()
    assert W2.grad is None and hidden.grad is None       # never used
    assert torch.equal(W1.grad, torch.zeros_like(W1))   # the softmax of one number has slope 0
    assert torch.equal(V.grad, torch.zeros_like(V))


@pytest.mark.parametrize("fn", [fixed_attention, buggy_attention])
def test_dtype_follows_the_inputs(fn):
    outputs = fn(*_inputs(dtype=torch.float64))
    assert all(o.dtype == torch.float64 for o in outputs)


def test_batch_of_one_and_one_time_step():
    context, weights, _ = fixed_attention(*_inputs(b=1, t=1))
    assert context.shape == (1, 5)
    torch.testing.assert_close(weights, torch.ones(1, 1, 1))


# --- bad input --------------------------------------------------------------------------------------

def _replace(index, value):
    args = list(_inputs())
    args[index] = value
    return args


@pytest.mark.parametrize(("args", "error", "match"), [
    (_replace(0, torch.randn(7, 5)), ValueError, "features must have 3 dimensions"),
    (_replace(1, torch.randn(3, 1, 6)), ValueError, "hidden must have 2 dimensions"),
    (_replace(1, torch.randn(2, 6)), ValueError, "same batch size B"),
    (_replace(2, torch.randn(4, 6)), ValueError, "feature size F"),
    (_replace(2, torch.randn(5, 4)), ValueError, "feature size F"),
    (_replace(3, torch.randn(4, 5)), ValueError, "state size Dh"),
    (_replace(3, torch.randn(3, 6)), ValueError, "attention size A"),
    (_replace(4, torch.randn(1, 3)), ValueError, "attention size A"),
    (_replace(4, torch.randn(2, 4)), ValueError, r"V must have shape \(1, A\)"),
    (_replace(1, torch.randn(3, 6, dtype=torch.float64)), TypeError, "share one dtype"),
    (_replace(0, [[1.0]]), TypeError, "features must be a torch.Tensor, got list"),
    (_replace(2, torch.ones(4, 5, dtype=torch.long)), TypeError, "W1 must be a floating-point tensor"),
])
@pytest.mark.parametrize("fn", [additive_scores, fixed_attention, buggy_attention])
def test_bad_layer_input_is_explained(fn, args, error, match):
    with pytest.raises(error, match=match):
        fn(*args)


@pytest.mark.parametrize(("scores", "error", "match"), [
    (torch.randn(3, 7), ValueError, "scores must have 3 dimensions"),
    (torch.randn(3, 1, 7), ValueError, r"shape \(B, T, 1\)"),
    (torch.ones(3, 7, 1, dtype=torch.long), TypeError, "floating-point"),
    ("scores", TypeError, "must be a torch.Tensor"),
])
def test_bad_scores_are_explained(scores, error, match):
    with pytest.raises(error, match=match):
        attention_weights(scores)


# --- the graders: each bug on its own --------------------------------------------------------------

class TutorialLayer(torch.nn.Module):
    """A learner's PyTorch translation of the tutorial layer, written independently of the package,
    with switches for each of the two bugs."""

    def __init__(self, W1, W2, V, use_state, weights_dim):
        super().__init__()
        self.W1, self.W2, self.V = (torch.nn.Linear(w.size(1), w.size(0), bias=False, dtype=w.dtype)
                                    for w in (W1, W2, V))
        with torch.no_grad():
            for lin, w in ((self.W1, W1), (self.W2, W2), (self.V, V)):
                lin.weight.copy_(w)
        self.use_state, self.weights_dim = use_state, weights_dim

    def forward(self, features, hidden):
        hidden_with_time_axis = hidden.unsqueeze(1)
        inside = self.W1(features) + (self.W2(hidden_with_time_axis) if self.use_state else 0)
        score = self.V(torch.tanh(inside))
        attention_weights = torch.softmax(score, dim=self.weights_dim)
        return (attention_weights * features).sum(dim=1), attention_weights, score


def _learner(use_state, weights_dim):
    def fn(features, hidden, W1, W2, V):
        with torch.no_grad():
            return TutorialLayer(W1, W2, V, use_state, weights_dim)(features, hidden)
    return fn


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("use_state", "weights_dim", "mistake"), [
    (False, -1, "both bugs are still there"),
    (True, -1, "the softmax still runs over the size-one axis"),
    (False, 1, "the decoder state is never used"),
    (True, 1, None),
], ids=["both-bugs", "axis-bug-only", "state-bug-only", "fixed"])
def test_the_grader_recognises_each_bug_separately(use_state, weights_dim, mistake, seed):
    result = check("fixed-attention-layer", _learner(use_state, weights_dim), seed=seed)
    if mistake is None:
        assert result.passed, str(result)
    else:
        assert result.status == "mistake" and result.mistake.startswith(mistake), str(result)


def test_the_packaged_buggy_layer_is_named_as_both_bugs():
    result = check("fixed-attention-layer", buggy_attention, seed=0)
    assert result.mistake.startswith("both bugs are still there")


@pytest.mark.parametrize(("exercise_id", "fn", "mistake"), [
    ("attention-weights-axis", lambda s: torch.softmax(s, dim=2), "the softmax ran over the last axis"),
    ("additive-score-with-state", lambda f, h, W1, W2, V: F.linear(torch.tanh(F.linear(f, W1)), V),
     "the decoder state is never used"),
])
def test_the_two_bugs_are_named_in_the_smaller_exercises_too(exercise_id, fn, mistake):
    result = check(exercise_id, fn, seed=0)
    assert result.status == "mistake" and result.mistake.startswith(mistake), str(result)


def _weights_by_hand(scores):
    z = scores - scores.max(dim=1, keepdim=True).values
    return z.exp() / z.exp().sum(dim=1, keepdim=True)


def _scores_with_linear(features, hidden, W1, W2, V):
    return F.linear(torch.tanh(F.linear(features, W1) + F.linear(hidden, W2).unsqueeze(1)), V)


def _scores_with_einsum(features, hidden, W1, W2, V):
    keys = torch.einsum("btf,af->bta", features, W1)
    query = torch.einsum("bh,ah->ba", hidden, W2)
    return torch.einsum("bta,oa->bto", torch.tanh(keys + query[:, None]), V)


def _layer_in_course_layout(features, hidden, W1, W2, V):
    scores = _scores_with_einsum(features, hidden, W1, W2, V)
    weights = masking.masked_softmax(scores.transpose(1, 2))  # (B, Lq=1, Lk=T)
    context = weights @ features                               # (B, 1, F)
    return context.squeeze(1), weights.transpose(1, 2), scores


@pytest.mark.parametrize(("exercise_id", "solution"), [
    ("attention-weights-axis", lambda s: torch.softmax(s, dim=-2)),
    ("attention-weights-axis", _weights_by_hand),
    ("additive-score-with-state", _scores_with_linear),
    ("additive-score-with-state", _scores_with_einsum),
    ("fixed-attention-layer", _layer_in_course_layout),
    ("fixed-attention-layer", _learner(use_state=True, weights_dim=-2)),
])
@pytest.mark.parametrize("seed", SEEDS)
def test_other_correct_solutions_pass(exercise_id, solution, seed):
    result = check(exercise_id, solution, seed=seed)
    assert result.passed, str(result)


def test_every_case_has_distinct_sizes():
    """B, T, F, A and Dh differ within every case, so an axis mix-up shows as a wrong shape."""
    for case in spot_the_bug._layer_cases(torch.Generator().manual_seed(0)):
        features, hidden, W1, _, _ = case.args
        sizes = [features.size(0), features.size(1), features.size(2), W1.size(0), hidden.size(1)]
        assert len(set(sizes)) == len(sizes), case.label
