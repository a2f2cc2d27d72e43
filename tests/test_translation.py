"""The translation models (bi-GRU + Bahdanau or Luong attention, a small Transformer), greedy and beam
decoding, training, the Translator (clear errors, checkpoints), and a small trained model whose attention
crosses on adjective-noun pairs."""

import math
import random

import pytest
import torch

from attn_course import decoding, metrics, scoring, seq2seq, text, translate
from attn_course.checkpoint import CheckpointError, save_checkpoint
from attn_course.data import spanish as sp
from attn_course.decoding import Hypothesis, beam_search, greedy_decode
from attn_course.masking import masked_softmax
from attn_course.text import BOS, EOS, PAD

SV, TV = 30, 40  # vocabulary sizes of the untrained models


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # tests/conftest.py


def rnn(attention, seed=0, **sizes):
    torch.manual_seed(seed)
    sizes = {"embed_size": 16, "hidden_size": 24, "attn_size": 12, **sizes}
    return seq2seq.RNNTranslator(SV, TV, attention=attention, **sizes).eval()


def transformer(seed=0):
    torch.manual_seed(seed)
    return seq2seq.TransformerTranslator(SV, TV, embed_dim=16, num_heads=2, num_layers=2, hidden_dim=32,
                                         dropout=0.0).eval()


MODELS = [pytest.param(lambda: rnn("bahdanau"), id="bahdanau"), pytest.param(lambda: rnn("luong"), id="luong"),
          pytest.param(transformer, id="transformer")]


def batch(seed=0, lengths=(5, 3, 4), tgt_len=6):
    gen = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD)
    for row, n in enumerate(lengths):
        src[row, :n] = torch.randint(4, SV, (n,), generator=gen)
    tgt_in = torch.cat([torch.full((len(lengths), 1), BOS), torch.randint(4, TV, (len(lengths), tgt_len - 1),
                                                                         generator=gen)], dim=1)
    return src, tgt_in


# --- the models ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", MODELS)
def test_forward_shapes_and_weights(make):
    model = make()
    src, tgt_in = batch()
    logits, weights = model(src, tgt_in, return_weights=True)
    assert logits.shape == (3, 6, TV) and torch.isfinite(logits).all()
    assert weights.shape == (3, 6, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))
    assert torch.all(weights[src[:, None, :].expand_as(weights) == PAD] == 0)  # padding gets no attention


@pytest.mark.parametrize("make", MODELS)
def test_padding_does_not_change_a_sentence(make):
    """Packing (GRU) and key padding masks (Transformer): a sentence padded in a batch translates the same."""
    model = make()
    src, tgt_in = batch(lengths=(5, 3))
    logits, weights = model(src, tgt_in, return_weights=True)
    alone, alone_weights = model(src[1:, :3], tgt_in[1:], return_weights=True)
    torch.testing.assert_close(logits[1:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights[1:, :, :3], alone_weights, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("make", MODELS)
def test_decode_step_agrees_with_the_teacher_forced_pass(make):
    model = make()
    src, tgt_in = batch(seed=1)
    logits, weights = model(src, tgt_in, return_weights=True)
    state = model.encode(src)
    for t in range(tgt_in.size(1)):
        step_logits, step_weights, state = model.decode_step(tgt_in[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(step_weights, weights[:, t], atol=1e-6, rtol=1e-4)


def test_bahdanau_scores_are_scoring_additive_score():
    """The decoder precomputes U_a h_j once; the weights equal softmax(additive_score(s, h)) over real words."""
    model = rnn("bahdanau")
    src, _ = batch()
    state = model.encode(src)
    hidden = torch.randn(3, 24, generator=torch.Generator().manual_seed(0))
    score = model.score
    expected = masked_softmax(scoring.additive_score(hidden[:, None], state["keys"], score.W_q, score.W_k, score.v),
                              state["mask"][:, None])[:, 0]
    torch.testing.assert_close(model._bahdanau_weights(hidden, state), expected)


def test_luong_scores_are_the_general_score():
    model = rnn("luong")
    src, tgt_in = batch()
    state = model.encode(src)
    _, weights, new_state = model.decode_step(tgt_in[:, 0], state)
    h = new_state["hidden"]  # Luong scores with the *current* state h_t
    expected = masked_softmax(scoring.general_score(h[:, None], state["keys"], model.score.W), state["mask"][:, None])
    torch.testing.assert_close(weights, expected[:, 0])


def test_transformer_weights_do_not_change_the_output():
    model = transformer()
    src, tgt_in = batch()
    fast, none = model(src, tgt_in)
    slow, weights = model(src, tgt_in, return_weights=True)
    assert none is None and weights.shape == (3, 6, 5)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"attention": "dot"}, ValueError, "attention must be one of 'bahdanau', 'luong'"),
    ({"hidden_size": 25}, ValueError, "hidden_size must be even"),
    ({"embed_size": 0}, ValueError, "embed_size must be > 0"),
])
def test_bad_settings_are_explained(kwargs, error, message):
    with pytest.raises(error, match=message):
        seq2seq.RNNTranslator(SV, TV, **kwargs)


