"""Exercises on visual attention for captioning (chapter 13): the attention-weighted context over a grid of
image features, the attention hit rate, and the doubly stochastic penalty of "Show, Attend and Tell".

Shapes: B images, H x W (or G x G) grid cells, C feature size, T words, K digits per scene.
"""

from __future__ import annotations

import math

import torch

from .. import captioning
from ..attention import attend
from . import Case, Exercise, Mistake, register
from ._grader import randn

# --- 1. the attention-weighted context over a feature grid ---------------------------------------------


def _context_reference(features, query):
    b, h, w, c = features.shape
    cells = features.reshape(b, h * w, c)  # row by row: cell (r, c) is r * W + c
    context, weights = attend(query[:, None, :], cells, cells)  # scaled dot product: (B, 1, C), (B, 1, H·W)
    return context[:, 0], weights.reshape(b, h, w)


def _context_case(gen, label, b, h, w, c, dtype=torch.float32, scale=1.0):
    return Case(label, (randn(gen, b, h, w, c, dtype=dtype), randn(gen, b, c, dtype=dtype, scale=scale)))


def _context_cases(gen):
    return [
        _context_case(gen, "a 3 x 4 grid, C = 5, two images", 2, 3, 4, 5),
        _context_case(gen, "the captioner's 8 x 8 grid, C = 16", 2, 8, 8, 16),
        _context_case(gen, "one image, a 2 x 6 grid", 1, 2, 6, 3),
        _context_case(gen, "float64, a 5 x 3 grid", 2, 5, 3, 4, dtype=torch.float64),
        _context_case(gen, "a sharp query (scores up to about 20)", 3, 4, 4, 8, scale=4.0),
    ]


def _context_variant(scale="sqrt", flatten="rows", normalise="all", combine="weighted"):
    def variant(features, query):
        b, h, w, c = features.shape
        if flatten == "channels-first":  # as if the grid were (B, C, H, W)
            cells = features.reshape(b, c, h * w).transpose(1, 2)
        elif flatten == "columns":  # cell (r, c) numbered c * H + r, the weights reshaped as if row by row
            cells = features.transpose(1, 2).reshape(b, w * h, c)
        else:
            cells = features.reshape(b, h * w, c)
        divisor = {"sqrt": math.sqrt(c), "none": 1.0, "C": float(c)}[scale]
        scores = (cells @ query[:, :, None])[..., 0] / divisor  # (B, H·W)
        if normalise == "all":
            weights = torch.softmax(scores, dim=-1)
        elif normalise == "per-row":
            weights = torch.softmax(scores.reshape(b, h, w), dim=-1).reshape(b, h * w)
        elif normalise == "per-column":
            weights = torch.softmax(scores.reshape(b, h, w), dim=1).reshape(b, h * w)
        elif normalise == "none":
            weights = scores
        else:  # one-hot: hard attention
            weights = torch.nn.functional.one_hot(scores.argmax(-1), h * w).to(scores.dtype)
        if combine == "weighted":
            context = (weights[:, None, :] @ cells)[:, 0]
        elif combine == "mean":
            context = cells.mean(dim=1)
        else:
            context = cells.sum(dim=1)
        return context, weights.reshape(b, h, w)
    return variant


def _softmax_over_channels(features, query):
    c = features.size(-1)
    weights = torch.softmax(features * query[:, None, None, :] / math.sqrt(c), dim=-1)  # (B, H, W, C)
    return (weights * features).sum(dim=(1, 2)), weights


