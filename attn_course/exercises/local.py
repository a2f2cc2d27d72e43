"""Exercises on local attention (Luong et al. 2015, sec. 3.2): local-m's window, local-p's predicted
position, and local-p's Gaussian-weighted window."""

from __future__ import annotations

import math

import torch

from .. import local
from ..masking import masked_softmax
from . import Case, Exercise, Mistake, register
from ._grader import randn


def _keys(scores):
    """Source positions s = 0, ..., S-1 in the scores' dtype and device: (S,)."""
    return torch.arange(scores.size(-1), device=scores.device, dtype=scores.dtype)


def _softmax(scores, window, how="masked", dim=-1):
    """A softmax restricted to ``window`` the way a learner might write it. how: "masked"
    (``masked_softmax``: zeros for an empty window), "-inf" (NaN for an empty window), "finite" (a -1e9
    fill: uniform weights for an empty window), "times" (the scores multiplied by the mask: the keys
    outside keep a score of 0), "times-zeroed" (the same, then the keys outside zeroed)."""
    if how == "-inf":
        return torch.softmax(scores.masked_fill(~window, float("-inf")), dim=dim)
    if how == "finite":
        return torch.softmax(scores.masked_fill(~window, -1e9), dim=dim)
    if how == "times":
        return torch.softmax(scores * window, dim=dim)
    if how == "times-zeroed":
        return torch.softmax(scores * window, dim=dim) * window
    return masked_softmax(scores, window, dim=dim)


# --- 1. local-m: the monotonic window ------------------------------------------------------------------

def _local_m_cases(gen):
    return [
        Case("random (B=2, Lq=5, S=8, D=1)", (randn(gen, 2, 5, 8, scale=2.0), 1)),
        Case("more target words than source words (Lq=9, S=5, D=1)", (randn(gen, 2, 9, 5, scale=2.0), 1)),
        Case("no batch (Lq=6, S=6, D=2)", (randn(gen, 6, 6, scale=2.0), 2)),
        Case("float64 (B=3, Lq=4, S=7, D=2)", (randn(gen, 3, 4, 7, dtype=torch.float64, scale=2.0), 2)),
        Case("window wider than the sentence (S=6, D=10)", (randn(gen, 2, 6, 6, scale=2.0), 10)),
        Case("D = 0: only the aligned word (Lq=4, S=6)", (randn(gen, 1, 4, 6, scale=2.0), 0)),
        Case("batch of one, one target word", (randn(gen, 1, 1, 5, scale=2.0), 1)),
    ]


def _local_m_variant(inside=lambda d, D: d.abs() <= D, clamp=True, after=False, how="masked", dim=-1):
    """A local-m with one thing changed. d = s - p_t, (Lq, S)."""
    def variant(scores, half_width):
        lq, source_len = scores.shape[-2:]
        t = torch.arange(lq, device=scores.device)
        p = t.clamp(max=source_len - 1) if clamp else t
        d = torch.arange(source_len, device=scores.device) - p[:, None]  # (Lq, S)
        window = inside(d, half_width)
        if after:  # softmax over every key, then zero the keys outside the window
            return torch.softmax(scores, dim=-1) * window
        return _softmax(scores, window, how, dim)
    return variant


