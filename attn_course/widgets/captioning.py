"""Chapter 13's explorer: step through the words of a caption and see where the model looked for each."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from ..viz import attention_overlay
from ._explorer import Explorer

__all__ = ["caption_explorer"]

_STYLE = {"description_width": "initial"}


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor or array, got {type(x).__name__}")
    return x.detach().cpu().float()


def caption_explorer(images, captions, weights, boxes=None, grid: int | None = None, scene: int = 0,
                     word: int = 0) -> Explorer:
    """A word slider over a caption: the image with the attention of the chosen word laid over it.

    images: (M, S, S) or (M, 1, S, S), M scenes; captions: M strings, the words the model said; weights:
    (M, L, G·G), row t the attention before word t (the word after the last is "<eos>"); boxes: optional
    (M, K, 4) pixel boxes drawn as outlines. A second slider picks the scene when M > 1.
    state: ``scene``, ``index`` (the word's position), ``word``, ``weights`` (G, G) on screen, ``cell``
    (row, column) of the most-attended cell, ``words`` (the caption's words and <eos>).
    """
    images = _as_tensor(images, "images")
    weights = _as_tensor(weights, "weights")
    if images.dim() == 4:
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"images must be (M, S, S) or (M, 1, S, S), got shape {tuple(images.shape)}")
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    m = images.size(0)
    if len(captions) != m or weights.dim() != 3 or weights.size(0) != m:
        raise ValueError(f"one caption and one (L, G·G) block of weights per image are needed: {m} images, "
                         f"{len(captions)} captions, weights of shape {tuple(weights.shape)}")
    g = grid or int(round(weights.size(2) ** 0.5))
    if g * g != weights.size(2):
        raise ValueError(f"weights must cover a square grid of G·G cells, got {weights.size(2)} cells")
    words_of = [caption.split() + ["<eos>"] for caption in captions]
    longest = max(len(w) for w in words_of)
    if weights.size(1) < longest:
        raise ValueError(f"weights has {weights.size(1)} rows per scene but a caption needs {longest} "
                         "(its words and <eos>)")
    if boxes is not None:
        boxes = torch.as_tensor(boxes)
        if boxes.dim() != 3 or boxes.size(0) != m or boxes.size(2) != 4:
            raise ValueError(f"boxes must be (M, K, 4) pixel boxes, got shape {tuple(boxes.shape)}")
    if not 0 <= scene < m or not 0 <= word < longest:
        raise ValueError(f"scene must be in [0, {m}) and word in [0, {longest}), got {scene} and {word}")

    def draw(fig, scene, word):
        words = words_of[scene]
        index = min(word, len(words) - 1)  # past the end of a shorter caption: its <eos>
        w = weights[scene, index].view(g, g)
        image_ax, text_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.6]})
        attention_overlay(images[scene], w, ax=image_ax, boxes=None if boxes is None else boxes[scene],
                          title=f"before saying '{words[index]}'")
        text_ax.axis("off")
        for i, wd in enumerate(words):
            chosen = i == index
            text_ax.text(0.02 + 0.19 * (i % 5), 0.8 - 0.2 * (i // 5), wd, fontsize=11,
                         fontweight="bold" if chosen else "normal", color="tab:red" if chosen else "black",
                         transform=text_ax.transAxes)
        row, col = divmod(int(w.argmax()), g)
        text_ax.set_title(f"most-attended cell: row {row}, column {col} (weight {float(w.max()):.2f})",
                          fontsize=9)
        return {"scene": scene, "index": index, "word": words[index], "weights": w, "cell": (row, col),
                "words": words}

    controls = {"word": widgets.IntSlider(value=word, min=0, max=longest - 1, description="word",
                                          style=_STYLE, continuous_update=True)}
    if m > 1:
        controls = {"scene": widgets.IntSlider(value=scene, min=0, max=m - 1, description="scene",
                                               style=_STYLE), **controls}
        return Explorer(controls, draw, figsize=(7.5, 3.0))
    return Explorer(controls, lambda fig, word: draw(fig, 0, word), figsize=(7.5, 3.0))
