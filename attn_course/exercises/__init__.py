"""Autograded exercises: write a function, then ``check("exercise-id", your_function)``.

The check runs your function on fresh random inputs and edge cases, compares it with the package's
reference and answers ✅ or ❌ with a hint; it recognises the classic mistakes by name. It never shows a
traceback: a stub, an exception, ``None``, NaN or a wrong shape each get a one-line explanation.

Maintainers: every exercise is in the registry (``all_exercises()``), so the tests can prove that each
reference passes and each named mistake is recognised.
"""

from __future__ import annotations

from ._grader import Case, Exercise, Mistake, Result, grade

_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry (ids must be unique)."""
    if exercise.id in _REGISTRY:
        raise ValueError(f"an exercise with id {exercise.id!r} is already registered")
    if len(exercise.mistakes) < 2:
        raise ValueError(f"exercise {exercise.id!r} must name at least 2 mistakes, has {len(exercise.mistakes)}")
    _REGISTRY[exercise.id] = exercise
    return exercise


def all_exercises() -> list[Exercise]:
    """Every registered exercise, in the order they were registered."""
    return list(_REGISTRY.values())


def get(exercise_id: str) -> Exercise:
    """The exercise with this id; a ``KeyError`` listing the known ids otherwise."""
    try:
        return _REGISTRY[exercise_id]
    except KeyError:
        raise KeyError(f"no exercise {exercise_id!r}; known: {', '.join(_REGISTRY)}") from None


def check(exercise_id: str, fn, seed: int | None = None) -> Result:
    """Grade your function ``fn`` for the exercise ``exercise_id``; shows ✅/❌ with a hint.

    Runs on fresh random inputs each time; pass ``seed`` to repeat a particular run.
    """
    if exercise_id not in _REGISTRY:
        return Result(str(exercise_id), str(exercise_id), "error",
                      f"there is no exercise {exercise_id!r}; the known ones are: {', '.join(_REGISTRY)}")
    return grade(_REGISTRY[exercise_id], fn, seed=seed)


# Importing the exercise modules registers their exercises.
from . import (  # noqa: E402,F401
    at_scale,
    captioning,
    cross_causal,
    hard_attention,
    local,
    masks,
    multi_head,
    scoring,
    self_attention,
    soft_lookup,
    spot_the_bug,
    translation,
    why_attention,
)

__all__ = ["Case", "Exercise", "Mistake", "Result", "all_exercises", "check", "get", "register"]
