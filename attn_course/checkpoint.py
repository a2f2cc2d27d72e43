"""Save and load trained models, with a clear message when a file is missing, corrupt or does not fit.

A checkpoint is one ``torch.save`` file holding a small dictionary:

    {"format": "attn_course-checkpoint", "version": 1, "class": "BahdanauTranslator",
     "config": {...},  "state_dict": {...},  "extra": {...}}

``config`` holds what rebuilds the model (sizes, vocabularies as lists of strings); ``extra`` holds anything else
worth keeping (the step, the loss curve). Everything must be plain Python data or tensors, so the file loads
with ``torch.load(weights_only=True)``: loading a checkpoint never runs code from it.

Writes are atomic (a temporary file, then a rename), so an interrupted save never destroys the previous one.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import torch
from torch import nn

FORMAT = "attn_course-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, from somewhere else, or for a different model."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, config: dict, **extra) -> pathlib.Path:
    """Write ``model``'s weights with the ``config`` that rebuilds it (and any ``extra`` data) to ``path``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict of the settings that rebuild the model, got {type(config).__name__}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "class": type(model).__qualname__, "config": config,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(path: pathlib.Path, map_location) -> dict:
    if not path.is_file():
        where = "it is a directory" if path.is_dir() else "no such file"
        raise CheckpointError(f"cannot load the checkpoint {str(path)!r}: {where}")
    target = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    if target is not None and target.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"cannot load {str(path)!r} onto {target}: this machine has no CUDA device; "
                              f"load with map_location='cpu' (checkpoints hold CPU tensors) and move the model")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load fails in many ways on a bad file (EOFError, IndexError, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointError(f"{str(path)!r} is not a readable checkpoint (truncated, corrupt or not written by "
                              f"torch.save): {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = f"a dict with keys {sorted(payload)[:6]}" if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{str(path)!r} was not written by attn_course.checkpoint.save_checkpoint "
                              f"(it holds {what})")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint format version {payload.get('version')!r}; "
                              f"this package reads version {VERSION}")
    return payload


def _state_mismatch(expected: dict, got: dict) -> str | None:
    """A one-line description of how two state dicts differ, or None if they fit."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in got and got[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} weight(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weight(s), e.g. {', '.join(unexpected[:3])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (file vs model), e.g. {'; '.join(shapes[:3])}")
    return "; ".join(problems) or None


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, *,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint; with ``model``, also load its weights into it (they must fit exactly).

    Returns the payload: ``config`` (to rebuild the model), ``state_dict``, ``extra``, ``class``.
    Raises ``CheckpointError`` naming the problem: no file, an unreadable file, a file from elsewhere, a
    checkpoint of another class, or weights whose names or shapes do not fit ``model``.
    """
    path = pathlib.Path(path)
    payload = _read(path, map_location)
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        saved = payload.get("class")
        if saved != type(model).__qualname__:
            raise CheckpointError(f"{str(path)!r} holds a {saved}, not a {type(model).__qualname__}: "
                                  f"build a {saved} from the checkpoint's config instead")
        problem = _state_mismatch(model.state_dict(), payload["state_dict"])
        if problem:
            raise CheckpointError(f"{str(path)!r} does not fit this {saved}: {problem}. Was the model built with "
                                  f"the same config? The file's config is {payload['config']}")
        model.load_state_dict(payload["state_dict"])
    return payload
