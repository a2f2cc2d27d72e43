"""The translation box, driven without a browser: type a sentence, switch to beam search, and assert on
what was drawn; unknown words are named, empty and over-long input get their message instead of a
traceback. Runs on ipywidgets 8 here and on Colab's 7.7.1 through tests/test_widgets.py."""

import ipywidgets
import pytest
import torch

from attn_course import seq2seq, text, translate
from attn_course.data import spanish as sp
from attn_course.widgets import translation_explorer

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def translator():
    """An untrained model over a small corpus's vocabularies: the widget's mechanics need no training."""
    corpus = sp.generate_corpus(train=300, valid=10, test=10, seed=2)
    src_vocab = text.Vocab.build(p.en for p in corpus.train)
    tgt_vocab = text.Vocab.build(p.es for p in corpus.train)
    torch.manual_seed(0)
    model = seq2seq.RNNTranslator(len(src_vocab), len(tgt_vocab), embed_size=8, hidden_size=16, attn_size=8)
    return translate.Translator(model.eval(), src_vocab, tgt_vocab, max_len=12)


def test_initial_state_is_i_love_you(translator):
    ex = translation_explorer(translator)
    assert isinstance(ex, ipywidgets.VBox)
    assert ex.redraws == 1 and ex.error is None and ex.image.value[:4] == PNG
    assert ex.state["source"] == ["i", "love", "you"] and ex.state["unknown"] == []
    expected = translator.translate("I love you")
    assert ex.state["target"] == expected.target and ex.state["translation"] == expected.text
    assert torch.equal(ex.state["weights"], expected.weights)
    assert ex.state["weights"].shape == (len(expected.target), 3)
    assert ex.figure.axes[0].get_title().startswith("I love you")


def test_typing_a_sentence_translates_it(translator):
    ex = translation_explorer(translator)
    ex.controls["sentence"].value = "do you love me ?"
    assert ex.redraws == 2 and ex.state["source"] == ["do", "you", "love", "me", "?"]
    assert ex.state["weights"].shape[1] == 5
    labels = [t.get_text() for t in ex.figure.axes[0].get_xticklabels()]
    assert labels == ex.state["source"]


def test_beam_search_can_be_chosen(translator):
    ex = translation_explorer(translator)
    ex.controls["beam_size"].value = 4
    assert ex.state["beam_size"] == 4
    assert ex.state["target"] == translator.translate("I love you", beam_size=4).target


def test_unknown_words_are_named_and_shown_as_unk(translator):
    ex = translation_explorer(translator)
    ex.controls["sentence"].value = "i love xyzzy"
    assert ex.error is None and ex.state["unknown"] == ["xyzzy"]
    assert ex.state["source"] == ["i", "love", "<unk>"]
    assert "xyzzy" in ex.note.value and "&lt;unk&gt;" in ex.note.value
    ex.controls["sentence"].value = "i love you"
    assert ex.note.value == ""


@pytest.mark.parametrize(("sentence", "message"), [
    ("", "the sentence is empty"),
    (" ".join(["dog"] * 13), "has 13 tokens; this model translates at most 12"),
])
def test_empty_and_long_input_get_a_message_not_a_traceback(translator, sentence, message):
    ex = translation_explorer(translator)
    first_image = ex.image.value
    ex.controls["sentence"].value = sentence
    assert isinstance(ex.error, ValueError) and message in ex.status.value
    assert "Traceback" not in ex.status.value and ex.image.value == first_image
    ex.controls["sentence"].value = "i see him"
    assert ex.error is None and ex.status.value == ""


def test_bad_arguments_are_explained(translator):
    with pytest.raises(TypeError, match="translator must be a translate.Translator"):
        translation_explorer(object())
    with pytest.raises(TypeError, match="sentence must be a string"):
        translation_explorer(translator, sentence=3)
    with pytest.raises(ValueError, match="beam_size must be > 0"):
        translation_explorer(translator, beam_size=0)
    assert translation_explorer(translator, beam_size=3).controls["beam_size"].value == 3
