"""Encoder-decoders for sequence to sequence: a small GRU model for the copy task, and the translation
models of the worked example (English→Spanish).

**Seq2Seq** (Sutskever et al. 2014; Cho et al. 2014), with or without attention. Without attention the
decoder sees the source only through the encoder's last hidden state: one fixed-length vector however long
the sentence (the bottleneck of Bahdanau et al. 2015, §1). With attention the decoder's state at each step
queries *all* encoder states, Luong et al. 2015's global attention:

    c_t = Σ_s a_t(s) h̄_s,   a_t = softmax(h_tᵀ h̄_s / √H),   h̃_t = tanh(W_c [c_t; h_t])   (Luong eq. 5)

**RNNTranslator**: a bidirectional GRU encoder whose annotations h_j = [→h_j; ←h_j] (Bahdanau et al. 2015,
§3.2) are attended by a GRU decoder, in one of two ways:

- ``attention="bahdanau"`` (Bahdanau et al. 2015, §3.1 and appendix A.2.2): the *previous* decoder state
  s_{i-1} scores every annotation with the additive score ``scoring.additive_score``,
  e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j), α_i = softmax(e_i), c_i = Σ_j α_ij h_j; the context enters the
  recurrence, s_i = GRU([E y_{i-1}; c_i], s_{i-1}), and the output reads t_i = tanh(W_o [s_i; c_i; E y_{i-1}])
  (a simplification of A.2.2, whose output layer reads s_{i-1} and uses a maxout instead of the tanh).
- ``attention="luong"`` (Luong et al. 2015, §3.1, global attention with the "general" score, eq. 8): the
  decoder first steps, h_t = GRU(E y_{t-1}, h_{t-1}), then its *current* state scores the annotations,
  score(h_t, h̄_s) = h_tᵀ W_a h̄_s (``scoring.general_score``), and h̃_t = tanh(W_c [c_t; h_t]) (eq. 5)
  feeds the output. Without input feeding (their §3.3) the recurrence ignores the contexts, so training
  runs the decoder GRU over the whole target at once.

Both start from s_0 = tanh(W_s ←h_1), the backward encoder's state at the first word (Bahdanau A.2.2).

**TransformerTranslator**: ``transformer.Encoder``/``Decoder`` stacks over token embeddings (times √E) plus
sinusoidal positions (Vaswani et al. 2017, §3.4-3.5); its alignment is the cross-attention of one decoder
layer, averaged over the heads.

Every translation model has the same interface, used by ``decoding`` (greedy and beam search):
``forward(src, tgt_in) -> (logits, weights)`` teacher-forced, ``encode(src) -> state`` and
``decode_step(token, state) -> (logits, weights, state)`` one token at a time, where ``state`` is a dict of
tensors whose first axis is the batch (so beam search can reorder it). ``PAD`` (= 0) marks padding.

Shapes: B batch, Ls source tokens, Lt target tokens, V vocabulary, E embedding size, H hidden size, A
attention size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from .attention import attend
from .masking import masked_softmax
from .positional import SinusoidalPositionalEncoding
from .scoring import AdditiveScore, GeneralScore, general_score
from .text import BOS, PAD  # the same ids as the copy task's (attn_course.data): PAD = 0, BOS = 1
from .transformer import Decoder, Encoder


class Seq2Seq(nn.Module):
    """GRU encoder-decoder over one shared vocabulary; ``attention=True`` adds Luong global attention.

    src: (B, Ls) token ids; tgt_in: (B, Lt) decoder inputs (BOS, then the target shifted right).
    """

    def __init__(self, vocab_size: int, hidden_size: int = 64, embed_size: int = 32, attention: bool = False):
        super().__init__()
        _checks.positive("vocab_size", vocab_size, integer=True)
        _checks.positive("hidden_size", hidden_size, integer=True)
        _checks.positive("embed_size", embed_size, integer=True)
        self.attention = attention
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.encoder = nn.GRU(embed_size, hidden_size, batch_first=True)
        self.decoder = nn.GRU(embed_size, hidden_size, batch_first=True)
        self.combine = nn.Linear(2 * hidden_size, hidden_size) if attention else None
        self.out = nn.Linear(hidden_size, vocab_size)

    def _check_tokens(self, name: str, tokens) -> None:
        _checks.tensor(name, tokens, ndim=2, kind="int")
        vocab = self.embed.num_embeddings
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
            raise ValueError(f"{name} must hold token ids in [0, {vocab}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src: (B, Ls) -> encoder states (B, Ls, H) and the final state (1, B, H)."""
        self._check_tokens("src", src)
        return self.encoder(self.embed(src))

    def decode(self, tgt_in: torch.Tensor, enc_states: torch.Tensor, state: torch.Tensor):
        """tgt_in: (B, Lt) -> logits (B, Lt, V), attention weights (B, Lt, Ls) or None, new state (1, B, H)."""
        dec_states, state = self.decoder(self.embed(tgt_in), state)  # (B, Lt, H)
        weights = None
        if self.attention:
            context, weights = attend(dec_states, enc_states, enc_states)  # (B, Lt, H), (B, Lt, Ls)
            dec_states = torch.tanh(self.combine(torch.cat([context, dec_states], dim=-1)))
        return self.out(dec_states), weights, state

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor):
        """Teacher-forced pass: logits (B, Lt, V) and weights (B, Lt, Ls) (None without attention)."""
        self._check_tokens("tgt_in", tgt_in)
        enc_states, state = self.encode(src)
        logits, weights, _ = self.decode(tgt_in, enc_states, state)
        return logits, weights

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode ``length`` tokens greedily. src: (B, Ls) -> tokens (B, length), weights (B, length, Ls)."""
        _checks.positive("length", length, integer=True)
        enc_states, state = self.encode(src)
        token = torch.full((src.size(0), 1), BOS, dtype=torch.long, device=src.device)
        tokens, weights = [], []
        for _ in range(length):
            logits, w, state = self.decode(token, enc_states, state)  # one step: (B, 1, V)
            token = logits.argmax(dim=-1)
            tokens.append(token)
            weights.append(w)
        return torch.cat(tokens, dim=1), (torch.cat(weights, dim=1) if self.attention else None)


def train(model: nn.Module, batches: Iterator, steps: int, lr: float = 3e-3,
          progress: bool = True, desc: str = "training", *, ignore_index: int | None = None, warmup: int = 0,
          schedule: str = "constant") -> list[float]:
    """Train ``model`` with Adam and cross-entropy for a fixed number of steps (not wall time: reproducible).

    batches: an iterator of (src, tgt_in, tgt_out). Returns the loss of every step. Shows a progress bar.
    ignore_index: a target id left out of the loss (``text.PAD`` for padded batches). warmup: steps over
    which the learning rate rises linearly from lr / warmup to lr; schedule: "constant" after that, or
    "cosine", decaying to lr / 10 at the last step.
    """
    _checks.positive("steps", steps, integer=True)
    _checks.positive("lr", lr)
    _checks.number("warmup", warmup, integer=True, minimum=0, strict=False)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if not isinstance(batches, Iterator):
        raise TypeError(f"batches must be an iterator of (src, tgt_in, tgt_out), got {type(batches).__name__}; "
                        "pass a generator such as (copy_batch(...) for _ in itertools.count())")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(_lr_factor, steps=steps, warmup=warmup,
                                                                      schedule=schedule))
    losses = []
    model.train()
    with tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5) as bar:
        for _ in bar:
            src, tgt_in, tgt_out = next(batches)
            logits, _ = model(src, tgt_in)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(),
                                               ignore_index=-100 if ignore_index is None else ignore_index)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return losses


def _lr_factor(step: int, *, steps: int, warmup: int, schedule: str) -> float:
    """The learning rate at ``step``, as a fraction of the peak: linear warm-up, then constant or cosine."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


