"""Encoder and decoder layers and stacks: shapes, masks (causal and padding), parity with torch.nn's
Transformer layers after loading their weights, pre-/post-LN, gradients, and clear errors."""

import pytest
import torch
from torch import nn

from attn_course import masking
from attn_course.transformer import Decoder, DecoderLayer, Encoder, EncoderLayer

E, H, F = 16, 4, 24


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _x(b=2, n=5, e=E, seed=0, dtype=torch.float32):
    return torch.randn(b, n, e, generator=_gen(seed), dtype=dtype)


def _real(lengths, n):
    """(B, L) True on real tokens (masking.padding_mask gives (B, 1, L), ready for (B, Lq, Lk) scores)."""
    return masking.padding_mask(torch.tensor(lengths), n)[:, 0]


def _layer(cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("dropout", 0.0)
    return cls(E, H, F, **kwargs)


# --- shapes and weights ----------------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_shapes_and_weights(norm_first):
    layer = _layer(EncoderLayer, norm_first=norm_first)
    x = _x()
    out, weights = layer(x)
    assert out.shape == x.shape and weights is None
    out2, weights = layer(x, return_weights=True)
    assert torch.allclose(out, out2, atol=1e-6)  # sdpa and the weights-returning path agree
    assert weights.shape == (2, H, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, H, 5))
    assert not any(isinstance(v, torch.Tensor) and v.shape == weights.shape for v in vars(layer).values())


def test_decoder_layer_shapes_and_weights():
    layer = _layer(DecoderLayer)
    x, memory = _x(n=4), _x(n=7, seed=1)
    out, weights = layer(x, memory, return_weights=True)
    assert out.shape == x.shape
    assert weights["self"].shape == (2, H, 4, 4) and weights["cross"].shape == (2, H, 4, 7)
    assert torch.all(weights["self"].triu(1) == 0)  # causal by default
    assert layer(x, memory)[1] is None


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_shapes_and_final_norm(norm_first):
    torch.manual_seed(0)
    encoder = Encoder(3, E, H, F, dropout=0.0, norm_first=norm_first)
    decoder = Decoder(2, E, H, F, dropout=0.0, norm_first=norm_first)
    assert (encoder.norm is not None) == norm_first and (decoder.norm is not None) == norm_first
    src, tgt = _x(n=6), _x(n=4, seed=1)
    memory, enc_weights = encoder(src, return_weights=True)
    out, dec_weights = decoder(tgt, memory, return_weights=True)
    assert memory.shape == src.shape and out.shape == tgt.shape
    assert len(enc_weights) == 3 and enc_weights[0].shape == (2, H, 6, 6)
    assert len(dec_weights) == 2 and dec_weights[1]["cross"].shape == (2, H, 4, 6)
    assert encoder(src)[1] is None and decoder(tgt, memory)[1] is None
    # fresh parameters in every layer, not copies of one
    assert not torch.equal(encoder.layers[0].linear1.weight, encoder.layers[1].linear1.weight)


def test_parameter_count():
    layer = _layer(EncoderLayer)
    attention = 4 * E * E + 4 * E
    ffn = E * F + F + F * E + E
    norms = 2 * 2 * E
    assert sum(p.numel() for p in layer.parameters()) == attention + ffn + norms
    decoder_layer = _layer(DecoderLayer)
    assert sum(p.numel() for p in decoder_layer.parameters()) == 2 * attention + ffn + 3 * 2 * E


# --- masks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_causal_decoder_output_at_t_ignores_later_inputs(impl):
    decoder = Decoder(2, E, H, F, dropout=0.0, impl=impl)
    x, memory = _x(n=6), _x(n=5, seed=1)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, E, generator=_gen(3))
    before, _ = decoder(x, memory)
    after, _ = decoder(changed, memory)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:], atol=1e-3)
    non_causal, _ = decoder(x, memory, is_causal=False)
    assert not torch.allclose(non_causal[:, :4], before[:, :4], atol=1e-3)


def test_decoder_and_encoder_take_one_causal_flag():
    """One name, is_causal, everywhere; the decoder is causal unless told otherwise."""
    decoder_layer, decoder = _layer(DecoderLayer), Decoder(1, E, H, F, dropout=0.0)
    x, memory = _x(n=4), _x(n=5, seed=1)
    assert torch.equal(decoder_layer(x, memory)[0], decoder_layer(x, memory, is_causal=True)[0])
    assert torch.equal(decoder(x, memory)[0], decoder(x, memory, is_causal=True)[0])
    _, weights = decoder_layer(x, memory, is_causal=False, return_weights=True)
    assert weights["self"].triu(1).sum() > 0
    with pytest.raises(TypeError, match="causal"):
        decoder(x, memory, causal=True)  # the old name is gone


