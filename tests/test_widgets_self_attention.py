"""The token attention explorer, driven without a browser: pick a token, toggle positions, and assert on the
row and the matrix it drew. Runs on ipywidgets 8 here and on Colab's 7.7.1 through tests/test_widgets.py."""

import ipywidgets
import pytest
import torch

from attn_course.widgets.self_attention import EXPLORER_SENTENCE, token_attention_explorer, toy_self_attention

PNG = b"\x89PNG"
WORDS = EXPLORER_SENTENCE.split()


def test_initial_state_is_the_row_of_it():
    ex = token_attention_explorer()
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None and ex.image.value[:4] == PNG
    assert ex.state["token"] == 7 and ex.state["word"] == "it" and ex.state["tokens"] == WORDS
    weights, row = ex.state["weights"], ex.state["row"]
    assert weights.shape == (11, 11) and torch.equal(row, weights[7])
    torch.testing.assert_close(weights.sum(-1), torch.ones(11))
    assert ex.state["positions"] is False


def test_picking_a_token_shows_its_row():
    ex = token_attention_explorer()
    ex.controls["token"].value = 1
    assert ex.redraws == 2 and ex.state["word"] == "animal"
    assert torch.equal(ex.state["row"], ex.state["weights"][1])
    assert torch.equal(ex.state["weights"], toy_self_attention(EXPLORER_SENTENCE))  # the matrix stays put


def test_without_positions_repeated_words_have_identical_rows():
    """'the' at positions 0 and 4 is one embedding: same query, same key, so the same row and column."""
    ex = token_attention_explorer(token=0)
    first = ex.state["row"]
    ex.controls["token"].value = 4
    assert torch.equal(ex.state["row"], first)
    weights = ex.state["weights"]
    assert torch.equal(weights[:, 0], weights[:, 4])  # every query weighs the two keys 'the' alike


def test_positions_tell_repeated_words_apart():
    ex = token_attention_explorer(token=0)
    ex.controls["positions"].value = True
    assert ex.state["positions"] is True and ex.redraws == 2
    first = ex.state["row"]
    ex.controls["token"].value = 4
    assert (ex.state["row"] - first).abs().max() > 0.01
    torch.testing.assert_close(ex.state["weights"], toy_self_attention(EXPLORER_SENTENCE, positions=True))
    assert not torch.equal(ex.state["weights"], toy_self_attention(EXPLORER_SENTENCE))


def test_self_attention_is_permutation_equivariant_without_positions():
    words = "the cat chased the dog".split()
    swapped = "the dog chased the cat".split()
    perm = torch.tensor([0, 4, 2, 3, 1])  # swapped = words[perm]
    w, w_swapped = toy_self_attention(words), toy_self_attention(swapped)
    torch.testing.assert_close(w_swapped, w[perm][:, perm])
    p, p_swapped = toy_self_attention(words, positions=True), toy_self_attention(swapped, positions=True)
    assert (p_swapped - p[perm][:, perm]).abs().max() > 0.01


def test_other_sentence_and_seed():
    ex = token_attention_explorer("a b c", token=2, positions=True, seed=3)
    assert ex.state["tokens"] == ["a", "b", "c"] and ex.state["word"] == "c"
    assert [label for label, _ in ex.controls["token"].options] == ["0: a", "1: b", "2: c"]
    assert not torch.equal(toy_self_attention("a b c", seed=3), toy_self_attention("a b c", seed=4))


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"sentence": "one"}, ValueError, "between 2 and 16 words, got 1"),
    ({"sentence": ["a", ""]}, TypeError, "non-empty strings"),
    ({"token": 11}, ValueError, r"between 0 and 10, got 11"),
    ({"token": -1}, ValueError, "token must be >= 0"),
    ({"positions": 1}, TypeError, "positions must be True or False"),
    ({"seed": 1.5}, TypeError, "seed must be a whole number"),
])
def test_bad_settings_are_explained(kwargs, error, message):
    with pytest.raises(error, match=message):
        token_attention_explorer(**kwargs)
