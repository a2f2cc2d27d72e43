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


# --- attention over an image ---------------------------------------------------------------------------

def _grid_weights(weights, name: str = "weights") -> np.ndarray:
    """(G·G,) row by row, or (G, G) -> (G, G)."""
    w = _as_numpy(weights, name, np.ndim(weights))
    if w.ndim == 1:
        g = int(round(np.sqrt(w.size)))
        if g * g != w.size:
            raise ValueError(f"{name} over a square grid needs G·G numbers, got {w.size}")
        w = w.reshape(g, g)  # cell n is row n // G, column n % G
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"{name} must be (G·G,) or (G, G), got shape {w.shape}")
    return w


def attention_overlay(image, weights, ax: Axes | None = None, boxes=None, title: str | None = None,
                      cmap: str = "autumn_r", alpha: float = 0.75, mark_max: bool = True) -> Axes:
    """Draw a grey-level image with attention over its grid of cells on top, and return the Axes.

    image: (S, S) or (1, S, S); weights: (G·G,) row by row (cell n is row n // G, column n % G) or (G, G),
    where S is a multiple of G, or None for the image alone. Each cell's weight colours its whole square,
    unsmoothed (the cells are what the model chooses among), in ``cmap`` with an opacity up to ``alpha``,
    both in proportion to the weight over the largest weight. boxes: optional (K, 4) pixel boxes
    (x0, y0, x1, y1), ends exclusive, drawn as outlines (rows of -1 are skipped). mark_max: outline the
    most-attended cell.
    """
    img = _as_numpy(image, "image", 3 if getattr(image, "ndim", 0) == 3 else 2)
    img = img[0] if img.ndim == 3 else img
    w = None if weights is None else _grid_weights(weights)
    s, g = img.shape[0], (1 if w is None else w.shape[0])
    if img.shape[1] != s or s % g:
        raise ValueError(f"image must be square with a side that is a multiple of the grid ({g}), "
                         f"got {img.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(2.6, 2.6))
    ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, extent=(0, s, s, 0))
    if w is not None:  # colour and opacity both grow with the weight: an unattended cell stays clear
        scaled = w / max(1e-9, float(w.max()))
        rgba = plt.get_cmap(cmap)(scaled)
        rgba[..., 3] = alpha * scaled
        ax.imshow(rgba, extent=(0, s, s, 0), interpolation="nearest")
    if boxes is not None:
        for x0, y0, x1, y1 in _as_numpy(boxes, "boxes", 2).reshape(-1, 4):
            if x0 >= 0:
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="tab:cyan", lw=1))
    if mark_max and w is not None:
        r, c = np.unravel_index(int(w.argmax()), w.shape)
        cell = s // g
        ax.add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False, ec="tab:green", lw=1.5))
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def caption_attention(image, words: Sequence[str], weights, boxes=None, axes=None, ncols: int | None = None):
    """One ``attention_overlay`` per word of a caption: what the model looked at before saying each word.

    image: (S, S); words: the L words; weights: (L, G·G) or (L, G, G), one row per word (extra rows, e.g.
    after <eos>, are ignored if ``words`` is shorter). Returns the array of Axes used.
    """
    w = _as_numpy(weights, "weights", np.ndim(weights))
    words = list(words)
    if not words:
        raise ValueError("words is empty: there is nothing to draw")
    if w.ndim not in (2, 3) or w.shape[0] < len(words):
        raise ValueError(f"weights must have one row per word: {len(words)} words, "
                         f"weights of shape {w.shape}")
    ncols = ncols or len(words)
    if axes is None:
        nrows = -(-len(words) // ncols)
        _, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.9 * nrows), squeeze=False)
    axes = np.asarray(axes).reshape(-1)
    if len(axes) < len(words):
        raise ValueError(f"{len(words)} words need as many axes, got {len(axes)}")
    for ax, word, row in zip(axes, words, w):
        attention_overlay(image, row, ax=ax, boxes=boxes, title=word)
    for ax in axes[len(words):]:
        ax.axis("off")
    return axes
