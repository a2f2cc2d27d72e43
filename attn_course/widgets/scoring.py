"""Chapter 2's explorer: the scoring functions side by side on the same query and keys."""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _checks, scoring
from ._explorer import Explorer
from ._explorer import slider as _slider
from .lookup import DEFAULT_KEYS

__all__ = ["SCORE_COLORS", "scoring_explorer"]

SCORE_COLORS = {"dot": "tab:blue", "scaled dot": "tab:cyan", "general": "tab:orange", "additive": "tab:green"}


def _rotation(degrees: float) -> torch.Tensor:
    """The 2-D rotation by ``degrees``: as general's W, a query matches the keys that W turns towards it."""
    t = math.radians(degrees)
    return torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _additive_weights(attn_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed random W_q: (A, 2), W_k: (A, 2), v: (A,) for the additive score.

    W_q and W_k are drawn like an untrained ``AdditiveScore``'s, U(-1/√2, 1/√2); v is drawn from N(0, 1),
    larger than ``AdditiveScore``'s U(-1/√A, 1/√A), so that the additive scores are big enough to compare
    with the others on the chart.
    """
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(2)
    return {"W_q": 2 * bound * torch.rand(attn_size, 2, generator=g) - bound,
            "W_k": 2 * bound * torch.rand(attn_size, 2, generator=g) - bound,
            "v": torch.randn(attn_size, generator=g)}


def _grouped_bars(ax, values: dict[str, np.ndarray], labels, title: str, ylabel: str) -> None:
    width = 0.8 / len(values)
    for n, (name, ys) in enumerate(values.items()):
        xs = np.arange(len(ys)) + (n - (len(values) - 1) / 2) * width
        ax.bar(xs, ys, width=width, color=SCORE_COLORS[name], label=name)
    ax.set_xticks(range(len(labels)), labels=list(labels))
    ax.set(title=title, ylabel=ylabel)


def scoring_explorer(keys: torch.Tensor | None = None, query=(1.0, 0.5), angle: float = 30.0,
                     attn_size: int = 8, seed: int = 0) -> Explorer:
    """Sliders for a 2-D query and for general's W (a rotation); shows the scores and the softmax weights of
    dot, scaled dot, general and additive side by side over the same keys.

    keys: (Lk, 2) points in the plane (default: chapter 1's five keys). General uses ``W = rotation by
    angle``; additive uses fixed random ``W_q, W_k: (attn_size, 2)`` and ``v: (attn_size,)`` drawn from
    ``seed`` (see ``_additive_weights``: v ~ N(0, 1), not AdditiveScore's smaller initialisation). state: ``query`` (2,), ``W`` (2, 2), ``additive`` (its W_q, W_k, v), and per function name
    ``scores`` and ``weights`` (Lk,) and ``best`` (the index of the key with the largest weight).
    """
    if len(query) != 2:
        raise ValueError(f"query must be a point (x, y), got {query!r}")
    _checks.number("angle", angle)
    _checks.positive("attn_size", attn_size, integer=True)
    keys = DEFAULT_KEYS if keys is None else keys
    if not (isinstance(keys, torch.Tensor) and keys.dim() == 2 and keys.size(1) == 2 and keys.size(0) >= 1):
        raise ValueError(f"keys must be a tensor of shape (Lk, 2), got {getattr(keys, 'shape', type(keys))}")
    keys = keys.detach().cpu().float()
    labels = [f"k{i}" for i in range(len(keys))]
    additive = _additive_weights(attn_size, seed)

    def draw(fig, qx, qy, angle):
        q = torch.tensor([[qx, qy]])  # (Lq, D) = (1, 2)
        W = _rotation(angle)
        scores = {
            "dot": scoring.dot_score(q, keys)[0],
            "scaled dot": scoring.scaled_dot_score(q, keys)[0],
            "general": scoring.general_score(q, keys, W)[0],
            "additive": scoring.additive_score(q, keys, additive["W_q"], additive["W_k"], additive["v"])[0],
        }
        weights = {name: torch.softmax(s, dim=-1) for name, s in scores.items()}
        ax_plane, ax_scores, ax_weights = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.3, 1.3]})
        turned = keys @ W.T  # W k_j: general compares the query with the keys turned by W
        for label, (x, y), (tx, ty) in zip(labels, keys.tolist(), turned.tolist()):
            ax_plane.annotate("", xy=(x, y), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
            ax_plane.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax_plane.plot([0, tx], [0, ty], ls=":", color=SCORE_COLORS["general"], lw=1)
        ax_plane.annotate("", xy=(qx, qy), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "tab:red"})
        ax_plane.text(qx, qy, " q", color="tab:red")
        ax_plane.set(xlim=(-3.2, 3.2), ylim=(-3.2, 3.2), aspect="equal",
                     title=f"keys; dotted: W k (turned {angle:+.0f}°)")
        _grouped_bars(ax_scores, {n: s.numpy() for n, s in scores.items()}, labels, "scores", "score")
        ax_scores.axhline(0, color="gray", lw=0.6)
        _grouped_bars(ax_weights, {n: w.numpy() for n, w in weights.items()}, labels,
                      "softmax weights", "weight")
        ax_weights.set_ylim(0, 1.05)
        ax_weights.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        return {"query": q[0], "W": W, "additive": additive, "scores": scores, "weights": weights,
                "best": {name: int(w.argmax()) for name, w in weights.items()}}

    controls = {
        "qx": _slider("query x", query[0], -3.0, 3.0, 0.05),
        "qy": _slider("query y", query[1], -3.0, 3.0, 0.05),
        "angle": _slider("general: W turns keys by (°)", angle, -180.0, 180.0, 5.0),
    }
    return Explorer(controls, draw, figsize=(11.0, 3.4))
