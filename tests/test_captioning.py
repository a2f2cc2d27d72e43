"""The captioner: shapes and properties of the encoder and decoder, parity with the package's additive
score, greedy and beam decoding, the doubly stochastic penalty, the hit rate on hand-made cases, a short
training run whose loss falls (soft and hard), checkpoints, and clear errors for bad input."""

import math

import einops
import numpy as np
import pytest
import torch

from attn_course import captioning as cap
from attn_course.checkpoint import CheckpointError, save_checkpoint
from attn_course.data.scenes import VOCAB, SceneConfig, compose_scenes, load_sklearn_digits, split_source
from attn_course.exercises import check
from attn_course.scoring import additive_score

# Tiny models: one thread is fastest, even when the machine is busy. Module-scoped, so that the module's
# fixtures (the model trained once, below) run on one thread too: a function-scoped fixture would only be
# set up after them (186 s instead of about 5 for `trained` on a busy two-core machine).
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def pools(one_thread_per_module):
    return split_source(load_sklearn_digits(), seed=0)


@pytest.fixture(scope="module")
def data(one_thread_per_module, pools):
    train_pool, test_pool = pools
    return compose_scenes(train_pool, 400, seed=0), compose_scenes(test_pool, 60, seed=1)


def small_model(**kwargs):
    torch.manual_seed(0)
    return cap.Captioner(**{"channels": 8, "feature_size": 16, "position_size": 8, "hidden_size": 32,
                            "embed_size": 16, "attn_size": 16, **kwargs}).eval()


# --- the encoder -------------------------------------------------------------------------------------

def test_grid_encoder_shapes():
    enc = cap.GridEncoder(channels=8, feature_size=16)
    assert enc(torch.rand(3, 1, 48, 48)).shape == (3, 64, 16)
    assert enc(torch.rand(2, 1, 18, 24)).shape == (2, 12, 16)  # any multiple of 6: crops for pretraining
    out = enc(torch.rand(2, 1, 18, 18))
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)  # LayerNorm


def test_grid_encoder_cells_are_row_major_and_local():
    enc = cap.GridEncoder(channels=8, feature_size=16).eval()
    image = torch.zeros(1, 1, 48, 48)
    image[0, 0, 18:24, 36:42] = 1.0  # ink in cell (row 3, column 6) only: pixels 18-23, 36-41
    base, lit = enc(torch.zeros(1, 1, 48, 48)), enc(image)
    changed = (lit - base).abs().sum(-1)[0] > 1e-6  # (64,)
    rows, cols = np.nonzero(changed.view(8, 8).numpy())
    assert changed[3 * 8 + 6]
    # a cell sees 16 pixels: its own 6 and 5 around, so the ink reaches the neighbouring cells only
    assert set(rows) <= {2, 3, 4} and set(cols) <= {5, 6, 7}


@pytest.mark.parametrize(("images", "message"), [
    (torch.rand(2, 1, 20, 18), r"multiples of 6, got \(2, 1, 20, 18\)"),
    (torch.rand(2, 3, 18, 18), "grey-level"),
    (torch.rand(18, 18), "images must have 4 dimensions"),
])
def test_grid_encoder_errors(images, message):
    with pytest.raises(ValueError, match=message):
        cap.GridEncoder(8, 16)(images)


def test_grid_positions():
    table = cap.grid_positions(8, 32)
    assert table.shape == (64, 32)
    assert torch.equal(table[8 * 2 + 1, :16], table[8 * 2 + 5, :16])  # same row, same first half
    assert torch.equal(table[8 * 1 + 4, 16:], table[8 * 6 + 4, 16:])  # same column, same second half
    assert torch.cdist(table, table).fill_diagonal_(1.0).min() > 0.1  # every cell has its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        cap.grid_positions(8, 30)


# --- the decoder -------------------------------------------------------------------------------------

def test_forward_shapes_and_weights(data):
    train, _ = data
    model = small_model()
    logits, weights, log_probs = model(train.images[:5], train.tokens[:5])
    assert logits.shape == (5, 11, len(VOCAB)) and weights.shape == (5, 11, 64) and log_probs is None
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, 11))
    assert bool((weights >= 0).all())


def test_precomputed_features_give_the_same_result(data):
    train, _ = data
    model = small_model()
    a = model(train.images[:4], train.tokens[:4])
    b = model(model.encode(train.images[:4]), train.tokens[:4])
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_scores_are_the_packages_additive_score():
    model = small_model()
    annotations, keys, (h, _) = model.start(torch.rand(3, 1, 48, 48))
    ours = model.scores(keys, h)  # (B, N)
    # additive_score has no bias: fold W_h's bias into the query as a constant input of 1
    q = torch.cat([h, torch.ones(3, 1)], -1)[:, None, :]  # (B, 1, hidden + 1)
    W_q = torch.cat([model.W_h.weight, model.W_h.bias[:, None]], -1)
    reference = additive_score(q, annotations, W_q, model.W_a.weight, model.v.weight[0])[:, 0]
    torch.testing.assert_close(ours, reference)