def test_bad_tokens_are_explained():
    model = rnn("bahdanau")
    src, tgt_in = batch()
    with pytest.raises(ValueError, match=r"src must hold token ids in \[0, 30\)"):
        model(src + 100, tgt_in)
    with pytest.raises(TypeError, match="src must be an integer tensor"):
        model(src.float(), tgt_in)
    with pytest.raises(ValueError, match="at least one token that is not PAD"):
        model(torch.zeros(2, 3, dtype=torch.long), tgt_in[:2])


@pytest.mark.parametrize("make", MODELS)
def test_bad_shapes_are_explained(make):
    model = make()
    src, tgt_in = batch()
    with pytest.raises(ValueError, match="the same number of sentences, got 3 and 2"):
        model(src, tgt_in[:2])
    with pytest.raises(ValueError, match="src has no tokens"):
        model(src[:, :0], tgt_in)
    with pytest.raises(ValueError, match="padded on the left"):
        model.encode(torch.tensor([[PAD, 5, 6]]))
    state = model.encode(src)
    token = torch.full((3,), BOS)
    with pytest.raises(ValueError, match=r"token must have 1 dimension"):
        model.decode_step(token[:, None], state)
    with pytest.raises(ValueError, match=r"one id per sentence of the state: shape \(3,\), got \(2,\)"):
        model.decode_step(token[:2], state)
    with pytest.raises(ValueError, match=r"token must hold ids in \[0, 40\)"):
        model.decode_step(token + 100, state)
    with pytest.raises(TypeError, match="state must be the dict returned by encode"):
        model.decode_step(token, None)


def test_build_translator_rebuilds_from_config():
    for model in (rnn("luong"), transformer()):
        rebuilt = seq2seq.build_translator(model.config)
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert seq2seq.count_parameters(rebuilt) == seq2seq.count_parameters(model)
    with pytest.raises(ValueError, match="kind 'rnn' or 'transformer'"):
        seq2seq.build_translator({"kind": "cnn"})


def test_learning_rate_schedule():
    factor = seq2seq._lr_factor
    assert [factor(s, steps=100, warmup=4, schedule="constant") for s in (0, 3, 50)] == [0.25, 1.0, 1.0]
    assert factor(4, steps=100, warmup=4, schedule="cosine") == pytest.approx(1.0)
    assert factor(99, steps=100, warmup=4, schedule="cosine") == pytest.approx(0.1, abs=1e-3)


# --- decoding -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", MODELS)
def test_greedy_matches_the_teacher_forced_argmax(make):
    model = make()
    src, _ = batch(seed=2)
    hyps = greedy_decode(model, src, max_len=7)
    assert len(hyps) == 3 and all(isinstance(h, Hypothesis) for h in hyps)
    for row, hyp in enumerate(hyps):
        assert len(hyp.tokens) <= 7 and EOS not in hyp.tokens
        assert hyp.weights.shape == (len(hyp.tokens), int((src[row] != PAD).sum()))
        tgt_in = torch.tensor([[BOS, *hyp.tokens]])
        logits, weights = model(src[row:row + 1, :int((src[row] != PAD).sum())], tgt_in, return_weights=True)
        expected = hyp.tokens + ([EOS] if hyp.finished else [])
        assert logits[0].argmax(-1).tolist()[:len(expected)] == expected
        torch.testing.assert_close(weights[0, :len(hyp.tokens)], hyp.weights, atol=1e-5, rtol=1e-4)


