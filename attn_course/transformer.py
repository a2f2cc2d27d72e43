"""The Transformer's encoder and decoder layers and stacks (Vaswani et al. 2017, sections 3.1-3.3).

An **encoder layer** (section 3.1) has two sub-layers: multi-head self-attention (section 3.2.2), then a
position-wise feed-forward network (section 3.3), ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`` applied to
every position separately. A **decoder layer** adds a third sub-layer between them: cross-attention, whose
queries come from the decoder and whose keys and values are the encoder's output (the "memory"); its
self-attention is masked so that position t sees positions 0..t only (section 3.2.3).

Each sub-layer is wrapped in a residual connection and a layer normalisation, in one of two orders:

- ``norm_first=False``, **post-LN**, as in the paper: ``x = LayerNorm(x + Dropout(Sublayer(x)))``.
- ``norm_first=True``, **pre-LN**, as in GPT-2 and most models since: ``x = x + Dropout(Sublayer(LayerNorm(x)))``.
  The residual path then carries the sum of every sub-layer's output untouched, which lets deep stacks
  train without a learning-rate warm-up (Xiong et al. 2020); its stacks end with one more LayerNorm.

Dropout (section 5.4) acts on each sub-layer's output before it is added to the residual, on the attention
weights, and after the feed-forward activation, as in ``torch.nn.TransformerEncoderLayer``.

Shapes: B batch, H heads, L positions of the sequence (Lq = Lk = L in self-attention), Lm positions of the
memory, E = embed_dim the model size (d_model in the paper), F = hidden_dim the feed-forward size (d_ff).
Masks are boolean with the course's convention: ``key_padding_mask`` (B, L) is True on real tokens,
``attn_mask`` is True where a query may attend. That is the **opposite** of ``torch.nn``'s masks, which
mark what to ignore.

The parameters are named as in ``torch.nn.TransformerEncoderLayer``/``DecoderLayer``/``TransformerEncoder``
(``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1``...), so their ``state_dict`` loads into
these modules one for one. Attention weights are returned when asked, never kept on the module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .multihead import MultiHeadAttention

__all__ = ["ACTIVATIONS", "Decoder", "DecoderLayer", "Encoder", "EncoderLayer", "residual"]

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


# --- checks ------------------------------------------------------------------------------------------------

def _config(embed_dim, num_heads, hidden_dim, dropout, activation, norm_first, layer_norm_eps):
    """Check a layer's settings; return (embed_dim, num_heads, hidden_dim) with the default F = 4E."""
    embed_dim = _checks.positive("embed_dim", embed_dim, integer=True)
    num_heads = _checks.positive("num_heads", num_heads, integer=True)
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim must be divisible by num_heads (each head gets embed_dim / num_heads "
                         f"features), got embed_dim={embed_dim} and num_heads={num_heads}")
    hidden_dim = 4 * embed_dim if hidden_dim is None else _checks.positive("hidden_dim", hidden_dim,
                                                                             integer=True)
    _checks.number("dropout", dropout, minimum=0, strict=False)
    if dropout >= 1:
        raise ValueError(f"dropout must be a probability below 1, got {dropout}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, got {activation!r}")
    if not isinstance(norm_first, bool):
        raise TypeError(f"norm_first must be True (pre-LN) or False (post-LN), got {type(norm_first).__name__}")
    _checks.positive("layer_norm_eps", layer_norm_eps)
    return embed_dim, num_heads, hidden_dim


def _check_sequence(name: str, x, module: nn.Module, like: torch.Tensor | None = None) -> None:
    """x must be (B, L, E) with the module's E and dtype (and, with ``like``, its batch size)."""
    _checks.tensor(name, x, ndim=3)
    if x.size(-1) != module.embed_dim:
        raise ValueError(f"{name} must have shape (B, L, E) with E = embed_dim = {module.embed_dim}, "
                         f"got shape {tuple(x.shape)}")
    dtype = next(module.parameters()).dtype
    # else torch stops deep inside a matmul with "mat1 and mat2 must have the same dtype"; under autocast
    # mixed dtypes are expected and torch casts them itself
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} is {x.dtype} but the layer's parameters are {dtype}: convert one to the "
                        f"other, e.g. {name}.to({dtype}) or layer.to({x.dtype})")
    if like is not None:
        _checks.same_size("x", like, 0, name, x, 0, "batch size B (first dimension)")
        if x.dtype != like.dtype:
            raise TypeError(f"x and {name} must share one dtype, got {like.dtype} and {x.dtype}")


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def _check_layers(num_layers) -> int:
    return _checks.positive("num_layers", num_layers, integer=True)


# --- the residual connection --------------------------------------------------------------------------------

