"""The GRU encoder-decoder: shapes with and without attention, greedy decoding consistent with the
teacher-forced pass, a short training run that learns, and clear errors for bad token tensors."""

import itertools
import re

import pytest
import torch

from attn_course.data import BOS, copy_batch
from attn_course.seq2seq import Seq2Seq, train

VOCAB = 12  # PAD, BOS and the digits 0-9


def make_model(attention, seed=0):
    torch.manual_seed(seed)
    return Seq2Seq(VOCAB, hidden_size=32, embed_size=16, attention=attention).eval()


def tokens(gen, *shape):
    return torch.randint(2, VOCAB, shape, generator=gen)


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize(("batch", "ls", "lt"), [(3, 5, 5), (2, 7, 4), (1, 1, 6)])
def test_forward_shapes_and_weights(attention, batch, ls, lt):
    gen = torch.Generator().manual_seed(1)
    logits, weights = make_model(attention)(tokens(gen, batch, ls), tokens(gen, batch, lt))
    assert logits.shape == (batch, lt, VOCAB) and torch.isfinite(logits).all()
    if not attention:
        assert weights is None
    else:
        assert weights.shape == (batch, lt, ls)
        assert torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(batch, lt))


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize(("batch", "ls", "length"), [(3, 5, 5), (2, 4, 7), (1, 6, 1)])
def test_greedy_matches_the_teacher_forced_pass(attention, batch, ls, length):
    model = make_model(attention, seed=2)
    src = tokens(torch.Generator().manual_seed(3), batch, ls)
    out, weights = model.greedy(src, length)
    assert out.shape == (batch, length) and out.dtype == torch.long and not out.requires_grad
    assert out.min() >= 0 and out.max() < VOCAB
    # feeding the greedy tokens back in, teacher-forced, must predict the same tokens at every step
    tgt_in = torch.cat([torch.full((batch, 1), BOS), out[:, :-1]], dim=1)
    logits, forced_weights = model(src, tgt_in)
    assert torch.equal(logits.argmax(-1), out)
    if not attention:
        assert weights is None
    else:
        assert weights.shape == (batch, length, ls)
        torch.testing.assert_close(weights, forced_weights)


def copy_batches(seed, batch_size=32):
    gen = torch.Generator().manual_seed(seed)
    for length in itertools.cycle([4, 5, 6]):
        yield copy_batch(batch_size, length, generator=gen)


@pytest.mark.parametrize("attention", [False, True])
def test_short_training_run_lowers_the_loss(attention, one_thread):
    model = make_model(attention, seed=4)
    losses = train(model, copy_batches(5), steps=150, lr=1e-2, progress=False)
    assert len(losses) == 150 and all(isinstance(x, float) for x in losses)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    assert not model.training


def test_float_token_ids_are_a_type_error():
    model = make_model(False)
    with pytest.raises(TypeError, match=r"src must be an integer tensor, got dtype torch.float32"):
        model(torch.full((2, 3), 2.0), torch.full((2, 3), 2))
    with pytest.raises(TypeError, match="tgt_in must be an integer tensor"):
        model(torch.full((2, 3), 2), torch.full((2, 3), 2.0))


def test_train_needs_an_iterator():
    with pytest.raises(TypeError, match="batches must be an iterator"):
        train(make_model(False), lambda: None, steps=1, progress=False)


@pytest.mark.parametrize(("src", "tgt_in", "error", "message"), [
    (torch.tensor([[2, 12, 3]]), torch.tensor([[1, 2, 3]]), ValueError,
     "src must hold token ids in [0, 12), got values from 2 to 12"),
    (torch.tensor([[2, -1, 3]]), torch.tensor([[1, 2, 3]]), ValueError,
     "src must hold token ids in [0, 12), got values from -1 to 3"),
    (torch.tensor([[2, 3]]), torch.tensor([[1, 99]]), ValueError,
     "tgt_in must hold token ids in [0, 12), got values from 1 to 99"),
    (torch.tensor([2, 3]), torch.tensor([[1, 2]]), ValueError, "src must have 2 dimensions, got shape (2,)"),
    ([[2, 3]], torch.tensor([[1, 2]]), TypeError, "src must be a torch.Tensor, got list"),
])
def test_bad_tokens(src, tgt_in, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make_model(True)(src, tgt_in)


@pytest.mark.parametrize(("length", "error", "message"), [
    (0, ValueError, "length must be > 0, got 0"),
    (2.0, TypeError, "length must be a whole number, got float"),
])
def test_greedy_bad_length(length, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make_model(False).greedy(torch.tensor([[2, 3]]), length)


def test_greedy_checks_the_source():
    with pytest.raises(ValueError, match=re.escape("src must hold token ids in [0, 12), got values from 2 to 40")):
        make_model(True).greedy(torch.tensor([[2, 40]]), 3)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"steps": 0}, ValueError, "steps must be > 0, got 0"),
    ({"steps": 1.5}, TypeError, "steps must be a whole number, got float"),
    ({"steps": 3, "lr": 0.0}, ValueError, "lr must be > 0, got 0.0"),
])
def test_train_bad_settings(kwargs, error, message):
    model = make_model(False)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(error, match=re.escape(message)):
        train(model, copy_batches(6), progress=False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"vocab_size": 0}, "vocab_size must be > 0, got 0"),
    ({"vocab_size": 12, "hidden_size": -4}, "hidden_size must be > 0, got -4"),
])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Seq2Seq(**kwargs)