class TableModel(torch.nn.Module):
    """A model whose next-token probabilities depend only on the previous token: a known search problem."""

    src_vocab_size = tgt_vocab_size = 6
    A, B, C = 3, 4, 5

    def __init__(self):
        super().__init__()
        probs = torch.full((6, 6), 1e-6)
        probs[BOS, self.A], probs[BOS, self.B] = 0.6, 0.4  # greedy takes A ...
        probs[self.A, EOS], probs[self.A, self.C] = 0.3, 0.3  # ... and then can only reach 0.18
        probs[self.A, self.B] = 0.4 - 4e-6
        probs[self.B, EOS], probs[self.B, self.C] = 0.9, 0.1  # B then EOS: 0.36, the best sentence
        probs[self.C, EOS] = 1.0
        self.register_buffer("log_probs", (probs / probs.sum(-1, keepdim=True)).log())

    def encode(self, src):
        return {"length": (src != PAD).sum(1)}

    def decode_step(self, token, state):
        length = int(state["length"][0])
        return self.log_probs[token], torch.full((token.size(0), length), 1 / length), state


def test_beam_search_finds_what_greedy_misses():
    model = TableModel()
    src = torch.tensor([[3, 4]])
    greedy = greedy_decode(model, src, max_len=5)[0]
    assert greedy.tokens[0] == model.A  # greedy commits to A (0.6)
    best = beam_search(model, src, beam_size=2, max_len=5, length_penalty=0.0)[0]
    assert best.tokens == [model.B] and best.finished
    assert best.log_prob == pytest.approx(math.log(0.4 * 0.9), rel=1e-4)
    assert best.weights.shape == (1, 2)
    n_best = beam_search(model, src, beam_size=3, max_len=5, length_penalty=0.0, n_best=3)
    scores = [h.log_prob for h in n_best]
    assert scores == sorted(scores, reverse=True) and n_best[0].tokens == [model.B]
    one = beam_search(model, src, beam_size=1, max_len=5)[0]
    assert one.tokens == greedy.tokens


def test_beam_search_on_a_real_model_and_its_errors():
    model = rnn("bahdanau", seed=3)
    src, _ = batch()
    one_row = src[1, :3]
    beam = beam_search(model, one_row, beam_size=1, max_len=6)[0]
    assert beam.tokens == greedy_decode(model, one_row[None], max_len=6)[0].tokens
    hyps = beam_search(model, one_row, beam_size=4, max_len=6, n_best=2)
    assert len(hyps) == 2 and all(h.weights.shape == (len(h.tokens), 3) for h in hyps)
    with pytest.raises(ValueError, match="one sentence at a time"):
        beam_search(model, src, beam_size=2)
    with pytest.raises(ValueError, match="n_best .3. cannot exceed beam_size .2."):
        beam_search(model, one_row, beam_size=2, n_best=3)
    with pytest.raises(TypeError, match="encode.. and decode_step"):
        greedy_decode(torch.nn.Linear(2, 2), src)


def test_greedy_stops_at_the_length_limit():
    model = TableModel()
    model.log_probs[TableModel.C, EOS] = -100.0  # C never ends ...
    model.log_probs[TableModel.C, TableModel.C] = 0.0  # ... it repeats
    model.log_probs[BOS] = -100.0
    model.log_probs[BOS, TableModel.C] = 0.0
    hyp = greedy_decode(model, torch.tensor([[3]]), max_len=4)[0]
    assert hyp.tokens == [TableModel.C] * 4 and not hyp.finished


# --- training and the Translator ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """A small corpus, vocabularies, and a Bahdanau model trained briefly on it."""
    corpus = sp.generate_corpus(train=400, valid=20, test=40, seed=1)
    src_vocab = text.Vocab.build(p.en for p in corpus.train)
    tgt_vocab = text.Vocab.build(p.es for p in corpus.train)
    torch.manual_seed(0)
    model = seq2seq.RNNTranslator(len(src_vocab), len(tgt_vocab), embed_size=16, hidden_size=32, attn_size=16)
    translator = translate.Translator(model, src_vocab, tgt_vocab)
    losses = translator.fit(corpus.train, 100, batch_size=32, lr=1e-2, progress=False)
    return corpus, translator, losses


def test_a_short_training_run_lowers_the_loss(tiny):
    _, _, losses = tiny
    assert len(losses) == 100 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_translate_returns_tokens_and_the_attention(tiny):
    corpus, translator, _ = tiny
    result = translator.translate("I love you")
    assert result.source == ["i", "love", "you"] and result.unknown == []
    assert result.weights.shape == (len(result.target), 3)
    assert result.text == text.detokenize(result.target) and str(result) == result.text
    beam = translator.translate("i love you", beam_size=3)
    assert beam.weights.shape[1] == 3
    assert "Translator(RNNTranslator" in repr(translator)