def test_annotations_are_features_then_position():
    model = small_model()
    features = model.encode(torch.rand(2, 1, 48, 48))
    annotations = model.annotate(features)
    assert annotations.shape == (2, 64, 16 + 8)
    assert torch.equal(annotations[..., :16], features)
    assert torch.equal(annotations[0, :, 16:], cap.grid_positions(8, 8))
    assert small_model(position="none").annotate(features).shape == (2, 64, 16)
    learned = small_model(position="learned")
    assert learned.position.requires_grad and learned.annotate(features).shape == (2, 64, 24)


def test_gate_scales_the_context():
    gated, plain = small_model(gate=True), small_model(gate=False)
    assert gated.f_beta is not None and plain.f_beta is None
    assert sum(p.numel() for p in gated.parameters()) == sum(p.numel() for p in plain.parameters()) + 33
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("f_beta.")})
    annotations, keys, state = gated.start(torch.rand(3, 1, 48, 48))
    prev = torch.full((3,), VOCAB.bos)

    def logits(model, values):
        with torch.no_grad():
            return model.step(prev, state, values, keys)[0]

    no_context = logits(gated, torch.zeros_like(annotations))  # the context is 0 whatever β is
    with torch.no_grad():
        gated.f_beta.weight.zero_()
        gated.f_beta.bias.fill_(-40.0)  # β = σ(-40) ≈ 0: the context is switched off
    torch.testing.assert_close(logits(gated, annotations), no_context)
    with torch.no_grad():
        gated.f_beta.bias.fill_(40.0)  # β ≈ 1: the context passes whole, as without a gate
    torch.testing.assert_close(logits(gated, annotations), logits(plain, annotations))
    assert not torch.allclose(logits(gated, annotations), no_context, atol=1e-3)


def test_hard_attention_chooses_one_cell(data):
    train, _ = data
    model = small_model(attention="hard").train()
    torch.manual_seed(1)
    logits, weights, log_probs = model(train.images[:6], train.tokens[:6])
    assert log_probs.shape == (6, 11) and bool((log_probs <= 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, 11))  # α: the distribution sampled from
    # in eval mode the most probable cell is taken: log p(s_t) is that of the argmax
    model.eval()
    _, weights, log_probs = model(train.images[:6], train.tokens[:6])
    torch.testing.assert_close(log_probs, weights.max(-1).values.log())


def test_expected_context_for_some_images(data):
    train, _ = data
    model = small_model(attention="hard").train()
    expected = torch.tensor([True, False, True, False])
    annotations, keys, state = model.start(train.images[:4])
    prev = torch.full((4,), VOCAB.bos)
    torch.manual_seed(0)
    logits, alpha, _, log_prob = model.step(prev, state, annotations, keys, "sample", expected=expected)
    assert bool((log_prob[expected] == 0).all()) and bool((log_prob[~expected] < 0).all())
    soft = small_model(attention="soft").train()
    soft.load_state_dict(model.state_dict())
    soft_logits, _, _, _ = soft.step(prev, state, annotations, keys, "soft")
    torch.testing.assert_close(logits[expected], soft_logits[expected])
    assert not torch.allclose(logits[~expected], soft_logits[~expected])


def test_step_checks_its_mode_and_defaults_like_forward(data):
    train, _ = data
    prev = torch.full((4,), VOCAB.bos)
    hard, soft = small_model(attention="hard"), small_model()
    annotations, keys, state = hard.start(train.images[:4])
    with pytest.raises(ValueError, match="a hard-attention model has modes 'sample' and 'argmax', got 'soft'"):
        hard.step(prev, state, annotations, keys, mode="soft")
    with pytest.raises(ValueError, match="a soft-attention model only has mode 'soft', got 'sample'"):
        soft.step(prev, state, annotations, keys, mode="sample")
    # no mode: as forward, "argmax" in eval mode and "sample" when training, "soft" for a soft model
    torch.testing.assert_close(hard.step(prev, state, annotations, keys)[0],
                               hard.step(prev, state, annotations, keys, "argmax")[0])
    hard.train()
    drawn = hard.step(prev, state, annotations, keys, generator=torch.Generator().manual_seed(3))
    again = hard.step(prev, state, annotations, keys, "sample", torch.Generator().manual_seed(3))
    torch.testing.assert_close(drawn[0], again[0])
    torch.testing.assert_close(drawn[3], again[3])
    assert soft.step(prev, state, annotations, keys)[3] is None


def test_inputs_of_another_dtype_are_cast_and_non_finite_ones_refused(data):
    train, _ = data
    model = small_model()
    images, tokens = train.images[:3], train.tokens[:3]
    logits, weights, _ = model(images.double(), tokens)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, model(images, tokens)[0])
    tokens64, _ = model.greedy(images.double())
    assert torch.equal(tokens64, model.greedy(images)[0])
    bad = images.clone()
    bad[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"images must be finite, got a tensor \(3, 1, 48, 48\) holding NaN"):
        model.greedy(bad)
    features = model.encode(images)
    features[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="features must be finite, got .* holding infinite values"):
        model.beam_search(features, 2)


