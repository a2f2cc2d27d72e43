"""The grading engine behind ``check``: run a learner's function on fresh random inputs and edge cases,
compare with the package's reference, and say in one line what is wrong.

Order of judgement on each case: did it run (a stub raising ``NotImplementedError`` is "not attempted";
any other exception is reported in one line); did it leave its inputs alone; does the output have the
right structure, type, shape, dtype and device; is it finite; does it match the reference. When it does not
match, the output is compared with every known mistake (a deliberately wrong variant) and the one it
matches is named, with its hint.
"""

from __future__ import annotations

import html
import inspect
import itertools
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Case:
    """One set of inputs. ``label`` names it to the learner ("batch of one", "float64", ...)."""

    label: str
    args: tuple


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: a short ``name``, a ``hint`` saying how to fix it, and one or more ``variants``:
    deliberately wrong implementations with the reference's signature."""

    name: str
    hint: str
    variants: tuple[Callable, ...]

    def __init__(self, name: str, hint: str, *variants: Callable):
        if not variants:
            raise ValueError(f"mistake {name!r} needs at least one variant")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "hint", hint)
        object.__setattr__(self, "variants", tuple(variants))


@dataclass(frozen=True)
class Exercise:
    """An autograded exercise.

    reference: the correct function (from the package). cases(generator) -> list of ``Case``: fresh random
    inputs plus edge cases. outputs: names of the returned values, e.g. ("context", "weights"), or one name.
    diagnose_first: the output whose errors cause the others' (the weights, usually), reported first.
    error_hints: (text, hint) pairs: when the learner's exception message contains ``text``, show ``hint``.
    They come before the general hints (``ERROR_HINTS``), so an exercise can say what is likelier for it.
    gradients: names of arguments whose gradients (of the first output) are checked too, once the outputs
    are right (for exercises about what gradients do: a detached input, a loss built from ``.item()``).
    """

    id: str
    title: str
    reference: Callable
    cases: Callable[[torch.Generator], list[Case]]
    mistakes: tuple[Mistake, ...]
    outputs: tuple[str, ...] = ("output",)
    diagnose_first: str | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    error_hints: tuple[tuple[str, str], ...] = ()
    gradients: tuple[str, ...] = ()

    @property
    def arg_names(self) -> list[str]:
        return list(inspect.signature(self.reference).parameters)


@dataclass
class Result:
    """What ``check`` found. Truthy when passed; shows as HTML in a notebook and as text elsewhere."""

    exercise: str
    title: str
    status: str  # "passed" | "not attempted" | "mistake" | "wrong" | "error"
    message: str
    hint: str | None = None
    mistake: str | None = None
    case: str | None = None
    cases_run: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    @property
    def icon(self) -> str:
        return {"passed": "✅", "not attempted": "⏳"}.get(self.status, "❌")

    def __str__(self) -> str:
        text = f"{self.icon} {self.title}: {self.message}"
        if self.hint:
            text += f"\n   Hint: {self.hint}"
        return text

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = {"passed": "#2e7d32", "not attempted": "#8d6e00"}.get(self.status, "#c62828")
        body = f"{self.icon} <b>{html.escape(self.title)}</b>: {html.escape(self.message)}"
        if self.hint:
            body += f"<br>💡 <i>Hint:</i> {html.escape(self.hint)}"
        return (f'<div class="attn-check attn-check-{self.status.replace(" ", "-")}" '
                f'style="border-left: 4px solid {colour}; padding: 0.4em 0.8em; margin: 0.3em 0;">{body}</div>')


# --- inputs for the cases ------------------------------------------------------------------------------

def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0):
    """Standard normal numbers (times ``scale``) drawn in float64 then cast, so that a case's values do not
    depend on the dtype it is tested in."""
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


# --- comparing outputs ---------------------------------------------------------------------------------

