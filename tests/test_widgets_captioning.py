"""Chapter 13's caption explorer, driven without a browser: set a slider, assert what was drawn.

Runs under ipywidgets 8 here and under Colab's 7.7.1 through
tests/test_widgets.py::test_widgets_on_ipywidgets_7.
"""

import ipywidgets
import numpy as np
import pytest
import torch

from attn_course import widgets

PNG = b"\x89PNG"


def _scenes(m=3, grid=8, size=48, length=6):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(m, 1, size, size, generator=gen)
    weights = torch.softmax(torch.randn(m, length, grid * grid, generator=gen) * 3, -1)
    captions = ["one left of two", "three above four", "five left of six"][:m]
    return images, captions, weights


def test_initial_state_is_drawn():
    images, captions, weights = _scenes()
    ex = widgets.caption_explorer(images, captions, weights)
    assert isinstance(ex, ipywidgets.VBox) and ex.redraws == 1 and ex.error is None
    assert ex.image.value[:4] == PNG
    assert ex.state["word"] == "one" and ex.state["index"] == 0 and ex.state["scene"] == 0
    torch.testing.assert_close(ex.state["weights"].flatten(), weights[0, 0])
    assert ex.state["words"] == ["one", "left", "of", "two", "<eos>"]


def test_word_slider_steps_through_the_caption():
    images, captions, weights = _scenes()
    ex = widgets.caption_explorer(images, captions, weights)
    for t, word in enumerate(["one", "left", "of", "two", "<eos>"]):
        ex.controls["word"].value = t
        assert ex.state["word"] == word
        torch.testing.assert_close(ex.state["weights"].flatten(), weights[0, t])
        row, col = ex.state["cell"]
        assert row * 8 + col == int(weights[0, t].argmax())  # row by row: cell n is (n // G, n % G)
    assert ex.redraws == 5


def test_scene_slider_and_a_shorter_caption():
    images, captions, weights = _scenes()
    ex = widgets.caption_explorer(images, captions, weights)
    ex.controls["word"].value = 4
    ex.controls["scene"].value = 1  # "three above four": 3 words and <eos>
    assert ex.state["scene"] == 1 and ex.state["index"] == 3 and ex.state["word"] == "<eos>"
    torch.testing.assert_close(ex.state["weights"].flatten(), weights[1, 3])


def test_one_scene_has_no_scene_slider_and_takes_numpy():
    images, captions, weights = _scenes(m=1)
    ex = widgets.caption_explorer(images.numpy()[:, 0], captions[0], weights.numpy(),
                                  boxes=np.array([[[2, 3, 9, 11], [-1, -1, -1, -1]]]), word=3)
    assert set(ex.controls) == {"word"} and ex.state["word"] == "two" and ex.error is None


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"captions": ["one"]}, ValueError, "one caption and one"),
    ({"weights": torch.rand(3, 6, 60)}, ValueError, "square grid of G·G cells, got 60"),
    ({"weights": torch.rand(3, 2, 64)}, ValueError, "weights has 2 rows per scene but a caption needs 5"),
    ({"images": torch.rand(3, 48)}, ValueError, r"images must be \(M, S, S\)"),
    ({"images": [[0.0]]}, TypeError, "images must be a floating-point tensor or array, got list"),
    ({"word": 9}, ValueError, r"word in \[0, 5\)"),
    ({"boxes": torch.zeros(3, 2)}, ValueError, r"boxes must be \(M, K, 4\)"),
])
def test_bad_input(change, error, message):
    images, captions, weights = _scenes()
    kwargs = {"images": images, "captions": captions, "weights": weights, **change}
    with pytest.raises(error, match=message):
        widgets.caption_explorer(**kwargs)
