"""Seeding, device and thread count: the one helper every notebook's setup cell calls.

Notebooks choose the device; the package never does (tensors follow their inputs). Two settings can be
overridden from the environment without editing a notebook:

- ``ATTN_COURSE_DEVICE``: ``cpu``, ``cuda``, ``cuda:1``, ... (default: ``cuda`` when available, else ``cpu``)
- ``ATTN_COURSE_THREADS``: CPU threads for torch (tiny models often run fastest on one thread)
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from . import _checks


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so a notebook prints the same numbers on every run."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be a whole number >= 0, got {seed!r}")
    if not 0 <= seed < 2**32:  # NumPy's limit
        raise ValueError(f"seed must be a whole number >= 0 and < 2**32, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: ``device`` if given, else ``$ATTN_COURSE_DEVICE``, else CUDA when available."""
    choice = device if device is not None else os.environ.get("ATTN_COURSE_DEVICE")
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(choice)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be like 'cpu' or 'cuda', got {choice!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} was asked for, but torch sees no CUDA device on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {choice!r} was asked for, but torch sees only "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def setup(seed: int = 0, device: str | torch.device | None = None, threads: int | None = None) -> torch.device:
    """Prepare a notebook: seed everything, set the thread count and print precision, pick the device.

    Returns the device. Prints one line saying what was chosen, the same on every run on the same machine.
    """
    if threads is None and os.environ.get("ATTN_COURSE_THREADS"):
        raw = os.environ["ATTN_COURSE_THREADS"]
        if not raw.strip().isdigit():
            raise ValueError(f"ATTN_COURSE_THREADS must be a whole number of threads, got {raw!r}")
        threads = int(raw)
    if threads is not None:
        torch.set_num_threads(_checks.positive("threads", threads, integer=True))
    seed_everything(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    dev = pick_device(device)
    print(f"attn_course ready: device={dev.type}, seed={seed}")
    return dev
