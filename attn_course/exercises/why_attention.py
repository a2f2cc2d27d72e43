"""Exercises on the claims behind self-attention (Vaswani et al. 2017, section 4 and Table 1): the path a
signal travels between two positions, the work a layer does, and accuracy measured by distance.

The first two references live here (they are small formulas, used only by these exercises and chapter 10);
the third is ``tasks.accuracy_by_distance``, which the chapter uses to score its models.
"""

from __future__ import annotations

import math

import torch

from .. import _checks, tasks
from . import Case, Exercise, Mistake, register
from ._grader import randn

# --- 1. path lengths ----------------------------------------------------------------------------------


def path_lengths(distance: torch.Tensor, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How many operations a signal crosses from the input at position j to the output at position
    i = j + δ, in one recurrent layer, one self-attention layer, and a stack of causal convolutions
    (the "maximum path length" column of Vaswani et al. 2017, Table 1, counted exactly).

    - recurrent: x_j enters the state h_j (1), then h_j -> h_(j+1) -> ... -> h_i (δ steps): δ + 1.
    - self-attention: every output attends to every input directly: 1.
    - causal convolutions of width k (output t sees inputs t - k + 1 .. t): one layer reaches k - 1
      positions back, so a stack needs ceil(δ / (k - 1)) layers, and at least 1 (even for δ = 0).

    distance: float tensor of whole numbers δ >= 0, any shape; kernel_size: k >= 2.
    Returns (recurrent, attention, convolution), each of distance's shape and dtype.
    """
    _checks.tensor("distance", distance)
    kernel_size = _checks.number("kernel_size", kernel_size, integer=True, minimum=2, strict=False)
    recurrent = distance + 1
    attention = torch.ones_like(distance)
    convolution = torch.ceil(distance / (kernel_size - 1)).clamp(min=1)
    return recurrent, attention, convolution


def _path_cases(gen):
    def distances(n_random, high, dtype=torch.float32):
        # 0 and small multiples of k - 1 always appear: that is where the off-by-ones show.
        d = torch.cat([torch.arange(9), torch.randint(0, high, (n_random,), generator=gen)])
        return d[torch.randperm(len(d), generator=gen)].to(dtype)

    return [
        Case("distances 0 .. 40, kernel 3", (distances(6, 41), 3)),
        Case("kernel 5", (distances(5, 60), 5)),
        Case("kernel 2 (each layer reaches one position back)", (distances(4, 20), 2)),
        Case("a (3, 5) grid of distances, kernel 4", (distances(6, 30).reshape(3, 5), 4)),
        Case("float64, kernel 3", (distances(7, 100, torch.float64), 3)),
        Case("a single distance", (torch.randint(3, 30, (1,), generator=gen).float(), 3)),
    ]


def _paths(recurrent=lambda d: d + 1, conv=lambda d, k: torch.ceil(d / (k - 1)).clamp(min=1)):
    def variant(distance, kernel_size):
        return recurrent(distance), torch.ones_like(distance), conv(distance, kernel_size)
    return variant


register(Exercise(
    id="path-lengths",
    title="Path lengths: recurrent, self-attention, convolution",
    reference=path_lengths,
    cases=_path_cases,
    outputs=("recurrent", "attention", "convolution"),
    atol=1e-6,
    mistakes=(
        Mistake("the recurrent path is off by one",
                "count every operation: x_j enters the state h_j (1), then δ steps h_j -> ... -> h_i, "
                "so δ + 1. At δ = 0 every layer needs exactly one operation.",
                _paths(recurrent=lambda d: d), _paths(recurrent=lambda d: d + 2)),
        Mistake("one convolution layer was taken to reach k positions back",
                "a layer of width k sees inputs t - k + 1 .. t: it reaches k - 1 positions back, so divide "
                "δ by k - 1.",
                _paths(conv=lambda d, k: torch.ceil(d / k).clamp(min=1))),
        Mistake("the convolution count is off by one when δ is a multiple of k - 1",
                "δ // (k - 1) + 1 counts one layer too many at δ = k - 1, 2(k - 1), ...; use "
                "ceil(δ / (k - 1)), at least 1.",
                _paths(conv=lambda d, k: torch.div(d, k - 1, rounding_mode="floor") + 1)),
        Mistake("the convolution count is not rounded up to whole layers",
                "a stack has a whole number of layers, enough to reach δ: round δ / (k - 1) up with "
                "torch.ceil (rounding down falls short).",
                _paths(conv=lambda d, k: (d / (k - 1)).clamp(min=1)),
                _paths(conv=lambda d, k: torch.div(d, k - 1, rounding_mode="floor").clamp(min=1))),
        Mistake("distance 0 gave 0 convolution layers",
                "even x_i -> y_i crosses one layer: clamp the count to at least 1.",
                _paths(conv=lambda d, k: torch.ceil(d / (k - 1)))),
        Mistake("this is the count for dilated convolutions (log_k)",
                "with dilations 1, k, k², ... a stack reaches k^L - 1 positions back in L layers (Table 1's "
                "O(log_k n)); this exercise stacks plain (undilated) convolutions: ceil(δ / (k - 1)).",
                _paths(conv=lambda d, k: torch.ceil(torch.log(d + 1) / math.log(k)).clamp(min=1))),
    ),
))


# --- 2. the work of one layer -------------------------------------------------------------------------


def layer_macs(n: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiply-adds of the matrix products in one self-attention layer and one GRU layer of width d, on a
    sequence of n positions (Vaswani et al. 2017, Table 1, "complexity per layer", with every term kept).

    - self-attention: the query, key and value projections (3 n d²), the scores Q Kᵀ (n² d), the weighted
      sum of the values (n² d) and the output projection (n d²): 4 n d² + 2 n² d.
    - GRU (Cho et al. 2014): at each of the n steps, three gates (reset, update, candidate), each with an
      input product W x_t and a state product U h_(t-1) of d x d: 6 n d².

    Biases, the softmax and the gates' elementwise work are left out: they grow as n d or n², not faster.
    n, d: float tensors of whole numbers, broadcastable to each other. Returns (attention, recurrent) of
    the broadcast shape, in the inputs' dtype.
    """
    _checks.tensor("n", n)
    _checks.tensor("d", d)
    attention = 4 * n * d**2 + 2 * n**2 * d
    recurrent = 6 * n * d**2
    return attention, recurrent


def _macs_cases(gen):
    def ints(shape, low, high, dtype=torch.float32):
        return torch.randint(low, high, shape, generator=gen).to(dtype)

    return [
        Case("small n and d (6 pairs)", (ints((6,), 1, 40), ints((6,), 1, 16))),
        Case("a grid: n (4, 1) by d (1, 3)", (ints((4, 1), 2, 200), ints((1, 3), 8, 64))),
        Case("float64", (ints((5,), 1, 100, torch.float64), ints((5,), 1, 64, torch.float64))),
        Case("one width for every length", (ints((5,), 16, 4096), torch.tensor(64.0))),
        Case("large sizes, float64 (n up to 8192, d = 512)",
             (ints((4,), 1024, 8193, torch.float64), torch.tensor(512.0, dtype=torch.float64))),
    ]


def _macs(attention=lambda n, d: 4 * n * d**2 + 2 * n**2 * d, recurrent=lambda n, d: 6 * n * d**2):
    def variant(n, d):
        return attention(n, d), recurrent(n, d)
    return variant


register(Exercise(
    id="layer-macs",
    title="The work of a self-attention layer and a GRU layer",
    reference=layer_macs,
    cases=_macs_cases,
    outputs=("attention", "recurrent"),
    rtol=1e-6,
    atol=1e-3,
    mistakes=(
        Mistake("n and d are swapped",
                "n is the sequence length and d the width: the n x n score matrix costs n² d, a d x d "
                "projection applied at n positions costs n d².",
                _macs(attention=lambda n, d: 4 * d * n**2 + 2 * d**2 * n, recurrent=lambda n, d: 6 * d * n**2),
                _macs(attention=lambda n, d: 4 * d * n**2 + 2 * d**2 * n)),
        Mistake("these are Table 1's leading terms, not exact counts",
                "Table 1 keeps one term per layer (n² d and n d²) and drops constant factors; count every "
                "product: four d x d projections and two n x n products in attention, three gates with two "
                "products each in the GRU.",
                _macs(attention=lambda n, d: n**2 * d, recurrent=lambda n, d: n * d**2)),
        Mistake("the projections were left out of self-attention",
                "Table 1 keeps only the n² d term, but the layer also projects queries, keys and values "
                "(3 n d²) and the output (n d²).",
                _macs(attention=lambda n, d: 2 * n**2 * d),
                _macs(attention=lambda n, d: 3 * n * d**2 + 2 * n**2 * d)),
        Mistake("only one of the two n x n products was counted",
                "attention multiplies twice by an n x n matrix: Q Kᵀ for the scores, then the weights "
                "times V; each costs n² d.",
                _macs(attention=lambda n, d: 4 * n * d**2 + n**2 * d)),
        Mistake("the GRU was counted as a plain RNN (one gate)",
                "a GRU has three gates (reset, update, candidate), each with a d x d input product and a "
                "d x d state product: 6 n d².",
                _macs(recurrent=lambda n, d: 2 * n * d**2)),
        Mistake("the GRU was counted as an LSTM (four gates)",
                "an LSTM has four gates (input, forget, output, candidate), a GRU three: 6 n d², not 8 n d².",
                _macs(recurrent=lambda n, d: 8 * n * d**2)),
        Mistake("the GRU's input products were left out",
                "each gate multiplies the input x_t as well as the state h_(t-1): 3 gates x 2 products "
                "x d² at each of n steps.",
                _macs(recurrent=lambda n, d: 3 * n * d**2)),
        Mistake("the feed-forward layer was counted (8nd²)",
                "count the self-attention layer alone: the feed-forward network that follows it in a "
                "Transformer block (n x d x 4d, then n x 4d x d: 8 n d²) is a separate layer, not part of "
                "Table 1's self-attention row.",
                _macs(attention=lambda n, d: 12 * n * d**2 + 2 * n**2 * d)),
        Mistake("these are FLOPs (2 per multiply-add), not multiply-adds",
                "count each multiply-add once; FLOPs would be twice as many.",
                _macs(attention=lambda n, d: 2 * (4 * n * d**2 + 2 * n**2 * d),
                      recurrent=lambda n, d: 12 * n * d**2)),
    ),
))


# --- 3. accuracy by distance -------------------------------------------------------------------------


def _accuracy_case(gen, label, b, v, distance, max_distance, dtype=torch.float32):
    logits = randn(gen, b, v, dtype=dtype)
    guess = logits.argmax(dim=-1)
    other = (guess + torch.randint(1, v, (b,), generator=gen)) % v  # a wrong class
    right = torch.rand(b, generator=gen) < 0.6
    return Case(label, (logits, torch.where(right, guess, other), distance, max_distance))


def _accuracy_cases(gen):
    def spread(b, high):  # every distance 0 .. high at least once, then random ones
        extra = torch.randint(0, high + 1, (b - high - 1,), generator=gen)
        d = torch.cat([torch.arange(high + 1), extra])
        return d[torch.randperm(b, generator=gen)]

    gaps = torch.tensor([1, 1, 3, 3, 3, 4, 1, 6, 3, 4, 1, 3])  # no example at 0, 2, 5, 7 or 8
    return [
        _accuracy_case(gen, "every distance 0 .. 6 present (B=40, V=5)", 40, 5, spread(40, 6), 6),
        _accuracy_case(gen, "no example at distances 0, 2, 5, 7, 8", 12, 4, gaps, 8),
        _accuracy_case(gen, "float64 (B=30, V=3)", 30, 3, spread(30, 9), 9, torch.float64),
        _accuracy_case(gen, "batch of one", 1, 6, torch.tensor([2]), 3),
        _accuracy_case(gen, "many examples (B=200, V=8)", 200, 8, spread(200, 15), 15),
    ]


def _counts(logits, targets, distance, max_distance):
    correct = (logits.argmax(dim=-1) == targets).to(logits.dtype)
    right = torch.zeros(max_distance + 1, dtype=logits.dtype).index_add_(0, distance, correct)
    total = torch.zeros(max_distance + 1, dtype=logits.dtype).index_add_(0, distance, torch.ones_like(correct))
    return correct, right, total


def _not_averaged(*args):
    _, right, total = _counts(*args)
    return right, total


def _over_everything(*args):
    correct, right, total = _counts(*args)
    return right / len(correct), total


def _empty_is_zero(*args):
    _, right, total = _counts(*args)
    return right / total.clamp(min=1), total


def _bincount_no_minlength(logits, targets, distance, max_distance):
    correct = (logits.argmax(dim=-1) == targets).to(logits.dtype)
    total = torch.bincount(distance).to(logits.dtype)
    return torch.bincount(distance, weights=correct).to(logits.dtype) / total, total


def _one_hot_no_num_classes(logits, targets, distance, max_distance):
    correct = (logits.argmax(dim=-1) == targets).to(logits.dtype)
    hot = torch.nn.functional.one_hot(distance).to(logits.dtype)  # (B, largest distance present + 1)
    total = hot.sum(dim=0)
    return (hot * correct[:, None]).sum(dim=0) / total, total


def _nan_to_num(*args):
    accuracy, count = tasks.accuracy_by_distance(*args)
    return torch.nan_to_num(accuracy), count


def _integer_count(*args):
    accuracy, count = tasks.accuracy_by_distance(*args)
    return accuracy, count.long()


def _from_one(*args):
    accuracy, count = tasks.accuracy_by_distance(*args)
    return accuracy[1:], count[1:]


def _overall(*args):
    correct, _, total = _counts(*args)
    return torch.where(total > 0, correct.mean(), torch.nan), total


SIZES_HINT = ("two tensors' sizes do not line up; print their shapes. Per example: the predictions, "
              "logits.argmax(dim=-1) over the classes, have one entry per example (B,), like targets and "
              "distance. Per distance: every result needs max_distance + 1 bins, but "
              "torch.bincount(distance) and F.one_hot(distance) stop at the largest distance present; pass "
              "minlength=max_distance + 1 to bincount, num_classes=max_distance + 1 to one_hot.")

register(Exercise(
    id="accuracy-by-distance",
    title="Accuracy by distance",
    reference=tasks.accuracy_by_distance,
    cases=_accuracy_cases,
    outputs=("accuracy", "count"),
    diagnose_first="accuracy",
    error_hints=(("must match the size of tensor", SIZES_HINT), ("does not match the shape", SIZES_HINT)),
    mistakes=(
        Mistake("the right answers were counted, not averaged",
                "divide each distance's number of right answers by its number of examples.", _not_averaged),
        Mistake("each distance was divided by the whole batch",
                "divide by the number of examples at that distance, not by B: the entries are "
                "accuracies, each between 0 and 1.", _over_everything),
        Mistake("empty bins were given a number (nan_to_num), not NaN",
                "0 / 0 = NaN is the honest answer where nothing was measured (an accuracy of 0 would plot "
                "as a failure): neither replace it with torch.nan_to_num nor clamp the counts to 1.",
                _nan_to_num, _empty_is_zero),
        Mistake("the result stops at the largest distance present",
                "torch.bincount and F.one_hot make only as many bins as the largest value + 1: pass "
                "minlength=max_distance + 1 to bincount, num_classes=max_distance + 1 to one_hot.",
                _bincount_no_minlength, _one_hot_no_num_classes),
        Mistake("the counts were returned as integers",
                "counting (torch.bincount, a sum of booleans) gives int64; return count in the logits' "
                "dtype, count.to(logits.dtype), like the accuracy.", _integer_count),
        Mistake("distance 0 was left out",
                "entry k is the accuracy at distance k, for k = 0 .. max_distance: max_distance + 1 "
                "entries, the first for distance 0.", _from_one),
        Mistake("every distance got the overall accuracy",
                "group the examples by their distance and average within each group.", _overall),
    ),
))