# --- translation models ----------------------------------------------------------------------------------

ATTENTIONS = ("bahdanau", "luong")


def _check_src(model: nn.Module, src, name: str = "src", batch: int | None = None) -> None:
    """src or tgt_in: (B, L) token ids in the model's vocabulary, L ≥ 1; a source sentence is padded at
    the end only (PAD after its last word) and has at least one real token. ``batch``: the B it must have."""
    _checks.tensor(name, src, ndim=2, kind="int")
    if batch is not None and src.size(0) != batch:
        raise ValueError(f"src and tgt_in must hold the same number of sentences, got {batch} and "
                         f"{src.size(0)}")
    if src.size(1) == 0:
        raise ValueError(f"{name} has no tokens (shape {tuple(src.shape)}): every sentence needs at least one")
    vocab = model.src_vocab_size if name == "src" else model.tgt_vocab_size
    if src.min() < 0 or src.max() >= vocab:
        raise ValueError(f"{name} must hold token ids in [0, {vocab}), got values from {int(src.min())} to "
                         f"{int(src.max())}")
    limit = getattr(model, "max_len", None)
    if limit is not None and src.size(1) > limit:
        raise ValueError(f"{name} has {src.size(1)} tokens, more than the model's max_len = {limit} positions")
    if name == "src":
        real = src != PAD
        if not bool(real.any(dim=1).all()):
            raise ValueError("every source sentence needs at least one token that is not PAD")
        if bool((real[:, 1:] & ~real[:, :-1]).any()):
            raise ValueError("src is padded on the left or in the middle: put the PAD tokens (0) after each "
                             "sentence's last word, e.g. [[5, 6, 0]], not [[0, 5, 6]]")


