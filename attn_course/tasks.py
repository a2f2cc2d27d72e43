"""Synthetic tasks that isolate one property of a sequence model, and how to score them.

- ``lookback_batch``: "which token came k positions before the question?", with the distance k chosen per
  example, so that accuracy can be measured as a function of distance (chapter 10: a GRU against
  self-attention on long-range dependencies).
- ``accuracy_by_distance``: the fraction of right answers at each distance.

Nothing here downloads anything; every batch comes from a seeded ``torch.Generator``.
Shapes: B batch, L the number of symbols before the question, V the number of classes (symbols).
"""

from __future__ import annotations

import torch

from . import _checks


def lookback_batch(batch_size: int, length: int, num_symbols: int = 8, *,
                   generator: torch.Generator | None = None,
                   device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of the look-back task: ``length`` random symbols, then a question token that asks "which
    symbol came k positions before me?", with k drawn uniformly from 1 .. length for each example.

    Tokens 0 .. num_symbols - 1 are the symbols; token ``num_symbols + k - 1`` is the question for distance
    k, so the vocabulary has ``num_symbols + length`` tokens. The answer is the symbol at position
    ``length - k`` (the question sits at position ``length``).

    Returns tokens (B, length + 1) long, distance (B,) long in 1 .. length, target (B,) long in
    0 .. num_symbols - 1.
    """
    batch_size = _checks.positive("batch_size", batch_size, integer=True)
    length = _checks.positive("length", length, integer=True)
    num_symbols = _checks.positive("num_symbols", num_symbols, integer=True)
    symbols = torch.randint(num_symbols, (batch_size, length), generator=generator)  # (B, L)
    distance = torch.randint(1, length + 1, (batch_size,), generator=generator)      # (B,)
    target = symbols[torch.arange(batch_size), length - distance]                    # (B,)
    question = num_symbols + distance - 1                                            # (B,)
    tokens = torch.cat([symbols, question[:, None]], dim=1)                          # (B, L + 1)
    return tokens.to(device), distance.to(device), target.to(device)


def accuracy_by_distance(logits: torch.Tensor, targets: torch.Tensor, distance: torch.Tensor,
                         max_distance: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fraction of examples answered correctly at each distance 0 .. max_distance, and how many
    examples each fraction is measured on.

    logits: (B, V) float, the model's scores (the answer is their argmax); targets: (B,) integer classes;
    distance: (B,) integers in 0 .. max_distance. Returns (accuracy, count), each (max_distance + 1,) in
    the logits' dtype: entry k of count is the number of examples at distance k, entry k of accuracy the
    fraction of them answered correctly, NaN where count is 0 (an accuracy of 0 would plot as a failure
    that was never measured). The standard error of an accuracy p is sqrt(p (1 - p) / count).
    """
    _checks.tensor("logits", logits, ndim=2)
    _checks.tensor("targets", targets, ndim=1, kind="int")
    _checks.tensor("distance", distance, ndim=1, kind="int")
    max_distance = _checks.number("max_distance", max_distance, integer=True, minimum=0, strict=False)
    _checks.same_size("logits", logits, 0, "targets", targets, 0, "batch size B (first dimension)")
    _checks.same_size("logits", logits, 0, "distance", distance, 0, "batch size B (first dimension)")
    if distance.numel() and (distance.min() < 0 or distance.max() > max_distance):
        raise ValueError(f"distance must lie in 0 .. max_distance = {max_distance}, got values from "
                         f"{int(distance.min())} to {int(distance.max())}")
    correct = (logits.argmax(dim=-1) == targets).to(logits.dtype)           # (B,) 1.0 where right
    bins = max_distance + 1
    right = torch.zeros(bins, dtype=logits.dtype, device=logits.device).index_add_(0, distance, correct)
    total = torch.zeros(bins, dtype=logits.dtype, device=logits.device).index_add_(
        0, distance, torch.ones_like(correct))
    return right / total, total  # 0 / 0 = NaN where no example has that distance