def test_config_rebuilds_the_model():
    model = small_model(attention="hard", gate=False, position="learned")
    again = cap.Captioner(**model.config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    assert again.config == model.config and again.attention == "hard"


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda m: m(torch.rand(2, 1, 32, 32), torch.ones(2, 3, dtype=torch.long)), ValueError,
     r"images must have shape \(B, 1, 48, 48\): this model reads 48x48 grey-level canvases, "
     r"got \(2, 1, 32, 32\)"),
    (lambda m: m(torch.rand(2, 64, 5), torch.ones(2, 3, dtype=torch.long)), ValueError,
     r"precomputed features must have shape \(B, N, C\) = \(B, 64, 16\)"),
    (lambda m: m(torch.rand(2, 1, 48, 48), torch.full((2, 3), 16)), ValueError,
     r"tokens must be ids in \[0, 16\) of this vocabulary, got values from 16 to 16"),
    (lambda m: m(torch.rand(2, 1, 48, 48), torch.ones(2, 3)), TypeError, "tokens must be an integer tensor"),
    (lambda m: m(torch.rand(2, 1, 48, 48), torch.ones(3, 4, dtype=torch.long)), ValueError,
     "one caption per image is needed"),
    (lambda m: m(torch.rand(2, 1, 48, 48), torch.ones(2, 1, dtype=torch.long)), ValueError, "T >= 2"),
    (lambda m: m(torch.rand(2, 1, 48, 48), torch.ones(2, 3, dtype=torch.long), mode="sample"), ValueError,
     "a soft-attention model only has mode 'soft'"),
    (lambda m: cap.Captioner(attention="medium"), ValueError, "attention must be one of soft, hard"),
    (lambda m: cap.Captioner(position="polar"), ValueError, "position must be one of"),
    (lambda m: cap.Captioner(image_size=50), ValueError, "image_size must be a multiple of the cell size 6"),
    (lambda m: cap.Captioner(feature_dropout=1.0), ValueError, "feature_dropout must be < 1"),
])
def test_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(small_model())


def test_an_unknown_word_in_a_caption_is_named():
    with pytest.raises(ValueError, match="unknown word 'beside'"):
        VOCAB.encode("three beside four")


# --- decoding ----------------------------------------------------------------------------------------

def _caption_log_prob(model, images, tokens):
    """log p(tokens | image) of generated tokens (B, L), up to and including <eos>."""
    bos = torch.full((tokens.size(0), 1), VOCAB.bos)
    full = torch.cat([bos, tokens], 1)
    logits, _, _ = model(images, full)
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    keep = torch.cumsum((tokens == VOCAB.eos).long(), 1) - (tokens == VOCAB.eos).long() == 0
    return (logp * keep).sum(1)


@pytest.fixture(scope="module")
def trained(one_thread_per_module, data, pools):
    """A small soft model trained briefly (a few seconds): good enough to have preferences. Also returns
    the number of threads torch used while training it."""
    train, _ = data
    model = small_model()
    cap.pretrain_encoder(model.encoder, pools[0], steps=30, batch_size=32, progress=False)
    history = cap.train_captioner(model, train, steps=120, batch_size=32, lr=5e-3, warmup=10, progress=False)
    return model, history, torch.get_num_threads()


def test_the_module_fixtures_train_on_one_thread(trained):
    assert trained[2] == 1


def test_greedy_layout(trained, data):
    model, _, _ = trained
    _, test = data
    tokens, weights = model.greedy(test.images[:10], max_len=11)
    assert tokens.shape[0] == 10 and tokens.shape[1] <= 11 and weights.shape == (*tokens.shape, 64)
    for row, w in zip(tokens, weights):
        ended = (row == VOCAB.eos).nonzero()
        if len(ended):
            e = int(ended[0])
            assert bool((row[e + 1:] == VOCAB.pad).all()) and bool((w[e + 1:] == 0).all())
        torch.testing.assert_close(w[0].sum(), torch.tensor(1.0))
    assert len(model.captions(tokens)) == 10


def test_beam_of_one_is_greedy_and_wider_beams_score_higher(trained, data):
    model, _, _ = trained
    _, test = data
    images = test.images[:12]
    greedy, greedy_w = model.greedy(images, 11)
    beam1, beam1_w = model.beam_search(images, beam_size=1, max_len=11)
    assert model.captions(beam1) == model.captions(greedy)
    torch.testing.assert_close(beam1_w[:, :greedy_w.size(1)], greedy_w)
    beam4, _ = model.beam_search(images, beam_size=4, max_len=11)
    score_greedy = _caption_log_prob(model, images, greedy)
    score_beam = _caption_log_prob(model, images, beam4)
    assert bool((score_beam >= score_greedy - 1e-4).all())


def test_a_short_training_run_lowers_the_loss(trained):
    _, history, _ = trained
    loss = history["loss"]
    assert len(loss) == 120 and all(math.isfinite(x) for x in loss)
    assert np.mean(loss[-20:]) < 0.8 * np.mean(loss[:20])