register(Exercise(
    id="grid-context",
    title="Attention over a grid of image features",
    reference=_context_reference,
    cases=_context_cases,
    outputs=("context", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the scores were not divided by √C",
                "scaled dot-product scores: (features · query) / sqrt(C), C the feature size.",
                _context_variant(scale="none")),
        Mistake("the scores were divided by C instead of √C",
                "the dot product of two C-long vectors of unit-variance numbers has variance C: divide by "
                "its standard deviation, sqrt(C) (C ** 0.5), to bring the scores back to about 1.",
                _context_variant(scale="C")),
        Mistake("the softmax ran over one axis of the grid only (each row or each column separately)",
                "the weights are one distribution over all H·W cells: flatten the grid to (B, H·W) first, "
                "then take the softmax over that axis.", _context_variant(normalise="per-row"),
                _context_variant(normalise="per-column")),
        Mistake("the softmax ran over the channels",
                "score each cell with one number (a dot product over C), then normalise over the cells, not "
                "over the channels.", _softmax_over_channels),
        Mistake("the grid was flattened as if it were channels-first (B, C, H, W)",
                "the features are channels-last (B, H, W, C): reshape to (B, H·W, C), e.g. "
                "einops.rearrange(features, 'b h w c -> b (h w) c'); a reshape to (B, C, H·W) mixes channels "
                "and cells.", _context_variant(flatten="channels-first")),
        Mistake("the grid was flattened column by column, then the weights read back row by row",
                "number the cells row by row, cell (r, c) -> r·W + c: features.reshape(B, H·W, C), or "
                "einops.rearrange(features, 'b h w c -> b (h w) c'); whatever order you flatten in, reshape "
                "the weights back to (B, H, W) in the same order.", _context_variant(flatten="columns")),
        Mistake("the context ignores the weights (a plain mean or sum of the cells)",
                "the context is the weighted average Σ weights_hw · features_hw.",
                _context_variant(combine="mean"), _context_variant(combine="sum")),
        Mistake("the weights were not normalised (no softmax)",
                "turn the scores into weights that are positive and sum to 1 over the cells: a softmax.",
                _context_variant(normalise="none")),
        Mistake("this is hard attention: all the weight on the best cell",
                "soft attention keeps every cell, weighted by the softmax of the scores.",
                _context_variant(normalise="one-hot")),
    ),
))


# --- 2. the attention hit rate -------------------------------------------------------------------------


def _hit_reference(weights, named, cells, grid):
    hits = captioning.attention_hits(weights, named, cells, grid).to(weights.dtype)
    return captioning.attention_hit_rate(weights, named, cells, grid), hits


def _cell_in(gen, r0, r1, c0, c1):
    """A random cell (row, col) with r0 <= row < r1 and c0 <= col < c1."""
    return (int(torch.randint(r0, r1, (1,), generator=gen)), int(torch.randint(c0, c1, (1,), generator=gen)))


