"""Chapter 5's explorer: global, local-m and local-p attention over one query's scores."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from .. import _checks
from ..local import gaussian_window, local_m_weights, local_p_weights, window_around
from ._explorer import _SLIDER_STYLE, Explorer

__all__ = ["LOCAL_MODES", "local_attention_explorer"]

LOCAL_MODES = ("global", "local-m", "local-p")


def _default_scores() -> torch.Tensor:
    """One query's scores over 20 source words, fixed by a seed."""
    return torch.randn(20, generator=torch.Generator().manual_seed(0))


def _weights(scores: torch.Tensor, mode: str, half_width: int, centre: float) -> dict:
    """The weights of one query (S,) in the given mode, and what they were built from."""
    source_len = scores.numel()
    if mode == "global":
        return {"weights": torch.softmax(scores, -1), "window": torch.ones(source_len, dtype=torch.bool),
                "centre": None, "gaussian": None, "before_gaussian": None}
    if mode == "local-m":  # a whole-number position: local-m's p_t = t
        p = torch.tensor([min(int(np.floor(centre + 0.5)), source_len - 1)])
        weights = local_m_weights(scores[None], half_width, p)[0]
        return {"weights": weights, "window": window_around(p, source_len, half_width)[0],
                "centre": float(p), "gaussian": None, "before_gaussian": None}
    p = torch.tensor([float(centre)])
    window = window_around(p, source_len, half_width)[0]
    return {"weights": local_p_weights(scores[None], p, half_width)[0], "window": window,
            "centre": float(centre), "gaussian": gaussian_window(p, source_len, half_width)[0],
            "before_gaussian": torch.softmax(scores.masked_fill(~window, float("-inf")), -1)}


def _lowest_half_width(mode: str) -> int:
    """Local-m allows D = 0 (only the aligned word); local-p needs D >= 1, since σ = D/2."""
    return 1 if mode == "local-p" else 0


def local_attention_explorer(scores: torch.Tensor | None = None, mode: str = "local-p", half_width: int = 3,
                             centre: float = 8.4) -> Explorer:
    """A mode toggle (global / local-m / local-p), a window-size slider (Luong's half-width D) and a centre
    slider (p_t) over one query's scores; draws the scores, the window and the weights.

    scores: (S,) one query's scores over S source words (default: 20 seeded random numbers). In local-m the
    centre is rounded to a whole position and D may be 0 (only the aligned word); in local-p the centre
    stays real, the Gaussian (σ = D/2) is drawn, and D >= 1 (switching to local-p moves D = 0 up to 1).
    state: ``mode``, ``weights`` (S,), ``window`` (S,) boolean (all True for global), ``centre`` (the p_t
    used, None for global), ``gaussian`` and ``before_gaussian`` (S,) for local-p (else None), ``total``
    (the sum of the weights: 1, or less in local-p).
    """
    scores = _default_scores() if scores is None else scores
    if not (isinstance(scores, torch.Tensor) and scores.dim() == 1 and scores.numel() >= 2):
        raise ValueError(f"scores must be a 1-D tensor of at least 2 scores (S,), got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    _checks.tensor("scores", scores)
    if mode not in LOCAL_MODES:
        raise ValueError(f"mode must be one of {', '.join(LOCAL_MODES)}, got {mode!r}")
    source_len = scores.numel()
    lowest = _lowest_half_width(mode)
    _checks.number("half_width", half_width, integer=True, minimum=lowest, strict=False)
    _checks.number("centre", centre)
    if not 0 <= centre <= source_len:
        raise ValueError(f"centre must lie between 0 and S = {source_len}, got {centre}")
    scores = scores.detach().cpu().float()
    positions = np.arange(source_len)

    def draw(fig, mode, half_width, centre):
        drawn = _weights(scores, mode, half_width, centre)
        window = drawn["window"].numpy()
        ax_scores, ax_weights = fig.subplots(1, 2, sharex=True)
        for ax in (ax_scores, ax_weights):
            if mode != "global":  # shade the window [p_t - D, p_t + D], cut at the ends
                first, last = positions[window][[0, -1]]
                ax.axvspan(first - 0.5, last + 0.5, color="tab:orange", alpha=0.15, label="window")
                ax.axvline(drawn["centre"], color="tab:red", lw=1, ls=":", label="p_t")
        ax_scores.bar(positions, scores.numpy(), color=np.where(window, "tab:blue", "lightgray"))
        ax_scores.set(title="scores of one query", xlabel="source position s", ylabel="score")
        if drawn["before_gaussian"] is not None:
            ax_weights.bar(positions, drawn["before_gaussian"].numpy(), fill=False, edgecolor="tab:blue",
                           label="softmax over the window")
            fine = np.linspace(0, source_len - 1, 200)  # the Gaussian as a smooth curve, not just at s
            sigma = half_width / 2
            ax_weights.plot(fine, np.exp(-((fine - drawn["centre"]) ** 2) / (2 * sigma**2)),
                            color="tab:red", lw=1.2, label=f"Gaussian, σ = D/2 = {sigma:g}")
        ax_weights.bar(positions, drawn["weights"].numpy(), color="tab:blue", alpha=0.8, label="weights")
        total = float(drawn["weights"].sum())
        where = "every key" if mode == "global" else f"D = {half_width}, p_t = {drawn['centre']:.4g}"
        ax_weights.set(title=f"{mode}: {where}; weights sum to {total:.2f}", xlabel="source position s",
                       ylabel="weight", ylim=(0, 1.05))
        ax_weights.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        return {**drawn, "mode": mode, "total": total}

    controls = {
        "mode": widgets.ToggleButtons(options=list(LOCAL_MODES), value=mode, description="attention"),
        "half_width": widgets.IntSlider(value=half_width, min=lowest, max=max(10, half_width), step=1,
                                        description="half-width D (window |s − p_t| ≤ D)", style=_SLIDER_STYLE,
                                        continuous_update=True),
        "centre": widgets.FloatSlider(value=centre, min=0.0, max=float(source_len), step=0.1,
                                      description="centre p_t", style=_SLIDER_STYLE, continuous_update=True),
    }

    def follow_mode(change):  # local-p needs D >= 1 (σ = D/2 > 0); raising min moves D = 0 up to 1
        controls["half_width"].min = _lowest_half_width(change["new"])

    # Observed before the Explorer's own redraw, so local-p is never drawn with D = 0.
    controls["mode"].observe(follow_mode, names="value")
    return Explorer(controls, draw, figsize=(10.0, 3.4))
