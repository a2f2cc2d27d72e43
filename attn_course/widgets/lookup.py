"""Chapter 1's explorers: soft attention with a temperature, and attention pooling (kernel regression)."""

from __future__ import annotations

import numpy as np
import torch

from .. import _checks, viz
from ..attention import soft_lookup
from ..data import toy_function, toy_regression
from ..pooling import kernel_regression
from ._explorer import Explorer
from ._explorer import slider as _slider

__all__ = ["DEFAULT_KEYS", "DEFAULT_VALUES", "kernel_regression_explorer", "soft_attention_explorer"]


DEFAULT_KEYS = torch.tensor([[1.0, 0.0], [0.7, 0.7], [0.0, 1.0], [-0.7, 0.7], [-1.0, 0.0]])
DEFAULT_VALUES = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])


def soft_attention_explorer(keys: torch.Tensor | None = None, values: torch.Tensor | None = None,
                            query=(1.0, 0.5), temperature: float = 1.0) -> Explorer:
    """Sliders for a 2-D query and the temperature; draws the keys, the weights and the weighted average.

    keys: (Lk, 2) points in the plane; values: (Lk,) one number per key. Scores are dot products.
    state: ``scores`` (Lk,), ``weights`` (Lk,), ``context`` (the weighted average), ``best`` (argmax key).
    """
    if len(query) != 2:
        raise ValueError(f"query must be a point (x, y), got {query!r}")
    _checks.positive("temperature", temperature)
    keys = DEFAULT_KEYS if keys is None else keys
    values = DEFAULT_VALUES if values is None else values
    if not (isinstance(keys, torch.Tensor) and keys.dim() == 2 and keys.size(1) == 2):
        raise ValueError(f"keys must be a tensor of shape (Lk, 2), got {getattr(keys, 'shape', type(keys))}")
    if not (isinstance(values, torch.Tensor) and values.shape == keys.shape[:1]):
        raise ValueError(f"values must be a tensor of shape ({keys.size(0)},), got "
                         f"{getattr(values, 'shape', type(values))}")
    keys, values = keys.detach().cpu().float(), values.detach().cpu().float()
    labels = [f"k{i}" for i in range(len(keys))]

    def draw(fig, qx, qy, temperature):
        q = torch.tensor([[qx, qy]])
        context, weights = soft_lookup(q, keys, values[:, None], temperature=temperature)  # (1, 1), (1, Lk)
        w = weights[0]
        kx, ky, vals, size = keys[:, 0].numpy(), keys[:, 1].numpy(), values.numpy(), 40 + 900 * w.numpy()
        ax_keys, ax_weights, ax_values = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.3, 0.8]})
        # keys as arrows from the origin: the dot product measures their angle to the query (and length)
        for label, (x, y) in zip(labels, keys.tolist()):
            ax_keys.annotate("", xy=(x, y), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
            ax_keys.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6))
        ax_keys.scatter(kx, ky, s=size, c="tab:blue", alpha=0.5)
        ax_keys.annotate("", xy=(qx, qy), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "tab:red"})
        ax_keys.text(qx, qy, " q", color="tab:red")
        ax_keys.set(xlim=(-2.2, 2.2), ylim=(-2.2, 2.2), aspect="equal", title="keys (size = weight)")
        viz.weight_bars(w, labels, ax=ax_weights, title=f"weights, T = {temperature:.3g}")
        ax_values.scatter(np.zeros(len(vals)), vals, s=size, c="tab:blue", alpha=0.7)
        for label, value in zip(labels, vals):
            ax_values.annotate(f"{label}: {value:g}", (0, value), textcoords="offset points", xytext=(10, -3),
                               fontsize=8)
        ax_values.axhline(float(context), color="tab:red", lw=2)
        ax_values.text(0.8, float(context), f"output {float(context):.1f}", color="tab:red", va="bottom")
        ax_values.set(xlim=(-0.5, 2.0), xticks=[], title="values and output")
        fig.tight_layout()
        return {"scores": (q @ keys.T)[0], "weights": w, "context": float(context), "best": int(w.argmax())}

    controls = {
        "qx": _slider("query x", query[0], -2.0, 2.0, 0.05),
        "qy": _slider("query y", query[1], -2.0, 2.0, 0.05),
        "temperature": _slider("temperature T", temperature, 0.005, 20.0, 0.05, log=True),
    }
    return Explorer(controls, draw)


def kernel_regression_explorer(x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                               width: float = 0.2, query: float = 3.0) -> Explorer:
    """A kernel-width slider for Nadaraya-Watson attention pooling, and a query position slider.

    x, y: (n,) training inputs and targets (default: ``data.toy_regression`` with a fixed seed).
    state: ``width``, ``estimates`` on a grid, ``grid``, ``weights`` of the chosen query over the keys,
    ``mse`` of the estimate against the true function (the default data's).
    """
    _checks.positive("width", width)
    if x is None or y is None:
        x, y = toy_regression(n=40, generator=torch.Generator().manual_seed(0))
    for name, t in (("x", x), ("y", y)):
        if not (isinstance(t, torch.Tensor) and t.dim() == 1):
            raise ValueError(f"{name} must be a 1-D tensor, got {getattr(t, 'shape', type(t))}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.detach().cpu().float(), y.detach().cpu().float()  # drawing happens on the CPU
    grid = torch.linspace(float(x.min()), float(x.max()), 200)

    def draw(fig, width, query):
        estimates, _ = kernel_regression(grid, x, y, width=width)
        _, query_weights = kernel_regression(torch.tensor([query]), x, y, width=width)
        w = query_weights[0]
        # matplotlib wants NumPy arrays; passing tensors works but warns under NumPy 2
        gx, xs, ys, wn = grid.numpy(), x.numpy(), y.numpy(), w.numpy()
        ax_fit, ax_weights = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
        ax_fit.plot(gx, toy_function(grid).numpy(), "--", color="gray", label="true function")
        ax_fit.scatter(xs, ys, s=12 + 300 * wn, color="tab:blue", alpha=0.6, label="data (size = weight)")
        ax_fit.plot(gx, estimates.numpy(), color="tab:red", label="attention pooling")
        ax_fit.axvline(query, color="tab:red", lw=0.8, ls=":")
        ax_fit.set(title=f"kernel width σ = {width:.2f}", xlabel="x", ylabel="y")
        ax_fit.legend(fontsize=8, loc="upper left")
        ax_weights.bar(xs, wn, width=0.08, color="tab:blue")
        ax_weights.set(title=f"weights of the query x = {query:.2f}", xlabel="key x_i", ylabel="weight")
        fig.tight_layout()
        mse = float(((estimates - toy_function(grid)) ** 2).mean())
        return {"width": width, "grid": grid, "estimates": estimates, "weights": w, "mse": mse}

    controls = {
        "width": _slider("kernel width σ", width, 0.02, 5.0, 0.02, log=True),
        "query": _slider("query x", query, float(x.min()), float(x.max()), 0.05),
    }
    return Explorer(controls, draw, figsize=(9.0, 3.4))