@pytest.mark.parametrize(("sentence", "error", "message"), [
    ("", ValueError, "the sentence is empty"),
    ("   ", ValueError, "the sentence is empty"),
    ("i love xyzzy", ValueError, r"'xyzzy' is not in the vocabulary of \d+ English words"),
    ("i lovve you", ValueError, r"for 'lovve', did you mean 'love'"),
    (" ".join(["dog"] * 21), ValueError, "has 21 tokens; this model translates at most 20"),
    (42, TypeError, "sentence must be a string"),
])
def test_bad_input_gets_one_clear_line(tiny, sentence, error, message):
    _, translator, _ = tiny
    with pytest.raises(error, match=message) as info:
        translator.translate(sentence)
    assert "\n" not in str(info.value)


def test_unknown_words_can_be_translated_as_unk(tiny):
    _, translator, _ = tiny
    result = translator.translate("i love xyzzy", on_unknown="unk")
    assert result.unknown == ["xyzzy"] and result.source == ["i", "love", "<unk>"]
    with pytest.raises(ValueError, match="on_unknown must be 'raise' or 'unk'"):
        translator.translate("i love you", on_unknown="ignore")


def test_evaluate_scores_with_sacrebleu_and_aer(tiny):
    corpus, translator, _ = tiny
    scores = translator.evaluate(corpus.test)
    assert set(scores) == {"bleu", "chrf", "exact", "aer"}
    assert 0 <= scores["bleu"] <= 100 and 0 <= scores["exact"] <= 1 and 0 <= scores["aer"] <= 1
    weights = translator.attention(corpus.test[:5])
    assert [w.shape for w in weights] == [(len(p.es), len(p.en)) for p in corpus.test[:5]]
    predicted = [metrics.alignment_links(w) for w in weights]
    expected = metrics.alignment_error_rate(predicted, [p.sure for p in corpus.test[:5]],
                                            [p.possible for p in corpus.test[:5]])
    assert translator.alignment_error_rate(corpus.test[:5]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one sentence pair"):
        translator.evaluate([])


def test_translator_checks_vocabulary_sizes(tiny):
    _, translator, _ = tiny
    with pytest.raises(ValueError, match="built for vocabularies of"):
        translate.Translator(translator.model, translator.tgt_vocab, translator.src_vocab)
    small = seq2seq.TransformerTranslator(len(translator.src_vocab), len(translator.tgt_vocab), embed_dim=16,
                                          num_heads=2, num_layers=1, hidden_dim=32, max_len=30)
    with pytest.raises(ValueError, match="the model has 30 positions"):
        translate.Translator(small, translator.src_vocab, translator.tgt_vocab, max_len=20)


def test_final_punctuation_is_dropped_and_empty_pairs_refused(tiny):
    _, translator, _ = tiny
    assert translator.source_tokens("I love you.")[0] == ["i", "love", "you"]
    assert translator.source_tokens("i love you !")[0] == ["i", "love", "you"]
    with pytest.raises(ValueError, match="pair 0 has an empty English sentence"):
        translator.evaluate([("", "te quiero")])


def test_checkpoint_round_trip_and_clear_errors(tiny, tmp_path):
    _, translator, _ = tiny
    path = translator.save(tmp_path / "model.pt", steps=100)
    loaded = translate.Translator.load(path)
    assert loaded.translate("i love you").target == translator.translate("i love you").target
    assert loaded.src_vocab.tokens == translator.src_vocab.tokens
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        translate.Translator.load(corrupt)
    foreign = save_checkpoint(tmp_path / "foreign.pt", torch.nn.Linear(2, 2), config={"in": 2})
    with pytest.raises(CheckpointError, match="not of a Translator"):
        translate.Translator.load(foreign)
    with pytest.raises(CheckpointError, match="no such file"):
        translate.Translator.load(tmp_path / "missing.pt")
    payload = torch.load(path, weights_only=False)
    payload["config"]["src_vocab"] = payload["config"]["src_vocab"][:-1] + [payload["config"]["src_vocab"][5]]
    torch.save(payload, tmp_path / "duplicated.pt")
    with pytest.raises(CheckpointError, match="do not fit its model"):
        translate.Translator.load(tmp_path / "duplicated.pt")


def test_plot_alignment_marks_gold_links(tiny):
    import matplotlib

    matplotlib.use("Agg")
    corpus, translator, _ = tiny
    pair = corpus.test[0]
    ax = translate.plot_alignment(translator.attention([pair])[0], pair.en, pair.es, sure=pair.sure,
                                  possible=pair.possible)
    assert len(ax.patches) == len(pair.sure)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(pair.es)


def test_crossing_alignment_on_held_out_adjective_noun_pairs():
    """Trained on "i see the <colour> <thing>", a small Bahdanau model translates unseen colour-thing
    pairs and its attention crosses: casa looks at house and roja at red."""
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    things = [n.en for n in sp.NOUNS if "object" in n.tags][:16]
    pairs = [sp.example("transitive", subject=who, verb="see", object=f"the {c} {t}", tense="present",
                        question=False, negative=False) for c in colours for t in things for who in ("i", "we")]
    random.Random(0).shuffle(pairs)
    held = set(zip(things, colours * 3))
    train = [p for p in pairs if not p.combos & held]
    test = [p for p in pairs if p.combos & held]
    src_vocab, tgt_vocab = text.Vocab.build(p.en for p in pairs), text.Vocab.build(p.es for p in pairs)
    torch.manual_seed(0)
    model = seq2seq.RNNTranslator(len(src_vocab), len(tgt_vocab), embed_size=16, hidden_size=32, attn_size=16)
    translator = translate.Translator(model, src_vocab, tgt_vocab)
    translator.fit(train, 400, batch_size=32, lr=1e-2, progress=False)
    assert translator.evaluate(test)["exact"] >= 0.8
    crossing = 0
    for pair, weights in zip(test, translator.attention(test)):  # "veo la casa roja" <- "i see the red house"
        row = {j: i for i, j in pair.sure}  # English position -> the Spanish word sure-linked to it
        noun, adjective = row[4], row[3]  # casa <- house (column 4), roja <- red (column 3)
        assert noun < adjective  # the gold links cross
        crossing += int(weights[noun].argmax()) == 4 and int(weights[adjective].argmax()) == 3
    assert crossing >= 0.8 * len(test)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make", MODELS)
def test_models_run_on_cuda(make):
    model = make().cuda()
    src, tgt_in = batch()
    logits, weights = model(src.cuda(), tgt_in.cuda(), return_weights=True)
    assert logits.device.type == "cuda" and weights.device.type == "cuda"
    hyps = decoding.greedy_decode(model, src.cuda(), max_len=4)
    assert len(hyps) == 3


# --- the chapter's exercises accept other correct solutions -------------------------------------------------

def _step_by_hand(state, keys, mask, W_q, W_k, v):
    hidden = torch.tanh(torch.einsum("ad,bd->ba", W_q, state)[:, None, :] + torch.einsum("ak,blk->bla", W_k, keys))
    scores = torch.einsum("bla,a->bl", hidden, v).masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=1)
    return torch.einsum("bl,blk->bk", weights, keys), weights


