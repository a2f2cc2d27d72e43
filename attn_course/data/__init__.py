"""Datasets the project generates itself or that ship inside a package: nothing downloads by default.

- ``data.spanish``: the English→Spanish corpus generated from a grammar, with gold word alignments, and a
  loader for the real Tatoeba/Anki ``spa-eng`` files (downloaded only when a Colab user asks for them).
- ``copy_batch``: the copy task (reproduce a random digit string) used to expose the fixed-length
  bottleneck of an RNN encoder-decoder.
- ``toy_regression``: noisy samples of a smooth 1-D function, for attention pooling.
- ``download``: the one place that fetches a file (Tatoeba, MNIST), only when a loader is asked to.
"""

from __future__ import annotations

import math
import os
import pathlib
import urllib.request

import torch

from .. import _checks


def download(url: str, target: str | os.PathLike, timeout: float = 60.0) -> pathlib.Path:
    """Fetch ``url`` to the file ``target`` (its folder is created) and return its path.

    The data goes to ``target.part`` first, renamed when complete, so an interrupted or failed download
    leaves no broken file behind; a failure raises an ``OSError`` that names the address. Callers decide
    whether to download at all: the course never does by default (``spanish.download_tatoeba``,
    ``scenes.load_mnist(download=True)``).
    """
    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (attn_course)"})
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 16):
                out.write(chunk)
        os.replace(partial, target)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(f"could not download {url}: {err}") from err
    return target


PAD, BOS = 0, 1
"""Special tokens of the copy task; the digits 0-9 are tokens 2-11."""
DIGIT_OFFSET = 2


def copy_batch(batch_size: int, length: int, num_symbols: int = 10, generator: torch.Generator | None = None,
               device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of the copy task: the target is the source.

    Returns src (B, L), decoder input (B, L) = BOS followed by the target shifted right, and target (B, L).
    Tokens: ``BOS`` = 1, symbols = 2 ... num_symbols + 1.
    """
    _checks.positive("batch_size", batch_size, integer=True)
    _checks.positive("length", length, integer=True)
    _checks.positive("num_symbols", num_symbols, integer=True)
    src = torch.randint(DIGIT_OFFSET, DIGIT_OFFSET + num_symbols, (batch_size, length), generator=generator)
    bos = torch.full((batch_size, 1), BOS, dtype=src.dtype)
    tgt_in = torch.cat([bos, src[:, :-1]], dim=1)
    return src.to(device), tgt_in.to(device), src.clone().to(device)


def toy_function(x: torch.Tensor) -> torch.Tensor:
    """The smooth function behind ``toy_regression``: sin(2x) + 0.4 x."""
    return torch.sin(2 * x) + 0.4 * x


def toy_regression(n: int = 50, noise: float = 0.3, low: float = 0.0, high: float = 2 * math.pi,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sorted inputs uniform in [low, high) and noisy targets ``toy_function(x) + noise · N(0, 1)``."""
    _checks.positive("n", n, integer=True)
    _checks.number("noise", noise, minimum=0, strict=False)
    _checks.number("low", low)
    _checks.number("high", high)
    if not high > low:
        raise ValueError(f"high must be greater than low, got low={low}, high={high}")
    x, _ = torch.sort(low + (high - low) * torch.rand(n, generator=generator))
    y = toy_function(x) + noise * torch.randn(n, generator=generator)
    return x, y
