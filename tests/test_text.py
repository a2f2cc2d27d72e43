"""Tokenising (Spanish punctuation and accents, English contractions), vocabularies and padded batches."""

import unicodedata

import pytest
import torch

from attn_course import text
from attn_course.text import BOS, EOS, PAD, UNK, Vocab


@pytest.mark.parametrize(("sentence", "lang", "tokens"), [
    ("¿Dónde está el gato?", "es", ["¿", "dónde", "está", "el", "gato", "?"]),
    ("¡Hola, María!", "es", ["¡", "hola", ",", "maría", "!"]),
    ("I love you.", "en", ["i", "love", "you", "."]),
    ("I don't see him", "en", ["i", "do", "not", "see", "him"]),
    ("She doesn’t like it", "en", ["she", "does", "not", "like", "it"]),  # a curly apostrophe
    ("I'm tired, aren't you?", "en", ["i", "am", "tired", ",", "are", "not", "you", "?"]),
    ("I won't go", "en", ["i", "will", "not", "go"]),
    ("  the   red house ", "en", ["the", "red", "house"]),
    ("o'clock well-known", "en", ["o'clock", "well-known"]),
    ("", "en", []),
])
def test_tokenize(sentence, lang, tokens):
    assert text.tokenize(sentence, lang) == tokens


def test_accents_typed_either_way_are_one_token():
    decomposed = unicodedata.normalize("NFD", "está")  # 'a' + combining accent, as some keyboards send it
    assert len(decomposed) == 5
    assert text.tokenize(decomposed, "es") == ["está"]


def test_spanish_keeps_its_apostrophes_and_bad_input_is_refused():
    assert text.tokenize("don't", "es") == ["don't"]  # no English contractions in Spanish
    with pytest.raises(ValueError, match="lang must be 'en' or 'es'"):
        text.tokenize("hola", "fr")
    with pytest.raises(TypeError, match="text must be a string"):
        text.tokenize(["hola"], "es")


def test_detokenize_glues_punctuation():
    assert text.detokenize(["¿", "dónde", "está", "el", "gato", "?"]) == "¿dónde está el gato?"
    assert text.detokenize(["te", "quiero", "."]) == "te quiero."
    assert text.detokenize([]) == ""


def test_vocab_build_is_deterministic_and_ordered_by_frequency():
    sentences = [["b", "a", "a"], ["c", "a", "b"]]
    vocab = Vocab.build(sentences)
    assert vocab.tokens == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"]
    assert Vocab.build(reversed(sentences)).tokens == vocab.tokens
    assert len(vocab) == 7 and "a" in vocab and "z" not in vocab
    assert Vocab.build(sentences, min_freq=2).tokens[4:] == ["a", "b"]
    assert Vocab.build(sentences, max_size=1).tokens[4:] == ["a"]


def test_encode_decode_and_unknown():
    vocab = Vocab.build([["te", "quiero"]])
    ids = vocab.encode(["te", "quiero", "mucho"], bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS and ids[3] == UNK
    assert vocab.decode(ids) == ["te", "quiero", "<unk>"]
    assert vocab.decode([vocab.index("te"), EOS, vocab.index("quiero")]) == ["te"]  # stops at EOS
    assert vocab.decode([PAD, vocab.index("te"), PAD]) == ["te"]
    assert vocab.unknown(["te", "mucho", "mucho", "hoy"]) == ["mucho", "hoy"]
    assert Vocab(vocab.tokens).tokens == vocab.tokens  # rebuilt from its list, e.g. from a checkpoint
    with pytest.raises(ValueError, match="repeated"):
        Vocab(["a", "a"])


def test_pad_and_mask():
    padded = text.pad_sequences([[5, 6, 7], [8]])
    assert padded.tolist() == [[5, 6, 7], [8, PAD, PAD]] and padded.dtype == torch.long
    assert text.real_tokens(padded).tolist() == [[True] * 3, [True, False, False]]
    with pytest.raises(ValueError, match="at least one sequence"):
        text.pad_sequences([])
    with pytest.raises(TypeError, match="integer tensor"):
        text.real_tokens(padded.float())


def test_batches_shift_the_target_and_cover_every_example():
    examples = [([4 + i], [10 + i] * (1 + i % 3)) for i in range(10)]
    stream = text.batches(examples, 4, seed=1, repeat=False)
    seen = []
    for src, tgt_in, tgt_out in stream:
        assert src.shape[0] == tgt_in.shape[0] == tgt_out.shape[0] <= 4
        assert torch.all(tgt_in[:, 0] == BOS)
        lengths = (tgt_out != PAD).sum(1)
        for row, n in enumerate(lengths.tolist()):
            assert tgt_out[row, n - 1] == EOS  # target + EOS
            assert torch.equal(tgt_in[row, 1:n], tgt_out[row, :n - 1])  # BOS + target
        seen += src[:, 0].tolist()
    assert sorted(seen) == list(range(4, 14))


def test_bucketed_batches_group_similar_lengths_and_repeat_deterministically():
    examples = [([4], [9] * (1 + i % 7)) for i in range(70)]

    def spreads(bucket):
        out = []
        for _, (_, _, tgt_out) in zip(range(10), text.batches(examples, 7, seed=0, bucket=bucket)):
            lengths = (tgt_out != PAD).sum(1)
            out.append(int(lengths.max() - lengths.min()))
        return out

    assert max(spreads(bucket=10)) <= 1  # one pool of 70 sorted by length: neighbours in each batch
    assert max(spreads(bucket=0)) >= 3  # shuffled: mixed lengths
    first = [b[0].tolist() for _, b in zip(range(12), text.batches(examples, 7, seed=0, bucket=10))]
    again = [b[0].tolist() for _, b in zip(range(12), text.batches(examples, 7, seed=0, bucket=10))]
    assert first == again


def test_batches_refuse_bad_input():
    with pytest.raises(ValueError, match="at least one example"):
        next(text.batches([], 4))
    with pytest.raises(ValueError, match="example 1 has an empty source"):
        next(text.batches([([4], [5]), ([], [5])], 4))
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        next(text.batches([([4], [5])], 0))
