"""Exercises on the translation worked example (chapter 12): one decoder step of Bahdanau's additive
attention, greedy decoding with a length limit, and the alignment error rate of an attention matrix.

Shapes: B batch, Ls source words, D decoder state size, Dk annotation size, A attention size, V target
vocabulary, Lt target words.
"""

from __future__ import annotations

import torch

from .. import _checks
from ..masking import masked_softmax, padding_mask
from ..scoring import additive_score
from . import Case, Exercise, Mistake, register
from ._grader import randn

# --- 1. one additive-attention decoder step -----------------------------------------------------------


def additive_attention_step(state: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, W_q: torch.Tensor,
                            W_k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention of one Bahdanau decoder step (Bahdanau et al. 2015, eq. 5-6 and appendix A.1.2):

        e_j = vᵀ tanh(W_q s + W_k h_j),   α = softmax(e) over the real words,   c = Σ_j α_j h_j

    state: the previous decoder state s_{i-1}, (B, D); keys: the encoder's annotations h_j, (B, Ls, Dk);
    mask: (B, Ls) bool, True on real words (False on padding); W_q: (A, D), W_k: (A, Dk), v: (A,).
    Returns the context c (B, Dk) and the weights α (B, Ls), 0 on padding.
    """
    for name, x in (("state", state), ("keys", keys), ("W_q", W_q), ("W_k", W_k), ("v", v)):
        _checks.tensor(name, x)
    scores = additive_score(state[:, None], keys, W_q, W_k, v)[:, 0]  # (B, 1, Ls) -> (B, Ls)
    weights = masked_softmax(scores, mask)  # (B, Ls)
    context = (weights[:, None] @ keys)[:, 0]  # (B, 1, Ls) @ (B, Ls, Dk) -> (B, Dk)
    return context, weights


def _step_case(gen, label, batch, ls, d, dk, a, lengths=None, dtype=torch.float32):
    state = randn(gen, batch, d, dtype=dtype)
    keys = randn(gen, batch, ls, dk, dtype=dtype)
    lengths = torch.tensor(lengths if lengths is not None else [ls] * batch)
    mask = padding_mask(lengths, ls)[:, 0]  # (B, 1, Ls) -> (B, Ls)
    W_q, W_k = randn(gen, a, d, dtype=dtype, scale=0.5), randn(gen, a, dk, dtype=dtype, scale=0.5)
    v = randn(gen, a, dtype=dtype)
    return Case(label, (state, keys, mask, W_q, W_k, v))


def _step_cases(gen):
    return [
        _step_case(gen, "a batch of 3, 5 source words with padding, D = 4, Dk = 6, A = 7", 3, 5, 4, 6, 7,
                   lengths=[5, 3, 4]),
        _step_case(gen, "no padding", 2, 4, 3, 5, 6),
        _step_case(gen, "a batch of one", 1, 6, 4, 4, 3, lengths=[4]),
        _step_case(gen, "float64", 2, 5, 3, 4, 5, lengths=[2, 5], dtype=torch.float64),
        _step_case(gen, "one source word", 3, 1, 2, 3, 4),
        _step_case(gen, "a long sentence, mostly padding", 2, 12, 5, 6, 8, lengths=[12, 2]),
    ]


def _attention_variant(mask_mode="mask", dim=-1, tanh=True, values="keys"):
    def variant(state, keys, mask, W_q, W_k, v):
        projected = keys @ W_k.T  # (B, Ls, A)
        hidden = (state @ W_q.T)[:, None] + projected
        scores = (torch.tanh(hidden) if tanh else hidden) @ v  # (B, Ls)
        if mask_mode == "mask":
            weights = masked_softmax(scores, mask, dim=dim)
        elif mask_mode == "inverted":
            weights = masked_softmax(scores, ~mask, dim=dim)
        elif mask_mode == "after":  # zero the padding after the softmax, without renormalising
            weights = torch.softmax(scores, dim=dim) * mask
        elif mask_mode == "zero":  # a score of 0 is not "no attention": exp(0) = 1
            weights = torch.softmax(scores.masked_fill(~mask, 0.0), dim=dim)
        else:
            weights = torch.softmax(scores, dim=dim)
        source = keys if values == "keys" else projected
        return (weights[:, None] @ source)[:, 0], weights
    return variant


register(Exercise(
    id="additive-decoder-step",
    title="One step of Bahdanau attention in a decoder",
    reference=additive_attention_step,
    cases=_step_cases,
    outputs=("context", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the padding was not masked",
                "padded positions are not words: give them weight 0 before normalising, e.g. "
                "masking.masked_softmax(scores, mask), or scores.masked_fill(~mask, torch.finfo("
                "scores.dtype).min) and then the softmax.",
                _attention_variant(mask_mode="none")),
        Mistake("the padding was zeroed after the softmax, so the weights no longer sum to 1",
                "mask the scores before normalising (fill the padding with torch.finfo(dtype).min, then "
                "softmax), or divide the masked weights by their sum again.",
                _attention_variant(mask_mode="after")),
        Mistake("the padding scores were set to 0, which still gets weight",
                "a score of 0 is an ordinary score: exp(0) = 1. Fill the padding with a very negative "
                "number, torch.finfo(scores.dtype).min, so that its weight after the softmax is 0.",
                _attention_variant(mask_mode="zero")),
        Mistake("the mask is inverted (True means a real word here)",
                "the course's masks are True where attention may look: keep the True positions, fill the "
                "False ones (masked_fill(~mask, ...)).",
                _attention_variant(mask_mode="inverted")),
        Mistake("the softmax runs over the batch axis",
                "the weights of one sentence are a distribution over its source words: softmax over the "
                "last axis (dim=-1), so that each row of (B, Ls) sums to 1.",
                _attention_variant(dim=0)),
        Mistake("the tanh is missing",
                "the additive score is a one-hidden-layer network: vᵀ tanh(W_q s + W_k h_j). Without the "
                "tanh it is linear, and the s part adds the same number to every word's score, which the "
                "softmax ignores: the query no longer matters.",
                _attention_variant(tanh=False)),
        Mistake("the context averages the projected keys W_k h_j, not the annotations h_j",
                "W_k h_j only serves to score; the context is the weighted average of the annotations "
                "themselves, weights @ keys, of size Dk.",
                _attention_variant(values="projected")),
    ),
))


# --- 2. greedy decoding with a length limit ------------------------------------------------------------


def greedy_tokens(state: torch.Tensor, step, bos: int, eos: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding of one sentence: start from ``bos``; at each step ``logits, state = step(token,
    state)``, take the most probable token (the argmax of the logits) and feed it back; stop at ``eos``
    (not part of the output) or after ``max_len`` tokens.

    state: the decoder's starting state (D,); step(token: int, state) -> (logits (V,), new state (D,)).
    Returns the emitted token ids, without BOS and EOS, and the log-probability of each (the log-softmax
    of its step's logits, at the chosen token): two 1-D tensors of the state's dtype (the ids too, so the
    checker can compare them like any other result), at most ``max_len`` long (possibly empty).
    """
    _checks.tensor("state", state, ndim=1)
    _checks.positive("max_len", max_len, integer=True)
    tokens, log_probs, token = [], [], bos
    while len(tokens) < max_len:
        logits, state = step(token, state)
        token = int(logits.argmax())
        if token == eos:
            break
        tokens.append(token)
        log_probs.append(torch.log_softmax(logits, dim=-1)[token])
    return torch.tensor(tokens, dtype=state.dtype), torch.stack(log_probs) if log_probs else state.new_zeros(0)


BOS_ID, EOS_ID = 1, 2
NO_LIMIT_MESSAGE = ("step was called more than max_len + 1 = {limit} times for one sentence: the decoding loop "
                    "has no length limit")


def _is_start(token, state, start) -> bool:
    """Whether ``step(token, state)`` begins a decoding: BOS fed with the initial state."""
    try:
        return (int(token) == BOS_ID and isinstance(state, torch.Tensor) and state.shape == start.shape
                and torch.equal(state.to(start.dtype), start))
    except (TypeError, ValueError, RuntimeError):
        return False


class _Step:
    """A small random recurrent decoder: state' = tanh(W state + E[token]), logits = O state' + bias."""

    def __init__(self, gen, vocab, dim, dtype, eos_bias=0.0, max_len=8):
        self.embed = randn(gen, vocab, dim, dtype=dtype, scale=1.5)
        self.recur = randn(gen, dim, dim, dtype=dtype, scale=0.9 / dim**0.5)
        self.out = randn(gen, vocab, dim, dtype=dtype, scale=2.0)
        self.bias = torch.zeros(vocab, dtype=dtype)
        self.bias[EOS_ID] = eos_bias
        self.bias[BOS_ID] = -50.0  # a decoder never says BOS again
        # A decoding loop without a length limit never ends on a decoder that never says EOS: count the
        # calls of one decoding (it starts with BOS and the initial state) and stop it with an error.
        self.max_len, self.start, self.calls, self.total = max_len, None, 0, 0

    def __call__(self, token, state):
        if self.start is not None and _is_start(token, state, self.start):
            self.calls = 0
        self.calls += 1
        self.total += 1
        if self.calls > self.max_len + 1 or self.total > 200_000:
            raise RuntimeError(NO_LIMIT_MESSAGE.format(limit=self.max_len + 1))
        state = torch.tanh(self.recur @ state + self.embed[int(token)])
        return self.out @ state + self.bias, state

    def __repr__(self):
        return f"step (a decoder with {self.out.size(0)} tokens)"


def _greedy_case(gen, label, vocab=9, dim=6, max_len=8, dtype=torch.float32, want="stops", eos_bias=0.0):
    """Draw decoders until greedy decoding behaves as ``want`` says: "stops" at EOS after 2 or more
    tokens, "runs" to the limit, "empty" (EOS first)."""
    for _ in range(200):
        step = _Step(gen, vocab, dim, dtype, eos_bias, max_len)
        state = randn(gen, dim, dtype=dtype)
        step.start = state.clone()
        out, _ = greedy_tokens(state, step, BOS_ID, EOS_ID, max_len)
        reached = _ends_with_eos(state, step, max_len)
        if (want == "stops" and 2 <= len(out) < max_len and reached) or \
           (want == "runs" and len(out) == max_len and not _ends_with_eos(state, step, max_len + 1)) or \
           (want == "empty" and len(out) == 0):
            return Case(label, (state, step, BOS_ID, EOS_ID, max_len))
    raise RuntimeError(f"could not draw a decoder for the case {label!r}")  # a bug in the cases


def _ends_with_eos(state, step, max_len):
    token = BOS_ID
    for _ in range(max_len):
        logits, state = step(token, state)
        token = int(logits.argmax())
        if token == EOS_ID:
            return True
    return False


def _greedy_cases(gen):
    return [
        _greedy_case(gen, "a sentence that ends with EOS before the limit of 8", want="stops"),
        _greedy_case(gen, "a decoder that never says EOS in time: stop at max_len = 5", max_len=5, want="runs",
                     eos_bias=-20.0),
        _greedy_case(gen, "float64", dtype=torch.float64, want="stops"),
        _greedy_case(gen, "EOS at once: an empty translation", want="empty", eos_bias=20.0),
        _greedy_case(gen, "max_len = 1", max_len=1, want="runs", eos_bias=-20.0),
        _greedy_case(gen, "a larger vocabulary (20 tokens), limit 10", vocab=20, max_len=10, want="stops"),
    ]


def _greedy_variant(stop=True, keep_eos=False, keep_bos=False, extra=0, feed="argmax", update=True,
                    scores="log_softmax", limit=True):
    def variant(state, step, bos, eos, max_len):
        tokens, log_probs, token = ([bos] if keep_bos else []), ([state.new_zeros(())] if keep_bos else []), bos
        start = state
        while not limit or len(tokens) - keep_bos < max_len + extra:
            logits, new_state = step(token, state if update else start)
            state = new_state
            best = int(logits.argmax())
            token = {"argmax": best, "state": int(new_state.argmax()), "bos": bos}[feed]
            if stop and best == eos and not keep_eos:
                break
            tokens.append(best)
            log_probs.append({"log_softmax": torch.log_softmax(logits, -1), "logits": logits,
                              "cumulative": torch.log_softmax(logits, -1),
                              "softmax": torch.softmax(logits, -1)}[scores][best])
            if stop and best == eos:
                break
        log_probs = torch.stack(log_probs) if log_probs else state.new_zeros(0)
        if scores == "cumulative":
            log_probs = log_probs.cumsum(0)
        return torch.tensor(tokens, dtype=state.dtype), log_probs
    return variant


register(Exercise(
    id="greedy-decode",
    title="Greedy decoding with a length limit",
    reference=greedy_tokens,
    cases=_greedy_cases,
    outputs=("tokens", "log_probs"),
    diagnose_first="tokens",
    error_hints=(
        ("stack expects a non-empty TensorList",
         "when the first token is EOS there is nothing to stack: return empty tensors, e.g. "
         "state.new_zeros(0), for an empty translation."),
    ),
    mistakes=(
        Mistake("the decoding loop has no length limit",
                "a decoder that never says EOS would run forever: stop after max_len tokens too, e.g. "
                "while len(tokens) < max_len (or for _ in range(max_len)), breaking early at EOS.",
                _greedy_variant(limit=False)),
        Mistake("decoding did not stop at EOS",
                "EOS means the sentence is over: when the argmax is eos, stop (break) without adding it. "
                "Only a sentence that never says EOS runs to max_len.",
                _greedy_variant(stop=False)),
        Mistake("EOS was kept in the output",
                "the output is the sentence itself: stop at EOS but do not append it (as BOS is not part "
                "of it either).",
                _greedy_variant(keep_eos=True)),
        Mistake("BOS was kept in the output",
                "BOS is only the first input that starts the decoder; return the tokens it emitted "
                "after it.",
                _greedy_variant(keep_bos=True)),
        Mistake("one token too many: the limit is off by one",
                "at most max_len tokens: loop while len(tokens) < max_len (or for _ in range(max_len)), "
                "not <=.",
                _greedy_variant(extra=1)),
        Mistake("one token too few: the limit is off by one",
                "a sentence that never says EOS should have exactly max_len tokens: loop while "
                "len(tokens) < max_len, or for _ in range(max_len).",
                _greedy_variant(extra=-1)),
        Mistake("BOS is fed at every step instead of the token just emitted",
                "greedy decoding feeds its own previous choice back: after choosing token t, call "
                "step(t, state).",
                _greedy_variant(feed="bos")),
        Mistake("the state was not carried from one step to the next",
                "step returns the new state: keep it (logits, state = step(token, state)), or every step "
                "starts from the initial state again.",
                _greedy_variant(update=False)),
        Mistake("the scores are the raw logits, not log-probabilities",
                "a logit becomes a log-probability through the log-softmax over the vocabulary: "
                "torch.log_softmax(logits, dim=-1)[token].",
                _greedy_variant(scores="logits")),
        Mistake("the scores are running totals, not each token's own log-probability",
                "return one log-probability per token, log_softmax(logits)[token] of its own step; their "
                "sum (the sentence's log-probability) is log_probs.sum(), not something to store.",
                _greedy_variant(scores="cumulative")),
        Mistake("the scores are probabilities, not their logarithms",
                "take the log-softmax, torch.log_softmax(logits, dim=-1)[token]: log-probabilities add up "
                "along the sentence (and do not underflow), probabilities multiply.",
                _greedy_variant(scores="softmax")),
    ),
))


# --- 3. the alignment error rate of an attention matrix --------------------------------------------------


def attention_aer(weights: torch.Tensor, sure: torch.Tensor, possible: torch.Tensor) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """The alignment error rate (Och & Ney 2003) of the links an attention matrix proposes.

    weights: (Lt, Ls), row i the attention of target word i over the source words; sure, possible: bool
    (Lt, Ls), the gold sure links S and possible links P (P ⊇ S). The proposed links A: one per target word,
    to its most attended source word (the argmax of each row). Then

        AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|).

    Returns the links A as a 0/1 matrix (Lt, Ls) and the AER as a 0-d tensor, both of the weights' dtype.
    """
    _checks.tensor("weights", weights, ndim=2)
    links = torch.zeros_like(sure)
    links[torch.arange(weights.size(0)), weights.argmax(dim=1)] = True  # A: one link per row
    hits = (links & sure).sum() + (links & possible).sum()
    aer = 1 - hits / (links.sum() + sure.sum())
    return links.to(weights.dtype), aer.to(weights.dtype)


def _aer_case(gen, label, lt, ls, dtype=torch.float32, sharp=2.0, p_sure=0.8, p_extra=0.5, agree=0.7):
    """Gold links: for each target word, maybe one sure link and some possible ones; attention that agrees
    with a sure or a possible link about ``agree`` of the time."""
    sure = torch.zeros(lt, ls, dtype=torch.bool)
    possible = torch.zeros(lt, ls, dtype=torch.bool)
    logits = randn(gen, lt, ls, dtype=torch.float64)
    for i in range(lt):
        j = int(torch.randint(ls, (1,), generator=gen))
        if float(torch.rand(1, generator=gen)) < p_sure:
            sure[i, j] = True
        possible[i, j] = True
        if float(torch.rand(1, generator=gen)) < p_extra:
            possible[i, int(torch.randint(ls, (1,), generator=gen))] = True
        if float(torch.rand(1, generator=gen)) < agree:
            options = possible[i].nonzero()[:, 0]
            logits[i, options[int(torch.randint(len(options), (1,), generator=gen))]] += 4.0
    weights = torch.softmax(sharp * logits, dim=-1).to(dtype)
    return Case(label, (weights, sure, possible | sure))


def _aer_cases(gen):
    return [
        _aer_case(gen, "a sentence pair of 5 Spanish and 7 English words", 5, 7),
        _aer_case(gen, "a longer Spanish side: 8 words for 4", 8, 4),
        _aer_case(gen, "float64", 6, 5, dtype=torch.float64),
        _aer_case(gen, "many possible-only links", 6, 6, p_sure=0.4, p_extra=0.9),
        _aer_case(gen, "attention that mostly agrees with the gold links", 7, 9, agree=0.95),
        _aer_case(gen, "one Spanish word", 1, 4, p_sure=1.0),
    ]


def _aer_variant(axis="rows", use_possible=True, result="aer", denominator="sure"):
    def variant(weights, sure, possible):
        links = torch.zeros_like(sure)
        if axis == "rows":
            links[torch.arange(weights.size(0)), weights.argmax(dim=1)] = True
        else:  # one link per source word: the target word that attends to it most
            links[weights.argmax(dim=0), torch.arange(weights.size(1))] = True
        p = possible if use_possible else sure
        a_s, a_p, n_a = (links & sure).sum(), (links & p).sum(), links.sum()
        if result == "precision":
            value = a_p / n_a
        elif result == "recall":
            value = 1 - a_s / sure.sum()
        elif result == "no-one-minus":
            value = (a_s + a_p) / (n_a + sure.sum())
        elif result == "possible-twice":
            value = 1 - 2 * a_p / (n_a + sure.sum())
        else:
            value = 1 - (a_s + a_p) / (n_a + (sure.sum() if denominator == "sure" else p.sum()))
        return links.to(weights.dtype), value.to(weights.dtype)
    return variant


register(Exercise(
    id="attention-aer",
    title="The alignment error rate of an attention matrix",
    reference=attention_aer,
    cases=_aer_cases,
    outputs=("links", "aer"),
    diagnose_first="links",
    mistakes=(
        Mistake("the argmax runs over the wrong axis",
                "each *target* (Spanish) word proposes one link: the argmax of its row, weights.argmax(dim=1), "
                "over the source words. argmax(dim=0) gives one link per English word instead.",
                _aer_variant(axis="columns")),
        Mistake("the possible links were ignored",
                "a proposed link that is only possible is no error: count |A ∩ P| with P = possible (which "
                "contains the sure links) next to |A ∩ S|.",
                _aer_variant(use_possible=False)),
        Mistake("this is the precision |A ∩ P| / |A|, not the error rate",
                "AER combines precision and recall: 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|), where recall "
                "counts only the sure links found.",
                _aer_variant(result="precision")),
        Mistake("this is 1 - recall, not the error rate",
                "recall alone ignores the wrong links proposed: AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|).",
                _aer_variant(result="recall")),
        Mistake("the \"1 -\" is missing: this is the agreement, not the error rate",
                "(|A ∩ S| + |A ∩ P|) / (|A| + |S|) is 1 for a perfect alignment; the error rate is one minus "
                "it: AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|).",
                _aer_variant(result="no-one-minus")),
        Mistake("|A ∩ P| was counted twice instead of |A ∩ S| + |A ∩ P|",
                "the numerator adds the sure links found, |A ∩ S| (links & sure), and the possible ones, "
                "|A ∩ P| (links & possible): two different counts.",
                _aer_variant(result="possible-twice")),
        Mistake("the denominator counts the possible links |P| instead of the sure ones |S|",
                "Och & Ney's denominator is |A| + |S|: possible links are allowed, not required.",
                _aer_variant(denominator="possible")),
    ),
))
