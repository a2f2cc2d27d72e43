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
