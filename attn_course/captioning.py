"""Image captioning with visual attention: "Show, Attend and Tell" (Xu et al. 2015) on scenes of digits.

A small CNN turns the image into a grid of feature vectors, one per cell; a position code is appended, so
the annotation vector a_i of cell i says what is there and where. An LSTM writes the caption one word at a
time; before each word it looks at the grid through attention:

    e_ti = f_att(a_i, h_{t-1}) = vᵀ tanh(W_a a_i + W_h h_{t-1})      (Xu et al. 2015, eq. 4; additive)
    α_ti = exp(e_ti) / Σ_k exp(e_tk)                                  (eq. 5)
    soft:  ẑ_t = β_t Σ_i α_ti a_i,   β_t = σ(f_β(h_{t-1}))            (eq. 13 and section 4.2.1)
    hard:  s_t ~ Multinoulli(α_t),   ẑ_t = a_{s_t}                     (eqs. 8-9)
    (h_t, c_t) = LSTM([E y_{t-1}; ẑ_t], (h_{t-1}, c_{t-1}))            (eqs. 1-3)
    p(y_t | a, y_<t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z ẑ_t))         (eq. 7, the "deep output")

h_0 and c_0 are predicted from the mean annotation vector (section 3.1.2). As in the paper, the encoder is
pretrained (here on single digits, ``pretrain_encoder``) and kept fixed while the decoder learns. Soft
attention is trained by backpropagation, optionally with the doubly stochastic penalty
``λ Σ_i (1 - Σ_t α_ti)²`` (eq. 14); hard attention by REINFORCE (eq. 12) with a moving-average baseline,
an entropy bonus and, for half the images, the expected context in place of a sample (section 4.1).

Shape letters: B images, N = G·G grid cells (flattened row by row: cell n is row n // G, column n % G),
C feature size, P position-code size, D = C + P annotation size, A attention size, T caption tokens (with
<bos> and <eos>), V vocabulary, K digits per scene.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from .attention import hard_attention, reinforce_loss, update_baseline
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data.scenes import DIGIT_WORDS, VOCAB, DigitSource, Scenes, Vocabulary, place_digits
from .metrics import bleu, exact_match
from .positional import sinusoidal_encoding

__all__ = [
    "ATTENTION_KINDS", "POSITIONS", "REWARDS", "Captioner", "DigitClassifier", "GridEncoder",
    "attention_hit_rate", "attention_hits", "attention_on_digits", "cell_boxes", "classifier_accuracy",
    "decode", "digit_cells", "doubly_stochastic_penalty", "encode_scenes", "evaluate", "grid_positions",
    "load_captioner",
    "per_digit_accuracy", "pretrain_encoder", "save_captioner", "teacher_forced_weights", "train_captioner",
    "training_loss",
]

ATTENTION_KINDS = ("soft", "hard")
POSITIONS = ("sinusoidal", "learned", "none")
REWARDS = ("word", "caption")


# --- the encoder: an image -> a grid of feature vectors ----------------------------------------------

def grid_positions(grid: int, size: int) -> torch.Tensor:
    """A fixed 2-D sinusoidal code for a grid x grid of cells: (grid·grid, size), row by row.

    The first half of each vector encodes the row, the second half the column, each with the sinusoidal
    encoding of Vaswani et al. (2017, section 3.5) at base 100 (a grid has few positions).
    """
    _checks.positive("grid", grid, integer=True)
    _checks.positive("size", size, integer=True)
    if size % 4:
        raise ValueError(f"a 2-D sinusoidal code needs a size divisible by 4 (sin and cos, rows, columns), "
                         f"got {size}")
    rows = sinusoidal_encoding(torch.arange(grid), size // 2, base=100.0)  # (G, P/2)
    table = torch.cat([rows[:, None, :].expand(grid, grid, -1), rows[None, :, :].expand(grid, grid, -1)], -1)
    return rearrange(table, "r c p -> (r c) p")  # (G·G, P), cell n = (n // G, n % G)


class GridEncoder(nn.Module):
    """A small CNN: (B, 1, h, w) images -> (B, N, C) feature vectors, one per 6 x 6-pixel cell.

    A 3x3 convolution at full resolution, max-pooling by 2, a 5x5 convolution at half resolution, then
    max-pooling by 3 cut the image into cells of 6 x 6 pixels (a 48-pixel canvas gives an 8 x 8 grid);
    two 1x1 convolutions mix the channels of each cell, and LayerNorm puts every vector on one scale. Each
    cell sees a 16 x 16-pixel window centred on it (its own 6 pixels and 5 around), enough to hold a whole
    8-pixel digit; digits are at least 5 pixels apart, so a cell at a digit's edge may see a few pixels
    of its neighbour, never two whole digits. The features stay mostly local, so attention has to go to a
    digit to read it. The vectors say *what* is in a cell, not *where*: ``Captioner`` appends the position.
    Works on any image whose sides are multiples of 6 (pretraining uses small crops).
    """

    cell = 6

    def __init__(self, channels: int = 32, feature_size: int = 64):
        super().__init__()
        _checks.positive("channels", channels, integer=True)
        _checks.positive("feature_size", feature_size, integer=True)
        self.channels, self.feature_size = channels, feature_size
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3),
        )
        self.mix = nn.Sequential(nn.Conv2d(channels, feature_size, 1), nn.ReLU(),
                                 nn.Conv2d(feature_size, feature_size, 1), nn.ReLU())
        self.norm = nn.LayerNorm(feature_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 1, h, w), h and w multiples of 6 -> features (B, N, C), N = (h/6)·(w/6), row by row."""
        _checks.tensor("images", images, ndim=4)
        if images.size(1) != 1 or images.size(2) % self.cell or images.size(3) % self.cell:
            raise ValueError(f"images must be grey-level, (B, 1, h, w), h and w multiples of {self.cell}, "
                             f"got {tuple(images.shape)}")
        x = self.mix(self.stem(images))  # (B, C, h/6, w/6)
        return self.norm(rearrange(x, "b c h w -> b (h w) c"))  # (B, N, C), cell n = (n // G, n % G)


# --- pretraining the encoder on single digits --------------------------------------------------------

