"""Chapter 12's translation box: type an English sentence, see the Spanish translation and the attention
that produced it (rows: the Spanish words, columns: the English words)."""

from __future__ import annotations

import html

import ipywidgets as widgets

from .._checks import positive
from ..translate import Translator, plot_alignment
from ._explorer import _SLIDER_STYLE, Explorer

__all__ = ["translation_explorer"]


def translation_explorer(translator: Translator, sentence: str = "I love you", *, beam_size: int = 1) -> Explorer:
    """A text box (translated on Enter, or when it loses focus) and a choice of greedy or beam search
    above the translation and its alignment heatmap.

    Unknown words are translated as ``<unk>`` and named under the picture; an empty or over-long sentence
    gets its one-line reason there instead of a picture. state: ``sentence``, ``source`` and ``target``
    tokens, ``translation`` (text), ``weights`` (Lt, Ls), ``unknown`` words, ``beam_size``.
    """
    if not isinstance(translator, Translator):
        raise TypeError(f"translator must be a translate.Translator, got {type(translator).__name__}")
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a string, got {type(sentence).__name__}")
    positive("beam_size", beam_size, integer=True)
    beams = [("greedy", 1), ("beam search, 4 beams", 4)]
    if beam_size not in dict(beams).values():
        beams.append((f"beam search, {beam_size} beams", beam_size))
    note = widgets.HTML()

    def draw(fig, sentence, beam_size):
        note.value = ""
        result = translator.translate(sentence, beam_size=beam_size, on_unknown="unk")
        ax = fig.subplots()
        plot_alignment(result.weights, result.source, result.target, ax=ax, colorbar=True)
        ax.set_title(f"{sentence.strip()}  →  {result.text}", fontsize=11)
        if result.unknown:
            words = ", ".join(repr(w) for w in result.unknown)
            note.value = (f"<span style='color:#8d6e00'>Unknown to the model (shown as &lt;unk&gt;): "
                          f"{html.escape(words)}. It only knows the {len(translator.src_vocab) - 4} English words "
                          f"of its training sentences.</span>")
        fig.tight_layout()
        return {"sentence": sentence, "source": result.source, "target": result.target,
                "translation": result.text, "weights": result.weights, "unknown": result.unknown,
                "beam_size": beam_size}

    controls = {
        "sentence": widgets.Text(value=sentence, description="English", continuous_update=False,
                                 placeholder="type a sentence, then Enter", style=_SLIDER_STYLE,
                                 layout=widgets.Layout(width="32em")),
        "beam_size": widgets.Dropdown(options=beams, value=beam_size, description="decoding", style=_SLIDER_STYLE),
    }
    explorer = Explorer(controls, draw, figsize=(6.5, 4.0))
    explorer.children = (*explorer.children, note)
    explorer.note = note
    return explorer
