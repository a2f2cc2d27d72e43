"""The graders are tested like any other code: the reference passes, each named mistake is recognised by
name, and every kind of broken submission gets its one-line explanation instead of a traceback."""

import pytest
import torch

from attn_course import exercises
from attn_course.exercises import Result, check

EXERCISES = exercises.all_exercises()
SEEDS = [0, 1, 2, 12345]
MISTAKE_VARIANTS = [
    pytest.param(ex, mistake, variant, id=f"{ex.id}:{mistake.name[:40]}:{i}")
    for ex in EXERCISES for mistake in ex.mistakes for i, variant in enumerate(mistake.variants)
]


def test_registry_is_populated_with_unique_ids():
    ids = [ex.id for ex in EXERCISES]
    assert {"softmax-temperature", "soft-lookup", "kernel-regression"} <= set(ids)
    assert len(ids) == len(set(ids))
    assert all(len(ex.mistakes) >= 2 for ex in EXERCISES)


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.id)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_passes(ex, seed):
    result = check(ex.id, ex.reference, seed=seed)
    assert result.passed, str(result)
    assert result.status == "passed" and result.icon == "✅"


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.id)
def test_fresh_inputs_each_call(ex):
    first = ex.cases(torch.Generator().manual_seed(1))
    second = ex.cases(torch.Generator().manual_seed(2))
    assert not torch.equal(first[0].args[0], second[0].args[0])


@pytest.mark.parametrize(("ex", "mistake", "variant"), MISTAKE_VARIANTS)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_each_mistake_is_named(ex, mistake, variant, seed):
    result = check(ex.id, variant, seed=seed)
    assert not result.passed
    assert result.status == "mistake", str(result)
    assert result.mistake == mistake.name
    assert mistake.hint in str(result)


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.id)
def test_stub_is_not_attempted(ex):
    def stub(*args):
        raise NotImplementedError("your code here")

    result = check(ex.id, stub)
    assert result.status == "not attempted" and not result.passed
    assert "not attempted" in str(result)


def _returns_none(*args):
    pass


def _raises(*args):
    raise IndexError("tuple index out of range")


def _raises_blank(*args):
    raise RuntimeError()


def _nan_like(ex):
    def fn(*args):
        out = ex.reference(*args)
        return tuple(torch.full_like(o, float("nan")) for o in out) if isinstance(out, tuple) else out * float("nan")
    return fn


def _transposed(ex):
    def fn(*args):
        out = ex.reference(*args)
        return tuple(o.transpose(-1, -2) if o.dim() > 1 else o[None] for o in out) \
            if isinstance(out, tuple) else out.transpose(-1, -2)
    return fn


def _as_numpy(ex):
    def fn(*args):
        out = ex.reference(*args)
        return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()
    return fn


def _wrong_dtype(ex):
    def fn(*args):
        out = ex.reference(*args)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
    return fn


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.id)
@pytest.mark.parametrize(("make_fn", "expected"), [
    (lambda ex: _returns_none, "returned None"),
    (lambda ex: _raises, "raised IndexError: tuple index out of range"),
    (lambda ex: _raises_blank, "raised RuntimeError (on the case"),
    (_nan_like, "NaN"),
    (_transposed, "expected shape"),
    (_as_numpy, "expected a torch.Tensor, got ndarray"),
    (_wrong_dtype, "expected dtype torch.float64"),
    (lambda ex: 42, "expected a function, got int"),
    (lambda ex: None, "you passed None"),
], ids=["none", "exception", "blank-exception", "nan", "shape", "numpy", "dtype", "not-callable", "none-fn"])
def test_broken_submissions_get_one_line(ex, make_fn, expected):
    result = check(ex.id, make_fn(ex), seed=3)
    assert not result.passed
    assert expected in str(result)
    assert "Traceback" not in str(result)
    assert str(result).count("\n") <= 1  # the message, and at most one hint line


def test_wrong_number_of_outputs():
    result = check("soft-lookup", lambda q, k, v, t: torch.softmax(q @ k.transpose(-2, -1) / t, -1) @ v, seed=0)
    assert "expected 2 results (context, weights)" in str(result)


def test_in_place_change_of_an_input_is_reported():
    def in_place(scores, temperature):
        scores /= temperature
        return torch.softmax(scores, dim=-1)

    result = check("softmax-temperature", in_place, seed=0)
    assert result.status == "wrong" and "changed its input `scores` in place" in str(result)


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.id)
def test_unknown_mistake_is_reported_generically(ex):
    def slightly_off(*args):
        out = ex.reference(*args)
        return tuple(o + 0.01 for o in out) if isinstance(out, tuple) else out + 0.01

    result = check(ex.id, slightly_off, seed=0)
    assert result.status == "wrong" and "values differ from the reference" in str(result)


