"""Chapter 5's explorer, driven without a browser: toggle the mode, move the window, assert what was drawn.
(Also re-run against ipywidgets 7.7.1 by tests/test_widgets.py::test_widgets_on_ipywidgets_7.)"""

import math

import ipywidgets
import pytest
import torch

from attn_course import widgets
from attn_course.local import local_p_weights

PNG = b"\x89PNG"


def test_initial_state_is_local_p_with_its_gaussian():
    ex = widgets.local_attention_explorer()
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None and ex.image.value[:4] == PNG
    state = ex.state
    assert state["mode"] == "local-p" and state["centre"] == pytest.approx(8.4)
    assert state["window"].nonzero().flatten().tolist() == [6, 7, 8, 9, 10, 11]  # |s - 8.4| <= 3
    assert torch.all(state["weights"][~state["window"]] == 0)
    torch.testing.assert_close(state["weights"], state["before_gaussian"] * state["gaussian"])
    assert state["total"] < 1
    assert state["gaussian"].argmax() == 8 and state["gaussian"].max() < 1  # p_t = 8.4 is between keys


def test_global_mode_weighs_every_key_and_sums_to_one():
    ex = widgets.local_attention_explorer()
    ex.controls["mode"].value = "global"
    assert ex.redraws == 2 and ex.error is None
    state = ex.state
    assert bool(state["window"].all()) and (state["weights"] > 0).all()
    assert state["total"] == pytest.approx(1.0, abs=1e-6)
    assert state["gaussian"] is None and state["centre"] is None


def test_local_m_rounds_the_centre_and_sums_to_one():
    ex = widgets.local_attention_explorer()
    ex.controls["mode"].value = "local-m"
    ex.controls["centre"].value = 12.6
    state = ex.state
    assert state["centre"] == 13
    assert state["window"].nonzero().flatten().tolist() == list(range(10, 17))  # 2D + 1 = 7 keys
    assert state["total"] == pytest.approx(1.0, abs=1e-6) and state["gaussian"] is None


def test_the_window_slider_changes_the_window_size():
    ex = widgets.local_attention_explorer(mode="local-m", centre=10.0)
    sizes = []
    for half_width in (1, 2, 5):
        ex.controls["half_width"].value = half_width
        sizes.append(int(ex.state["window"].sum()))
    assert sizes == [3, 5, 11]
    ex.controls["centre"].value = 0.0  # cut off at the start of the sentence
    assert ex.state["window"].nonzero().flatten().tolist() == list(range(6))


def test_local_m_allows_d_0_and_local_p_moves_it_up_to_1():
    ex = widgets.local_attention_explorer(mode="local-m", half_width=0, centre=5.0)
    assert ex.error is None and ex.controls["half_width"].min == 0
    assert ex.state["window"].nonzero().flatten().tolist() == [5]  # only the aligned word
    assert ex.state["weights"][5] == pytest.approx(1.0)
    ex.controls["mode"].value = "local-p"  # σ = D/2 must be > 0: the slider's minimum becomes 1
    assert ex.error is None and ex.controls["half_width"].min == 1
    assert ex.controls["half_width"].value == 1 and ex.state["mode"] == "local-p"
    assert ex.state["window"].nonzero().flatten().tolist() == [4, 5, 6]
    ex.controls["mode"].value = "local-m"  # back: D = 0 is allowed again, D stays where it was
    assert ex.controls["half_width"].min == 0 and ex.controls["half_width"].value == 1
    assert "|s − p_t| ≤ D" in ex.controls["half_width"].description


def test_moving_the_centre_moves_the_weights_in_local_p():
    scores = torch.zeros(16)  # equal scores: only the Gaussian decides
    ex = widgets.local_attention_explorer(scores, mode="local-p", half_width=2, centre=3.0)
    assert int(ex.state["weights"].argmax()) == 3
    ex.controls["centre"].value = 11.0
    assert int(ex.state["weights"].argmax()) == 11
    expected = local_p_weights(scores[None], torch.tensor([11.0]), 2)[0]
    torch.testing.assert_close(ex.state["weights"], expected)
    assert ex.state["weights"][13] == pytest.approx(ex.state["weights"][11] * math.exp(-2))


def test_a_wide_window_in_local_m_is_global_attention():
    ex = widgets.local_attention_explorer(mode="local-m", half_width=10, centre=10.0)
    local_weights = ex.state["weights"]
    ex.controls["mode"].value = "global"
    torch.testing.assert_close(local_weights, ex.state["weights"])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"scores": torch.zeros(3, 4)}, ValueError, r"scores must be a 1-D tensor of at least 2 scores"),
    ({"mode": "sliding"}, ValueError, "mode must be one of global, local-m, local-p, got 'sliding'"),
    ({"half_width": 0}, ValueError, "half_width must be >= 1, got 0"),
    ({"half_width": 1.5}, TypeError, "half_width must be a whole number"),
    ({"mode": "local-m", "half_width": -1}, ValueError, "half_width must be >= 0, got -1"),
    ({"centre": 25.0}, ValueError, r"centre must lie between 0 and S = 20, got 25.0"),
])
def test_bad_settings_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        widgets.local_attention_explorer(**kwargs)
