"""The grading engine's judgement, on small exercises built here (not registered): which mistake it blames,
how it reports outputs in the wrong order, exceptions it recognises, and the gradient check."""

import torch

from attn_course.exercises import Case, Exercise, Mistake
from attn_course.exercises._grader import grade


def _softmax_rows(scores):
    return torch.softmax(scores, dim=-1)


def _cases(gen):
    return [
        Case("random", (torch.randn(3, 5, generator=gen),)),
        Case("large scores", (1000.0 + torch.randn(2, 4, generator=gen),)),
    ]


def _exp_normalised(dim):
    def variant(scores):
        e = scores.exp()
        return e / e.sum(dim=dim, keepdim=True)
    return variant


SOFTMAX = Exercise(
    id="test-softmax", title="Row softmax", reference=_softmax_rows, cases=_cases, outputs=("weights",),
    mistakes=(
        Mistake("wrong axis", "use dim=-1", _exp_normalised(0)),
        Mistake("overflow", "subtract the maximum", _exp_normalised(-1)),
    ),
)


def test_a_mistake_is_not_blamed_where_the_learner_was_right():
    # Both the learner (right axis, no max subtraction) and the wrong-axis variant give NaN on the large
    # scores; only the overflow mistake is also consistent with the learner being right on random scores.
    result = grade(SOFTMAX, _exp_normalised(-1), seed=0)
    assert result.status == "mistake" and result.mistake == "overflow", str(result)


def test_no_mistake_is_named_when_none_is_consistent():
    only_wrong_axis = Exercise(id="t", title="t", reference=_softmax_rows, cases=_cases, outputs=("w",),
                               mistakes=SOFTMAX.mistakes[:1] + (Mistake("doubled", "no", lambda s: 2 * s),))
    result = grade(only_wrong_axis, _exp_normalised(-1), seed=0)
    assert result.status == "wrong" and "NaN" in str(result), str(result)


def _three(x):
    return x + 1, x * 2, x - 3


THREE = Exercise(id="test-three", title="Three outputs", reference=_three,
                 cases=lambda gen: [Case("random", (torch.randn(4, generator=gen),))],
                 outputs=("a", "b", "c"),
                 mistakes=(Mistake("m1", "h", lambda x: (x, x, x)), Mistake("m2", "h", lambda x: (x, x, -x))))


def test_outputs_in_any_wrong_order_are_named():
    for order in [(1, 0, 2), (0, 2, 1), (2, 0, 1), (2, 1, 0)]:
        def shuffled(x, order=order):
            out = _three(x)
            return tuple(out[i] for i in order)

        result = grade(THREE, shuffled, seed=0)
        named = ", ".join("abc"[i] for i in order)
        assert f"the results are in the wrong order: return (a, b, c), not ({named})" in str(result), str(result)


def _fill_reference(scores, mask):
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1)


FILL = Exercise(
    id="test-fill", title="Masked softmax", reference=_fill_reference,
    cases=lambda gen: [Case("float16", (torch.randn(2, 3, generator=gen).half(),
                                        torch.tensor([[True, False, True], [True, True, False]])))],
    outputs=("weights",), rtol=2e-3, atol=1e-3,
    error_hints=(("value cannot be converted", "exercise-specific hint"),),
    mistakes=(
        Mistake("-1e9 fill", "use finfo.min", lambda s, m: s.masked_fill(~m, -1e9).softmax(-1)),
        Mistake("mask ignored", "apply it", lambda s, m: s.softmax(-1)),
    ),
)


def test_a_mistake_that_raises_is_named():
    result = grade(FILL, lambda s, m: s.masked_fill(~m, -1e9).softmax(-1), seed=0)
    assert result.status == "mistake" and result.mistake == "-1e9 fill", str(result)
    assert "raised RuntimeError" in str(result)


def test_an_unrecognised_exception_gets_the_exercise_hint_first():
    def raises(scores, mask):
        raise ValueError("value cannot be converted (a different error)")

    result = grade(FILL, raises, seed=0)
    assert result.status == "error" and "exercise-specific hint" in str(result), str(result)


def _surrogate(log_probs, rewards):
    return -(rewards.detach() * log_probs).mean()


SURROGATE = Exercise(
    id="test-surrogate", title="Surrogate", reference=_surrogate, outputs=("loss",),
    cases=lambda gen: [Case("random", (torch.randn(6, generator=gen), torch.randn(6, generator=gen)))],
    gradients=("log_probs", "rewards"),
    mistakes=(Mistake("sign", "minus", lambda lp, r: (r * lp).mean()),
              Mistake("sum", "mean", lambda lp, r: -(r * lp).sum())),
)


def test_gradient_check_passes_the_reference_and_an_equivalent():
    assert grade(SURROGATE, _surrogate, seed=0).passed
    assert grade(SURROGATE, lambda lp, r: -(lp * r.detach()).sum() / lp.numel(), seed=0).passed


def test_gradient_check_names_an_input_that_should_be_constant():
    result = grade(SURROGATE, lambda lp, r: -(r * lp).mean(), seed=0)
    assert result.status == "wrong" and "a gradient reaches `rewards`" in str(result), str(result)


def test_gradient_check_finds_a_result_cut_from_the_graph():
    result = grade(SURROGATE, lambda lp, r: torch.tensor(-(r * lp).mean().item()), seed=0)
    assert result.status == "wrong" and "no gradient flows back" in str(result), str(result)


def test_gradient_check_finds_a_detached_input():
    def half_detached(lp, r):
        return -(r.detach() * lp.detach()).mean() + 0 * lp.sum()  # on the graph, but no gradient to lp
    result = grade(SURROGATE, half_detached, seed=0)
    assert result.status == "wrong" and "no gradient reaches `log_probs`" in str(result), str(result)


def test_gradient_check_finds_a_wrong_gradient():
    def wrong_gradient(lp, r):
        value = -(r.detach() * lp).mean()
        return value + (lp - lp.detach()).sum()  # same value, different gradient
    result = grade(SURROGATE, wrong_gradient, seed=0)
    assert result.status == "wrong" and "gradient with respect to `log_probs` differs" in str(result)


def test_learner_warnings_are_not_shown(recwarn):
    def warns(scores):
        import warnings
        warnings.warn("noisy", UserWarning, stacklevel=1)
        return torch.softmax(scores, dim=-1)

    assert grade(SOFTMAX, warns, seed=0).passed
    assert not [w for w in recwarn if "noisy" in str(w.message)]


def test_equal_outputs_are_not_a_wrong_order():
    twins = Exercise(id="t2", title="Twins", reference=lambda x: (x + 1, x + 1),
                     cases=lambda gen: [Case("random", (torch.randn(3, generator=gen),))], outputs=("a", "b"),
                     mistakes=(Mistake("m1", "h", lambda x: (x, x)), Mistake("m2", "h", lambda x: (-x, x))))
    assert grade(twins, lambda x: (x + 1, x + 1), seed=0).passed