def _check_step(model: nn.Module, token, state) -> None:
    """decode_step's inputs: token (B,) ids in the target vocabulary, state a dict from ``encode``."""
    if not isinstance(state, dict) or "mask" not in state:
        raise TypeError(f"state must be the dict returned by encode (or by the last decode_step), got "
                        f"{type(state).__name__}")
    _checks.tensor("token", token, ndim=1, kind="int")
    batch = state["mask"].size(0)
    if token.size(0) != batch:
        raise ValueError(f"token must hold one id per sentence of the state: shape ({batch},), got "
                         f"{tuple(token.shape)}")
    if token.min() < 0 or token.max() >= model.tgt_vocab_size:
        raise ValueError(f"token must hold ids in [0, {model.tgt_vocab_size}), got values from "
                         f"{int(token.min())} to {int(token.max())}")


class BiGRUEncoder(nn.Module):
    """A bidirectional GRU over embeddings (Bahdanau et al. 2015, §3.2): annotations h_j = [→h_j; ←h_j].

    forward(src (B, Ls)) -> annotations (B, Ls, 2H), zero on padding, and the backward GRU's state at
    the first word, ←h_1 (B, H), a summary of the whole sentence read from the end. Padded sentences are
    packed, so the backward GRU starts at each sentence's last real token, not at its padding.
    """

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=PAD)
        self.gru = nn.GRU(embed_size, hidden_size, batch_first=True, bidirectional=True)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = (src != PAD).sum(dim=1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(src), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        states, last = self.gru(packed)  # last: (2, B, H), forward then backward
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=src.size(1))
        return states, last[1]  # (B, Ls, 2H); the backward direction ends at word 1: ←h_1 (B, H)


