"""The ``Explorer``: controls stacked above a matplotlib picture that redraws live, and the slider helper
every explorer uses. Works on ipywidgets 7.7 (Colab's version) and 8.x."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable

import ipywidgets as widgets
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SLIDER_STYLE = {"description_width": "initial"}


class Explorer(widgets.VBox):
    """Controls stacked above a matplotlib picture; any control's change redraws it.

    draw(figure, **values) draws on a cleared ``Figure`` and returns a dict of what it drew (``state``).
    Attributes: ``controls`` (name -> widget), ``figure``, ``image`` (the PNG shown), ``state``,
    ``redraws`` (how many times it drew), ``error`` (the last drawing error, else None).
    """

    def __init__(self, controls: dict[str, widgets.Widget], draw: Callable[..., dict],
                 figsize: tuple[float, float] = (9.0, 3.2), dpi: int = 100):
        super().__init__()
        if not controls:
            raise ValueError("an Explorer needs at least one control")
        self.controls = dict(controls)
        self._draw = draw
        self.figure = Figure(figsize=figsize, dpi=dpi)  # not managed by pyplot: never shown twice
        FigureCanvasAgg(self.figure)
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()
        self.state: dict = {}
        self.redraws = 0
        self.error: Exception | None = None
        self.children = [widgets.VBox(list(self.controls.values())), self.image, self.status]
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def _repr_mimebundle_(self, **kwargs):
        """ipywidgets 8 display: the live widget, plus its current picture as a PNG for any viewer that
        cannot run widgets (GitHub's preview, a page whose widget scripts did not load)."""
        parent = getattr(super(), "_repr_mimebundle_", None)
        bundle = parent(**kwargs) if parent else None
        if bundle is not None and self.image.value:
            bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle

    @property
    def values(self) -> dict:
        """The current value of every control."""
        return {name: control.value for name, control in self.controls.items()}

    def _on_change(self, _change) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw again with the controls' current values; a failure is shown under the picture, not raised."""
        self.figure.clear()
        try:
            self.state = dict(self._draw(self.figure, **self.values) or {})
            self.error = None
            self.status.value = ""
        except Exception as err:  # a widget callback has nowhere to raise to: say it on screen
            self.error = err
            self.status.value = f"<span style='color:#b00'>Could not draw: {html.escape(str(err))}</span>"
            return
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", bbox_inches="tight")
        self.image.value = buffer.getvalue()
        self.redraws += 1


def slider(description: str, value: float, low: float, high: float, step: float, log: bool = False):
    if log:  # FloatLogSlider's bounds are exponents of 10
        return widgets.FloatLogSlider(value=value, base=10, min=np.log10(low), max=np.log10(high), step=step,
                                      description=description, style=_SLIDER_STYLE, continuous_update=True)
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                               style=_SLIDER_STYLE, continuous_update=True)
