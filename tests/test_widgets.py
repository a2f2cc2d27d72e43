"""Widgets are driven without a browser: set a control's value, then assert what was drawn.

Every tests/test_widgets*.py module runs twice: in-process with the pinned ipywidgets 8, and
(test_widgets_on_ipywidgets_7, here) in a subprocess with Colab's ipywidgets 7.7.1 first on the path.
"""

import base64
import os
import pathlib
import subprocess
import sys

import ipywidgets
import pytest
import torch

from attn_course import widgets
from attn_course.data import toy_function

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG = b"\x89PNG"


def test_runs_on_the_expected_ipywidgets():
    expected = os.environ.get("EXPECT_IPYWIDGETS")
    if expected:
        assert ipywidgets.__version__ == expected


def test_soft_attention_initial_state_is_drawn():
    ex = widgets.soft_attention_explorer()
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None
    assert ex.image.value[:4] == PNG
    w = ex.state["weights"]
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    expected = float(w @ widgets.DEFAULT_VALUES)
    assert ex.state["context"] == pytest.approx(expected, rel=1e-5)


def test_low_temperature_makes_the_lookup_hard():
    ex = widgets.soft_attention_explorer()
    first_image = ex.image.value
    ex.controls["temperature"].value = 0.05
    assert ex.redraws == 2 and ex.image.value != first_image
    w, scores = ex.state["weights"], ex.state["scores"]
    assert int(scores.argmax()) == ex.state["best"]
    assert float(w.max()) > 0.7


def test_high_temperature_flattens_the_weights():
    ex = widgets.soft_attention_explorer()
    ex.controls["temperature"].value = 20.0
    w = ex.state["weights"]
    assert float(w.max() - w.min()) < 0.1


def test_moving_the_query_moves_the_weight():
    ex = widgets.soft_attention_explorer()
    ex.controls["qx"].value, ex.controls["qy"].value = -2.0, 0.0  # two redraws
    assert ex.redraws == 3
    assert torch.allclose(ex.state["scores"], torch.tensor([-2.0, 0.0]) @ widgets.DEFAULT_KEYS.T)
    assert ex.state["best"] == 4  # the key at (-1, 0)


def test_kernel_width_controls_smoothness():
    ex = widgets.kernel_regression_explorer()
    ex.controls["width"].value = 0.3
    good = ex.state["mse"]
    ex.controls["width"].value = 5.0
    too_wide = ex.state["mse"]
    assert good < too_wide
    assert torch.isclose(ex.state["weights"].sum(), torch.tensor(1.0))


def test_query_slider_moves_the_weights():
    x = torch.linspace(0, 6, 30)
    ex = widgets.kernel_regression_explorer(x, toy_function(x), width=0.2, query=1.0)
    near_one = x[ex.state["weights"].argmax()]
    ex.controls["query"].value = 5.0
    near_five = x[ex.state["weights"].argmax()]
    assert abs(float(near_one) - 1.0) < 0.3 and abs(float(near_five) - 5.0) < 0.3


def test_a_failing_draw_is_shown_not_raised():
    def draw(fig, n):
        if n > 1:
            raise ValueError("n too large")
        fig.subplots().plot([0, n])
        return {"n": n}

    slider = ipywidgets.IntSlider(value=1, min=0, max=3)
    ex = widgets.Explorer({"n": slider}, draw)
    slider.value = 2
    assert isinstance(ex.error, ValueError)
    assert "n too large" in ex.status.value
    assert ex.state == {"n": 1}  # the last good drawing stays
    slider.value = 0
    assert ex.error is None and ex.status.value == "" and ex.state == {"n": 0}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keys": torch.zeros(3, 3)}, r"keys must be a tensor of shape \(Lk, 2\)"),
    ({"values": torch.zeros(4)}, r"values must be a tensor of shape \(5,\)"),
])
def test_soft_attention_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        widgets.soft_attention_explorer(**kwargs)


def test_kernel_regression_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        widgets.kernel_regression_explorer(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="needs at least one control"):
        widgets.Explorer({}, lambda fig: {})


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EXPECT_IPYWIDGETS") is not None, reason="already the ipywidgets 7 run")
def test_widgets_on_ipywidgets_7():
    """Colab runs ipywidgets 7.7.1: run every widget test module again against it (installed by make test)."""
    # make test names the folder it installed ipywidgets 7.7.1 into; the default matches its default VENV
    w7 = pathlib.Path(os.environ.get("ATTN_COURSE_IPYWIDGETS7", ROOT / ".venv" / "ipywidgets7"))
    if not (w7 / "ipywidgets").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{w7} is missing: make test installs ipywidgets 7.7.1 there")
        pytest.skip(f"{w7} is missing; run `make test` to install ipywidgets 7.7.1 for this test")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(w7), str(ROOT)]), EXPECT_IPYWIDGETS="7.7.1",
               MPLBACKEND="Agg")
    modules = sorted(str(path) for path in pathlib.Path(__file__).parent.glob("test_widgets*.py"))
    proc = subprocess.run([sys.executable, "-m", "pytest", *modules, "-q", "-p", "no:nbval", "-p", "no:cacheprovider",
                           "-o", "addopts=", "-W", "ignore::DeprecationWarning"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout


def test_display_bundle_carries_a_png_fallback():
    ex = widgets.soft_attention_explorer()
    if not hasattr(ipywidgets.VBox, "_repr_mimebundle_"):
        pytest.skip("ipywidgets 7 displays through _ipython_display_; no mime bundle to extend")
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"])[:4] == PNG


@pytest.mark.parametrize(("make", "message"), [
    (lambda: widgets.soft_attention_explorer(query=(1.0,)), r"query must be a point \(x, y\)"),
    (lambda: widgets.soft_attention_explorer(temperature=0), "temperature must be > 0"),
    (lambda: widgets.kernel_regression_explorer(width=-1), "width must be > 0"),
])
def test_explorer_settings_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()