def _hit_case(gen, label, b, grid, dtype=torch.float32, sharp=6.0, p_hit=0.65, p_first=None, miss="anywhere",
              where="anywhere"):
    """B scenes of 2 or 3 digits in a row on a grid x grid of cells; captions "d left of d ..." with
    <eos> and padding; attention whose peak (the argmax, ``sharp`` above the rest) lands on the named
    digit about p_hit of the time (p_first for the first scene): ``where`` "anywhere" on it, or on its
    "corners" (its first cell for even digits, its last for odd ones); otherwise ``miss``: "anywhere" off
    the digit, on the cell just "below" its bottom edge (row row1, inside its columns) or just "right" of
    its right edge (column col1, inside its rows), or on an "other" digit of the scene. The words that name
    no digit (relation words, <eos>) look at a digit too: the first relation word at digit 0, <eos> at the
    last digit slot (when it holds a digit), the others at a random digit of the scene, so forgetting to
    leave them out always shows."""
    k_max = min(3, grid // 3)
    t_max = 2 * k_max + 2  # digits, relation words ("left", "of" as one word here), <eos>, one pad
    cells = torch.full((b, k_max, 4), -1, dtype=torch.long)
    named = torch.full((b, t_max), -1, dtype=torch.long)
    scores = torch.randn(b, t_max, grid * grid, generator=gen, dtype=torch.float64)
    for i in range(b):
        k = 2 + i % (k_max - 1)  # scenes of 2 and, where the grid has room, 3 digits
        for j in range(k):
            col = 3 * j + int(torch.randint(0, 2, (1,), generator=gen))
            room = grid - 3 if miss == "below" else grid - 2  # "below" keeps a free row under the digit
            row = int(torch.randint(0, room, (1,), generator=gen))
            cells[i, j] = torch.tensor([col, row, col + 2, row + 3])  # 2 cells wide, 3 high: not square
            named[i, 2 * j] = j
        p = p_hit if (p_first is None or i) else p_first
        for t in range(2 * k):  # digit words (even t) and relation words and <eos> (odd t); padding follows
            j = int(named[i, t])
            if j < 0:  # a word that names no digit, looking at one
                look = 0 if t == 1 else (k_max - 1 if t == 2 * k - 1 and k == k_max else None)
                look = int(torch.randint(0, k, (1,), generator=gen)) if look is None else look
                c0, r0, c1, r1 = cells[i, look].tolist()
                r, c = _cell_in(gen, r0, r1, c0, c1)
            else:
                c0, r0, c1, r1 = cells[i, j].tolist()
                if float(torch.rand(1, generator=gen)) < p:
                    if where == "corners":
                        r, c = (r0, c0) if j % 2 == 0 else (r1 - 1, c1 - 1)
                    else:
                        r, c = _cell_in(gen, r0, r1, c0, c1)
                elif miss == "other":
                    o0, q0, o1, q1 = cells[i, (j + 1) % k].tolist()  # the next digit, cyclically
                    r, c = _cell_in(gen, q0, q1, o0, o1)
                elif miss == "below":  # row1 <= grid - 1 (see room above)
                    r, c = r1, int(torch.randint(c0, c1, (1,), generator=gen))
                elif miss == "right":  # needs col1 < grid: a grid of 10 or more for 3 digits
                    r, c = int(torch.randint(r0, r1, (1,), generator=gen)), c1
                else:
                    r, c = r0, c0
                    while r0 <= r < r1 and c0 <= c < c1:  # somewhere off the named digit
                        r, c = (int(x) for x in torch.randint(0, grid, (2,), generator=gen))
            scores[i, t, r * grid + c] = scores[i, t].max() + sharp  # the argmax, whatever the noise
    return Case(label, (torch.softmax(scores, dim=-1).to(dtype), named, cells, grid))


def _hit_cases(gen):
    return [
        _hit_case(gen, "6 scenes on an 8 x 8 grid", 6, 8),
        _hit_case(gen, "a 9 x 9 grid", 5, 9),
        _hit_case(gen, "2 and 3 digits, the first scene all hits, the second all misses", 2, 9, p_hit=0.0,
                  p_first=1.0),
        _hit_case(gen, "float64", 6, 8, dtype=torch.float64),
        _hit_case(gen, "attention on each digit's first or last cell (its corners)", 4, 9, p_hit=1.0,
                  where="corners"),
        _hit_case(gen, "attention just below each digit (row row1, inside its columns): all misses", 3, 10,
                  p_hit=0.0, miss="below"),
        _hit_case(gen, "attention just right of each digit (column col1, inside its rows): all misses", 3,
                  10, p_hit=0.0, miss="right"),
        _hit_case(gen, "attention on the wrong digit", 3, 9, p_hit=0.5, miss="other"),
        _hit_case(gen, "one scene", 1, 8, p_hit=0.5),
        _hit_case(gen, "blurry attention (a weaker peak)", 8, 8, sharp=2.5),
    ]


def _hit_variant(swap=False, inclusive="", exclusive_start=False, any_digit=False, count_all=False,
                 per_scene=False, mass=False, count=False, mask=True, last_for_none=False, drop_first=False):
    def variant(weights, named, cells, grid):
        n, k = weights.size(-1), cells.size(1)
        index = torch.arange(n)
        rows, cols = (index % grid, index // grid) if swap else (index // grid, index % grid)
        c0, r0, c1, r1 = (cells[..., i, None] for i in range(4))  # (B, K, 1)
        start = ((c0 < cols) & (r0 < rows)) if exclusive_start else ((c0 <= cols) & (r0 <= rows))
        end_col = (cols <= c1) if inclusive in ("both", "columns") else (cols < c1)
        end_row = (rows <= r1) if inclusive in ("both", "rows") else (rows < r1)
        on = start & end_col & end_row  # (B, K, N)
        counted = named > 0 if drop_first else named >= 0
        which = named % k if last_for_none else named.clamp_min(0)  # named = -1: the last slot, or digit 0
        if mass:
            on_named = on.gather(1, which[..., None].expand(-1, -1, n))  # (B, T, N)
            hits = (weights * on_named).sum(-1)
        else:
            best = weights.argmax(dim=-1)  # (B, T)
            on_best = on.gather(2, best[:, None, :].expand(-1, k, -1))  # (B, K, T)
            if any_digit:
                hits = on_best.any(dim=1)
            else:
                hits = on_best.gather(1, which[:, None, :])[:, 0]  # (B, T)
            hits = hits.to(weights.dtype)
        if mask:
            hits = hits * counted
        if count:
            return hits.sum(), hits
        if per_scene:
            return (hits.sum(1) / counted.sum(1)).mean(), hits
        denominator = torch.as_tensor(named.numel() if count_all else counted.sum())
        return hits.sum() / denominator.to(weights.dtype), hits
    return variant


register(Exercise(
    id="attention-hit-rate",
    title="The attention hit rate",
    reference=_hit_reference,
    cases=_hit_cases,
    outputs=("hit_rate", "hits"),
    diagnose_first="hits",
    mistakes=(
        # Splitting the index as (column, row) and reading the box as (row0, col0, row1, col1) give the
        # same test, col0 <= n // G < col1 and row0 <= n % G < row1, on every input: no output can tell
        # them apart, so they are one mistake whose hint names both.
        Mistake("rows and columns are crossed: the flat cell index was split as (column, row), or the box "
                "was read as (row0, col0, row1, col1)",
                "two things to check. Cells are numbered row by row: cell n is row n // G, column n % G. "
                "And each box is (col0, row0, col1, row1), columns first, like the pixel boxes "
                "(x0, y0, x1, y1). Swapping either one (not both) gives this result.",
                _hit_variant(swap=True)),
        Mistake("the words that name no digit (named = -1) were not left out of the hits",
                "relation words, <eos> and padding have named = -1; their hits must be 0, e.g. "
                "hits = inside & (named >= 0). clamp(min=0) only makes the lookup safe (it reads digit 0's "
                "box), and cells[b, -1] is the last digit slot, not 'no digit'.",
                _hit_variant(mask=False), _hit_variant(mask=False, last_for_none=True)),
        Mistake("the words that name no digit were counted (as misses)",
                "only the digit words count: divide by the number of entries with named >= 0, not by all "
                "the words (relation words, <eos> and padding have named = -1).",
                _hit_variant(count_all=True)),
        Mistake("the first digit of each scene was left out (named > 0 instead of named >= 0)",
                "named = 0 is the scene's first digit, a digit word like the others; only -1 means 'no "
                "digit': keep the words with named >= 0.", _hit_variant(drop_first=True)),
        Mistake("a hit was counted on any digit, not the one being named",
                "compare with the box of the digit that this word names: cells[b, named[b, t]].",
                _hit_variant(any_digit=True)),
        Mistake("the box ends were treated as inclusive",
                "the cell ranges end exclusively, like Python slices: col0 <= col < col1 and "
                "row0 <= row < row1, on both axes.",
                _hit_variant(inclusive="both"), _hit_variant(inclusive="rows"),
                _hit_variant(inclusive="columns")),
        Mistake("the box starts were treated as exclusive",
                "a box holds its first row and column: col0 <= col < col1 and row0 <= row < row1 (start "
                "included, end excluded, like a Python slice).", _hit_variant(exclusive_start=True)),
        Mistake("the hit rate was averaged per scene, then over scenes",
                "pool every digit word of every scene: hits / named words overall, so a scene of four digits "
                "weighs more than a scene of two.", _hit_variant(per_scene=True)),
        Mistake("this is the attention mass on the digit, not a hit of the most-attended cell",
                "take the single most-attended cell of each word (argmax over the cells) and ask whether it "
                "lies on the digit.", _hit_variant(mass=True)),
        Mistake("the number of hits was returned, not the rate",
                "divide the hits by the number of words that name a digit.", _hit_variant(count=True)),
    ),
))


# --- 3. the doubly stochastic penalty ------------------------------------------------------------------


def _penalty_reference(weights, mask, lam):
    coverage = (weights * mask[..., None]).sum(dim=1)  # Σ_t α_ti over the words that count: (B, N)
    return captioning.doubly_stochastic_penalty(weights, mask, lam), coverage


def _penalty_case(gen, label, b, t, n, lam, dtype=torch.float32, full=False):
    weights = torch.softmax(2 * torch.randn(b, t, n, generator=gen, dtype=torch.float64), dim=-1).to(dtype)
    lengths = torch.full((b,), t) if full else torch.randint(1, t + 1, (b,), generator=gen)
    lengths[0] = t  # one caption uses every step
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return Case(label, (weights, mask, lam))


def _penalty_cases(gen):
    return [
        _penalty_case(gen, "3 captions of up to 6 words, 9 cells, λ = 1", 3, 6, 9, 1.0),
        _penalty_case(gen, "as many words as cells (5), λ = 0.5", 4, 5, 5, 0.5),
        _penalty_case(gen, "one caption, every step used, λ = 2", 1, 4, 8, 2.0, full=True),
        _penalty_case(gen, "float64, 64 cells, λ = 0.01", 2, 11, 64, 0.01, dtype=torch.float64),
        _penalty_case(gen, "more words than cells, λ = 1", 3, 8, 4, 1.0),
    ]


def _penalty_variant(over="words", power=2, use_mask=True, invert=False, reduce="mean", scale=True,
                     cells="sum", words="sum"):
    def variant(weights, mask, lam):
        if use_mask:
            weights = weights * (~mask if invert else mask)[..., None]
        total = weights.sum(dim=1 if over == "words" else 2)  # Σ_t α_ti: (B, N), or Σ_i: (B, T)
        if words == "mean":  # a mean over all T steps
            total = total / weights.size(1)
        elif words == "mean-of-counted":  # a mean over each caption's own words
            total = total / mask.sum(dim=1, keepdim=True).to(total.dtype)
        gap = (1 - total).abs() if power == 1 else (1 - total) ** 2
        per_image = gap.sum(-1) if cells == "sum" else gap.mean(-1)
        value = per_image.mean() if reduce == "mean" else per_image.sum()
        return (lam * value if scale else value), total
    return variant


register(Exercise(
    id="doubly-stochastic-penalty",
    title="The doubly stochastic penalty",
    reference=_penalty_reference,
    cases=_penalty_cases,
    outputs=("penalty", "coverage"),
    diagnose_first="coverage",
    gradients=("weights",),  # the penalty is added to the loss: it must stay differentiable in the weights
    mistakes=(
        Mistake("the weights were summed over the cells instead of over the words",
                "each α_t already sums to 1 over the cells; the penalty looks at each cell i across the "
                "words: "
                "Σ_t α_ti, a sum over the time axis (dim=1 of (B, T, N)).", _penalty_variant(over="cells")),
        Mistake("the difference from 1 was not squared",
                "the penalty is λ Σ_i (1 - Σ_t α_ti)², a square, not an absolute value.",
                _penalty_variant(power=1)),
        Mistake("the padded steps after <eos> were counted",
                "zero the weights where mask is False before summing over the words: "
                "weights * mask[..., None].",
                _penalty_variant(use_mask=False)),
        Mistake("the mask was inverted",
                "mask is True for the words that count; keep those, drop the others.",
                _penalty_variant(invert=True)),
        Mistake("the penalty was summed over the images instead of averaged",
                "sum over the cells, then take the mean over the batch, like the cross-entropy it is "
                "added to.",
                _penalty_variant(reduce="sum")),
        Mistake("λ was left out", "multiply by the weight lam.", _penalty_variant(scale=False)),
        Mistake("the coverage was averaged over the words instead of summed",
                "coverage is Σ_t α_ti, a sum over the words (dim=1): a word's attention adds to a cell's "
                "total, and the penalty asks that total to be about 1, not its average.",
                _penalty_variant(words="mean"), _penalty_variant(words="mean-of-counted")),
        Mistake("the squared gaps were averaged over the cells instead of summed",
                "eq. 14 sums over the cells: Σ_i (1 - Σ_t α_ti)².", _penalty_variant(cells="mean")),
    ),
))
