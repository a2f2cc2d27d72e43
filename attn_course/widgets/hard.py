"""Chapter 4's explorer: Gumbel-softmax samples and their temperature."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from .. import _checks
from ..attention import gumbel_softmax
from ._explorer import Explorer
from ._explorer import slider as _slider

__all__ = ["DEFAULT_LOGITS", "gumbel_softmax_explorer"]

DEFAULT_LOGITS = torch.tensor([1.5, 1.0, 0.3, 0.0, -1.0])
MEAN_OF = 2000  # samples averaged to show E[sample] next to the probabilities


def gumbel_softmax_explorer(logits: torch.Tensor | None = None, tau: float = 1.0, seed: int = 0,
                            hard: bool = False, n_samples: int = 4) -> Explorer:
    """A temperature slider over Gumbel-softmax samples, beside the softmax probabilities they come from.

    logits: (Lk,) scores of Lk keys (default ``DEFAULT_LOGITS``). The noise is fixed by the ``seed``
    slider, so moving the temperature reshapes the same samples: their argmax (the key each would pick)
    stays put. ``hard`` shows the straight-through forward value (one-hot) instead of the soft sample.
    state: ``probs`` (Lk,) softmax of the logits, ``samples`` (n_samples, Lk), ``winners`` (n_samples,)
    argmax of each sample, ``mean`` (Lk,) average of many samples at this temperature, ``tau``, ``hard``.
    """
    logits = DEFAULT_LOGITS if logits is None else logits
    if not (isinstance(logits, torch.Tensor) and logits.dim() == 1 and logits.numel() >= 2
            and logits.is_floating_point()):
        raise ValueError(f"logits must be a 1-D float tensor of at least 2 scores, got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    _checks.positive("tau", tau)
    _checks.positive("n_samples", n_samples, integer=True)
    _checks.number("seed", seed, integer=True, minimum=0, strict=False)
    logits = logits.detach().cpu().float()
    k = logits.numel()
    labels = [f"k{i}" for i in range(k)]
    probs = torch.softmax(logits, dim=-1)

    def draw(fig, tau, seed, hard):
        gen = torch.Generator().manual_seed(seed)
        shown = gumbel_softmax(logits.expand(n_samples, k), tau, hard=hard, generator=gen)  # (n, Lk)
        many = gumbel_softmax(logits.expand(MEAN_OF, k), tau, hard=hard, generator=gen)
        mean = many.mean(dim=0)
        winners = shown.argmax(dim=-1)
        axes = fig.subplots(1, n_samples + 1, sharey=True,
                            gridspec_kw={"width_ratios": [1.6] + [1.0] * n_samples})
        x = np.arange(k)
        axes[0].bar(x, probs.numpy(), color="tab:blue", alpha=0.7, label="softmax(logits)")
        axes[0].plot(x, mean.numpy(), "o", color="tab:red", label=f"mean of {MEAN_OF} samples")
        axes[0].set(title="probabilities", ylim=(0, 1.05), xticks=x, xticklabels=labels, ylabel="weight")
        axes[0].legend(fontsize=7, loc="upper right")
        for i, ax in enumerate(axes[1:]):
            colours = ["tab:orange" if j == int(winners[i]) else "tab:gray" for j in range(k)]
            ax.bar(x, shown[i].numpy(), color=colours)
            ax.set(title=f"sample {i + 1}", xticks=x, xticklabels=labels)
            ax.tick_params(axis="x", labelsize=7)
        kind = "hard (straight-through)" if hard else "soft"
        fig.suptitle(f"Gumbel-softmax samples, τ = {tau:.3g}, {kind}", fontsize=10)
        fig.tight_layout()
        return {"probs": probs, "samples": shown, "winners": winners, "mean": mean, "tau": tau, "hard": hard}

    controls = {
        "tau": _slider("temperature τ", tau, 0.02, 20.0, 0.05, log=True),
        "seed": widgets.IntSlider(value=seed, min=0, max=max(99, seed), description="noise (seed)",
                                  style={"description_width": "initial"}),
        "hard": widgets.Checkbox(value=hard, description="hard: one-hot forward"),
    }
    return Explorer(controls, draw, figsize=(10.0, 2.8))