register(Exercise(
    id="local-m-weights",
    title="Local-m: attend to a window around p_t = t",
    reference=local.local_m_weights,
    cases=_local_m_cases,
    outputs=("weights",),
    mistakes=(
        Mistake("the window is off by one",
                "the window is [p_t - D, p_t + D], ends included: keep key s when |s - p_t| <= D "
                "(2D + 1 keys away from the ends of the sentence).",
                _local_m_variant(inside=lambda d, D: d.abs() < D),
                _local_m_variant(inside=lambda d, D: d.abs() <= D + 1)),
        Mistake("D was taken as the width of the whole window",
                "D is the half-width: the window reaches D words on each side of p_t, 2D + 1 words in all "
                "(keep s when |s - p_t| <= D).",
                _local_m_variant(inside=lambda d, D: d.abs() <= D // 2),
                _local_m_variant(inside=lambda d, D: 2 * d.abs() + 1 <= D)),
        Mistake("the window only looks backwards (causal)",
                "local-m's window is centred on p_t: it reaches D words before and D words after it.",
                _local_m_variant(inside=lambda d, D: (d <= 0) & (d >= -D))),
        Mistake("the window is inverted: the weights go to the keys outside it",
                "True must mean 'may attend': the keys with |s - p_t| <= D are the ones to keep.",
                _local_m_variant(inside=lambda d, D: d.abs() > D)),
        Mistake("the softmax ran over every key before the window was applied",
                "zeroing the keys outside the window after the softmax leaves rows that sum to less than 1: "
                "mask the scores first (masked_softmax, or fill them with a very negative number), then "
                "softmax.", _local_m_variant(after=True)),
        Mistake("the scores outside the window were multiplied by 0, not masked",
                "a score of 0 still gets weight exp(0) in the softmax: fill the scores outside the window "
                "with float('-inf') (masked_fill(~inside, ...)) instead of multiplying by the mask.",
                _local_m_variant(how="times"), _local_m_variant(how="times-zeroed")),
        Mistake("the softmax ran over the wrong axis",
                "each target step t (a row) gets its own distribution over the source words: take the "
                "softmax over the last axis, dim=-1.",
                _local_m_variant(how="-inf", dim=-2), _local_m_variant(dim=-2),
                _local_m_variant(how="finite", dim=-2)),
        Mistake("p_t = t was not held at the last source word",
                "when the target is longer than the source, t runs past S - 1 and the last rows' windows "
                "hold no word at all (a softmax over nothing: NaN, or equal weights): use "
                "p_t = min(t, S - 1), e.g. torch.arange(Lq).clamp(max=S - 1).",
                _local_m_variant(clamp=False), _local_m_variant(clamp=False, how="-inf"),
                _local_m_variant(clamp=False, how="finite")),
    ),
))


# --- 2. local-p: the predicted position ----------------------------------------------------------------

def _position_case(gen, label, lead, lq, hd, a, source_len, dtype=torch.float32):
    h = randn(gen, *lead, lq, hd, dtype=dtype)
    W_p = randn(gen, a, hd, dtype=dtype, scale=0.5)
    v_p = randn(gen, a, dtype=dtype, scale=1.5)
    return Case(label, (h, W_p, v_p, source_len))


def _position_cases(gen):
    return [
        _position_case(gen, "random (B=2, Lq=5, Hd=6, A=4, S=9)", (2,), 5, 6, 4, 9),
        _position_case(gen, "one sentence (B=1, Lq=3, S=12)", (1,), 3, 5, 7, 12),
        _position_case(gen, "two leading dimensions: h is (2, 3, Lq=4, Hd=3)", (2, 3), 4, 3, 5, 7),
        _position_case(gen, "float64 (B=3, Lq=2)", (3,), 2, 4, 4, 10, dtype=torch.float64),
        _position_case(gen, "a long source (S=50)", (2,), 6, 8, 8, 50),
    ]


def _position_variant(squash=torch.sigmoid, hidden=torch.tanh, times=lambda s: s, finish=lambda p: p):
    def variant(h, W_p, v_p, source_len):
        return finish(times(source_len) * squash(hidden(h @ W_p.T) @ v_p))
    return variant


def _softmax_last(x):
    return torch.softmax(x, dim=-1)


_BATCHED_T_HINT = (
    "`.T` on a tensor with more than 2 dimensions reverses all of them, so `W_p @ h.T` mixes the batch and "
    "step axes. Apply W_p to every state at once with `h @ W_p.T` ((..., Lq, Hd) @ (Hd, A) -> (..., Lq, A)), "
    "then take `@ v_p`.")

register(Exercise(
    id="predict-position",
    title="Local-p: predict the aligned position p_t",
    reference=local.predict_position,
    cases=_position_cases,
    outputs=("positions",),
    error_hints=(("Expected size for first two dimensions of batch2", _BATCHED_T_HINT),),
    mistakes=(
        Mistake("the sigmoid is missing",
                "p_t = S · sigmoid(v_pᵀ tanh(W_p h_t)): the sigmoid squeezes the score into (0, 1), so p_t "
                "lands inside the sentence, between 0 and S.", _position_variant(squash=lambda x: x)),
        Mistake("another function in place of the sigmoid",
                "eq. 9 uses the sigmoid, which maps each step's score on its own into (0, 1), a fraction of "
                "the sentence: a softmax would share one unit among the steps, ReLU is unbounded and tanh "
                "goes negative.", _position_variant(squash=_softmax_last),
                _position_variant(squash=torch.relu), _position_variant(squash=torch.tanh)),
        Mistake("p_t was not scaled by the source length S",
                "sigmoid(...) is a fraction of the sentence, between 0 and 1: multiply it by S to get a "
                "position.", _position_variant(times=lambda s: 1)),
        Mistake("the tanh is missing",
                "apply tanh to W_p h_t before the dot product with v_p: "
                "p_t = S · sigmoid(v_pᵀ tanh(W_p h_t)).", _position_variant(hidden=lambda x: x)),
        Mistake("another function in place of the tanh",
                "eq. 9's hidden layer is tanh(W_p h_t), applied to each of its A entries: not a ReLU, a "
                "sigmoid or a softmax.", _position_variant(hidden=torch.relu),
                _position_variant(hidden=torch.sigmoid), _position_variant(hidden=_softmax_last)),
        Mistake("p_t was scaled by S - 1 instead of S",
                "Luong's eq. 9 multiplies by S, the source length, and this course keeps it (p_t lies in "
                "(0, S)), even though with 0-based positions that can point one place past the last word.",
                _position_variant(times=lambda s: s - 1)),
        Mistake("p_t was rounded to a whole number",
                "local-p keeps p_t real: the Gaussian around it, and the gradient that trains W_p and v_p, "
                "need the exact value.", _position_variant(finish=torch.round),
                _position_variant(finish=torch.floor)),
    ),
))


# --- 3. local-p: the Gaussian-weighted window ----------------------------------------------------------

def _local_p_case(gen, label, lead, lq, source_len, half_width, dtype=torch.float32, whole=False):
    scores = randn(gen, *lead, lq, source_len, dtype=dtype, scale=2.0)
    if whole:  # p_t = t, as local-m would choose it
        positions = torch.arange(lq, dtype=dtype).clamp(max=source_len - 1).expand(*lead, lq).clone()
    else:
        positions = (source_len * torch.rand(*lead, lq, generator=gen, dtype=torch.float64)).to(dtype)
    return Case(label, (scores, positions, half_width))


def _local_p_cases(gen):
    return [
        _local_p_case(gen, "random (B=2, Lq=3, S=10, D=3)", (2,), 3, 10, 3),
        _local_p_case(gen, "no batch (Lq=4, S=12, D=2)", (), 4, 12, 2),
        _local_p_case(gen, "whole-number positions p_t = t (B=2, Lq=5, S=9, D=2)", (2,), 5, 9, 2,
                      whole=True),
        _local_p_case(gen, "float64 (B=3, Lq=2, S=15, D=4)", (3,), 2, 15, 4, dtype=torch.float64),
        _local_p_case(gen, "window wider than the sentence (S=6, D=8)", (2,), 3, 6, 8),
        _local_p_case(gen, "batch of one, one target word (S=20, D=5)", (1,), 1, 20, 5),
    ]


def _gauss(d, D):
    """The exponent of Luong's Gaussian, -(s - p_t)² / (2σ²) with σ = D/2."""
    return -(d**2) / (2 * (D / 2) ** 2)


def _local_p_variant(inside=lambda d, D: d.abs() <= D, gauss=_gauss, order="after", centre=lambda p: p,
                     gauss_centre=lambda p: p, density=False):
    """A local-p with one thing changed. d = s - p_t: (..., Lq, S). centre / gauss_centre: what the window
    / the Gaussian is centred on; density: divide the Gaussian by σ√(2π), as a normal density does."""
    def variant(scores, positions, half_width):
        window = inside(_keys(scores) - centre(positions)[..., None], half_width)
        exponent = gauss(_keys(scores) - gauss_centre(positions)[..., None], half_width)
        factor = exponent.exp() / ((half_width / 2) * math.sqrt(2 * math.pi)) if density else exponent.exp()
        if order == "before-add":  # a Gaussian bias on the scores, i.e. the weights renormalised
            return masked_softmax(scores + exponent, window)
        if order == "before-mul":
            return masked_softmax(scores * exponent.exp(), window)
        if order == "none":
            return masked_softmax(scores, window)
        if order == "global-softmax":  # eq. 7's softmax over every key, then cut to the window
            return torch.softmax(scores, dim=-1) * window * factor
        return masked_softmax(scores, window) * factor
    return variant


_WINDOW_CONVENTION = (
    "this course centres the window on the real p_t: it holds the keys s with |s - p_t| <= D (2D or 2D + 1 "
    "of them), a course convention. Luong describes the local weights as a vector in R^{2D+1}, which "
    "suggests a window around a whole-number position; here, though, only |s - p_t| <= D counts.")

register(Exercise(
    id="local-p-weights",
    title="Local-p: softmax over the window, times a Gaussian",
    reference=local.local_p_weights,
    cases=_local_p_cases,
    outputs=("weights",),
    mistakes=(
        Mistake("the Gaussian is missing",
                "after the softmax over the window, multiply each weight by exp(-(s - p_t)² / (2σ²)) with "
                "σ = D/2: keys near p_t should keep more of their weight.", _local_p_variant(order="none")),
        Mistake("σ = D instead of D/2",
                "Luong sets σ = D/2, so the Gaussian falls to exp(-2) ≈ 0.14 at the edge of the window; "
                "with σ = D it is much flatter.", _local_p_variant(gauss=lambda d, D: -(d**2) / (2 * D**2))),
        Mistake("σ = D // 2: the integer division rounded σ down",
                "use σ = D / 2, a real number (σ = 1.5 for D = 3).",
                _local_p_variant(gauss=lambda d, D: -(d**2) / (2 * (D // 2) ** 2))),
        Mistake("the Gaussian's exponent is wrong",
                "the factor is exp(-(s - p_t)² / (2σ²)) with σ = D/2: square the distance, square σ, and "
                "keep the 2.",
                _local_p_variant(gauss=lambda d, D: -(d**2) / (D / 2) ** 2),
                _local_p_variant(gauss=lambda d, D: -(d**2) / (2 * (D / 2))),
                _local_p_variant(gauss=lambda d, D: -d.abs() / (2 * (D / 2) ** 2))),
        Mistake("the Gaussian was normalised as a probability density",
                "Luong's factor is exp(-(s - p_t)² / (2σ²)), which is 1 at p_t: leave out the 1/(σ√(2π)) "
                "of the normal density (torch.distributions.Normal(...).log_prob(s).exp() includes it).",
                _local_p_variant(density=True)),
        Mistake("the window was not truncated: the softmax ran over every key",
                "take the softmax over the keys in [p_t - D, p_t + D] only; every other key gets weight 0. "
                "The Gaussian favours keys near p_t but does not remove the others.",
                _local_p_variant(inside=lambda d, D: torch.ones_like(d, dtype=torch.bool))),
        Mistake("softmax over all keys, then zero outside the window and multiply by the Gaussian",
                "eq. 10's first factor is align(h_t, h̄_s), and eq. 7 defines align as a softmax over all "
                "source words, so this reading is possible. This course takes the softmax over the window "
                "only, as local-m does: the keys outside the window are never scored (that is what local "
                "attention saves), and the window's weights sum to 1 before the Gaussian.",
                _local_p_variant(order="global-softmax")),
        Mistake("the Gaussian was applied before the softmax (or the weights renormalised after it)",
                "Luong multiplies the softmax weights by the Gaussian (eq. 10) and leaves them so: the "
                "weights of a row sum to less than 1.",
                _local_p_variant(order="before-add"), _local_p_variant(order="before-mul")),
        Mistake("the window is off by one",
                "keep the keys with |s - p_t| <= D, ends included (it matters when p_t is a whole number).",
                _local_p_variant(inside=lambda d, D: d.abs() < D)),
        Mistake("the window was centred on a whole number (round(p_t) or floor(p_t))", _WINDOW_CONVENTION,
                _local_p_variant(centre=torch.round), _local_p_variant(centre=torch.floor)),
        Mistake("the Gaussian was centred on a rounded p_t",
                "keep p_t real in the Gaussian, exp(-(s - p_t)² / (2σ²)): it is the only part of local-p "
                "that varies smoothly with p_t, so the gradient that moves p_t flows through it.",
                _local_p_variant(gauss_centre=torch.round),
                _local_p_variant(centre=torch.round, gauss_centre=torch.round),
                _local_p_variant(centre=torch.floor, gauss_centre=torch.floor)),
    ),
))