def _greedy_by_hand(state, step, bos, eos, max_len):
    tokens, scores, token = [], [], bos
    for _ in range(max_len):
        logits, state = step(token, state)
        log_probs = logits - torch.logsumexp(logits, dim=0)
        token = int(torch.argmax(log_probs))
        if token == eos:
            break
        tokens.append(token)
        scores.append(log_probs[token])
    return torch.tensor(tokens, dtype=state.dtype), torch.tensor(scores, dtype=state.dtype)


def _aer_with_sets(weights, sure, possible):
    a = {(i, int(j)) for i, j in enumerate(weights.argmax(-1))}
    s = {tuple(x) for x in sure.nonzero().tolist()}
    p = {tuple(x) for x in possible.nonzero().tolist()}
    links = torch.zeros_like(weights)
    for i, j in a:
        links[i, j] = 1
    return links, torch.tensor(1 - (len(a & s) + len(a & p)) / (len(a) + len(s)), dtype=weights.dtype)


@pytest.mark.parametrize(("exercise", "solution"), [
    ("additive-decoder-step", _step_by_hand), ("greedy-decode", _greedy_by_hand), ("attention-aer", _aer_with_sets),
])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_other_correct_solutions_pass(exercise, solution, seed):
    from attn_course.exercises import check

    result = check(exercise, solution, seed=seed)
    assert result.passed, str(result)