@pytest.mark.parametrize("reward", ["word", "caption"])
def test_a_short_hard_training_run_lowers_the_loss(data, reward):
    train, _ = data
    model = small_model(attention="hard")
    history = cap.train_captioner(model, train, steps=80, batch_size=32, lr=5e-3, warmup=10, reward=reward,
                                  progress=False)
    assert len(history["reward"]) == 80 and all(math.isfinite(x) for x in history["reward"])
    assert history["baseline"].shape == ((11,) if reward == "word" else ())
    assert np.mean(history["loss"][-15:]) < 0.8 * np.mean(history["loss"][:15])
    assert not model.training


def test_training_loss_parts(data):
    train, _ = data
    soft, hard = small_model().train(), small_model(attention="hard").train()
    features, tokens = soft.encode(train.images[:8]), train.tokens[:8]
    total, parts = cap.training_loss(soft, features, tokens)
    assert set(parts) == {"cross_entropy"} and torch.equal(total.detach(), parts["cross_entropy"])
    with_penalty, _ = cap.training_loss(soft, features, tokens, penalty=0.5)
    assert with_penalty.item() > total.item()  # the penalty is positive here: 11 words for 64 cells
    torch.manual_seed(0)
    total, parts = cap.training_loss(hard, features, tokens, generator=torch.Generator().manual_seed(0))
    assert set(parts) == {"cross_entropy", "baseline", "reward"} and parts["baseline"].shape == (11,)
    total.backward()  # the REINFORCE term reaches the attention's parameters
    assert hard.v.weight.grad is not None and float(hard.v.weight.grad.abs().sum()) > 0
    _, caption = cap.training_loss(hard, features, tokens, reward="caption")
    assert caption["baseline"].shape == ()


def test_training_is_reproducible_and_leaves_the_encoder_alone(data):
    train, _ = data
    runs = []
    for _ in range(2):
        model = small_model()
        before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        runs.append(cap.train_captioner(model, train, steps=5, batch_size=8, progress=False)["loss"])
        assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in before.items())
    assert runs[0] == runs[1]


def test_hard_training_is_reproducible_whatever_the_global_generator(data):
    """The cells drawn come from train_captioner's seeded generator, not torch's global one (dropout off:
    the feature dropout does draw from the global generator)."""
    train, _ = data
    start = small_model(attention="hard", feature_dropout=0.0).state_dict()
    features = small_model().encode(train.images)

    def run(seed, global_seed):
        model = small_model(attention="hard", feature_dropout=0.0)
        model.load_state_dict(start)
        torch.manual_seed(global_seed)
        history = cap.train_captioner(model, train, steps=4, batch_size=8, features=features, seed=seed,
                                      progress=False)
        return history["loss"] + history["reward"]

    first = run(seed=0, global_seed=1)
    assert run(seed=0, global_seed=2) == first
    assert run(seed=1, global_seed=1) != first


def test_penalty_and_callback(data):
    train, _ = data
    seen = []
    cap.train_captioner(small_model(), train, steps=3, batch_size=8, penalty=0.1, progress=False,
                        callback=lambda step, history: seen.append((step, len(history["loss"]))))
    assert seen == [(0, 1), (1, 2), (2, 3)]


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_an_interrupted_run_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(data, tmp_path,
                                                                                       attention):
    """Saved every 2 steps; stopped after step 5 (its checkpoint is from step 4); resumed: the same losses
    and the same weights as 8 steps in one go, dropout included (the global generator is saved too)."""
    train, _ = data
    features = small_model().encode(train.images).detach()
    options = {"steps": 8, "batch_size": 8, "features": features, "progress": False, "checkpoint_every": 2}

    torch.manual_seed(5)
    straight = small_model(attention=attention)
    whole = cap.train_captioner(straight, train, **options)

    def stop_after_step_5(step, history):
        if step == 5:
            raise _Interrupt

    torch.manual_seed(5)
    model = small_model(attention=attention)
    path = tmp_path / "run.pt"
    with pytest.raises(_Interrupt):
        cap.train_captioner(model, train, checkpoint=path, callback=stop_after_step_5, **options)
    assert torch.load(path, weights_only=True)["extra"]["training"]["step"] == 6  # saved after steps 2, 4, 6

    torch.manual_seed(123)  # whatever happened since: the saved generators take over
    again = small_model(attention=attention)
    resumed = cap.train_captioner(again, train, checkpoint=path, resume=True, **options)
    assert resumed["loss"] == whole["loss"]
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)
    assert cap.load_captioner(path).config == straight.config  # the run's file is also a model file

    finished = small_model(attention=attention)
    assert cap.train_captioner(finished, train, checkpoint=path, resume=True, **options)["loss"] == whole["loss"]


