"""Chapter 4's Gumbel-softmax explorer, driven without a browser: set a control's value, assert on state.

Runs under ipywidgets 8 here and under Colab's 7.7.1 through tests/test_widgets.py::test_widgets_on_ipywidgets_7.
"""

import ipywidgets
import pytest
import torch

from attn_course import widgets

PNG = b"\x89PNG"


def test_initial_state_is_drawn():
    ex = widgets.gumbel_softmax_explorer()
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None and ex.image.value[:4] == PNG
    probs, samples = ex.state["probs"], ex.state["samples"]
    torch.testing.assert_close(probs, torch.softmax(widgets.DEFAULT_LOGITS, -1))
    assert samples.shape == (4, 5) and bool((samples > 0).all())
    torch.testing.assert_close(samples.sum(-1), torch.ones(4))
    assert torch.equal(ex.state["winners"], samples.argmax(-1))


def test_temperature_reshapes_the_same_samples():
    ex = widgets.gumbel_softmax_explorer(n_samples=6)
    winners = ex.state["winners"]
    ex.controls["tau"].value = 0.03
    assert ex.redraws == 2 and ex.state["tau"] == pytest.approx(0.03)
    cold = ex.state["samples"]
    assert float(cold.max(-1).values.min()) > 0.9  # nearly one-hot
    assert torch.equal(ex.state["winners"], winners)  # same noise, same winners: τ only sharpens
    ex.controls["tau"].value = 20.0
    hot = ex.state["samples"]
    assert float((hot - 0.2).abs().max()) < 0.1  # nearly uniform
    assert torch.equal(ex.state["winners"], winners)


def test_new_noise_gives_new_samples_and_is_reproducible():
    ex = widgets.gumbel_softmax_explorer()
    first = ex.state["samples"]
    ex.controls["seed"].value = 7
    assert not torch.allclose(ex.state["samples"], first)
    ex.controls["seed"].value = 0
    assert torch.equal(ex.state["samples"], first)


def test_hard_samples_are_one_hot_and_their_mean_follows_the_probabilities():
    ex = widgets.gumbel_softmax_explorer(tau=5.0)
    soft_mean = ex.state["mean"]
    ex.controls["hard"].value = True
    samples, mean, probs = ex.state["samples"], ex.state["mean"], ex.state["probs"]
    assert ex.state["hard"] is True
    assert torch.equal(samples.sum(-1), torch.ones(4)) and bool(((samples == 0) | (samples == 1)).all())
    # Gumbel-max is an exact sample: the frequencies match the probabilities (2000 draws: SE <= 0.011)
    assert float((mean - probs).abs().max()) < 0.05
    # the soft samples at a high temperature are flattened towards uniform: biased
    assert float((soft_mean - probs).abs().max()) > 0.1


def test_custom_logits():
    ex = widgets.gumbel_softmax_explorer(torch.tensor([0.0, 3.0]), tau=0.5, n_samples=2)
    assert ex.state["samples"].shape == (2, 2) and ex.state["probs"].argmax() == 1


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"logits": torch.zeros(2, 3)}, ValueError, r"logits must be a 1-D float tensor of at least 2 scores"),
    ({"logits": torch.tensor([1, 2])}, ValueError, r"logits must be a 1-D float tensor"),
    ({"logits": [1.0, 2.0]}, ValueError, r"got list"),
    ({"tau": 0}, ValueError, r"tau must be > 0, got 0"),
    ({"tau": -1.0}, ValueError, r"tau must be > 0"),
    ({"n_samples": 0}, ValueError, r"n_samples must be > 0"),
    ({"n_samples": 2.5}, TypeError, r"n_samples must be a whole number"),
    ({"seed": -1}, ValueError, r"seed must be >= 0"),
])
def test_bad_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        widgets.gumbel_softmax_explorer(**kwargs)