class DigitClassifier(nn.Module):
    """The encoder with a one-glimpse attention classifier on top, for pretraining: a learned score per
    cell, a softmax over the cells, the weighted average of the features (a glimpse), then a linear layer
    to 10 digits. Averaging by attention, as the captioner will, keeps the features readable that way.

    forward(images (B, 1, h, w)) -> logits (B, 10); ``glimpse`` also returns the weights (B, N).
    """

    def __init__(self, encoder: GridEncoder):
        super().__init__()
        if not isinstance(encoder, GridEncoder):
            raise TypeError(f"encoder must be a GridEncoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.score = nn.Linear(encoder.feature_size, 1)
        self.head = nn.Linear(encoder.feature_size, 10)

    def glimpse(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)  # (B, N, C)
        weights = torch.softmax(self.score(features).squeeze(-1), dim=-1)  # (B, N)
        return self.head((weights[:, None, :] @ features)[:, 0]), weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.glimpse(images)[0]


def _check_digits(digits) -> None:
    if not isinstance(digits, DigitSource):
        raise TypeError(f"digits must be a DigitSource (see attn_course.data.scenes), "
                        f"got {type(digits).__name__}")


def pretrain_encoder(encoder: GridEncoder, digits: DigitSource, steps: int = 1500, batch_size: int = 128,
                     crop: int = 18, lr: float = 3e-3, seed: int = 0, progress: bool = True) -> dict:
    """Pretrain ``encoder`` to recognise single digits, each pasted at a random place on a ``crop`` x
    ``crop`` canvas (``place_digits``): cross-entropy, Adam, a one-cycle learning rate, a fixed number of
    steps.

    The analogue of Xu et al. (2015, section 4.3), whose encoder was a CNN pretrained on ImageNet and kept
    fixed: here the "ImageNet" is the training pool of single handwritten digits. Returns the history:
    ``loss`` per step and the trained ``classifier`` (a ``DigitClassifier`` around ``encoder``).
    """
    if not isinstance(encoder, GridEncoder):
        raise TypeError(f"encoder must be a GridEncoder, got {type(encoder).__name__}")
    _check_digits(digits)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("crop", crop)):
        _checks.positive(name, value, integer=True)
    _checks.positive("lr", lr)
    if crop % GridEncoder.cell or crop < digits.size:
        raise ValueError(f"crop must be a multiple of {GridEncoder.cell}, holding a {digits.size}-pixel "
                         f"digit, got {crop}")
    device = next(encoder.parameters()).device
    classifier = DigitClassifier(encoder).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.1)
    images, labels = torch.from_numpy(digits.images), torch.from_numpy(digits.labels)
    losses = []
    classifier.train()
    with tqdm(range(steps), desc="pretraining the encoder", disable=not progress, mininterval=0.5) as bar:
        for _ in bar:
            index = torch.randint(len(labels), (batch_size,), generator=generator)
            canvases, _ = place_digits(images[index], crop, generator)
            loss = nn.functional.cross_entropy(classifier(canvases.to(device)), labels[index].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    classifier.eval()
    return {"loss": losses, "classifier": classifier}


@torch.no_grad()
def classifier_accuracy(classifier: DigitClassifier, digits: DigitSource, crop: int = 18, repeats: int = 4,
                        seed: int = 0) -> float:
    """Accuracy (0-1) of a ``DigitClassifier`` on ``digits``, each placed ``repeats`` times at random."""
    _check_digits(digits)
    _checks.positive("repeats", repeats, integer=True)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(digits.images).repeat(repeats, 1, 1)
    labels = torch.from_numpy(digits.labels).repeat(repeats)
    canvases, _ = place_digits(images, crop, generator)
    device = next(classifier.parameters()).device
    classifier.eval()
    predicted = classifier(canvases.to(device)).argmax(dim=-1).cpu()
    return float((predicted == labels).float().mean())


# --- the decoder ---------------------------------------------------------------------------------------

class Captioner(nn.Module):
    """The "Show, Attend and Tell" captioner: a ``GridEncoder``, a position code, and an LSTM decoder with
    visual attention.

    The annotation vector of cell i is ``a_i = [what the encoder sees there ; where the cell is]``: the
    encoder's feature (C numbers) followed by a position code (P numbers; "sinusoidal": fixed, 2-D
    sinusoidal; "learned": a trainable table; "none": P = 0, and the decoder cannot tell left from right).
    attention: "soft" (a weighted average of the cells, eq. 13) or "hard" (one sampled cell, eqs. 8-9).
    gate: multiply the context by the gating scalar β_t = σ(f_β(h_{t-1})) (section 4.2.1).
    feature_dropout: dropout on the encoder's features while training (the encoder is frozen, so this is
    the decoder's regulariser against memorising the training handwriting).

    Every method that takes ``images`` (B, 1, S, S) also takes the encoder's features (B, N, C) computed
    beforehand (``encode``), which is how a frozen encoder's work is done once per image, not once per step.
    ``config`` returns the settings (with the vocabulary) that rebuild the model.
    """

    def __init__(self, vocab: Vocabulary | list[str] = VOCAB, image_size: int = 48, channels: int = 32,
                 feature_size: int = 64, position: str = "sinusoidal", position_size: int = 32,
                 hidden_size: int = 128, embed_size: int = 32, attn_size: int = 32, attention: str = "soft",
                 gate: bool = True, feature_dropout: float = 0.2):
        super().__init__()
        vocab = vocab if isinstance(vocab, Vocabulary) else Vocabulary(vocab)
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {attention!r}")
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
        for name, value in (("image_size", image_size), ("hidden_size", hidden_size),
                            ("embed_size", embed_size), ("attn_size", attn_size),
                            ("position_size", position_size)):
            _checks.positive(name, value, integer=True)
        _checks.number("feature_dropout", feature_dropout, minimum=0, strict=False)
        if feature_dropout >= 1:
            raise ValueError(f"feature_dropout must be < 1, got {feature_dropout}")
        if image_size % GridEncoder.cell:
            raise ValueError(f"image_size must be a multiple of the cell size {GridEncoder.cell}, "
                             f"got {image_size}")
        self.vocab, self.attention, self.gate = vocab, attention, bool(gate)
        self.image_size, self.grid = image_size, image_size // GridEncoder.cell
        self._config = dict(vocab=list(vocab.words), image_size=image_size, channels=channels,
                            feature_size=feature_size, position=position, position_size=position_size,
                            hidden_size=hidden_size, embed_size=embed_size, attn_size=attn_size,
                            attention=attention, gate=bool(gate), feature_dropout=feature_dropout)
        self.encoder = GridEncoder(channels, feature_size)
        self.feature_dropout = nn.Dropout(feature_dropout)
        n = self.grid ** 2
        if position == "learned":
            self.position = nn.Parameter(0.5 * torch.randn(n, position_size))
        elif position == "sinusoidal":
            self.register_buffer("position", grid_positions(self.grid, position_size), persistent=False)
        else:
            self.position = None
        d = feature_size + (0 if position == "none" else position_size)  # size of an annotation vector
        self.init_h, self.init_c = nn.Linear(d, hidden_size), nn.Linear(d, hidden_size)  # section 3.1.2
        self.W_a = nn.Linear(d, attn_size, bias=False)  # eq. 4: vᵀ tanh(W_a a_i + W_h h_{t-1})
        self.W_h = nn.Linear(hidden_size, attn_size)
        self.v = nn.Linear(attn_size, 1, bias=False)
        self.f_beta = nn.Linear(hidden_size, 1) if self.gate else None
        self.embed = nn.Embedding(len(vocab), embed_size)
        self.lstm = nn.LSTMCell(embed_size + d, hidden_size)
        self.L_h, self.L_z = nn.Linear(hidden_size, embed_size), nn.Linear(d, embed_size, bias=False)
        self.L_o = nn.Linear(embed_size, len(vocab))  # eq. 7

    @property
    def config(self) -> dict:
        """The settings that rebuild this model: ``Captioner(**model.config)``."""
        return dict(self._config)

    @property
    def cell(self) -> int:
        """Pixels per grid cell (6)."""
        return GridEncoder.cell

    def _as_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Refuse NaN and infinite values (they would only come out as NaN captions), and cast a floating
        tensor of another dtype (e.g. float64) to the dtype of the model's parameters."""
        if not bool(torch.isfinite(x).all()):
            what = "NaN" if bool(torch.isnan(x).any()) else "infinite values"
            raise ValueError(f"{name} must be finite, got a tensor {tuple(x.shape)} holding {what}")
        return x.to(self.init_h.weight.dtype)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 1, S, S) -> the encoder's features (B, N, C), N = G·G (no position yet). Images of
        another floating dtype are cast to the model's (float32 by default); NaN or inf is refused."""
        _checks.tensor("images", images)
        s = self.image_size
        if images.dim() != 4 or images.shape[1:] != (1, s, s):
            raise ValueError(f"images must have shape (B, 1, {s}, {s}): this model reads {s}x{s} grey-level "
                             f"canvases, got {tuple(images.shape)}")
        return self.encoder(self._as_input("images", images))

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, S, S) or features computed earlier (B, N, C) -> features (B, N, C)."""
        _checks.tensor("images", images, ndim=(3, 4))
        if images.dim() == 4:
            return self.encode(images)
        n, c = self.grid ** 2, self.encoder.feature_size
        if images.shape[1:] != (n, c):
            raise ValueError(f"precomputed features must have shape (B, N, C) = (B, {n}, {c}) here, "
                             f"got {tuple(images.shape)}")
        return self._as_input("features", images)

    def annotate(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, N, C) -> annotation vectors a_i = [feature ; position code]: (B, N, C + P)."""
        if self.position is None:
            return features
        position = self.position.to(features.dtype).expand(features.size(0), -1, -1)  # (B, N, P)
        return torch.cat([features, position], dim=-1)

    def start(self, images: torch.Tensor):
        """Prepare the decoder: annotation vectors (B, N, D), their attention keys W_a a_i (B, N, A),
        computed once for all words, and the initial state (h_0, c_0) from the mean annotation vector
        (section 3.1.2). images: (B, 1, S, S) or features (B, N, C)."""
        annotations = self.annotate(self.feature_dropout(self._features(images)))
        mean = annotations.mean(dim=1)
        state = (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        return annotations, self.W_a(annotations), state

    def scores(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Additive scores e_ti = vᵀ tanh(W_a a_i + W_h h_{t-1}) (eq. 4). keys: (B, N, A), h: (B, hidden)
        -> (B, N). The same numbers as ``scoring.additive_score(h[:, None], a, W_h, W_a, v)`` (plus W_h's
        bias), with the keys W_a a_i computed once per image instead of once per word."""
        return self.v(torch.tanh(keys + self.W_h(h)[:, None, :])).squeeze(-1)  # (B, N, A) -> (B, N)

    def step(self, prev: torch.Tensor, state, annotations: torch.Tensor, keys: torch.Tensor,
             mode: str | None = None, generator: torch.Generator | None = None,
             expected: torch.Tensor | None = None):
        """One decoding step. prev: (B,) the previous tokens; state: (h, c), each (B, hidden).

        mode: "soft" for a soft model; for a hard one "sample" or "argmax" (None, the default, picks as
        ``forward`` does: "soft", or for hard attention "sample" when training and "argmax" in eval mode).
        generator: a torch.Generator for the cell drawn in mode "sample" (None: torch's global generator).
        expected: (B,) boolean, hard attention only: the images whose context is the expected value Σ α a
        instead of a chosen cell (Xu et al. 2015, section 4.1, do this for half the images); their
        log-probability is 0 (nothing was sampled).
        Returns logits (B, V), attention weights α_t (B, N), the new state, and the log-probability of the
        cell chosen (B,) for hard attention (None for soft).
        """
        mode = self._mode(mode)
        h, c = state
        scores = self.scores(keys, h)  # (B, N)
        alpha = torch.softmax(scores, dim=-1)
        log_prob = None
        if mode == "soft":
            context = (alpha[:, None, :] @ annotations)[:, 0]  # Σ_i α_ti a_i: (B, 1, N) @ (B, N, D) -> (B, D)
        else:
            context, chosen = hard_attention(scores[:, None, :], annotations, mode=mode, generator=generator)
            context, chosen = context[:, 0], chosen[:, 0]  # (B, D), one-hot (B, N)
            log_prob = (chosen * torch.log_softmax(scores, dim=-1)).sum(dim=-1)  # log p(s_t | a)
            if expected is not None:
                soft = (alpha[:, None, :] @ annotations)[:, 0]
                context = torch.where(expected[:, None], soft, context)
                log_prob = log_prob.masked_fill(expected, 0.0)
        if self.f_beta is not None:
            context = torch.sigmoid(self.f_beta(h)) * context  # β_t ẑ_t
        embedded = self.embed(prev)  # (B, E)
        h, c = self.lstm(torch.cat([embedded, context], dim=-1), (h, c))
        logits = self.L_o(embedded + self.L_h(h) + self.L_z(context))  # eq. 7
        return logits, alpha, (h, c), log_prob

    def _check_tokens(self, tokens) -> None:
        _checks.tensor("tokens", tokens, ndim=2, kind="int")
        if tokens.size(1) < 2:
            raise ValueError(f"tokens must hold <bos>, a caption and <eos>: (B, T) with T >= 2, got "
                             f"{tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(self.vocab)):
            raise ValueError(f"tokens must be ids in [0, {len(self.vocab)}) of this vocabulary, got values "
                             f"from {int(tokens.min())} to {int(tokens.max())}")

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, mode: str | None = None,
                generator: torch.Generator | None = None, expected: torch.Tensor | None = None):
        """Teacher-forced pass. images: (B, 1, S, S) or features (B, N, C); tokens: (B, T), ``<bos>``
        caption ``<eos>`` ``<pad>``... (``Vocabulary.encode``).

        Predicts tokens[:, 1:] from tokens[:, :-1]. mode: "soft" for a soft model; "sample" (the default
        when training) or "argmax" (the default in eval mode) for a hard one; generator: a torch.Generator
        for the cells sampled (None: torch's global generator); expected: as in ``step``.
        Returns logits (B, T-1, V), attention weights (B, T-1, N) and, for hard attention, the
        log-probabilities of the chosen cells (B, T-1) (None for soft).
        """
        self._check_tokens(tokens)
        mode = self._mode(mode)
        annotations, keys, state = self.start(images)
        if tokens.size(0) != annotations.size(0):
            raise ValueError(f"one caption per image is needed: {annotations.size(0)} images, tokens "
                             f"{tuple(tokens.shape)}")
        logits, weights, log_probs = [], [], []
        for t in range(tokens.size(1) - 1):
            step_logits, alpha, state, log_prob = self.step(tokens[:, t], state, annotations, keys, mode,
                                                            generator, expected)
            logits.append(step_logits)
            weights.append(alpha)
            log_probs.append(log_prob)
        hard = log_probs[0] is not None
        return torch.stack(logits, 1), torch.stack(weights, 1), (torch.stack(log_probs, 1) if hard else None)

    def _mode(self, mode: str | None) -> str:
        if self.attention == "soft":
            if mode not in (None, "soft"):
                raise ValueError(f"a soft-attention model only has mode 'soft', got {mode!r}")
            return "soft"
        mode = mode or ("sample" if self.training else "argmax")
        if mode not in ("sample", "argmax"):
            raise ValueError(f"a hard-attention model has modes 'sample' and 'argmax', got {mode!r}")
        return mode

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, max_len: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: at each step the most probable word (hard attention: the most probable cell).

        images: (B, 1, S, S) or features (B, N, C) -> tokens (B, L) (the words after <bos>, <pad> after
        <eos>) and attention weights (B, L, N) (zeros after <eos>), L <= max_len.
        """
        _checks.positive("max_len", max_len, integer=True)
        mode = "soft" if self.attention == "soft" else "argmax"
        annotations, keys, state = self.start(images)
        b = annotations.size(0)
        prev = torch.full((b,), self.vocab.bos, dtype=torch.long, device=annotations.device)
        done = torch.zeros(b, dtype=torch.bool, device=annotations.device)
        tokens, weights = [], []
        for _ in range(max_len):
            logits, alpha, state, _ = self.step(prev, state, annotations, keys, mode)
            prev = logits.argmax(dim=-1).masked_fill(done, self.vocab.pad)
            tokens.append(prev)
            weights.append(alpha.masked_fill(done[:, None], 0.0))
            done = done | (prev == self.vocab.eos)
            if done.all():
                break
        return torch.stack(tokens, 1), torch.stack(weights, 1)

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, beam_size: int = 3, max_len: int = 12):
        """Beam search: keep the ``beam_size`` most probable partial captions (sum of log-probabilities)
        at each step; a caption that has emitted <eos> competes with its final score.

        images: (B, 1, S, S) or features (B, N, C) -> tokens (B, L) and attention weights (B, L, N) of the
        best caption of each image, laid out as in ``greedy``. ``beam_size=1`` gives the greedy caption.
        """
        _checks.positive("beam_size", beam_size, integer=True)
        _checks.positive("max_len", max_len, integer=True)
        mode = "soft" if self.attention == "soft" else "argmax"
        annotations, keys, (h, c) = self.start(images)
        b, n, k, v = annotations.size(0), annotations.size(1), beam_size, len(self.vocab)
        dev = annotations.device
        # every image's beams live in a block of k rows: (B·k, ...)
        annotations, keys, h, c = (x.repeat_interleave(k, dim=0) for x in (annotations, keys, h, c))
        score = torch.full((b, k), -math.inf, device=dev)
        score[:, 0] = 0.0  # the k beams start identical: keep one, or the first word would be picked k times
        prev = torch.full((b * k,), self.vocab.bos, dtype=torch.long, device=dev)
        done = torch.zeros(b * k, dtype=torch.bool, device=dev)
        tokens = torch.zeros(b * k, 0, dtype=torch.long, device=dev)
        weights = torch.zeros(b * k, 0, n, device=dev, dtype=annotations.dtype)
        finished = torch.full((1, v), -math.inf, device=dev)
        finished[0, self.vocab.pad] = 0.0  # a finished caption can only "emit" <pad>, at no cost
        for _ in range(max_len):
            logits, alpha, (h, c), _ = self.step(prev, (h, c), annotations, keys, mode)
            logp = torch.where(done[:, None], finished, torch.log_softmax(logits, dim=-1))  # (B·k, V)
            total = (score.reshape(-1, 1) + logp).reshape(b, k * v)  # (B, k·V)
            score, flat = total.topk(k, dim=-1)  # (B, k)
            parent = (torch.div(flat, v, rounding_mode="floor") + torch.arange(b, device=dev)[:, None] * k)
            parent, word = parent.reshape(-1), (flat % v).reshape(-1)  # rows in (B·k), next words
            alpha = alpha.masked_fill(done[:, None], 0.0)
            tokens = torch.cat([tokens[parent], word[:, None]], dim=1)
            weights = torch.cat([weights[parent], alpha[parent][:, None]], dim=1)
            h, c, done = h[parent], c[parent], done[parent] | (word == self.vocab.eos)
            prev = word
            if done.all():
                break
        best = score.argmax(dim=-1) + torch.arange(b, device=dev) * k  # (B,)
        return tokens[best], weights[best]

    def captions(self, tokens: torch.Tensor) -> list[str]:
        """Decoded token ids (B, L) -> B captions (strings)."""
        return [self.vocab.decode(row) for row in tokens]


# --- losses --------------------------------------------------------------------------------------------

def doubly_stochastic_penalty(weights: torch.Tensor, mask: torch.Tensor | None = None, lam: float = 1.0,
                              target: float = 1.0) -> torch.Tensor:
    """The doubly stochastic attention penalty ``λ Σ_i (τ - Σ_t α_ti)²`` (Xu et al. 2015, eq. 14, τ = 1).

    Each α_t sums to 1 over the cells i by construction; the penalty asks the attention summed over the
    words t to be τ in every cell too, so that every part of the image gets looked at during the caption.
    weights: (B, T, N); mask: (B, T) boolean, True for the words that count (padding after <eos> is
    left out). Returns the mean over the images of the penalty (a scalar).
    """
    _checks.tensor("weights", weights, ndim=3)
    _checks.number("lam", lam, minimum=0, strict=False)
    _checks.number("target", target)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != weights.shape[:2]:
            raise ValueError(f"mask must be a boolean tensor of shape (B, T) = {tuple(weights.shape[:2])}, "
                             f"got {getattr(mask, 'dtype', type(mask).__name__)} "
                             f"{tuple(getattr(mask, 'shape', ()))}")
        weights = weights * mask[:, :, None]
    attention_per_cell = weights.sum(dim=1)  # Σ_t α_ti: (B, N)
    return lam * ((target - attention_per_cell) ** 2).sum(dim=1).mean()


# --- training ------------------------------------------------------------------------------------------

def _schedule(optimiser, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup`` steps, then a cosine decay to 5% of the peak learning rate."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


@torch.no_grad()
def encode_scenes(model: Captioner, scenes: Scenes, batch_size: int = 500,
                  progress: bool = False) -> torch.Tensor:
    """The encoder's features of every scene, (N_scenes, G·G, C), computed once on the model's device."""
    _check_scenes(scenes)
    model.eval()
    device = next(model.parameters()).device
    parts = [model.encode(scenes.images[i:i + batch_size].to(device))
             for i in tqdm(range(0, len(scenes), batch_size), desc="encoding scenes", disable=not progress)]
    return torch.cat(parts)


def _reinforce_term(reward_kind: str, nll, log_probs, mask, sampled_images, baseline):
    """The REINFORCE surrogate of one batch and the updated baseline.

    "caption": the reward of every glimpse of a caption is log p(caption | glimpses) (Xu et al. 2015,
    eq. 12), against one moving-average baseline. "word": the reward of the glimpse taken for word t is
    log p(word t | ...), against a moving-average baseline per position t: the glimpse is credited with
    the word it was taken for, a much less noisy signal (it ignores the glimpse's effect on later words).
    """
    if reward_kind == "caption":
        reward = -nll.sum(dim=1)  # (B,)
        log_p = (log_probs * mask).sum(dim=1)  # log p(all glimpses of the caption)
        chosen = sampled_images
        term = reinforce_loss(log_p[chosen], reward[chosen], baseline) if chosen.any() else nll.new_zeros(())
        if chosen.any():
            baseline = update_baseline(baseline, reward[chosen])
        return term, baseline, reward.mean()
    reward = -nll  # (B, T-1)
    chosen = mask & sampled_images[:, None]
    base = baseline[: reward.size(1)].expand_as(reward)
    term = (reinforce_loss(log_probs[chosen], reward[chosen], base[chosen]) if chosen.any()
            else nll.new_zeros(()))
    baseline = baseline.clone()
    for t in range(reward.size(1)):
        if chosen[:, t].any():
            baseline[t] = update_baseline(baseline[t], reward[chosen[:, t], t])
    return term, baseline, (reward * mask).sum() / mask.sum()


def train_captioner(model: Captioner, scenes: Scenes, steps: int, batch_size: int = 64, lr: float = 3e-3,
                    warmup: int = 100, clip: float = 2.0, penalty: float = 0.0, reward: str = "word",
                    soft_mix: float = 0.5, reinforce_weight: float = 1.0, entropy_weight: float = 0.01,
                    features: torch.Tensor | None = None, seed: int = 0, progress: bool = True,
                    desc: str | None = None, callback: Callable[[int, dict], None] | None = None,
                    checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 500,
                    resume: bool = False) -> dict:
    """Train ``model``'s decoder on ``scenes`` for exactly ``steps`` steps (not wall time: runs repeat).

    The encoder stays frozen, as in Xu et al. 2015 (pretrain it first with ``pretrain_encoder``): its
    features are computed once per scene (``encode_scenes``), or taken from ``features``
    (N_scenes, G·G, C) when given, so a second model on the same encoder does not recompute them.
    Adam with ``lr`` after a linear warm-up of ``warmup`` steps, cosine-decayed; gradients clipped to norm
    ``clip``. A torch.Generator seeded with ``seed`` draws the batches and, for hard attention, the cells
    sampled and the images given the expected context, so a run is repeated by the same seed and starting
    weights whatever torch's global generator did before; the feature dropout (``Captioner``'s
    ``feature_dropout``) draws from the global generator (seed it, e.g. ``torch.manual_seed``, to repeat a
    run with dropout). The loss is the cross-entropy of
    the caption words (``<pad>`` ignored), plus for soft attention ``doubly_stochastic_penalty`` with
    λ = ``penalty``. For hard attention it adds the REINFORCE term of eq. 12 (``reward``: "word" or
    "caption", see ``_reinforce_term``) weighted by ``reinforce_weight``, minus an entropy bonus
    ``entropy_weight`` · H[α_t]; with probability ``soft_mix`` an image's context is the expected value
    Σ α a instead of a sample (section 4.1 uses 0.5). ``callback(step, history)`` runs after every step.
    Returns the history: ``loss`` (cross-entropy per step), and for hard attention ``reward`` (mean
    log-probability of a rewarded word or caption) per step and the final ``baseline``.

    ``checkpoint``: a file that the run is saved to every ``checkpoint_every`` steps and at the end
    (``save_captioner``, atomically: an interrupted save leaves the previous file). Besides the weights it
    holds what continues the run exactly: the step, the optimiser and schedule, the generators (this run's
    and torch's global one, for the dropout), the baseline and the history. ``resume=True`` continues from
    that file when it exists (it must come from the same settings: ``steps``, ``batch_size``, ``seed`` and
    the rest), so an interrupted run, resumed, ends with the same weights as an uninterrupted one; a run
    that had finished is returned as saved. Without the file, ``resume=True`` starts from step 0.
    """
    if not isinstance(model, Captioner):
        raise TypeError(f"model must be a Captioner, got {type(model).__name__}")
    _check_scenes(scenes)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("warmup", warmup)):
        _checks.positive(name, value, integer=True)
    for name, value in (("lr", lr), ("clip", clip)):
        _checks.positive(name, value)
    for name, value in (("penalty", penalty), ("reinforce_weight", reinforce_weight),
                        ("entropy_weight", entropy_weight), ("soft_mix", soft_mix)):
        _checks.number(name, value, minimum=0, strict=False)
    if soft_mix > 1:
        raise ValueError(f"soft_mix is a probability, got {soft_mix}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    _checks.positive("checkpoint_every", checkpoint_every, integer=True)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint file to resume from: pass checkpoint=path")
    settings = dict(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, clip=clip, penalty=penalty,
                    reward=reward, soft_mix=soft_mix, reinforce_weight=reinforce_weight,
                    entropy_weight=entropy_weight, seed=seed, scenes=len(scenes))
    if features is None:
        features = encode_scenes(model, scenes, progress=progress)
    else:
        _check_features(features, scenes)
        features = features.detach()  # the encoder is frozen (e.g. features from model.encode with grad)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    params = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimiser = torch.optim.Adam(params, lr=lr)
    scheduler = _schedule(optimiser, steps, warmup)
    hard = model.attention == "hard"
    history = {"loss": []} | ({"reward": []} if hard else {})
    baseline = torch.zeros(() if reward == "caption" else (scenes.tokens.size(1) - 1,), device=device)
    pad = model.vocab.pad
    first = 0
    if resume and os.path.exists(checkpoint):
        first, history, baseline = _resume(checkpoint, model, settings, optimiser, scheduler, generator)

    def save(done: int) -> None:
        save_captioner(checkpoint, model, training={
            "step": done, "settings": settings, "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
            "global_generator": torch.get_rng_state(), "baseline": baseline.detach().cpu(),
            "history": history})

    model.train()
    with tqdm(range(first, steps), desc=desc or f"training ({model.attention} attention)",
              disable=not progress, mininterval=0.5, initial=first, total=steps) as bar:
        for step in bar:
            index = torch.randint(len(scenes), (batch_size,), generator=generator)
            tokens = scenes.tokens[index].to(device)
            tokens = tokens[:, :int((tokens != pad).sum(dim=1).max())]  # drop the columns of padding only
            total, parts = training_loss(model, features[index].to(device, dtype), tokens, penalty=penalty,
                                         reward=reward, soft_mix=soft_mix, reinforce_weight=reinforce_weight,
                                         entropy_weight=entropy_weight, baseline=baseline,
                                         generator=generator)
            optimiser.zero_grad()
            total.backward()
            nn.utils.clip_grad_norm_(params, clip)
            optimiser.step()
            scheduler.step()
            loss = parts["cross_entropy"].item()
            history["loss"].append(loss)
            if hard:
                baseline = parts["baseline"]
                history["reward"].append(parts["reward"].item())
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                save(step + 1)
            if callback is not None:
                callback(step, history)
    model.eval()
    if hard:
        history["baseline"] = baseline
    return history


def _resume(path, model: Captioner, settings: dict, optimiser, scheduler, generator):
    """Load a ``train_captioner`` checkpoint into ``model``, the optimiser, schedule and generators.
    Returns (the step to continue from, the history so far, the baseline)."""
    payload = load_checkpoint(path, model, map_location=next(model.parameters()).device)
    state = payload["extra"].get("training")
    if state is None:
        raise CheckpointError(f"{str(path)!r} holds a Captioner but no training state (saved by "
                              "save_captioner, not by train_captioner): it cannot be resumed")
    if state["settings"] != settings:
        changed = {k: (state["settings"].get(k), v) for k, v in settings.items()
                   if state["settings"].get(k) != v}
        raise CheckpointError(f"{str(path)!r} was saved by a run with other settings, so resuming would not "
                              f"repeat it: (saved, now) = {changed}. Start afresh (resume=False) or "
                              "use the same settings")
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["global_generator"])
    device = next(model.parameters()).device
    return state["step"], state["history"], state["baseline"].to(device)


def training_loss(model: Captioner, features: torch.Tensor, tokens: torch.Tensor, *, penalty: float = 0.0,
                  reward: str = "word", soft_mix: float = 0.5, reinforce_weight: float = 1.0,
                  entropy_weight: float = 0.01, baseline: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """The loss that ``train_captioner`` minimises, for one batch (see it for the settings).

    features: (B, N, C) the encoder's features; tokens: (B, T) captions, ``<bos>`` ... ``<eos>`` ``<pad>``.
    baseline: the REINFORCE baseline so far (hard attention; None starts from zeros); generator: a
    torch.Generator for hard attention's draws, which images get the expected context and which cells are
    sampled (None: torch's global generator; dropout always uses the global one). Returns (total, parts):
    the scalar to backpropagate, and a dict with ``cross_entropy``
    (the caption loss per word, part of total) and, for hard attention, the updated ``baseline`` and the
    mean ``reward``.
    """
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    hard = model.attention == "hard"
    expected = None
    if hard:
        draw = torch.rand(tokens.size(0), generator=generator)
        expected = (draw < soft_mix).to(tokens.device)
    logits, weights, log_probs = model(features, tokens, generator=generator if hard else None,
                                       expected=expected)
    target = tokens[:, 1:]
    mask = target != model.vocab.pad  # (B, T-1)
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none") * mask
    loss = nll.sum() / mask.sum()
    total, parts = loss, {"cross_entropy": loss.detach()}
    if penalty:
        total = total + doubly_stochastic_penalty(weights, mask, penalty)
    if hard:
        if baseline is None:
            baseline = torch.zeros(() if reward == "caption" else (target.size(1),), device=features.device)
        term, baseline, mean_reward = _reinforce_term(reward, nll.detach(), log_probs, mask, ~expected,
                                                      baseline)
        entropy = -(weights * torch.log(weights.clamp_min(1e-12))).sum(-1)  # H[α_t]: (B, T-1)
        total = total + reinforce_weight * term - entropy_weight * (entropy * mask).sum() / mask.sum()
        parts |= {"baseline": baseline, "reward": mean_reward}
    return total, parts


def save_captioner(path: str | os.PathLike, model: Captioner, **extra):
    """Save a ``Captioner`` (weights and the config that rebuilds it) with ``checkpoint.save_checkpoint``."""
    if not isinstance(model, Captioner):
        raise TypeError(f"model must be a Captioner, got {type(model).__name__}")
    return save_checkpoint(path, model, config=model.config, **extra)


def load_captioner(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Captioner:
    """Rebuild a ``Captioner`` from a checkpoint written by ``save_captioner``, in eval mode.

    Raises ``checkpoint.CheckpointError`` (a ValueError) for a missing, corrupt or foreign file.
    """
    payload = load_checkpoint(path, map_location=map_location)
    if payload.get("class") != Captioner.__qualname__:
        raise CheckpointError(f"{str(path)!r} holds a {payload.get('class')}, not a Captioner")
    try:
        model = Captioner(**payload["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} has a config that does not build a Captioner: {err}") from None
    load_checkpoint(path, model, map_location=map_location)
    return model.eval()


# --- evaluation ----------------------------------------------------------------------------------------

def cell_boxes(boxes: torch.Tensor, cell: int) -> torch.Tensor:
    """Pixel boxes (..., 4) ``(x0, y0, x1, y1)``, ends exclusive -> the grid cells they touch, as
    ``(col0, row0, col1, row1)`` with exclusive ends: a cell of ``cell`` x ``cell`` pixels is on the box
    when the two share at least one pixel. Padding boxes (-1) stay -1."""
    _checks.tensor("boxes", boxes, kind="int")
    _checks.positive("cell", cell, integer=True)
    if boxes.dim() == 0 or boxes.size(-1) != 4:
        raise ValueError(f"boxes must end in 4 numbers (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    start = torch.div(boxes[..., :2], cell, rounding_mode="floor")
    end = torch.div(boxes[..., 2:] - 1, cell, rounding_mode="floor") + 1
    return torch.where(boxes < 0, boxes, torch.cat([start, end], dim=-1))


def _check_hit_inputs(weights, named, cells, grid) -> None:
    _checks.tensor("weights", weights, ndim=3)
    _checks.tensor("named", named, ndim=2, kind="int")
    _checks.tensor("cells", cells, ndim=3, kind="int")
    _checks.positive("grid", grid, integer=True)
    if weights.shape[:2] != named.shape or weights.size(2) != grid * grid:
        raise ValueError(f"weights must be (B, T, G·G) = ({named.size(0)}, {named.size(1)}, {grid * grid}) "
                         f"to "
                         f"match named {tuple(named.shape)} and grid={grid}, got {tuple(weights.shape)}")
    _checks.same_size("cells", cells, 0, "named", named, 0, "batch size B")
    if cells.size(2) != 4:
        raise ValueError(f"cells must be (B, K, 4) cell ranges (col0, row0, col1, row1), "
                         f"got {tuple(cells.shape)}")
    if named.numel() and int(named.min()) < -1:
        raise ValueError(f"named must hold digit indices k >= 0, or -1 (-1 marks words that name no digit), "
                         f"got {int(named.min())}")
    if named.numel() and int(named.max()) >= cells.size(1):
        raise ValueError(f"named refers to digit {int(named.max())}, but cells holds {cells.size(1)} "
                         "per scene")


def attention_hits(weights: torch.Tensor, named: torch.Tensor, cells: torch.Tensor,
                   grid: int) -> torch.Tensor:
    """For every word, whether its most-attended cell lies on the digit it names: (B, T) boolean, False
    for the words that name no digit (see ``attention_hit_rate`` for the arguments)."""
    _check_hit_inputs(weights, named, cells, grid)
    best = weights.argmax(dim=-1)  # (B, T): the most-attended cell
    row, col = torch.div(best, grid, rounding_mode="floor"), best % grid  # cells are numbered row by row
    box = cells.gather(1, named.clamp_min(0)[:, :, None].expand(-1, -1, 4))  # the named digit's: (B, T, 4)
    inside = (box[..., 0] <= col) & (col < box[..., 2]) & (box[..., 1] <= row) & (row < box[..., 3])
    return inside & (named >= 0)


def attention_hit_rate(weights: torch.Tensor, named: torch.Tensor, cells: torch.Tensor,
                       grid: int) -> torch.Tensor:
    """The attention hit rate: how often the most-attended cell lies on the digit being named.

    weights: (B, T, G·G) attention over the cells of a G x G grid, row by row (cell n is row n // G,
    column n % G); named: (B, T) the index k of the digit that word t names, or -1 for words that name no
    digit (relation words, <eos>, padding), which are not counted; cells: (B, K, 4) each digit's cells
    ``(col0, row0, col1, row1)``, ends exclusive (``cell_boxes`` of the ink boxes: a cell is on a digit when
    it shares a pixel with the digit's ink box). Every digit word of every scene counts once: the rate is
    hits / digit words, pooled over the batch. Returns a scalar in the weights' dtype (NaN if no word
    names a digit).
    """
    hits = attention_hits(weights, named, cells, grid)
    return hits.sum().to(weights.dtype) / (named >= 0).sum().to(weights.dtype)


def digit_cells(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """Which cells lie on each digit. cells: (B, K, 4) cell ranges ``(col0, row0, col1, row1)``, ends
    exclusive (``cell_boxes``; -1 pads) -> (B, K, G·G) boolean, cells row by row (padding digits: none)."""
    _checks.tensor("cells", cells, ndim=3, kind="int")
    _checks.positive("grid", grid, integer=True)
    index = torch.arange(grid * grid, device=cells.device)
    row, col = torch.div(index, grid, rounding_mode="floor"), index % grid  # (N,)
    c0, r0, c1, r1 = (cells[..., i, None] for i in range(4))  # each (B, K, 1)
    return (c0 <= col) & (col < c1) & (r0 <= row) & (row < r1)


def attention_on_digits(weights: torch.Tensor, cells: torch.Tensor, grid: int) -> torch.Tensor:
    """How much attention each word puts on each digit: weights (B, T, G·G), cells (B, K, 4) as in
    ``digit_cells`` -> (B, T, K), the weight summed over the cells that lie on digit k. What is left,
    ``1 - sum over k``, fell on empty canvas."""
    _checks.tensor("weights", weights, ndim=3)
    on = digit_cells(cells, grid).to(weights.dtype)  # (B, K, N)
    return weights @ on.transpose(1, 2)  # (B, T, N) @ (B, N, K) -> (B, T, K)


def _check_scenes(scenes) -> None:
    if not isinstance(scenes, Scenes):
        raise TypeError(f"scenes must be Scenes (see attn_course.data.scenes), got {type(scenes).__name__}")


def _check_features(features: torch.Tensor, scenes: Scenes) -> None:
    """Precomputed encoder features must be (N_scenes, G·G, C): one entry per scene, in the same order."""
    _checks.tensor("features", features, ndim=3)
    if features.size(0) != len(scenes):
        raise ValueError(f"features must hold one entry per scene: {len(scenes)} scenes, but features has "
                         f"{features.size(0)} (shape {tuple(features.shape)})")


def _features_or_images(model: Captioner, scenes: Scenes, features: torch.Tensor | None, start: int,
                        stop: int):
    device = next(model.parameters()).device
    source = scenes.images if features is None else features
    return source[start:stop].to(device)


@torch.no_grad()
def teacher_forced_weights(model: Captioner, scenes: Scenes, features: torch.Tensor | None = None,
                           batch_size: int = 500) -> torch.Tensor:
    """Attention weights (N_scenes, T-1, N) with the reference captions fed in (hard models: argmax).
    features: the scenes' encoder features (``encode_scenes``), if already computed."""
    _check_scenes(scenes)
    if features is not None:
        _check_features(features, scenes)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(scenes), batch_size):
        inputs = _features_or_images(model, scenes, features, start, start + batch_size)
        _, weights, _ = model(inputs, scenes.tokens[start:start + batch_size].to(device))
        out.append(weights.cpu())
    return torch.cat(out)


@torch.no_grad()
def decode(model: Captioner, scenes: Scenes, beam_size: int = 1, features: torch.Tensor | None = None,
           batch_size: int = 500) -> tuple[list[str], torch.Tensor]:
    """Captions of ``scenes`` (greedy if ``beam_size`` is 1, else beam search): the strings, and the
    attention weights (N_scenes, T-1, N) of every generated word (zeros after <eos>). features: the
    scenes' encoder features (``encode_scenes``), if already computed."""
    _check_scenes(scenes)
    if features is not None:
        _check_features(features, scenes)
    model.eval()
    captions, weights = [], []
    max_len = scenes.tokens.size(1) - 1
    for start in range(0, len(scenes), batch_size):
        inputs = _features_or_images(model, scenes, features, start, start + batch_size)
        if beam_size == 1:
            tokens, w = model.greedy(inputs, max_len)
        else:
            tokens, w = model.beam_search(inputs, beam_size, max_len)
        captions.extend(model.captions(tokens))
        weights.append(nn.functional.pad(w, (0, 0, 0, max_len - w.size(1))).cpu())
    return captions, torch.cat(weights)


def per_digit_accuracy(hypotheses: list[str], scenes: Scenes) -> float:
    """The fraction of the scenes' digits named correctly in their place: the k-th digit word of the
    hypothesis is the k-th digit of the scene (a missing word is wrong; extra words cost nothing here,
    the exact caption accuracy catches them)."""
    _check_scenes(scenes)
    if isinstance(hypotheses, str) or not isinstance(hypotheses, (list, tuple)):
        raise TypeError(f"hypotheses must be a list of str (one caption per scene), "
                        f"got {type(hypotheses).__name__}")
    odd = next((i for i, h in enumerate(hypotheses) if not isinstance(h, str)), None)
    if odd is not None:
        raise TypeError(f"hypotheses must be a list of str (one caption per scene), but entry {odd} is "
                        f"{type(hypotheses[odd]).__name__}")
    if len(hypotheses) != len(scenes):
        raise ValueError(f"one hypothesis per scene is needed: {len(hypotheses)} and {len(scenes)}")
    if int(scenes.n_digits.sum()) == 0:
        raise ValueError(f"no digits to score: the scenes ({len(scenes)}) hold none")
    right = total = 0
    for hypothesis, labels in zip(hypotheses, scenes.labels.tolist()):
        said = [w for w in hypothesis.split() if w in DIGIT_WORDS]
        truth = [DIGIT_WORDS[d] for d in labels if d >= 0]
        right += sum(s == t for s, t in zip(said, truth))
        total += len(truth)
    return right / total


@torch.no_grad()
def evaluate(model: Captioner, scenes: Scenes, beam_size: int = 1,
             features: torch.Tensor | None = None) -> dict:
    """Exact caption accuracy (0-1), BLEU (sacrebleu, 0-100), per-digit accuracy (0-1) and attention hit
    rate (0-1) on ``scenes``.

    The captions are decoded (greedy, or beam search); the hit rate is measured with the reference caption
    fed in, so that every digit word of every caption counts once, whatever the model said before it.
    """
    _check_scenes(scenes)
    if features is None:
        features = encode_scenes(model, scenes)
    else:
        _check_features(features, scenes)
    hypotheses, _ = decode(model, scenes, beam_size, features)
    references = list(scenes.captions)
    weights = teacher_forced_weights(model, scenes, features)
    hit = attention_hit_rate(weights, scenes.named, cell_boxes(scenes.boxes, model.cell), model.grid)
    return {"exact": exact_match(hypotheses, references), "bleu": bleu(hypotheses, references),
            "per_digit": per_digit_accuracy(hypotheses, scenes), "hit_rate": float(hit)}