def test_causal_encoder_layer_is_a_decoder_only_block():
    layer = _layer(EncoderLayer, norm_first=True)
    x = _x(n=6)
    changed = x.clone()
    changed[:, 3:] += 1.0
    assert torch.allclose(layer(x, is_causal=True)[0][:, :3], layer(changed, is_causal=True)[0][:, :3], atol=1e-6)


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_key_padding_is_honoured(impl):
    """Padding keys do not change the real positions' outputs: the padded batch equals each sequence alone."""
    encoder = Encoder(2, E, H, F, dropout=0.0, impl=impl)
    x = _x(n=5)
    padded = x.clone()
    padded[0, 3:] = 100.0  # garbage in the padding of sequence 0
    mask = _real([3, 5], 5)  # (B, Lk), True on real tokens
    out, weights = encoder(padded, key_padding_mask=mask, return_weights=True)
    alone, _ = encoder(x[:1, :3])
    assert torch.allclose(out[0, :3], alone[0], atol=1e-5)
    assert torch.all(weights[0][0, :, :, 3:] == 0)


def test_memory_padding_is_honoured():
    decoder = Decoder(1, E, H, F, dropout=0.0)
    x, memory = _x(n=4), _x(n=6, seed=1)
    garbage = memory.clone()
    garbage[:, 4:] = -50.0
    real = _real([4, 4], 6)
    out, _ = decoder(x, garbage, memory_key_padding_mask=real)
    short, _ = decoder(x, memory[:, :4])
    assert torch.allclose(out, short, atol=1e-5)


# --- parity with torch.nn --------------------------------------------------------------------------

def _torch_encoder_layer(norm_first, activation):
    torch.manual_seed(1)
    return nn.TransformerEncoderLayer(E, H, F, dropout=0.0, activation=activation, batch_first=True,
                                      norm_first=norm_first)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_encoder_layer_matches_torch_after_loading_its_weights(norm_first, activation, impl):
    theirs = _torch_encoder_layer(norm_first, activation)
    ours = EncoderLayer(E, H, F, dropout=0.0, activation=activation, norm_first=norm_first, impl=impl)
    ours.load_state_dict(theirs.state_dict())  # same parameter names and layout
    x = _x(n=6)
    real = _real([6, 4], 6)
    expected = theirs(x, src_key_padding_mask=~real)  # torch: True = ignore
    got, _ = ours(x, key_padding_mask=real)
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    causal = theirs(x, src_mask=nn.Transformer.generate_square_subsequent_mask(6), is_causal=True)
    assert torch.allclose(ours(x, is_causal=True)[0], causal, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch_after_loading_its_weights(norm_first):
    torch.manual_seed(2)
    theirs = nn.TransformerDecoderLayer(E, H, F, dropout=0.0, batch_first=True, norm_first=norm_first)
    ours = DecoderLayer(E, H, F, dropout=0.0, norm_first=norm_first)
    ours.load_state_dict(theirs.state_dict())
    x, memory = _x(n=5), _x(n=7, seed=1)
    real = _real([7, 3], 7)
    expected = theirs(x, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
                      tgt_is_causal=True, memory_key_padding_mask=~real)
    got, _ = ours(x, memory, memory_key_padding_mask=real)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_matches_torch(norm_first):
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True, norm_first=norm_first)
    theirs = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(E) if norm_first else None,
                                   enable_nested_tensor=False)
    ours = Encoder(2, E, H, F, dropout=0.0, norm_first=norm_first)
    ours.load_state_dict(theirs.state_dict())
    x = _x(n=5)
    assert torch.allclose(ours(x)[0], theirs(x), atol=1e-5)


