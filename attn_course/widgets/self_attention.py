"""Chapter 7's explorer: pick a token of a sentence and see its row of self-attention weights, with or
without positional encodings."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import torch
from matplotlib.patches import Rectangle

from .. import _checks, viz
from ..attention import attend
from ..positional import sinusoidal_table
from ._explorer import _SLIDER_STYLE, Explorer

__all__ = ["EXPLORER_SENTENCE", "token_attention_explorer", "toy_self_attention"]

EXPLORER_SENTENCE = "the animal didn't cross the street because it was too tired"
MAX_TOKENS = 16


def _tokens(sentence: str | Sequence[str]) -> list[str]:
    tokens = sentence.split() if isinstance(sentence, str) else list(sentence)
    if not all(isinstance(t, str) and t for t in tokens):
        raise TypeError("sentence must be a string of words or a list of non-empty strings")
    if not 2 <= len(tokens) <= MAX_TOKENS:
        raise ValueError(f"sentence must have between 2 and {MAX_TOKENS} words, got {len(tokens)}")
    return tokens


def toy_self_attention(sentence: str | Sequence[str] = EXPLORER_SENTENCE, positions: bool = False,
                       d_model: int = 16, d_key: int = 8, seed: int = 0) -> torch.Tensor:
    """Self-attention weights (L, L) of an untrained toy model over a sentence of L words.

    Each distinct word gets a random embedding (d_model), the same vector wherever it occurs and in any
    reordering of the sentence; ``positions`` adds the sinusoidal encodings. W_q and W_k (d_model, d_key)
    are random too, all drawn from one generator seeded with ``seed``: the weights show how self-attention
    is wired, not what a trained model has learned. d_model must be even when ``positions`` is True.
    """
    tokens = _tokens(sentence)
    _checks.positive("d_model", d_model, integer=True)
    _checks.positive("d_key", d_key, integer=True)
    _checks.number("seed", seed, integer=True, minimum=0, strict=False)
    gen = torch.Generator().manual_seed(seed)
    vocab = sorted(set(tokens))  # sorted, so a reordered sentence gives its words the same vectors
    table = torch.randn(len(vocab), d_model, generator=gen)  # (V, d_model)
    w_q, w_k = (torch.randn(d_model, d_key, generator=gen) / d_model**0.5 for _ in range(2))
    x = table[torch.tensor([vocab.index(t) for t in tokens])]  # (L, d_model)
    if positions:
        x = x + sinusoidal_table(len(tokens), d_model)
    _, weights = attend(x @ w_q, x @ w_k, x)  # (L, L); the values do not change the weights
    return weights


def token_attention_explorer(sentence: str | Sequence[str] = EXPLORER_SENTENCE, token: int = 7,
                             positions: bool = False, seed: int = 0) -> Explorer:
    """A dropdown to pick a token of the sentence and a toggle for positional encodings; draws that token's
    row of self-attention weights as bars over the words, and the whole (L, L) matrix with the row outlined.

    The model is ``toy_self_attention``'s (random, untrained, seeded). state: ``token`` (its index),
    ``word``, ``tokens``, ``positions``, ``weights`` (L, L) and ``row`` (L,) = weights[token].
    """
    tokens = _tokens(sentence)
    _checks.number("token", token, integer=True, minimum=0, strict=False)
    if token >= len(tokens):
        raise ValueError(f"token must be an index between 0 and {len(tokens) - 1}, got {token}")
    if not isinstance(positions, bool):
        raise TypeError(f"positions must be True or False, got {type(positions).__name__}")
    _checks.number("seed", seed, integer=True, minimum=0, strict=False)
    length = len(tokens)
    tables = {flag: toy_self_attention(tokens, positions=flag, seed=seed) for flag in (False, True)}

    def draw(fig, token, positions):
        weights = tables[positions]
        row = weights[token]
        ax_row, ax_matrix = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
        colours = ["tab:red" if i == token else "tab:blue" for i in range(length)]
        ax_row.bar(range(length), row.numpy(), color=colours)
        ax_row.set_xticks(range(length), labels=tokens, rotation=60, ha="right")
        ax_row.set(ylim=(0, 1.05 * max(0.3, float(row.max()))), ylabel="weight",
                   title=f"row of '{tokens[token]}' (position {token}), "
                         f"{'with' if positions else 'without'} positions")
        viz.heatmap(weights, tokens, tokens, ax=ax_matrix, colorbar=False,
                    title="all rows (queries) over the keys")
        ax_matrix.add_patch(Rectangle((-0.5, token - 0.5), length, 1, fill=False, ec="tab:red", lw=2))
        ax_matrix.tick_params(axis="x", labelrotation=90, labelsize=8)
        ax_matrix.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        return {"token": token, "word": tokens[token], "tokens": tokens, "positions": positions,
                "weights": weights, "row": row}

    controls = {
        "token": widgets.Dropdown(options=[(f"{i}: {w}", i) for i, w in enumerate(tokens)], value=token,
                                  description="token", style=_SLIDER_STYLE),
        "positions": widgets.Checkbox(value=positions, description="with positions (sinusoidal)"),
    }
    return Explorer(controls, draw, figsize=(10.0, 4.2))