def _clone(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _as_tuple(out, n: int):
    if n == 1:
        return (out,)
    return tuple(out) if isinstance(out, (tuple, list)) else None


def _kind(x) -> str:
    return "None" if x is None else type(x).__name__


def describe_problem(got, expected, names: Sequence[str], rtol: float, atol: float,
                     first: str | None = None) -> str | None:
    """One sentence saying how ``got`` differs from ``expected``; None when they agree.

    ``first`` names the output checked first (the one whose error explains the others')."""
    n = len(names)
    if got is None:
        return "your function returned None. Did you forget the `return` statement?"
    got_items = _as_tuple(got, n)
    if got_items is None or len(got_items) != n:
        count = len(got_items) if got_items is not None else 1
        return f"expected {n} results ({', '.join(names)}), got {count} ({_kind(got)})"
    expected_items = _as_tuple(expected, n)
    if _same(got, expected, n, rtol, atol):
        return None  # right (and two equal outputs would otherwise look like a wrong order)
    for order in itertools.permutations(range(n)):
        if list(order) != sorted(order) and _same(tuple(got_items[i] for i in order), expected, n, rtol, atol):
            returned = [names[order.index(i)] for i in range(n)]
            return (f"the results are in the wrong order: return ({', '.join(names)}), "
                    f"not ({', '.join(returned)})")
    order = sorted(range(n), key=lambda i: names[i] != first)  # `first` first, the rest in order
    # Structure before values: a wrong shape in one result explains "values differ" in another.
    for i in order:
        name, g, e = names[i], got_items[i], expected_items[i]
        label = "" if n == 1 else f"{name}: "
        if not isinstance(g, torch.Tensor):
            return f"{label}expected a torch.Tensor, got {_kind(g)}"
        if g.shape != e.shape:
            return f"{label}expected shape {tuple(e.shape)}, got {tuple(g.shape)}"
        if g.dtype != e.dtype:
            return f"{label}expected dtype {e.dtype} (that of the floating-point inputs), got {g.dtype}"
        if g.device != e.device:
            return f"{label}expected a tensor on {e.device} (the inputs' device), got one on {g.device}"
    for i in order:
        name, g, e = names[i], got_items[i], expected_items[i]
        label = "" if n == 1 else f"{name}: "
        bad = ~torch.isfinite(g) & torch.isfinite(e)
        if bad.any():
            what = "NaN" if torch.isnan(g[bad]).any() else "infinite values"
            return f"{label}the result contains {what} where the reference is finite"
        if not torch.allclose(g.detach(), e, rtol=rtol, atol=atol, equal_nan=True):
            return f"{label}the values differ from the reference"
    return None


def _same(got, other, n: int, rtol: float, atol: float) -> bool:
    """Whether two outputs agree in structure, shape, and values (NaN equal to NaN)."""
    a, b = _as_tuple(got, n), _as_tuple(other, n)
    if a is None or b is None or len(a) != n or len(b) != n:
        return False
    for x, y in zip(a, b):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return False
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
            return False
        if not torch.allclose(x.detach(), y.detach(), rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


# --- grading ---------------------------------------------------------------------------------------

BROADCAST_HINT = ("two tensors' shapes do not line up. When you divide or subtract a sum or max taken over "
                  "an axis, keep that axis with keepdim=True; print the shapes to see which one is off.")
MATMUL_HINT = ("the inner sizes of a matrix product do not match. `x @ W.T` applies a weight W stored as "
               "(out, in), the nn.Linear convention; print the shapes to see which side is off.")
ERROR_HINTS = (("must match the size of tensor", BROADCAST_HINT), ("cannot be multiplied", MATMUL_HINT))


def _error_hint(ex: Exercise, message: str) -> str | None:
    for text, hint in (*ex.error_hints, *ERROR_HINTS):
        if text in message:
            return hint
    return None


def _run(fn: Callable, args: tuple):
    """Call fn on copies of args. Returns (output, exception, names of inputs it changed in place)."""
    copies = _clone(args)
    try:
        # A warning from the learner's code (e.g. `.T` on a 3-D tensor) would repeat once per case and bury
        # the verdict; the learner sees it when running their own function.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*copies)
    except (Exception, SystemExit) as err:  # the learner's code: one line, never a traceback
        return None, err, []
    changed = [i for i, (a, c) in enumerate(zip(args, copies))
               if isinstance(a, torch.Tensor) and (a.shape != c.shape or not torch.equal(a, c))]
    return out, None, changed


def _matching_mistake(ex: Exercise, cases: list[Case], outputs: list, failing: int,
                      expected) -> Mistake | None:
    """The known mistake whose output matches the learner's on the failing case (and on most others).

    A variant only counts where it is really wrong: on the failing case it must differ from the reference,
    or a mistake that happens to coincide with the reference there would take the blame for another error.
    And a mistake shows wherever it can: a variant that is wrong on a case the learner got right is not the
    learner's mistake (two different errors can both give NaN on one case).
    """
    n = len(ex.outputs)
    references = [expected if i == failing else ex.reference(*_clone(case.args)) for i, case in enumerate(cases)]
    learner_right = [_same(got, ref, n, ex.rtol, ex.atol) for got, ref in zip(outputs, references)]
    best, best_score = None, -1
    for mistake in ex.mistakes:
        for variant in mistake.variants:
            score = 0
            for i, (case, got) in enumerate(zip(cases, outputs)):
                wrong, err, _ = _run(variant, case.args)
                same = err is None and got is not None and _same(got, wrong, n, ex.rtol, ex.atol)
                variant_right = err is None and _same(wrong, references[i], n, ex.rtol, ex.atol)
                if (i == failing and (not same or variant_right)) or (learner_right[i] and not variant_right):
                    score = -1
                    break
                score += same
            if score > best_score:
                best, best_score = mistake, score
    return best if best_score >= 0 else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _raising_mistake(ex: Exercise, case: Case, err: BaseException) -> Mistake | None:
    """The known mistake that raises the same exception, with the same message, on this case (e.g. a
    ``masked_fill(-1e9)`` in float16, which torch refuses)."""
    for mistake in ex.mistakes:
        for variant in mistake.variants:
            _, variant_err, _ = _run(variant, case.args)
            if type(variant_err) is type(err) and _first_line(variant_err) == _first_line(err):
                return mistake
    return None


def _gradient_problem(ex: Exercise, fn: Callable, case: Case) -> tuple[str, str] | None:
    """Compare the gradients that reach the arguments named in ``ex.gradients`` (of a fixed random
    projection of the first output) with the reference's. Returns (message, hint) or None."""
    names = ex.arg_names
    watched = [i for i, name in enumerate(names) if name in ex.gradients
               and isinstance(case.args[i], torch.Tensor) and case.args[i].is_floating_point()]

    def gradients(f):
        args = [a.detach().clone().requires_grad_(i in watched) if isinstance(a, torch.Tensor) else a
                for i, a in enumerate(case.args)]
        first = _as_tuple(f(*args), len(ex.outputs))[0]  # the main result: the loss, the context...
        if not (isinstance(first, torch.Tensor) and first.requires_grad):
            return None
        weights = torch.randn(first.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        total = (first * weights.to(first)).sum()
        grads = torch.autograd.grad(total, [args[i] for i in watched], allow_unused=True)
        return [torch.zeros_like(args[i]) if g is None else g for i, g in zip(watched, grads)]

    expected = gradients(ex.reference)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = gradients(fn)
    except (Exception, SystemExit) as err:
        return f"computing gradients through your function raised {type(err).__name__}: {_first_line(err)}", None
    if got is None and expected is not None:
        return ("no gradient flows back through your result",
                "it was cut from the graph: `.item()`, `float(...)`, `torch.tensor(...)` or `.detach()` on the part that "
                "needs a gradient builds a constant")
    for i, g, e in zip(watched, got or (), expected or ()):
        name = names[i]
        if not torch.allclose(g, e, rtol=ex.rtol, atol=ex.atol):
            if bool((e == 0).all()):
                return (f"a gradient reaches `{name}`, which the reference treats as a constant",
                        f"detach it, or what you compute from it (e.g. `({name} - ...).detach()`), so that "
                        "training does not push on it")
            if bool((g == 0).all()):
                return (f"no gradient reaches `{name}`",
                        f"`{name}` was detached (or used through `.item()`); the loss must depend on it")
            return f"the gradient with respect to `{name}` differs from the reference", None
    return None


def grade(ex: Exercise, fn, seed: int | None = None) -> Result:
    """Grade ``fn`` against ``ex`` on fresh random inputs (or on ``seed``'s, to reproduce a run)."""

    def result(status, message, **extra):
        return Result(ex.id, ex.title, status, message, **extra)

    if fn is None:
        return result("error", "you passed None instead of your function. Pass the function itself, "
                               "e.g. check(\"" + ex.id + "\", my_function)")
    if not callable(fn):
        return result("error", f"expected a function, got {_kind(fn)}. Pass the function itself, "
                               "without calling it (no parentheses after its name)")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    cases = ex.cases(torch.Generator().manual_seed(seed))
    outputs, labels = [], []
    for number, case in enumerate(cases):
        out, err, changed = _run(fn, case.args)
        if isinstance(err, NotImplementedError) and number == 0:  # the stub; later, a partial solution
            return result("not attempted", "not attempted yet: replace the `raise NotImplementedError` line "
                                           "with your code, run that cell, then run this one again")
        if err is not None:
            msg = _first_line(err)
            mistake = _raising_mistake(ex, case, err)
            if mistake is not None:
                return result("mistake", f"{mistake.name} (your function raised {type(err).__name__} on the "
                                         f"case '{case.label}')", hint=mistake.hint, mistake=mistake.name,
                              case=case.label)
            hint = _error_hint(ex, msg)
            return result("error", f"your function raised {type(err).__name__}"
                                   f"{': ' + msg if msg else ''} (on the case '{case.label}')",
                          hint=hint, case=case.label)
        if changed:
            names = ", ".join(f"`{ex.arg_names[i]}`" for i in changed)
            return result("wrong", f"your function changed its input {names} in place (on the case "
                                   f"'{case.label}'). Compute a new tensor instead of modifying the argument",
                          hint="operations like `x /= t`, `x.exp_()` or `x[...] = ...` write into the caller's "
                               "tensor; use `x / t`, `x.exp()` instead", case=case.label)
        outputs.append(out)
        labels.append(case.label)
    for i, (case, got) in enumerate(zip(cases, outputs)):
        expected = ex.reference(*_clone(case.args))
        problem = describe_problem(got, expected, ex.outputs, ex.rtol, ex.atol, ex.diagnose_first)
        if problem is None:
            continue
        mistake = _matching_mistake(ex, cases, outputs, i, expected)
        if mistake is not None:
            return result("mistake", f"{mistake.name} (seen on the case '{case.label}')", hint=mistake.hint,
                          mistake=mistake.name, case=case.label, cases_run=labels)
        return result("wrong", f"{problem} (on the case '{case.label}')", case=case.label, cases_run=labels)
    for case in cases if ex.gradients else ():
        problem = _gradient_problem(ex, fn, case)
        if problem is not None:
            message, hint = problem
            return result("wrong", f"{message} (on the case '{case.label}')", hint=hint, case=case.label,
                          cases_run=labels)
    return result("passed", f"correct on all {len(cases)} test cases ({'; '.join(labels)})", cases_run=labels)