def test_post_ln_layer_is_the_hand_written_composition():
    """LayerNorm(x + SelfAttention(x)), then LayerNorm(h + FFN(h)): section 3.1 written out."""
    layer = _layer(EncoderLayer)
    x = _x()
    attention, _ = layer.self_attn(x)
    h = layer.norm1(x + attention)
    ffn = layer.linear2(torch.relu(layer.linear1(h)))
    assert torch.allclose(layer(x)[0], layer.norm2(h + ffn), atol=1e-6)
    pre = _layer(EncoderLayer, norm_first=True)
    h = x + pre.self_attn(pre.norm1(x))[0]
    expected = h + pre.linear2(torch.relu(pre.linear1(pre.norm2(h))))
    assert torch.allclose(pre(x)[0], expected, atol=1e-6)


# --- training behaviour ----------------------------------------------------------------------------

def test_gradients_reach_every_parameter_and_the_inputs():
    torch.manual_seed(0)
    encoder, decoder = Encoder(2, E, H, F, dropout=0.1), Decoder(2, E, H, F, dropout=0.1, norm_first=True)
    src, tgt = _x(n=6).requires_grad_(), _x(n=4, seed=1).requires_grad_()
    memory, _ = encoder(src)
    out, _ = decoder(tgt, memory)
    out.pow(2).sum().backward()
    for module in (encoder, decoder):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert src.grad.abs().sum() > 0 and tgt.grad.abs().sum() > 0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = EncoderLayer(E, H, F, dropout=0.5)
    x = _x()
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])
    layer.train()
    assert not torch.allclose(layer(x)[0], layer(x)[0])


def test_dtype_follows_the_module_and_inputs():
    layer = _layer(EncoderLayer).double()
    out, weights = layer(_x(dtype=torch.float64), return_weights=True)
    assert out.dtype == weights.dtype == torch.float64


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"embed_dim": 10, "num_heads": 4}, ValueError, "embed_dim must be divisible by num_heads"),
    ({"num_heads": 0}, ValueError, "num_heads must be > 0"),
    ({"hidden_dim": 2.5}, TypeError, "hidden_dim must be a whole number"),
    ({"dropout": 1.0}, ValueError, "dropout must be a probability below 1"),
    ({"activation": "tanh"}, ValueError, "activation must be one of 'relu', 'gelu'"),
    ({"norm_first": "pre"}, TypeError, "norm_first must be True"),
])
@pytest.mark.parametrize("cls", [EncoderLayer, DecoderLayer])
def test_bad_configs(cls, kwargs, error, message):
    settings = {"embed_dim": E, "num_heads": H, **kwargs}
    with pytest.raises(error, match=message):
        cls(**settings)


def test_bad_stack_and_inputs():
    with pytest.raises(ValueError, match="num_layers must be > 0"):
        Encoder(0, E, H)
    layer, decoder_layer = _layer(EncoderLayer), _layer(DecoderLayer)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, E\) with E = embed_dim = 16"):
        layer(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        layer(torch.zeros(5, E))
    with pytest.raises(ValueError, match="same batch size"):
        decoder_layer(_x(b=2), _x(b=3))
    with pytest.raises(ValueError, match="memory must have shape"):
        decoder_layer(_x(), torch.zeros(2, 5, 8))
    with pytest.raises(TypeError, match="is_causal must be True or False"):
        decoder_layer(_x(), _x(), is_causal=None)
    with pytest.raises(TypeError, match="is_causal must be True or False"):
        layer(_x(), is_causal=1)
    # a float64 input to a float32 layer: a course-style message, not torch's "mat1 and mat2"
    with pytest.raises(TypeError, match=r"x is torch.float64 but the layer's parameters are torch.float32"):
        layer(_x(dtype=torch.float64))
    with pytest.raises(TypeError, match=r"memory is torch.float64 but the layer's parameters"):
        decoder_layer(_x(), _x(dtype=torch.float64))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, Lk\)"):
        layer(_x(), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))


def test_the_multi_head_exercise_reference_is_the_package_module():
    """The chapter's exercise grades against MultiHeadAttention(bias=False) with the given weights."""
    from attn_course.exercises import get
    from attn_course.multihead import MultiHeadAttention

    reference = get("multi-head-attention").reference
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, bias=False, impl="reference")
    w_q, w_k, w_v = mha.in_proj_weight.detach().chunk(3)
    x, mask = _x(n=6), masking.causal_mask(6)
    expected, expected_w = mha(x, attn_mask=mask, return_weights=True, average_weights=False)
    got, got_w = reference(x, w_q, w_k, w_v, mha.out_proj.weight.detach(), H, mask)
    assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(got_w, expected_w, atol=1e-6)
