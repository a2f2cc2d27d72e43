"""Interactive explorers: sliders and toggles above a picture that redraws live.

Works on ipywidgets 7.7 (Colab's version) and 8.x. Every explorer is an ``Explorer`` (an ``ipywidgets.VBox``)
that exposes what it drew, so it can be driven without a browser::

    ex = soft_attention_explorer()
    ex.controls["temperature"].value = 0.1   # redraws at once
    ex.state["weights"]                      # the weights now on screen

The picture is a PNG in an ``ipywidgets.Image``, so the static web book shows the initial state too.
"""

from __future__ import annotations

from ._explorer import Explorer as Explorer
from ._explorer import slider as slider
from .captioning import *  # noqa: F403
from .hard import *  # noqa: F403
from .local import *  # noqa: F403
from .lookup import *  # noqa: F403
from .masks import *  # noqa: F403
from .multi_head import *  # noqa: F403
from .scoring import *  # noqa: F403
from .self_attention import *  # noqa: F403
from .translation import *  # noqa: F403
