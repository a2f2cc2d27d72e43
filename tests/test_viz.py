"""Heatmaps and weight bars: they draw what they are given, on the Axes they return."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from attn_course.viz import heatmap, weight_bars  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def weights(*shape, kind="tensor"):
    w = torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), dim=-1)
    return {"tensor": w, "grad": w.clone().requires_grad_(), "bf16": w.bfloat16(), "numpy": w.numpy(),
            "list": w.tolist()}[kind]


def as_array(w):
    return torch.as_tensor(w).detach().float().numpy() if not isinstance(w, np.ndarray) else w


@pytest.mark.parametrize("kind", ["tensor", "grad", "bf16", "numpy", "list"])
def test_heatmap_draws_the_matrix(kind):
    w = weights(3, 5, kind=kind)
    ax = heatmap(w, row_labels=["a", "b", "c"], col_labels=list("vwxyz"), title="t")
    assert isinstance(ax, Axes)
    np.testing.assert_allclose(ax.images[0].get_array(), as_array(w), rtol=1e-6)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("vwxyz")
    assert ax.get_title() == "t" and ax.get_xlabel() == "keys" and ax.get_ylabel() == "queries"


@pytest.mark.parametrize("colorbar", [False, True])
def test_heatmap_on_a_given_axes(colorbar):
    fig, ax = plt.subplots()
    out = heatmap(weights(4, 4), ax=ax, annotate=True, colorbar=colorbar)
    assert out is ax
    assert len(ax.texts) == 16
    assert len(fig.axes) == (2 if colorbar else 1)


@pytest.mark.parametrize("kind", ["tensor", "grad", "numpy", "list"])
def test_weight_bars_draws_one_bar_per_weight(kind):
    w = weights(6, kind=kind)
    ax = weight_bars(w, title="row 0")
    assert isinstance(ax, Axes)
    np.testing.assert_allclose([p.get_height() for p in ax.patches], as_array(w), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(6)]
    assert ax.get_title() == "row 0"


def test_weight_bars_labels_and_given_axes():
    _, ax = plt.subplots()
    out = weight_bars(weights(3, kind="numpy"), labels=["x", "y", "z"], ax=ax)
    assert out is ax
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: heatmap(weights(3, 4), row_labels=["a", "b"]), "row_labels has 2 labels but weights has 3"),
    (lambda: heatmap(weights(3, 4), col_labels=list("abcde")), "col_labels has 5 labels but weights has 4"),
    (lambda: weight_bars(weights(4), labels=["a"]), "labels has 1 entries but weights has 4"),
    (lambda: heatmap(weights(4)), r"weights must have 2 dimension\(s\), got shape \(4,\)"),
    (lambda: heatmap(weights(2, 3, 4, kind="numpy")), r"weights must have 2 dimension\(s\), got shape \(2, 3, 4\)"),
    (lambda: weight_bars(weights(2, 3)), r"weights must have 1 dimension\(s\), got shape \(2, 3\)"),
])
def test_bad_input_is_a_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    assert not plt.get_fignums()  # nothing was drawn before the check


def test_non_numeric_weights_are_a_type_error():
    with pytest.raises(TypeError, match="weights must be numbers"):
        heatmap([["a", "b"]])


# --- attention over an image (chapter 13) ---------------------------------------------------------------

def test_attention_overlay_draws_the_image_and_the_cells():
    from attn_course.viz import attention_overlay

    image = torch.zeros(48, 48)
    image[10:18, 20:26] = 1.0
    w = torch.zeros(64)
    w[1 * 8 + 3] = 1.0  # row 1, column 3
    ax = attention_overlay(image, w, boxes=torch.tensor([[20, 10, 26, 18], [-1, -1, -1, -1]]), title="seven")
    first, overlay = ax.get_images()
    np.testing.assert_array_equal(first.get_array(), image.numpy())
    opacity = np.asarray(overlay.get_array())[..., 3]  # the overlay's opacity follows the weight
    np.testing.assert_allclose(opacity, 0.75 * w.view(8, 8).numpy())  # row by row, no smoothing
    rectangles = [(p.get_x(), p.get_y(), p.get_width()) for p in ax.patches]
    assert (20, 10, 6) in rectangles  # the box (the padding row -1 is skipped)
    assert (18, 6, 6) in rectangles  # the most-attended cell: column 3, row 1, 6 pixels a side
    assert len(rectangles) == 2 and ax.get_title() == "seven"
    alone = attention_overlay(image, None, boxes=torch.tensor([[20, 10, 26, 18]]))
    assert len(alone.get_images()) == 1 and len(alone.patches) == 1  # the image and the box only


def test_caption_attention_one_panel_per_word():
    from attn_course.viz import caption_attention

    weights = torch.softmax(torch.randn(6, 64, generator=torch.Generator().manual_seed(0)), -1)
    axes = caption_attention(torch.rand(1, 48, 48), ["two", "above", "five"], weights, ncols=2)
    assert [ax.get_title() for ax in axes[:3]] == ["two", "above", "five"]
    assert len(axes) == 4 and not axes[3].axison
    opacity = np.asarray(axes[2].get_images()[1].get_array())[..., 3]
    np.testing.assert_allclose(opacity, 0.75 * (weights[2] / weights[2].max()).view(8, 8).numpy(), rtol=1e-5)


@pytest.mark.parametrize(("call", "message"), [
    (lambda f: f["overlay"](torch.rand(48, 48), torch.rand(60)), "needs G·G numbers, got 60"),
    (lambda f: f["overlay"](torch.rand(50, 50), torch.rand(64)), "multiple of the grid"),
    (lambda f: f["overlay"](torch.rand(48, 48), torch.rand(4, 16)), r"must be \(G·G,\) or \(G, G\)"),
    (lambda f: f["caption"](torch.rand(48, 48), ["a", "b"], torch.rand(1, 64)), "one row per word"),
    (lambda f: f["caption"](torch.rand(48, 48), [], torch.rand(1, 64)), "words is empty"),
])
def test_overlay_errors(call, message):
    from attn_course.viz import attention_overlay, caption_attention

    with pytest.raises(ValueError, match=message):
        call({"overlay": attention_overlay, "caption": caption_attention})
