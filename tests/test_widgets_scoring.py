"""Chapter 2's scoring explorer, driven without a browser: set a slider, assert what was drawn.

tests/test_widgets.py re-runs this module under Colab's ipywidgets 7.7.1.
"""

import math

import ipywidgets
import pytest
import torch

from attn_course import scoring, widgets

PNG = b"\x89PNG"
NAMES = ["dot", "scaled dot", "general", "additive"]


def test_initial_state_is_drawn_for_every_score():
    ex = widgets.scoring_explorer()
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None
    assert ex.image.value[:4] == PNG
    assert list(ex.state["scores"]) == NAMES == list(ex.state["weights"])
    for name in NAMES:
        w = ex.state["weights"][name]
        assert w.shape == (5,) and torch.isclose(w.sum(), torch.tensor(1.0))
        assert ex.state["best"][name] == int(w.argmax())


def test_drawn_scores_are_the_package_functions():
    ex = widgets.scoring_explorer(query=(0.4, -1.2), angle=-60.0)
    q, keys, add = ex.state["query"][None], widgets.DEFAULT_KEYS, ex.state["additive"]
    scores = ex.state["scores"]
    torch.testing.assert_close(scores["dot"], (q @ keys.T)[0])
    torch.testing.assert_close(scores["scaled dot"], (q @ keys.T)[0] / math.sqrt(2))
    torch.testing.assert_close(scores["general"], scoring.general_score(q, keys, ex.state["W"])[0])
    torch.testing.assert_close(scores["additive"],
                               scoring.additive_score(q, keys, add["W_q"], add["W_k"], add["v"])[0])


def test_general_with_no_turn_is_the_dot_product():
    ex = widgets.scoring_explorer()
    ex.controls["angle"].value = 0.0
    assert ex.redraws == 2
    torch.testing.assert_close(ex.state["W"], torch.eye(2))
    torch.testing.assert_close(ex.state["scores"]["general"], ex.state["scores"]["dot"])


def test_turning_w_changes_which_key_general_prefers():
    ex = widgets.scoring_explorer(query=(1.0, 0.0))
    ex.controls["angle"].value = -90.0  # W k turns each key a quarter turn clockwise
    assert ex.state["best"]["dot"] == 0  # the key at (1, 0)
    assert ex.state["best"]["general"] == 2  # the key at (0, 1), turned onto (1, 0)
    first = ex.image.value
    ex.controls["angle"].value = 90.0
    assert ex.image.value != first


def test_a_long_query_sharpens_dot_products_but_additive_scores_stay_bounded():
    ex = widgets.scoring_explorer(query=(0.3, 0.1))
    short = {name: float(w.max()) for name, w in ex.state["weights"].items()}
    ex.controls["qx"].value, ex.controls["qy"].value = 3.0, 1.0
    long = {name: float(w.max()) for name, w in ex.state["weights"].items()}
    assert long["dot"] > short["dot"] + 0.2
    assert long["dot"] > long["scaled dot"]  # the same ranking, divided by √2
    bound = float(ex.state["additive"]["v"].abs().sum())
    assert float(ex.state["scores"]["additive"].abs().max()) <= bound


def test_custom_keys_and_attention_size():
    keys = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-1.0, -1.0]])
    ex = widgets.scoring_explorer(keys=keys, query=(2.0, 0.0), attn_size=3)
    assert ex.error is None
    assert ex.state["best"]["dot"] == 1
    assert ex.state["additive"]["v"].shape == (3,)
    assert all(w.shape == (3,) for w in ex.state["weights"].values())


def test_same_seed_same_additive_weights():
    a, b = widgets.scoring_explorer(seed=4), widgets.scoring_explorer(seed=4)
    c = widgets.scoring_explorer(seed=5)
    assert torch.equal(a.state["additive"]["W_q"], b.state["additive"]["W_q"])
    assert not torch.equal(a.state["additive"]["W_q"], c.state["additive"]["W_q"])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"keys": torch.zeros(3, 3)}, ValueError, r"keys must be a tensor of shape \(Lk, 2\), got torch.Size\(\[3, 3\]\)"),
    ({"keys": [[1.0, 0.0]]}, ValueError, r"keys must be a tensor of shape \(Lk, 2\), got <class 'list'>"),
    ({"query": (1.0,)}, ValueError, r"query must be a point \(x, y\)"),
    ({"attn_size": 0}, ValueError, "attn_size must be > 0, got 0"),
    ({"attn_size": 2.5}, TypeError, "attn_size must be a whole number, got float"),
    ({"angle": float("nan")}, ValueError, "angle must be finite"),
])
def test_bad_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        widgets.scoring_explorer(**kwargs)


def test_additive_parameters_are_drawn_as_documented():
    add = widgets.scoring_explorer(attn_size=64).state["additive"]
    bound = 1 / math.sqrt(2)  # W_q, W_k like an untrained AdditiveScore's, U(±1/√2)
    assert add["W_q"].abs().max() <= bound and add["W_k"].abs().max() <= bound
    assert add["v"].abs().max() > 1 / math.sqrt(64)  # v ~ N(0, 1), not AdditiveScore's U(±1/√A)
