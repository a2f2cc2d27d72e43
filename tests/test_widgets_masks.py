"""The mask editor, driven without a browser: set a control's value, then assert on the mask and the
weights it drew. Runs on ipywidgets 8 here and on Colab's 7.7.1 through tests/test_widgets.py."""

import ipywidgets
import pytest
import torch

from attn_course import widgets
from attn_course.masking import causal_mask, masked_softmax, window_mask

PNG = b"\x89PNG"


def test_initial_state_is_a_padding_mask():
    ex = widgets.mask_editor()
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None and ex.image.value[:4] == PNG
    mask, weights = ex.state["mask"], ex.state["weights"]
    assert mask.shape == weights.shape == (8, 8) and mask.dtype == torch.bool
    assert torch.equal(mask, (torch.arange(8) < 5).expand(8, 8))  # 5 real tokens, then PAD, for every query
    assert ex.state["tokens"][3:] == ["sat", "on", "PAD", "PAD", "PAD"]
    assert torch.all(weights[:, 5:] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(8))
    assert ex.state["empty_rows"] == [] and ex.state["allowed"] == 40


def test_weights_are_the_masked_softmax_of_the_fixed_scores():
    ex = widgets.mask_editor()
    ex.controls["causal"].value = True
    torch.testing.assert_close(ex.state["weights"], masked_softmax(ex.state["scores"], ex.state["mask"]))
    scores = ex.state["scores"]
    ex.controls["valid_length"].value = 2
    assert torch.equal(ex.state["scores"], scores)  # the scores stay put; only the mask moves


def test_causal_toggle_hides_the_future():
    ex = widgets.mask_editor(valid_length=8)
    ex.controls["causal"].value = True
    assert ex.redraws == 2
    assert torch.equal(ex.state["mask"], causal_mask(8))
    assert torch.all(ex.state["weights"].triu(1) == 0)
    ex.controls["causal"].value = False
    assert ex.state["mask"].all()


def test_padding_slider_moves_the_mask():
    ex = widgets.mask_editor()
    for valid in (1, 3, 8):
        ex.controls["valid_length"].value = valid
        mask = ex.state["mask"]
        assert mask[:, :valid].all() and not mask[:, valid:].any()
        assert torch.all(ex.state["weights"][:, valid:] == 0)
        assert ex.state["tokens"].count("PAD") == 8 - valid


def test_window_slider_and_its_off_position():
    ex = widgets.mask_editor(valid_length=8)
    ex.controls["window"].value = 2
    assert torch.equal(ex.state["mask"], window_mask(8, window=2))
    assert ex.controls["window"].label == "2"
    ex.controls["causal"].value = True
    assert torch.equal(ex.state["mask"], window_mask(8, window=2, causal=True))
    ex.controls["window"].value = 0
    assert ex.controls["window"].label == "off"
    assert torch.equal(ex.state["mask"], causal_mask(8))


def test_masks_combine_as_and_and_empty_rows_give_zeros_not_nan():
    ex = widgets.mask_editor()
    ex.controls["valid_length"].value = 3
    ex.controls["window"].value = 2
    mask, weights = ex.state["mask"], ex.state["weights"]
    assert torch.equal(mask, (torch.arange(8) < 3).expand(8, 8) & window_mask(8, window=2))
    assert ex.state["empty_rows"] == [4, 5, 6, 7]  # PAD queries whose whole window is PAD
    assert torch.isfinite(weights).all() and torch.all(weights[4:] == 0)
    torch.testing.assert_close(weights[:4].sum(-1), torch.ones(4))
    ex.controls["causal"].value = True  # a causal window of 2 on a PAD query: itself and one PAD before it
    assert ex.state["empty_rows"] == [4, 5, 6, 7] and ex.state["allowed"] == 6  # 1 + 2 + 2 + 1


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"length": 1}, ValueError, "length must be >= 2, got 1"),
    ({"length": 13}, ValueError, "length must be <= 12, got 13"),
    ({"valid_length": 0}, ValueError, "valid_length must be >= 1, got 0"),
    ({"valid_length": 9}, ValueError, "valid_length must be between 1 and length=8, got 9"),
    ({"window": -1}, ValueError, "window must be >= 0, got -1"),
    ({"window": 9}, ValueError, r"window must be between 0 \(off\) and length=8, got 9"),
    ({"window": 1.5}, TypeError, "window must be a whole number, got float"),
    ({"causal": 1}, TypeError, "causal must be True or False, got int"),
])
def test_bad_settings_are_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        widgets.mask_editor(**kwargs)


def test_other_lengths_and_settings():
    ex = widgets.mask_editor(length=12, valid_length=12, causal=True, window=3, seed=1)
    assert ex.error is None and ex.state["mask"].shape == (12, 12)
    assert torch.equal(ex.state["mask"], window_mask(12, window=3, causal=True))
    assert ex.state["tokens"][-1] == "door"