def test_resuming_needs_a_training_checkpoint_of_the_same_settings(data, tmp_path):
    train, _ = data
    options = {"batch_size": 8, "progress": False}
    with pytest.raises(ValueError, match="resume=True needs the checkpoint file"):
        cap.train_captioner(small_model(), train, 2, resume=True, **options)
    fresh = cap.train_captioner(small_model(), train, 2, checkpoint=tmp_path / "new.pt", resume=True,
                                **options)  # no file yet: starts from step 0
    assert len(fresh["loss"]) == 2 and (tmp_path / "new.pt").is_file()
    with pytest.raises(CheckpointError, match=r"other settings.*'lr': \(0.003, 0.01\)"):
        cap.train_captioner(small_model(), train, 2, checkpoint=tmp_path / "new.pt", resume=True, lr=0.01,
                            **options)
    plain = cap.save_captioner(tmp_path / "plain.pt", small_model())
    with pytest.raises(CheckpointError, match="no training state"):
        cap.train_captioner(small_model(), train, 2, checkpoint=plain, resume=True, **options)
    with pytest.raises(ValueError, match="checkpoint_every must be > 0"):
        cap.train_captioner(small_model(), train, 2, checkpoint=tmp_path / "x.pt", checkpoint_every=0)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"steps": 0}, ValueError, "steps must be > 0"),
    ({"reward": "sentence"}, ValueError, "reward must be one of word, caption"),
    ({"soft_mix": 1.5}, ValueError, "soft_mix is a probability"),
    ({"features": torch.zeros(3, 64, 16)}, ValueError, "features must hold one entry per scene: 400 scenes"),
    ({"lr": -1.0}, ValueError, "lr must be > 0"),
])
def test_train_errors(data, kwargs, error, message):
    train, _ = data
    args = {"steps": 2, **kwargs}
    with pytest.raises(error, match=message):
        cap.train_captioner(small_model(), train, **args)


def test_train_refuses_other_things(data):
    train, _ = data
    with pytest.raises(TypeError, match="model must be a Captioner"):
        cap.train_captioner(torch.nn.Linear(2, 2), train, 2)
    with pytest.raises(TypeError, match="scenes must be Scenes"):
        cap.train_captioner(small_model(), [1, 2], 2)


def test_pretraining_learns_single_digits(pools):
    train_pool, test_pool = pools
    encoder = cap.GridEncoder(8, 16)
    torch.manual_seed(0)
    history = cap.pretrain_encoder(encoder, train_pool, steps=150, batch_size=32, lr=1e-2, progress=False)
    assert np.mean(history["loss"][-10:]) < 0.7 * np.mean(history["loss"][:10])
    assert history["classifier"].encoder is encoder
    assert cap.classifier_accuracy(history["classifier"], test_pool, repeats=1) > 0.3  # chance: 0.1
    logits, weights = history["classifier"].glimpse(torch.rand(3, 1, 18, 18))
    assert logits.shape == (3, 10) and weights.shape == (3, 9)
    with pytest.raises(ValueError, match="crop must be a multiple of 6"):
        cap.pretrain_encoder(encoder, train_pool, steps=1, crop=20)
    with pytest.raises(TypeError, match="digits must be a DigitSource"):
        cap.pretrain_encoder(encoder, np.zeros((3, 8, 8)), steps=1)


# --- losses and metrics ------------------------------------------------------------------------------

def test_doubly_stochastic_penalty():
    gen = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(3, 5, 7, generator=gen), -1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    per_caption = [((1 - (weights[b] * mask[b, :, None]).sum(0)) ** 2).sum() for b in range(3)]
    expected = torch.stack(per_caption).mean()
    torch.testing.assert_close(cap.doubly_stochastic_penalty(weights, mask, lam=0.5), 0.5 * expected)
    # every cell attended exactly once over the words: no penalty
    permutation = torch.eye(6)[torch.randperm(6, generator=gen)][None]
    assert float(cap.doubly_stochastic_penalty(permutation)) == 0.0
    with pytest.raises(ValueError, match=r"mask must be a boolean tensor of shape \(B, T\) = \(3, 5\)"):
        cap.doubly_stochastic_penalty(weights, mask.float())


def test_cell_boxes():
    boxes = torch.tensor([[[5, 6, 13, 14], [0, 0, 6, 6], [-1, -1, -1, -1]]])
    cells = cap.cell_boxes(boxes, 6)
    assert cells.tolist() == [[[0, 1, 3, 3], [0, 0, 1, 1], [-1, -1, -1, -1]]]
    with pytest.raises(TypeError, match="boxes must be an integer tensor"):
        cap.cell_boxes(boxes.float(), 6)


def _one_hot_weights(cells, grid=8):
    """(B, T) flat cell indices -> one-hot attention (B, T, G·G)."""
    return torch.nn.functional.one_hot(torch.tensor(cells), grid * grid).double()


