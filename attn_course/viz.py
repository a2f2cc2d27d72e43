"""Pictures of attention: heatmaps of weight matrices and bar charts of one row of weights.

Every function draws on a matplotlib ``Axes`` you pass (or a new one) and returns it, so notebooks and
widgets compose them freely.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes


def _as_numpy(x, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers (a tensor, array or list), got {type(x).__name__}") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    return arr


def heatmap(weights, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            ax: Axes | None = None, title: str | None = None, xlabel: str = "keys", ylabel: str = "queries",
            cmap: str = "viridis", annotate: bool = False, colorbar: bool = True) -> Axes:
    """Draw an attention matrix. weights: (Lq, Lk), one row per query; returns the Axes."""
    w = _as_numpy(weights, "weights", 2)
    for name, labels, n in (("row_labels", row_labels, w.shape[0]), ("col_labels", col_labels, w.shape[1])):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} labels but weights has {n} along that axis")
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.45 * w.shape[1], 1 + 0.45 * w.shape[0]))
    image = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=max(1e-9, float(w.max())), aspect="auto")
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    if col_labels is not None:
        ax.set_xticks(range(len(col_labels)), labels=list(col_labels))
    if annotate:
        for (i, j), value in np.ndenumerate(w):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value < 0.6 * w.max() else "black")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def weight_bars(weights, labels: Sequence[str] | None = None, ax: Axes | None = None,
                title: str | None = None, color: str = "tab:blue") -> Axes:
    """Bar chart of one row of attention weights. weights: (Lk,); returns the Axes."""
    w = _as_numpy(weights, "weights", 1)
    if labels is not None and len(labels) != len(w):
        raise ValueError(f"labels has {len(labels)} entries but weights has {len(w)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.5))
    ax.bar(range(len(w)), w, color=color)
    ax.set_xticks(range(len(w)), labels=list(labels) if labels is not None else [str(i) for i in range(len(w))])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("weight")
    if title:
        ax.set_title(title)
    return ax
