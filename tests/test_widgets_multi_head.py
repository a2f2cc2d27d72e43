"""The head explorer, driven without a browser: pick a head and an example, assert what was drawn.
Runs on ipywidgets 8 here and on Colab's 7.7.1 through tests/test_widgets.py."""

import ipywidgets
import pytest
import torch

from attn_course import widgets
from attn_course.multihead import MultiHeadAttention

PNG = b"\x89PNG"


def _weights(b=3, h=2, lq=4, lk=4, seed=0):
    scores = torch.randn(b, h, lq, lk, generator=torch.Generator().manual_seed(seed))
    return scores.softmax(dim=-1)


def test_initial_state_is_head_0_of_example_0():
    w = _weights()
    ex = widgets.head_explorer(w, tokens=[list("abcd"), list("efgh"), list("ijkl")])
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None and ex.image.value[:4] == PNG
    assert ex.state["head"] == 0 and ex.state["example"] == 0
    assert torch.equal(ex.state["weights"], w[0, 0])
    assert ex.state["tokens"] == list("abcd") and ex.state["key_tokens"] == list("abcd")
    assert ex.state["focus"] == w[0, 0].argmax(-1).tolist()


def test_picking_a_head_and_an_example_redraws_them():
    w = _weights()
    ex = widgets.head_explorer(w, tokens=torch.arange(12).view(3, 4))
    first_image = ex.image.value
    ex.controls["head"].value = 1
    assert ex.redraws == 2 and ex.image.value != first_image
    assert ex.state["head"] == 1 and torch.equal(ex.state["weights"], w[0, 1])
    ex.controls["example"].value = 2
    assert ex.state["example"] == 2 and torch.equal(ex.state["weights"], w[2, 1])
    assert ex.state["tokens"] == ["8", "9", "10", "11"]


def test_the_average_blurs_the_heads():
    # head 0 looks at key 0, head 1 at the previous position: the average splits the weight in two
    w = torch.zeros(1, 2, 4, 4)
    w[0, 0, :, 0] = 1.0
    w[0, 1, 0, 0] = 1.0
    w[0, 1, 1:, :3] = torch.eye(3)
    ex = widgets.head_explorer(w, head=1)
    assert ex.state["focus"] == [0, 0, 1, 2]
    ex.controls["head"].value = widgets.AVERAGE
    assert ex.state["head"] == widgets.AVERAGE
    assert torch.equal(ex.state["weights"], w[0].mean(0))
    assert float(ex.state["weights"][3].max()) == 0.5
    # one colour scale, 0 to 1, for the large picture and every thumbnail: the average looks paler
    images = [ax.images[0] for ax in ex.figure.axes]
    assert len(images) == 4 and all(image.get_clim() == (0.0, 1.0) for image in images)


def test_works_on_the_package_attention_weights_with_cross_attention_labels():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 4, impl="reference")
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    _, w = mha(query, memory, memory, return_weights=True, average_weights=False)
    ex = widgets.head_explorer(w, tokens=[list("xyz")] * 2, key_tokens=[list("abcde")] * 2, head=3)
    assert ex.state["weights"].shape == (3, 5) and ex.state["key_tokens"] == list("abcde")
    assert torch.allclose(ex.state["weights"].sum(-1), torch.ones(3))
    # a weight tensor that requires grad is drawn, not refused
    assert ex.error is None and len(ex.controls["head"].options) == 5


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"weights": torch.zeros(4, 4)}, ValueError, r"weights must have 4 dimensions, got shape \(4, 4\)"),
    # head-averaged (B, Lq, Lk) weights would be read as B heads: refused, with the way out
    ({"weights": torch.full((3, 4, 4), 0.25)}, ValueError,
     r"every head's weights, \(B, H, Lq, Lk\), got 3 dimensions \(3, 4, 4\).*average_weights=False"),
    ({"tokens": [list("abcd")]}, ValueError, r"tokens must hold one sequence per example \(3\)"),
    ({"tokens": [list("abc")] * 3}, ValueError, "must have 4 tokens"),
    ({"head": 2}, ValueError, "head must be a head number between 0 and 1"),
    ({"head": "avg"}, ValueError, r"or AVERAGE \(widgets.AVERAGE = 'average'\).*got 'avg'"),
    ({"head": 1.0}, ValueError, "head must be a head number"),
    ({"example": 3}, ValueError, "example must be between 0 and 2"),
    ({"head_names": ["only one"]}, ValueError, "head_names must name each of the 2 heads"),
    ({"weights": torch.zeros(1, 2, 3, 3, dtype=torch.long)}, TypeError, "floating-point"),
])
def test_bad_input(kwargs, error, message):
    settings = {"weights": _weights(), **kwargs}
    with pytest.raises(error, match=message):
        widgets.head_explorer(**settings)
