"""Decoding a translation model one token at a time: greedy search and beam search, each returning the
attention that emitted every token.

Both work with any model of ``seq2seq``'s translation interface: ``encode(src) -> state`` and
``decode_step(token, state) -> (logits, weights, state)``, where ``state`` is a dict of tensors whose first
axis is the batch.

- **Greedy**: at every step take the most probable token and feed it back, until EOS or ``max_len``
  tokens. Fast, batched, but a choice is never revisited.
- **Beam search** (as in Sutskever et al. 2014, §3.2; Bahdanau et al. 2015, §4.2): keep the ``beam_size``
  best partial translations by total log-probability; a hypothesis that emits EOS is set aside, and the
  best finished one wins, its score divided by its length to the power ``length_penalty`` (0: no
  normalisation, which favours short outputs; 1: the mean log-probability per token).

Shapes: B batch, Ls source tokens, V target vocabulary, K beam size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _checks
from .text import BOS, EOS, PAD

__all__ = ["Hypothesis", "beam_search", "greedy_decode"]


@dataclass
class Hypothesis:
    """One decoded sentence: token ids (without BOS and EOS), the attention that emitted each of them
    (Lt, Ls) with Ls the source's real length, the total log-probability (EOS included), and whether it
    ended with EOS (False if it hit ``max_len``)."""

    tokens: list[int]
    weights: torch.Tensor
    log_prob: float
    finished: bool


def _check_decoding(model, src, max_len):
    _checks.tensor("src", src, ndim=(1, 2), kind="int")
    _checks.positive("max_len", max_len, integer=True)
    if not (hasattr(model, "encode") and hasattr(model, "decode_step")):
        raise TypeError(f"model must have encode() and decode_step() (a seq2seq translation model), got "
                        f"{type(model).__name__}")
    return src[None] if src.dim() == 1 else src


@torch.no_grad()
def greedy_decode(model, src: torch.Tensor, max_len: int = 30) -> list[Hypothesis]:
    """Greedy decoding of a batch. src: (B, Ls) (or (Ls,) for one sentence) -> one ``Hypothesis`` per row.

    Stops a row at its first EOS (not part of its tokens) or after ``max_len`` tokens; the batch stops when
    every row has.
    """
    src = _check_decoding(model, src, max_len)
    was_training = model.training
    model.eval()
    state = model.encode(src)
    batch = src.size(0)
    token = torch.full((batch,), BOS, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    log_probs = torch.zeros(batch, device=src.device)
    tokens, weights = [], []
    for _ in range(max_len):
        logits, step_weights, state = model.decode_step(token, state)
        step_log_probs = torch.log_softmax(logits.float(), dim=-1)
        token = step_log_probs.argmax(dim=-1)  # (B,)
        log_probs += torch.where(finished, 0.0, step_log_probs.gather(1, token[:, None])[:, 0])
        tokens.append(token)
        weights.append(step_weights)
        finished = finished | (token == EOS)
        if bool(finished.all()):
            break
    model.train(was_training)
    tokens = torch.stack(tokens, dim=1).cpu()  # (B, T)
    weights = torch.stack(weights, dim=1).float().cpu()  # (B, T, Ls)
    lengths = (src != PAD).sum(dim=1).cpu()
    out = []
    for row in range(batch):
        ids = tokens[row].tolist()
        end = ids.index(EOS) if EOS in ids else len(ids)
        out.append(Hypothesis(ids[:end], weights[row, :end, :int(lengths[row])], float(log_probs[row]),
                              EOS in ids))
    return out


@torch.no_grad()
def beam_search(model, src: torch.Tensor, beam_size: int = 4, max_len: int = 30,
                length_penalty: float = 1.0, n_best: int = 1) -> list[Hypothesis]:
    """Beam search for ONE sentence. src: (Ls,) or (1, Ls) -> the ``n_best`` best hypotheses, best first,
    ranked by log-probability / length ** length_penalty (length counting EOS).

    With ``beam_size=1`` this is greedy decoding. If no hypothesis reaches EOS within ``max_len`` tokens,
    the best unfinished ones are returned (``finished=False``).
    """
    src = _check_decoding(model, src, max_len)
    if src.size(0) != 1:
        raise ValueError(f"beam_search decodes one sentence at a time, got a batch of {src.size(0)}; call it "
                         f"per sentence (or use greedy_decode for a batch)")
    _checks.positive("beam_size", beam_size, integer=True)
    _checks.positive("n_best", n_best, integer=True)
    _checks.number("length_penalty", length_penalty, minimum=0, strict=False)
    if n_best > beam_size:
        raise ValueError(f"n_best ({n_best}) cannot exceed beam_size ({beam_size})")
    was_training = model.training
    model.eval()
    length = int((src != PAD).sum())
    state = model.encode(src)
    token = torch.full((1,), BOS, dtype=torch.long, device=src.device)
    scores = torch.zeros(1, device=src.device)  # (K,) total log-probabilities of the live beams
    history = torch.zeros(1, 0, dtype=torch.long)  # (K, t)
    attention = torch.zeros(1, 0, length)  # (K, t, Ls)
    finished: list[Hypothesis] = []

    def ranked(hyp: Hypothesis) -> float:
        return hyp.log_prob / (len(hyp.tokens) + hyp.finished) ** length_penalty

    for step in range(max_len):
        logits, weights, state = model.decode_step(token, state)
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (K, V)
        vocab = log_probs.size(-1)
        candidates = (scores[:, None] + log_probs).flatten()  # (K·V,)
        top_scores, top = candidates.topk(min(2 * beam_size, candidates.numel()))
        weights = weights[:, :length].float().cpu()
        keep_beams, keep_tokens, keep_scores = [], [], []
        for score, index in zip(top_scores.tolist(), top.tolist()):
            beam, tok = divmod(index, vocab)
            if tok == EOS:
                finished.append(Hypothesis(history[beam].tolist(), attention[beam], score, True))
            else:
                keep_beams.append(beam)
                keep_tokens.append(tok)
                keep_scores.append(score)
            if len(keep_beams) == beam_size:
                break
        finished.sort(key=ranked, reverse=True)
        best_alive = max(keep_scores, default=float("-inf"))
        # log-probabilities only fall: an alive beam can beat the n-th finished one only if its score now,
        # normalised by the longest length it could reach, already does
        bound = best_alive / (max_len + 1) ** length_penalty if best_alive < 0 else best_alive
        if not keep_beams or (len(finished) >= n_best and ranked(finished[n_best - 1]) >= bound):
            break
        index = torch.tensor(keep_beams, device=src.device)
        state = {k: v.index_select(0, index) for k, v in state.items()}
        token = torch.tensor(keep_tokens, device=src.device)
        scores = torch.tensor(keep_scores, device=src.device)
        cpu_index = index.cpu()
        history = torch.cat([history[cpu_index], torch.tensor(keep_tokens)[:, None]], dim=1)
        attention = torch.cat([attention[cpu_index], weights[cpu_index, None]], dim=1)
        if step == max_len - 1:  # out of length: the live beams are the unfinished answers
            finished += [Hypothesis(history[k].tolist(), attention[k], float(scores[k]), False)
                         for k in range(len(keep_beams))]
    model.train(was_training)
    finished.sort(key=ranked, reverse=True)
    return finished[:n_best]