def _softmax_by_hand(scores, temperature):
    z = scores / temperature
    z = z - z.max(dim=-1, keepdim=True).values
    e = z.exp()
    return e / e.sum(dim=-1, keepdim=True)


def _lookup_by_hand(query, keys, values, temperature):
    scores = torch.einsum("bqd,bkd->bqk", query, keys) / temperature
    weights = torch.nn.functional.softmax(scores, dim=2)
    return torch.einsum("bqk,bkv->bqv", weights, values), weights


def _pooling_by_hand(queries, keys, values, width):
    rows = []
    for q in queries:
        k = torch.exp(-((q - keys) ** 2) / (2 * width**2) - (-((q - keys) ** 2) / (2 * width**2)).max())
        rows.append(k / k.sum())
    weights = torch.stack(rows)
    return weights @ values, weights


@pytest.mark.parametrize(("exercise_id", "solution"), [
    ("softmax-temperature", _softmax_by_hand),
    ("soft-lookup", _lookup_by_hand),
    ("kernel-regression", _pooling_by_hand),
])
@pytest.mark.parametrize("seed", SEEDS)
def test_other_correct_solutions_pass(exercise_id, solution, seed):
    """A grader that fails a correct answer is a defect: independent correct implementations pass."""
    result = check(exercise_id, solution, seed=seed)
    assert result.passed, str(result)


def test_unknown_exercise_is_a_message_not_a_crash():
    result = check("no-such-exercise", lambda x: x)
    assert result.status == "error" and "softmax-temperature" in str(result)
    with pytest.raises(KeyError, match="no exercise 'nope'"):
        exercises.get("nope")


def test_result_renders_as_html_and_text():
    passed = check("softmax-temperature", _softmax_by_hand, seed=0)
    failed = check("softmax-temperature", lambda s, t: torch.softmax(s * t, -1), seed=0)
    assert "✅" in passed._repr_html_() and "attn-check-passed" in passed._repr_html_()
    assert "❌" in failed._repr_html_() and "Hint:" in failed._repr_html_()
    assert str(failed).startswith("❌ Softmax with a temperature:")
    assert bool(passed) and not bool(failed)


def test_html_escapes_learner_text():
    def nasty(*args):
        raise ValueError("<script>alert(1)</script>")

    html = check("softmax-temperature", nasty)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_registry_rejects_duplicates_and_thin_exercises():
    ex = exercises.get("soft-lookup")
    with pytest.raises(ValueError, match="already registered"):
        exercises.register(ex)
    thin = exercises.Exercise("thin", "Thin", ex.reference, ex.cases, ex.mistakes[:1])
    with pytest.raises(ValueError, match="at least 2 mistakes"):
        exercises.register(thin)


def test_result_type_is_exported():
    assert isinstance(check("soft-lookup", None), Result)


def test_partial_solution_raising_not_implemented_is_an_error_not_a_stub():
    def only_2d(scores, temperature):
        if scores.dim() != 2:
            raise NotImplementedError("only 2-D scores for now")
        return torch.softmax(scores / temperature, dim=-1)

    result = check("softmax-temperature", only_2d, seed=0)
    assert result.status == "error"
    assert "raised NotImplementedError: only 2-D scores for now (on the case 'a batch of rows" in str(result)


def test_swapped_outputs_are_named():
    def swapped(query, keys, values, temperature):
        weights = torch.softmax(query @ keys.transpose(-2, -1) / temperature, dim=-1)
        return weights @ values, weights

    result = check("soft-lookup", lambda *a: tuple(reversed(swapped(*a))), seed=0)
    assert "wrong order: return (context, weights), not (weights, context)" in str(result)


def test_the_weights_are_diagnosed_before_the_context():
    def global_softmax(query, keys, values, temperature):
        scores = query @ keys.transpose(-2, -1) / temperature
        weights = torch.softmax(scores.flatten(), dim=0).view_as(scores)
        return weights @ values, weights

    result = check("soft-lookup", global_softmax, seed=0)
    assert result.status == "wrong" and "weights: the values differ" in str(result)


def test_broadcasting_error_gets_a_keepdim_hint():
    def no_keepdim(scores, temperature):
        e = torch.exp(scores / temperature)
        return e / e.sum(dim=-1)

    result = check("softmax-temperature", no_keepdim, seed=0)
    assert result.status == "error" and "keepdim=True" in str(result)


def test_sys_exit_in_learner_code_does_not_escape():
    def exits(*args):
        raise SystemExit(3)

    result = check("soft-lookup", exits, seed=0)
    assert result.status == "error" and "SystemExit" in str(result)