def test_hit_rate_on_hand_made_cases():
    cells = torch.tensor([[[1, 0, 3, 2], [5, 4, 7, 5]]])  # digit 0: cols 1-2, rows 0-1; 1: cols 5-6, row 4
    named = torch.tensor([[0, -1, 1, -1]])  # word 0 names digit 0, word 2 names digit 1
    hit_both = _one_hot_weights([[1 * 8 + 2, 63, 4 * 8 + 5, 0]])  # row 1 col 2; row 4 col 5
    rate = cap.attention_hit_rate(hit_both, named, cells, 8)
    assert rate.dtype == torch.float64 and float(rate) == 1.0
    # the relation word (index 1) and <eos> (index 3) looked anywhere: not counted
    miss_one = _one_hot_weights([[2 * 8 + 1, 9, 4 * 8 + 6, 9]])  # row 2 is below digit 0
    assert float(cap.attention_hit_rate(miss_one, named, cells, 8)) == 0.5
    # row and column swapped (cell 2 * 8 + 1 instead of 1 * 8 + 2) is a miss
    swapped = _one_hot_weights([[2 * 8 + 1, 0, 5 * 8 + 4, 0]])
    assert float(cap.attention_hit_rate(swapped, named, cells, 8)) == 0.0
    nothing = cap.attention_hit_rate(hit_both, torch.full((1, 4), -1), cells, 8)
    assert math.isnan(float(nothing))
    hits = cap.attention_hits(miss_one, named, cells, 8)
    assert hits.tolist() == [[False, False, True, False]]


@pytest.mark.parametrize(("args", "message"), [
    ((torch.rand(1, 3, 64), torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 1, 4, dtype=torch.long), 8),
     r"weights must be \(B, T, G·G\) = \(1, 4, 64\)"),
    ((torch.rand(1, 4, 64), torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 1, 4, dtype=torch.long), 7),
     r"= \(1, 4, 49\)"),
    ((torch.rand(1, 4, 64), torch.full((1, 4), 2), torch.zeros(1, 2, 4, dtype=torch.long), 8),
     "named refers to digit 2, but cells holds 2 per scene"),
    ((torch.rand(1, 4, 64), torch.zeros(1, 4, dtype=torch.long), torch.zeros(2, 1, 4, dtype=torch.long), 8),
     "same batch size B"),
    ((torch.rand(1, 4, 64), torch.full((1, 4), -2), torch.zeros(1, 1, 4, dtype=torch.long), 8),
     r"named must hold digit indices k >= 0, or -1 \(-1 marks words that name no digit\), got -2"),
])
def test_hit_rate_errors(args, message):
    with pytest.raises(ValueError, match=message):
        cap.attention_hit_rate(*args)


def test_attention_on_digits():
    cells = torch.tensor([[[0, 0, 2, 2], [4, 4, 5, 6]]])
    on = cap.digit_cells(cells, 8)
    assert on.shape == (1, 2, 64) and on[0, 0].sum() == 4 and on[0, 1].sum() == 2
    assert on[0, 0, 9] and on[0, 1, 5 * 8 + 4] and not on[0, 1, 4 * 8 + 5]
    weights = torch.full((1, 3, 64), 1 / 64)
    mass = cap.attention_on_digits(weights, cells, 8)
    torch.testing.assert_close(mass, torch.tensor([[[4 / 64, 2 / 64]] * 3]))


def test_per_digit_accuracy(data):
    _, test = data
    part = test[:3]
    assert cap.per_digit_accuracy(list(part.captions), part) == 1.0
    wrong_first = []
    for caption in part.captions:
        words = caption.split()
        words[0] = "one" if words[0] != "one" else "two"
        wrong_first.append(" ".join(words))
    total = int(part.n_digits.sum())
    assert cap.per_digit_accuracy(wrong_first, part) == pytest.approx((total - 3) / total)
    assert cap.per_digit_accuracy(["", "", ""], part) == 0.0
    assert cap.per_digit_accuracy(tuple(part.captions), part) == 1.0
    with pytest.raises(ValueError, match="one hypothesis per scene"):
        cap.per_digit_accuracy(["one"], part)


@pytest.mark.parametrize(("hypotheses", "scenes", "error", "message"), [
    ([None, None, None], slice(0, 3), TypeError,
     "hypotheses must be a list of str .*, but entry 0 is NoneType"),
    ("one left of two", slice(0, 1), TypeError, r"hypotheses must be a list of str \(one caption per scene\), "
     "got str"),
    ([], slice(0, 0), ValueError, r"no digits to score: the scenes \(0\) hold none"),
])
def test_per_digit_accuracy_errors(data, hypotheses, scenes, error, message):
    _, test = data
    with pytest.raises(error, match=message):
        cap.per_digit_accuracy(hypotheses, test[scenes])


@pytest.mark.parametrize("call", [
    lambda m, s, f: cap.decode(m, s, features=f),
    lambda m, s, f: cap.teacher_forced_weights(m, s, f),
    lambda m, s, f: cap.evaluate(m, s, features=f),
], ids=["decode", "teacher_forced_weights", "evaluate"])
@pytest.mark.parametrize("count", [3, 9])
def test_features_must_match_the_scenes(data, call, count):
    _, test = data
    scenes = test[:6]
    with pytest.raises(ValueError, match=rf"features must hold one entry per scene: 6 scenes, but features "
                                         rf"has {count} \(shape \({count}, 64, 16\)\)"):
        call(small_model(), scenes, torch.rand(count, 64, 16))