def residual(x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor], norm: Callable, *,
             norm_first: bool = False, dropout: Callable | None = None) -> torch.Tensor:
    """A sub-layer with its residual connection and LayerNorm (Vaswani et al. 2017, section 3.1).

    x: (B, L, E); sublayer: (B, L, E) -> (B, L, E), e.g. self-attention or the feed-forward network;
    norm: a LayerNorm over E; dropout: applied to the sub-layer's output (section 5.4), or None.
    Post-LN (``norm_first=False``, the paper): ``LayerNorm(x + Dropout(Sublayer(x)))``.
    Pre-LN (``norm_first=True``): ``x + Dropout(Sublayer(LayerNorm(x)))``: the residual stream is never
    normalised, only what each sub-layer reads. Returns (B, L, E).
    """
    drop = dropout if dropout is not None else (lambda t: t)
    if norm_first:
        return x + drop(sublayer(norm(x)))
    return norm(x + drop(sublayer(x)))


# --- layers ------------------------------------------------------------------------------------------------

class _Layer(nn.Module):
    """What encoder and decoder layers share: the feed-forward network and the residual wrapping."""

    def _setup(self, embed_dim, num_heads, hidden_dim, dropout, activation, norm_first, layer_norm_eps):
        embed_dim, num_heads, hidden_dim = _config(embed_dim, num_heads, hidden_dim, dropout, activation,
                                                   norm_first, layer_norm_eps)
        self.embed_dim, self.num_heads, self.hidden_dim = embed_dim, num_heads, hidden_dim
        self.norm_first, self.activation_name = norm_first, activation
        self.activation = ACTIVATIONS[activation]
        return embed_dim, num_heads, hidden_dim

    def _make_ffn(self, embed_dim, hidden_dim, dropout, bias):
        self.linear1 = nn.Linear(embed_dim, hidden_dim, bias=bias)  # W_1: E -> F
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden_dim, embed_dim, bias=bias)  # W_2: F -> E

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The position-wise network of section 3.3: x (B, L, E) -> (B, L, F) -> (B, L, E)."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def _sublayer(self, x, norm, dropout, sublayer):
        """``residual`` around ``sublayer(h) -> (output, weights)``; returns (new x, weights)."""
        kept = [None]

        def output_only(h):
            output, kept[0] = sublayer(h)  # the weights are handed back, never stored on the module
            return output

        return residual(x, output_only, norm, norm_first=self.norm_first, dropout=dropout), kept[0]

    def extra_repr(self) -> str:
        order = "pre-LN" if self.norm_first else "post-LN"
        return f"{order}, activation={self.activation_name!r}"


