"""A small GRU encoder-decoder (Sutskever et al. 2014; Cho et al. 2014), with or without attention.

Without attention the decoder sees the source only through the encoder's last hidden state: one
fixed-length vector however long the sentence (the bottleneck of Bahdanau et al. 2015, §1). With attention
the decoder's state at each step queries *all* encoder states, Luong et al. 2015's global attention:

    c_t = Σ_s a_t(s) h̄_s,   a_t = softmax(h_tᵀ h̄_s / √H),   h̃_t = tanh(W_c [c_t; h_t])   (Luong eq. 5)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from .attention import attend
from .data import BOS


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
          progress: bool = True, desc: str = "training") -> list[float]:
    """Train ``model`` with Adam and cross-entropy for a fixed number of steps (not wall time: reproducible).

    batches: an iterator of (src, tgt_in, tgt_out). Returns the loss of every step. Shows a progress bar.
    """
    _checks.positive("steps", steps, integer=True)
    _checks.positive("lr", lr)
    if not isinstance(batches, Iterator):
        raise TypeError(f"batches must be an iterator of (src, tgt_in, tgt_out), got {type(batches).__name__}; "
                        "pass a generator such as (copy_batch(...) for _ in itertools.count())")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    with tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5) as bar:
        for _ in bar:
            src, tgt_in, tgt_out = next(batches)
            logits, _ = model(src, tgt_in)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return losses