def test_evaluate_reports_the_four_numbers(trained, data):
    model, _, _ = trained
    _, test = data
    result = cap.evaluate(model, test)
    assert set(result) == {"exact", "bleu", "per_digit", "hit_rate"}
    assert 0 <= result["exact"] <= result["per_digit"] <= 1 and 0 <= result["bleu"] <= 100
    assert 0 <= result["hit_rate"] <= 1
    features = cap.encode_scenes(model, test)
    assert cap.evaluate(model, test, features=features) == result
    captions, weights = cap.decode(model, test, beam_size=2, features=features)
    assert len(captions) == 60 and weights.shape == (60, 11, 64)


# --- checkpoints ---------------------------------------------------------------------------------------

def test_checkpoint_round_trip(trained, data, tmp_path):
    model, _, _ = trained
    _, test = data
    path = cap.save_captioner(tmp_path / "soft.pt", model, step=120)
    again = cap.load_captioner(path)
    assert again.config == model.config and not again.training
    images, tokens = test.images[:3], test.tokens[:3]
    torch.testing.assert_close(again(images, tokens)[0], model(images, tokens)[0])


def test_bad_checkpoints_are_named(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        cap.load_captioner(corrupt)
    with pytest.raises(CheckpointError, match="no such file"):
        cap.load_captioner(tmp_path / "missing.pt")
    other = save_checkpoint(tmp_path / "other.pt", torch.nn.Linear(2, 2), config={})
    with pytest.raises(CheckpointError, match="holds a Linear, not a Captioner"):
        cap.load_captioner(other)


# --- devices -------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(data):
    train, _ = data
    model = small_model().cuda()
    logits, weights, _ = model(train.images[:4].cuda(), train.tokens[:4].cuda())
    assert logits.device.type == "cuda" and weights.device.type == "cuda"
    tokens, _ = model.beam_search(train.images[:4].cuda(), beam_size=2)
    assert tokens.device.type == "cuda"


def test_small_canvas_model(pools):
    cfg = SceneConfig(canvas=36, max_digits=3)
    scenes = compose_scenes(pools[0], 20, cfg)
    model = small_model(image_size=36)
    assert model.grid == 6
    logits, weights, _ = model(scenes.images, scenes.tokens)
    assert weights.shape == (20, cfg.max_tokens - 1, 36)


# --- the chapter's exercises (attn_course.exercises.captioning): answers a learner might write ----------

def _hit_rate(weights, named, cells, grid, inclusive="", counted=">=", box="cols first", mask=True,
              start="<="):
    """A learner's hit rate, right by default, with one of the classic slips switched on."""
    best = weights.argmax(-1)
    row, col = best // grid, best % grid
    box_of_word = cells[torch.arange(len(cells))[:, None], named.clamp(min=0)]  # (B, T, 4)
    c0, r0, c1, r1 = box_of_word.unbind(-1)
    if box == "rows first":  # read as (row0, col0, row1, col1)
        r0, c0, r1, c1 = box_of_word.unbind(-1)
    rows_in = ((r0 < row) if start == "<" else (r0 <= row)) & ((row <= r1) if "rows" in inclusive else (row < r1))
    cols_in = ((c0 < col) if start == "<" else (c0 <= col)) & ((col <= c1) if "cols" in inclusive else (col < c1))
    words = named > 0 if counted == ">" else named >= 0
    hits = (rows_in & cols_in & (words if mask else True)).to(weights.dtype)
    return hits.sum() / words.sum().to(weights.dtype), hits


def _grade(exercise, fn, seeds):
    return [check(exercise, fn, seed=seed) for seed in seeds]


@pytest.mark.parametrize("inclusive", ["rows", "cols"])
def test_hit_rate_grader_catches_ends_inclusive_on_one_axis(inclusive):
    results = _grade("attention-hit-rate", lambda *a: _hit_rate(*a, inclusive=inclusive), range(60))
    assert not any(r.passed for r in results)
    assert {r.mistake for r in results} == {"the box ends were treated as inclusive"}


@pytest.mark.parametrize(("slip", "mistake"), [
    ({"counted": ">"}, "the first digit of each scene was left out (named > 0 instead of named >= 0)"),
    ({"mask": False}, "the words that name no digit (named = -1) were not left out of the hits"),
    ({"start": "<"}, "the box starts were treated as exclusive"),
    ({"box": "rows first"}, "rows and columns are crossed: the flat cell index was split as (column, row), "
                            "or the box was read as (row0, col0, row1, col1)"),
])
def test_hit_rate_grader_names_the_classic_slips(slip, mistake):
    for result in _grade("attention-hit-rate", lambda *a: _hit_rate(*a, **slip), range(6)):
        assert result.mistake == mistake, str(result)


def test_hit_rate_grader_points_at_the_box_layout():
    result = check("attention-hit-rate", lambda *a: _hit_rate(*a, box="rows first"), seed=0)
    assert "each box is (col0, row0, col1, row1)" in result.hint and "row n // G, column n % G" in result.hint


def _grid_context(features, query, axis=None, divide="sqrt", flatten="rows"):
    b, h, w, c = features.shape
    if flatten == "columns":
        cells = features.transpose(1, 2).reshape(b, h * w, c)
    else:
        cells = features.reshape(b, h * w, c)
    scores = (cells @ query[:, :, None])[..., 0] / (c if divide == "C" else math.sqrt(c))
    if axis is None:
        weights = torch.softmax(scores, -1).reshape(b, h, w)
    else:
        weights = torch.softmax(scores.reshape(b, h, w), dim=axis)
    return (weights.reshape(b, 1, h * w) @ cells)[:, 0], weights


@pytest.mark.parametrize(("slip", "mistake"), [
    ({"axis": 1}, "the softmax ran over one axis of the grid only (each row or each column separately)"),
    ({"axis": 2}, "the softmax ran over one axis of the grid only (each row or each column separately)"),
    ({"divide": "C"}, "the scores were divided by C instead of √C"),
    ({"flatten": "columns"}, "the grid was flattened column by column, then the weights read back row by row"),
])
def test_grid_context_grader_names_the_classic_slips(slip, mistake):
    for result in _grade("grid-context", lambda f, q: _grid_context(f, q, **slip), range(4)):
        assert result.mistake == mistake, str(result)


def _penalty(weights, mask, lam, coverage="sum", detach=False):
    covered = weights * mask[..., None]
    total = covered.sum(1) if coverage == "sum" else covered.mean(1)
    penalty = lam * ((1 - total) ** 2).sum(-1).mean()
    if detach:
        penalty = torch.tensor(lam * float(((1 - total) ** 2).sum(-1).mean()), dtype=weights.dtype)
    return penalty, total


def test_penalty_grader_names_the_average_and_wants_a_differentiable_penalty():
    for result in _grade("doubly-stochastic-penalty", lambda *a: _penalty(*a, coverage="mean"), range(4)):
        assert result.mistake == "the coverage was averaged over the words instead of summed", str(result)
    for result in _grade("doubly-stochastic-penalty", lambda *a: _penalty(*a, detach=True), range(4)):
        assert not result.passed and "no gradient flows back through your result" in result.message
        assert "torch.tensor(...)" in result.hint and ".item()" in result.hint


def _hit_rate_loops(weights, named, cells, grid):
    hits = torch.zeros(named.shape, dtype=weights.dtype)
    for b in range(named.size(0)):
        for t in range(named.size(1)):
            k = int(named[b, t])
            if k >= 0:
                r, c = divmod(int(weights[b, t].argmax()), grid)
                c0, r0, c1, r1 = cells[b, k].tolist()
                hits[b, t] = float(c0 <= c < c1 and r0 <= r < r1)
    return hits.sum() / (named >= 0).sum(), hits


def _hit_rate_einops(weights, named, cells, grid):
    w = einops.rearrange(weights, "b t (r c) -> b t r c", r=grid)
    r, c = torch.unravel_index(w.flatten(2).argmax(-1), (grid, grid))
    box = torch.stack([cells[b][named[b].clamp(min=0)] for b in range(len(cells))]).double()
    inside = (box[..., 0] <= c) & (c < box[..., 2]) & (box[..., 1] <= r) & (r < box[..., 3]) & (named >= 0)
    return inside.double().sum().to(weights.dtype) / (named >= 0).sum(), inside.to(weights.dtype)


def _grid_context_einops(features, query):
    cells = einops.rearrange(features, "b h w c -> b (h w) c")
    scores = einops.einsum(cells.double(), query.double(), "b n c, b c -> b n") / math.sqrt(cells.size(-1))
    weights = scores.softmax(-1)
    context = einops.einsum(weights, cells.double(), "b n, b n c -> b c")
    return context.to(features.dtype), einops.rearrange(weights, "b (h w) -> b h w", h=features.size(1)).to(
        features.dtype)


def _penalty_loops(weights, mask, lam):
    coverage = torch.zeros(weights.size(0), weights.size(2), dtype=weights.dtype)
    total = 0.0
    for b in range(weights.size(0)):
        for t in range(weights.size(1)):
            if mask[b, t]:
                coverage[b] = coverage[b] + weights[b, t]
        total = total + ((1 - coverage[b].double()) ** 2).sum()
    return (lam * total / weights.size(0)).to(weights.dtype), coverage


@pytest.mark.parametrize(("exercise", "answer"), [
    ("attention-hit-rate", _hit_rate_loops),
    ("attention-hit-rate", _hit_rate_einops),
    ("grid-context", _grid_context_einops),
    ("doubly-stochastic-penalty", _penalty_loops),
    ("doubly-stochastic-penalty", lambda w, m, lam: tuple(x.to(w.dtype) for x in _penalty(w.double(), m, lam))),
], ids=["hit-rate-loops", "hit-rate-einops-float64", "grid-context-einops-float64", "penalty-loops-float64",
        "penalty-float64"])
def test_other_correct_answers_pass(exercise, answer):
    for result in _grade(exercise, answer, range(4)):
        assert result.passed, str(result)