class RNNTranslator(nn.Module):
    """Bi-GRU encoder and GRU decoder with Bahdanau (additive) or Luong (general) attention; see the
    module docstring for the equations.

    src_vocab_size, tgt_vocab_size: V of each language; embed_size: E; hidden_size: H of the decoder, each
    encoder direction having H / 2 (so the annotations have size H); attn_size: A, the additive score's
    hidden layer (Bahdanau only). forward(src (B, Ls), tgt_in (B, Lt)) -> logits (B, Lt, V) and the
    attention weights (B, Lt, Ls): row t is the attention of the step that *emits* target token t.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, attention: str = "bahdanau",
                 embed_size: int = 64, hidden_size: int = 128, attn_size: int = 128):
        super().__init__()
        for name, value in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                            ("embed_size", embed_size), ("hidden_size", hidden_size), ("attn_size", attn_size)):
            _checks.positive(name, value, integer=True)
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTIONS))}, got {attention!r}")
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (each encoder direction gets half), got {hidden_size}")
        self.attention = attention
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.config = {"kind": "rnn", "attention": attention, "src_vocab_size": src_vocab_size,
                       "tgt_vocab_size": tgt_vocab_size, "embed_size": embed_size, "hidden_size": hidden_size,
                       "attn_size": attn_size}
        self.encoder = BiGRUEncoder(src_vocab_size, embed_size, hidden_size // 2)
        self.init_state = nn.Linear(hidden_size // 2, hidden_size)  # W_s: s_0 = tanh(W_s ←h_1)
        self.embed = nn.Embedding(tgt_vocab_size, embed_size, padding_idx=PAD)
        if attention == "bahdanau":
            self.score = AdditiveScore(hidden_size, hidden_size, attn_size)  # W_a, U_a, v_a
            self.cell = nn.GRUCell(embed_size + hidden_size, hidden_size)  # input [E y_{i-1}; c_i]
            self.combine = nn.Linear(2 * hidden_size + embed_size, hidden_size)  # W_o [s_i; c_i; E y_{i-1}]
        else:
            self.score = GeneralScore(hidden_size, hidden_size)  # W_a
            self.cell = nn.GRU(embed_size, hidden_size, batch_first=True)
            self.combine = nn.Linear(2 * hidden_size, hidden_size)  # W_c [c_t; h_t]
        self.out = nn.Linear(hidden_size, tgt_vocab_size)

    def encode(self, src: torch.Tensor) -> dict[str, torch.Tensor]:
        """src (B, Ls) -> the decoder's starting state: annotations "keys" (B, Ls, H), "mask" (B, Ls)
        True on real tokens, "hidden" s_0 (B, H); Bahdanau's also "projected", U_a h_j (B, Ls, A),
        computed once per sentence as Bahdanau et al. do (appendix A.1.2)."""
        _check_src(self, src)
        keys, backward_first = self.encoder(src)
        state = {"keys": keys, "mask": src != PAD, "hidden": torch.tanh(self.init_state(backward_first))}
        if self.attention == "bahdanau":
            state["projected"] = keys @ self.score.W_k.T  # (B, Ls, H) @ (H, A) -> (B, Ls, A)
        return state

    def _bahdanau_weights(self, hidden: torch.Tensor, state: dict) -> torch.Tensor:
        """α_i = softmax_j(v_aᵀ tanh(W_a s_{i-1} + U_a h_j)) over the real tokens: hidden (B, H) -> (B, Ls).
        The same numbers as ``scoring.additive_score(s, h, W_a, U_a, v_a)``, with U_a h_j precomputed."""
        query = hidden @ self.score.W_q.T  # W_a s_{i-1}: (B, H) @ (H, A) -> (B, A)
        scores = torch.tanh(query[:, None] + state["projected"]) @ self.score.v  # (B, Ls, A) @ (A,) -> (B, Ls)
        return masked_softmax(scores, state["mask"])

    def decode_step(self, token: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """One step: the previous token (B,) -> logits of the next (B, V), the attention used to emit it
        (B, Ls), and the new state."""
        _check_step(self, token, state)
        emb = self.embed(token)  # (B, E)
        keys, hidden = state["keys"], state["hidden"]
        if self.attention == "bahdanau":
            weights = self._bahdanau_weights(hidden, state)  # from s_{i-1}
            context = (weights[:, None] @ keys)[:, 0]  # (B, 1, Ls) @ (B, Ls, H) -> (B, H)
            hidden = self.cell(torch.cat([emb, context], dim=-1), hidden)  # s_i
            features = torch.tanh(self.combine(torch.cat([hidden, context, emb], dim=-1)))
        else:
            _, h = self.cell(emb[:, None], hidden[None])  # h_t: (1, B, H)
            hidden = h[0]
            scores = general_score(hidden[:, None], keys, self.score.W)[:, 0]  # (B, Ls)
            weights = masked_softmax(scores, state["mask"])
            context = (weights[:, None] @ keys)[:, 0]
            features = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))  # h̃_t
        return self.out(features), weights, {**state, "hidden": hidden}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor,
                return_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass: logits (B, Lt, V) and attention weights (B, Lt, Ls) (computed anyway, so
        returned whatever ``return_weights`` says; the flag is there to match ``TransformerTranslator``)."""
        _check_src(self, src)
        _check_src(self, tgt_in, "tgt_in", batch=src.size(0))
        state = self.encode(src)
        if self.attention == "luong":  # no input feeding: the whole target through the GRU at once
            dec, _ = self.cell(self.embed(tgt_in), state["hidden"][None])  # (B, Lt, H)
            scores = general_score(dec, state["keys"], self.score.W)  # (B, Lt, Ls)
            weights = masked_softmax(scores, state["mask"][:, None])
            context = weights @ state["keys"]  # (B, Lt, Ls) @ (B, Ls, H) -> (B, Lt, H)
            features = torch.tanh(self.combine(torch.cat([context, dec], dim=-1)))
            return self.out(features), weights
        # Bahdanau: only the attention and the GRU are recurrent; the output layers run once on all steps
        # (the same numbers as calling decode_step Lt times, with fewer, larger matrix products).
        emb, keys, hidden = self.embed(tgt_in), state["keys"], state["hidden"]  # emb: (B, Lt, E)
        states, contexts, weights = [], [], []
        for t in range(tgt_in.size(1)):
            step_weights = self._bahdanau_weights(hidden, state)  # (B, Ls), from s_{t-1}
            context = (step_weights[:, None] @ keys)[:, 0]  # (B, H)
            hidden = self.cell(torch.cat([emb[:, t], context], dim=-1), hidden)  # s_t
            states.append(hidden)
            contexts.append(context)
            weights.append(step_weights)
        features = torch.cat([torch.stack(states, 1), torch.stack(contexts, 1), emb], dim=-1)  # (B, Lt, 2H+E)
        return self.out(torch.tanh(self.combine(features))), torch.stack(weights, dim=1)