class EncoderLayer(_Layer):
    """One encoder layer (Vaswani et al. 2017, section 3.1): self-attention, then the feed-forward network,
    each with a residual connection and a LayerNorm (post-LN by default, as in the paper).

    embed_dim: E; num_heads: H, which must divide E; hidden_dim: F, the feed-forward size (default 4E, as
    d_ff = 2048 for E = 512 in the paper); dropout: P_drop (0.1 in the paper); activation: "relu" (the
    paper) or "gelu"; norm_first: False for post-LN, True for pre-LN; impl: the attention path,
    "sdpa" or "reference" (see ``multihead``). With ``is_causal=True`` in ``forward`` it is the block of
    a decoder-only model (GPT): causal self-attention and no cross-attention.
    """

    def __init__(self, embed_dim: int, num_heads: int, hidden_dim: int | None = None, *, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
                 bias: bool = True, impl: str = "sdpa"):
        super().__init__()
        embed_dim, num_heads, hidden_dim = self._setup(embed_dim, num_heads, hidden_dim, dropout, activation,
                                                       norm_first, layer_norm_eps)
        self.self_attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, impl=impl)
        self._make_ffn(embed_dim, hidden_dim, dropout, bias)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, L, E); key_padding_mask: bool (B, L), True on real tokens; attn_mask: bool (L, L) or
        (B, H, L, L), True = may attend; is_causal: position t attends to positions 0..t only.

        Returns the output (B, L, E) and, with ``return_weights``, the self-attention weights of every
        head (B, H, L, L), else None. Padded positions still get an output (it is computed from the real
        tokens); leave them out of the loss.
        """
        _check_sequence("x", x, self)
        _check_flag("is_causal", is_causal)

        def attend(h):
            return self.self_attn(h, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                  is_causal=is_causal, return_weights=return_weights, average_weights=False)

        x, weights = self._sublayer(x, self.norm1, self.dropout1, attend)
        x, _ = self._sublayer(x, self.norm2, self.dropout2, lambda h: (self.feed_forward(h), None))
        return x, weights


class DecoderLayer(_Layer):
    """One decoder layer (Vaswani et al. 2017, section 3.1): masked self-attention, cross-attention over
    the encoder's output, then the feed-forward network; each with a residual connection and a LayerNorm.

    The arguments are those of ``EncoderLayer``. The memory must have the decoder's size E.
    """

    def __init__(self, embed_dim: int, num_heads: int, hidden_dim: int | None = None, *, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
                 bias: bool = True, impl: str = "sdpa"):
        super().__init__()
        embed_dim, num_heads, hidden_dim = self._setup(embed_dim, num_heads, hidden_dim, dropout, activation,
                                                       norm_first, layer_norm_eps)
        self.self_attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, impl=impl)
        self.multihead_attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, impl=impl)
        self._make_ffn(embed_dim, hidden_dim, dropout, bias)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, *, is_causal: bool = True,
                key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None,
                return_weights: bool = False) -> tuple[torch.Tensor, dict | None]:
        """x: (B, L, E) the target so far; memory: (B, Lm, E) the encoder's output.

        is_causal: mask the self-attention so position t sees 0..t (True by default, as in the paper;
        False only for experiments). This differs from ``nn.TransformerDecoder``, which is not causal
        unless given a ``tgt_mask``. key_padding_mask: bool (B, L), True on real target tokens; attn_mask: an extra
        self-attention mask, bool (L, L) or (B, H, L, L), True = may attend; memory_key_padding_mask:
        bool (B, Lm), True on real source tokens.

        Returns the output (B, L, E) and, with ``return_weights``, a dict of every head's weights:
        ``"self"`` (B, H, L, L) and ``"cross"`` (B, H, L, Lm); else None.
        """
        _check_sequence("x", x, self)
        _check_sequence("memory", memory, self, like=x)
        _check_flag("is_causal", is_causal)

        def self_attend(h):
            return self.self_attn(h, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                  is_causal=is_causal, return_weights=return_weights, average_weights=False)

        def cross_attend(h):  # queries from the decoder, keys and values from the encoder
            return self.multihead_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask,
                                       return_weights=return_weights, average_weights=False)

        x, self_weights = self._sublayer(x, self.norm1, self.dropout1, self_attend)
        x, cross_weights = self._sublayer(x, self.norm2, self.dropout2, cross_attend)
        x, _ = self._sublayer(x, self.norm3, self.dropout3, lambda h: (self.feed_forward(h), None))
        return x, ({"self": self_weights, "cross": cross_weights} if return_weights else None)


# --- stacks ------------------------------------------------------------------------------------------------

class _Stack(nn.Module):
    """N layers of ``layer_type``, each with its own fresh parameters, and a final LayerNorm for a pre-LN
    stack (its layers leave the residual stream un-normalised); the arguments are those of the layer."""

    layer_type: type[nn.Module]

    def __init__(self, num_layers: int, embed_dim: int, num_heads: int, hidden_dim: int | None = None, *,
                 dropout: float = 0.1, activation: str = "relu", norm_first: bool = False,
                 layer_norm_eps: float = 1e-5, bias: bool = True, impl: str = "sdpa"):
        super().__init__()
        self.layers = nn.ModuleList(
            self.layer_type(embed_dim, num_heads, hidden_dim, dropout=dropout, activation=activation,
                            norm_first=norm_first, layer_norm_eps=layer_norm_eps, bias=bias, impl=impl)
            for _ in range(_check_layers(num_layers)))
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias) if norm_first else None


class Encoder(_Stack):
    """N encoder layers (N = 6 in the paper), each built with its own fresh parameters.

    num_layers: N; the other arguments are those of ``EncoderLayer``. A pre-LN stack (``norm_first=True``)
    ends with one more LayerNorm (``self.norm``), since its layers leave the residual stream un-normalised;
    a post-LN stack has none (``self.norm`` is None), as in the paper.
    """

    layer_type = EncoderLayer

    def forward(self, x: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                return_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """x: (B, L, E); masks as in ``EncoderLayer.forward``. Returns the output (B, L, E) and, with
        ``return_weights``, a list with each layer's weights (B, H, L, L), else None."""
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask, is_causal=is_causal,
                               return_weights=return_weights)
            all_weights.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, (all_weights if return_weights else None)


class Decoder(_Stack):
    """N decoder layers over one memory (the encoder's output); the arguments are those of ``Encoder``.
    A pre-LN stack ends with one more LayerNorm (``self.norm``); a post-LN stack has none."""

    layer_type = DecoderLayer

    def forward(self, x: torch.Tensor, memory: torch.Tensor, *, is_causal: bool = True,
                key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None,
                return_weights: bool = False) -> tuple[torch.Tensor, list[dict] | None]:
        """x: (B, L, E), memory: (B, Lm, E); is_causal (True by default) and the masks as in
        ``DecoderLayer.forward``. Returns the output
        (B, L, E) and, with ``return_weights``, a list with each layer's dict of weights
        (``"self"`` (B, H, L, L), ``"cross"`` (B, H, L, Lm)), else None."""
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, memory, is_causal=is_causal, key_padding_mask=key_padding_mask,
                               attn_mask=attn_mask, memory_key_padding_mask=memory_key_padding_mask,
                               return_weights=return_weights)
            all_weights.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, (all_weights if return_weights else None)