class TransformerTranslator(nn.Module):
    """A small Transformer encoder-decoder (Vaswani et al. 2017) built from ``transformer.Encoder`` and
    ``transformer.Decoder`` (pre-LN by default: it trains without a long warm-up).

    embed_dim: E; num_heads: H; num_layers: N encoder and N decoder layers; hidden_dim: the feed-forward
    size F; max_len: the longest sentence (positions). alignment_layer: the decoder layer whose
    cross-attention, averaged over the heads, is returned as the alignment (default the last).
    forward(src, tgt_in) -> logits (B, Lt, V) and, when ``return_weights``, that alignment (B, Lt, Ls)
    (the readable attention path, slower), else None.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, embed_dim: int = 128, num_heads: int = 4,
                 num_layers: int = 2, hidden_dim: int = 256, dropout: float = 0.1, max_len: int = 64,
                 norm_first: bool = True, alignment_layer: int = -1):
        super().__init__()
        for name, value in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                            ("max_len", max_len)):
            _checks.positive(name, value, integer=True)
        if not -num_layers <= alignment_layer < num_layers:
            raise ValueError(f"alignment_layer must index one of the {num_layers} decoder layers, got "
                             f"{alignment_layer}")
        self.src_vocab_size, self.tgt_vocab_size, self.embed_dim = src_vocab_size, tgt_vocab_size, embed_dim
        self.alignment_layer, self.max_len = alignment_layer, max_len
        self.config = {"kind": "transformer", "src_vocab_size": src_vocab_size, "tgt_vocab_size": tgt_vocab_size,
                       "embed_dim": embed_dim, "num_heads": num_heads, "num_layers": num_layers,
                       "hidden_dim": hidden_dim, "dropout": dropout, "max_len": max_len, "norm_first": norm_first,
                       "alignment_layer": alignment_layer}
        self.src_embed = nn.Embedding(src_vocab_size, embed_dim, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, embed_dim, padding_idx=PAD)
        for table in (self.src_embed, self.tgt_embed):  # N(0, 1/E): times √E, the same scale as the positions
            nn.init.normal_(table.weight, std=embed_dim**-0.5)
            table.weight.data[PAD] = 0
        self.positions = SinusoidalPositionalEncoding(embed_dim, max_len, dropout=dropout)
        stack = {"hidden_dim": hidden_dim, "dropout": dropout, "norm_first": norm_first}
        self.encoder = Encoder(num_layers, embed_dim, num_heads, **stack)
        self.decoder = Decoder(num_layers, embed_dim, num_heads, **stack)
        self.out = nn.Linear(embed_dim, tgt_vocab_size)

    def _embed(self, table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        return self.positions(table(tokens) * math.sqrt(self.embed_dim))  # §3.4: embeddings times √E

    def encode(self, src: torch.Tensor) -> dict[str, torch.Tensor]:
        """src (B, Ls) -> state: "memory" (B, Ls, E), "mask" (B, Ls), and the target "prefix" (B, 0)."""
        _check_src(self, src)
        mask = src != PAD
        memory, _ = self.encoder(self._embed(self.src_embed, src), key_padding_mask=mask)
        return {"memory": memory, "mask": mask, "prefix": src.new_zeros(src.size(0), 0)}

    def _decode(self, tgt_in, memory, mask, return_weights):
        x, weights = self.decoder(self._embed(self.tgt_embed, tgt_in), memory, memory_key_padding_mask=mask,
                                  key_padding_mask=tgt_in != PAD, return_weights=return_weights)
        alignment = weights[self.alignment_layer]["cross"].mean(dim=1) if return_weights else None  # (B, Lt, Ls)
        return self.out(x), alignment

    def decode_step(self, token: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Append the token (B,) to the prefix and run the decoder over it (no cache: the sentences are
        short); returns the next token's logits (B, V), its cross-attention (B, Ls) and the new state."""
        _check_step(self, token, state)
        if state["prefix"].size(1) >= self.max_len:
            raise ValueError(f"the target prefix already has {state['prefix'].size(1)} tokens, the model's "
                             f"max_len = {self.max_len} positions: decode with a smaller length limit")
        prefix = torch.cat([state["prefix"], token[:, None]], dim=1)
        logits, weights = self._decode(prefix, state["memory"], state["mask"], True)
        return logits[:, -1], weights[:, -1], {**state, "prefix": prefix}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_src(self, src)
        _check_src(self, tgt_in, "tgt_in", batch=src.size(0))
        state = self.encode(src)
        return self._decode(tgt_in, state["memory"], state["mask"], return_weights)


def build_translator(config: dict) -> nn.Module:
    """A fresh translation model from its ``config`` dict (``model.config``), e.g. to load a checkpoint."""
    if not isinstance(config, dict) or config.get("kind") not in ("rnn", "transformer"):
        raise ValueError(f"config must be a translation model's config with kind 'rnn' or 'transformer', "
                         f"got {config!r}")
    settings = {k: v for k, v in config.items() if k not in ("kind", "src_vocab_size", "tgt_vocab_size")}
    cls = RNNTranslator if config["kind"] == "rnn" else TransformerTranslator
    return cls(config["src_vocab_size"], config["tgt_vocab_size"], **settings)


def count_parameters(model: nn.Module) -> int:
    """The number of trained numbers in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
