"""Scoring functions: each one against its formula computed independently (explicit loops over every
query i and key j), the identities between them, their properties on fresh random inputs, the module
shells, the cost counts, clear errors on bad input, and the chapter's graders accepting other correct
answers."""

import math
import re

import pytest
import torch

from attn_course import attention, masking, scoring
from attn_course.exercises import check

F64 = torch.float64
SEEDS = [0, 1, 2, 12345]


def randn(gen, *shape, dtype=F64, scale=1.0):
    return scale * torch.randn(*shape, generator=gen, dtype=dtype)


def additive_params(gen, a, d, dk, dtype=F64):
    return randn(gen, a, d, dtype=dtype), randn(gen, a, dk, dtype=dtype), randn(gen, a, dtype=dtype)


def by_loops(q, k, score):
    """scores[b, i, j] = score(q[b, i], k[b, j]), one pair at a time, as plain Python floats."""
    out = torch.empty(q.size(0), q.size(1), k.size(1), dtype=F64)
    for b in range(q.size(0)):
        for i in range(q.size(1)):
            for j in range(k.size(1)):
                out[b, i, j] = score(q[b, i].tolist(), k[b, j].tolist())
    return out


def matvec(m, x):
    return [sum(m_ar * x_r for m_ar, x_r in zip(row, x)) for row in m.tolist()]


def dot(x, y):
    return sum(a * b for a, b in zip(x, y))


# --- each score equals its formula --------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_additive_score_equals_the_formula_computed_independently(seed):
    """e_ij = vᵀ tanh(W_q q_i + W_k k_j) (Bahdanau et al. 2015, appendix A.1.2), pair by pair."""
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(gen, 2, 3, 4), randn(gen, 2, 5, 6)
    W_q, W_k, v = additive_params(gen, 7, 4, 6)

    def formula(q_i, k_j):
        hidden = [math.tanh(a + b) for a, b in zip(matvec(W_q, q_i), matvec(W_k, k_j))]
        return dot(v.tolist(), hidden)

    torch.testing.assert_close(scoring.additive_score(q, k, W_q, W_k, v), by_loops(q, k, formula))


@pytest.mark.parametrize("seed", SEEDS)
def test_dot_scaled_dot_and_general_equal_their_formulas(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, k6 = randn(gen, 2, 3, 4), randn(gen, 2, 5, 4), randn(gen, 2, 5, 6)
    W = randn(gen, 4, 6)
    torch.testing.assert_close(scoring.dot_score(q, k), by_loops(q, k, dot))
    torch.testing.assert_close(scoring.scaled_dot_score(q, k), by_loops(q, k, lambda a, b: dot(a, b) / 2.0))
    torch.testing.assert_close(scoring.general_score(q, k6, W), by_loops(q, k6, lambda a, b: dot(a, matvec(W, b))))


@pytest.mark.parametrize("seed", SEEDS)
def test_concat_is_additive_with_w_split_and_equals_explicit_concatenation(seed):
    """Luong's vᵀ tanh(W [q; k]) with W = [W_q  W_k] is Bahdanau's vᵀ tanh(W_q q + W_k k)."""
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(gen, 2, 3, 4), randn(gen, 2, 5, 6)
    W, v = randn(gen, 8, 10), randn(gen, 8)
    concat = scoring.concat_score(q, k, W, v)
    torch.testing.assert_close(concat, scoring.additive_score(q, k, W[:, :4], W[:, 4:], v))
    pairs = torch.cat([q[:, :, None, :].expand(2, 3, 5, 4), k[:, None, :, :].expand(2, 3, 5, 6)], dim=-1)
    torch.testing.assert_close(concat, torch.tanh(pairs @ W.T) @ v)  # every [q_i; k_j] built


# --- properties on fresh random inputs -------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_general_with_identity_is_dot_and_scaled_dot_is_dot_over_sqrt_d(seed):
    gen = torch.Generator().manual_seed(seed)
    d = int(torch.randint(1, 9, (1,), generator=gen))
    q, k = randn(gen, 3, 4, d), randn(gen, 3, 6, d)
    dots = scoring.dot_score(q, k)
    torch.testing.assert_close(scoring.general_score(q, k, torch.eye(d, dtype=F64)), dots)
    torch.testing.assert_close(scoring.scaled_dot_score(q, k), dots / math.sqrt(d))
    torch.testing.assert_close(scoring.scaled_dot_score(q, k, scale=0.25), dots / 4)


@pytest.mark.parametrize("seed", SEEDS)
def test_scaled_dot_scores_give_the_weights_of_attend(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = randn(gen, 2, 3, 8), randn(gen, 2, 5, 8), randn(gen, 2, 5, 3)
    mask = masking.causal_mask(3, 5)
    context, weights = attention.attend(q, k, v, mask=mask)
    torch.testing.assert_close(masking.masked_softmax(scoring.scaled_dot_score(q, k), mask), weights)


@pytest.mark.parametrize("seed", SEEDS)
def test_general_score_is_bilinear(seed):
    gen = torch.Generator().manual_seed(seed)
    q1, q2, k1, k2 = randn(gen, 2, 4), randn(gen, 2, 4), randn(gen, 3, 5), randn(gen, 3, 5)
    W = randn(gen, 4, 5)
    a, b = torch.randn(2, generator=gen, dtype=F64).tolist()
    s = scoring.general_score
    torch.testing.assert_close(s(a * q1 + b * q2, k1, W), a * s(q1, k1, W) + b * s(q2, k1, W))
    torch.testing.assert_close(s(q1, a * k1 + b * k2, W), a * s(q1, k1, W) + b * s(q1, k2, W))


@pytest.mark.parametrize("seed", SEEDS)
def test_additive_scores_are_bounded_by_the_norm_of_v(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(gen, 2, 4, 3, scale=100.0), randn(gen, 2, 6, 5, scale=100.0)  # tanh saturates
    W_q, W_k, v = additive_params(gen, 9, 3, 5)
    scores = scoring.additive_score(q, k, W_q, W_k, v)
    assert scores.abs().max() <= v.abs().sum() + 1e-12
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_without_tanh_additive_would_rank_keys_alike_for_every_query(seed):
    """Why the tanh matters: vᵀ(W_q q + W_k k) = (a query term) + (a key term), so every query would rank
    the keys in the same order. With the tanh the rankings differ between queries."""
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(gen, 1, 6, 3), randn(gen, 1, 8, 3)
    W_q, W_k, v = additive_params(gen, 16, 3, 3)
    linear = ((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ v
    assert (linear.argsort(-1) == linear[:, :1].argsort(-1)).all()
    ranks = scoring.additive_score(q, k, W_q, W_k, v).argsort(-1)
    assert not (ranks == ranks[:, :1]).all()


def test_dot_product_variance_grows_with_d_and_scaling_removes_it():
    gen = torch.Generator().manual_seed(0)
    for d in (4, 64, 512):
        q, k = torch.randn(4000, 1, d, generator=gen), torch.randn(4000, 1, d, generator=gen)
        assert scoring.dot_score(q, k).var().item() == pytest.approx(d, rel=0.1)
        assert scoring.scaled_dot_score(q, k).var().item() == pytest.approx(1, rel=0.1)


@pytest.mark.parametrize("fn", ["dot", "scaled_dot", "general", "additive", "concat"])
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_shapes_broadcast_and_dtype_follows_the_inputs(fn, dtype):
    gen = torch.Generator().manual_seed(3)
    q, k = randn(gen, 2, 3, 4, 4, dtype=dtype), randn(gen, 1, 3, 6, 4, dtype=dtype)  # (B, H, L, D)
    W_q, W_k, v = additive_params(gen, 5, 4, 4, dtype=dtype)
    args = {"dot": (), "scaled_dot": (), "general": (W_q[:4],), "additive": (W_q, W_k, v),
            "concat": (torch.cat([W_q, W_k], dim=1), v)}[fn]
    scores = getattr(scoring, f"{fn}_score")(q, k, *args)
    assert scores.shape == (2, 3, 4, 6) and scores.dtype == dtype and scores.device == q.device


def test_scores_do_not_modify_their_inputs_and_carry_gradients():
    gen = torch.Generator().manual_seed(4)
    q, k = randn(gen, 2, 3, 4).requires_grad_(), randn(gen, 2, 5, 6).requires_grad_()
    W_q, W_k, v = (p.requires_grad_() for p in additive_params(gen, 7, 4, 6))
    before = [t.detach().clone() for t in (q, k, W_q, W_k, v)]
    scoring.additive_score(q, k, W_q, W_k, v).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, W_q, W_k, v)))
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, W_q, W_k, v))


# --- the nn.Module shells ---------------------------------------------------------------------------------

MODULES = [
    ("dot", lambda: scoring.DotScore(), 4),
    ("scaled_dot", lambda: scoring.ScaledDotScore(), 4),
    ("general", lambda: scoring.GeneralScore(query_size=4, key_size=6), 6),
    ("additive", lambda: scoring.AdditiveScore(query_size=4, key_size=6, attn_size=8), 6),
    ("concat", lambda: scoring.ConcatScore(query_size=4, key_size=6, attn_size=8), 6),
]


@pytest.mark.parametrize(("kind", "make", "dk"), MODULES, ids=[m[0] for m in MODULES])
def test_modules_call_the_functions_and_count_their_parameters(kind, make, dk):
    torch.manual_seed(0)
    module = make()
    gen = torch.Generator().manual_seed(1)
    q, k = randn(gen, 2, 3, 4, dtype=torch.float32), randn(gen, 2, 5, dk, dtype=torch.float32)
    params = dict(module.named_parameters())
    expected = getattr(scoring, f"{kind}_score")(q, k, *params.values())
    torch.testing.assert_close(module(q, k), expected)
    n_params = sum(p.numel() for p in module.parameters())
    attn = {"attn_size": 8} if kind in ("additive", "concat") else {}
    assert n_params == scoring.score_cost(kind, 3, 5, 4, dk=dk, **attn)["params"]


@pytest.mark.parametrize(("kind", "make", "dk"), MODULES[2:], ids=[m[0] for m in MODULES[2:]])
def test_module_parameters_are_seeded_by_the_caller_and_learnable(kind, make, dk):
    torch.manual_seed(7)
    a = make()
    torch.manual_seed(7)
    b = make()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
        assert pa.abs().max() <= 1.0  # U(-1/√fan_in, 1/√fan_in)
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, dk)
    a(q, k).square().sum().backward()
    assert all(p.grad is not None for p in a.parameters())


def test_module_sizes_are_checked():
    with pytest.raises(ValueError, match="attn_size must be > 0, got 0"):
        scoring.AdditiveScore(4, 6, 0)
    with pytest.raises(TypeError, match="key_size must be a whole number, got float"):
        scoring.GeneralScore(4, 6.0)


@pytest.mark.parametrize(("kind", "make", "dk"), MODULES[2:], ids=[m[0] for m in MODULES[2:]])
def test_modules_say_what_they_were_built_for(kind, make, dk):
    torch.manual_seed(0)
    module = make()
    name = type(module).__name__
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, dk)
    with pytest.raises(ValueError, match=re.escape(f"{name} was built for key_size={dk}, got keys of size 3")):
        module(q, k[..., :3])
    with pytest.raises(ValueError, match=re.escape(f"{name} was built for query_size=4, got queries of size 5")):
        module(torch.randn(2, 3, 5), k)
    with pytest.raises(TypeError, match=re.escape(f"{name}'s parameters are torch.float32 but q is torch.float64: "
                                                   "convert the module with module.to(torch.float64)")):
        module(q.double(), k.double())
    torch.testing.assert_close(module.double()(q.double(), k.double()), module(q.double(), k.double()))


def test_modules_show_their_sizes():
    assert repr(scoring.GeneralScore(4, 6)) == "GeneralScore(query_size=4, key_size=6)"
    assert repr(scoring.AdditiveScore(4, 6, 8)) == "AdditiveScore(query_size=4, key_size=6, attn_size=8)"
    assert repr(scoring.ConcatScore(4, 6, 8)) == "ConcatScore(query_size=4, key_size=6, attn_size=8)"
    assert repr(scoring.ScaledDotScore()) == "ScaledDotScore(scale=1/sqrt(D))"


# --- what they cost -------------------------------------------------------------------------------------

def test_score_cost_counts_by_hand():
    lq, lk, d, dk, a = 3, 5, 4, 6, 8
    assert scoring.score_cost("dot", lq, lk, d) == {"params": 0, "mult_adds": 60, "flops": 120, "memory": 15}
    assert scoring.score_cost("scaled_dot", lq, lk, d) == {"params": 0, "mult_adds": 60, "flops": 135,
                                                           "memory": 15}
    # general: W k_j for the 5 keys (5·6·4 = 120), then 3·5 dot products of size 4 (60)
    assert scoring.score_cost("general", lq, lk, d, dk) == {"params": 24, "mult_adds": 180, "flops": 360,
                                                            "memory": 15}
    # additive: W_q q_i (3·4·8 = 96), W_k k_j (5·6·8 = 240), vᵀ tanh(...) (3·5·8 = 120);
    # add and tanh on the (3, 5, 8) hidden layer: 240 more operations
    additive = {"params": 8 * 4 + 8 * 6 + 8, "mult_adds": 456, "flops": 2 * 456 + 240, "memory": 120}
    assert scoring.score_cost("additive", lq, lk, d, dk, attn_size=a) == additive
    assert scoring.score_cost("concat", lq, lk, d, dk, attn_size=a) == additive


def test_score_cost_defaults_and_errors():
    assert scoring.score_cost("additive", 2, 2, 3) == scoring.score_cost("additive", 2, 2, 3, dk=3, attn_size=3)
    with pytest.raises(ValueError, match="kind must be one of dot, scaled_dot, general, additive, concat, got 'mlp'"):
        scoring.score_cost("mlp", 2, 2, 3)
    with pytest.raises(ValueError, match="dot needs queries and keys of one size, got d=3 and dk=4"):
        scoring.score_cost("dot", 2, 2, 3, dk=4)
    with pytest.raises(ValueError, match="lq must be > 0, got 0"):
        scoring.score_cost("dot", 0, 2, 3)
    with pytest.raises(TypeError, match="attn_size must be a whole number, got float"):
        scoring.score_cost("additive", 2, 2, 3, attn_size=2.0)
    for kind in ("dot", "scaled_dot", "general"):
        with pytest.raises(ValueError, match=f"attn_size is the hidden size of additive and concat; {kind} has "
                                             "no hidden layer, so leave it out \\(got attn_size=4\\)"):
            scoring.score_cost(kind, 2, 2, 3, attn_size=4)


# --- bad input ------------------------------------------------------------------------------------------

G = torch.Generator().manual_seed(9)
Q, K, K6 = torch.randn(2, 3, 4, generator=G), torch.randn(2, 5, 4, generator=G), torch.randn(2, 5, 6, generator=G)
W_Q, W_K, V = torch.randn(8, 4, generator=G), torch.randn(8, 6, generator=G), torch.randn(8, generator=G)

BAD = [
    (lambda: scoring.dot_score(Q, K6), ValueError,
     "q and k must have the same feature size D (last dimension): q has shape (2, 3, 4), k has shape (2, 5, 6)"),
    (lambda: scoring.scaled_dot_score(Q, K6), ValueError, "must have the same feature size D"),
    (lambda: scoring.dot_score(Q.numpy(), K), TypeError, "q must be a torch.Tensor, got ndarray"),
    (lambda: scoring.dot_score(Q, K.long()), TypeError, "k must be a floating-point tensor, got dtype torch.int64"),
    (lambda: scoring.dot_score(Q, K.double()), TypeError, "q and k must share one dtype, got torch.float32 and torch.float64"),
    (lambda: scoring.dot_score(Q[0, 0], K), ValueError, "q must have at least 2 dimensions (..., L, size), got shape (4,)"),
    (lambda: scoring.dot_score(Q, torch.randn(3, 5, 4)), ValueError,
     "the leading (batch) dimensions of q and k must broadcast, got shapes (2, 3, 4) and (3, 5, 4)"),
    (lambda: scoring.scaled_dot_score(Q, K, scale=0), ValueError, "scale must be > 0, got 0"),
    (lambda: scoring.general_score(Q, K6, torch.randn(6, 4)), ValueError,
     "W must have shape (D, Dk) = (4, 6) for these q and k, got (6, 4)"),
    (lambda: scoring.general_score(Q, K6, torch.randn(4, 6, dtype=F64)), TypeError,
     "W must have the inputs' dtype torch.float32, got torch.float64"),
    (lambda: scoring.general_score(Q, K6, None), TypeError, "W must be a torch.Tensor, got NoneType"),
    (lambda: scoring.additive_score(Q, K6, W_K, W_Q, V), ValueError,
     "W_q must have shape (A, D) = (8, 4) for these q and k, got (8, 6)"),
    (lambda: scoring.additive_score(Q, K6, W_Q, W_K.T, V), ValueError,
     "W_k must have shape (A, Dk) = (8, 6) for these q and k, got (6, 8)"),
    # the weight with the odd attention size is the one blamed, whichever it is
    (lambda: scoring.additive_score(Q, K6, W_Q, W_K, V[:5]), ValueError,
     "v must have shape (A,) = (8,) for these q and k, got (5,)"),
    (lambda: scoring.additive_score(Q, K6, W_Q[:5], W_K, V), ValueError,
     "W_q must have shape (A, D) = (8, 4) for these q and k, got (5, 4)"),
    (lambda: scoring.additive_score(Q, K6, W_Q, W_K[:5], V), ValueError,
     "W_k must have shape (A, Dk) = (8, 6) for these q and k, got (5, 6)"),
    (lambda: scoring.additive_score(Q, K6, W_Q[:3], W_K[:5], V), ValueError,
     "W_q, W_k, v must share the attention size A (their first dimension), got W_q (3, 4), W_k (5, 6), v (8,)"),
    (lambda: scoring.additive_score(Q, K6, W_Q[:, :, None], W_K, V), ValueError,
     "W_q must have shape (A, D), got (8, 4, 1)"),
    (lambda: scoring.additive_score(Q, K6, W_Q, W_K, V[:, None]), ValueError,
     "v must have shape (A,), one weight per hidden unit, got (8, 1)"),
    (lambda: scoring.additive_score(Q, K6, W_Q, W_K, V.double()), TypeError,
     "v must have the inputs' dtype torch.float32, got torch.float64"),
    (lambda: scoring.concat_score(Q, K6, torch.randn(8, 9), V), ValueError,
     "W must have shape (A, D + Dk) = (8, 10) for these q and k, got (8, 9)"),
    (lambda: scoring.concat_score(Q, K6, torch.randn(8, 10), V[:5]), ValueError,
     "W, v must share the attention size A (their first dimension), got W (8, 10), v (5,)"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_says_what_was_expected_and_what_came(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# --- the chapter's graders accept other correct answers ----------------------------------------------

def _attention_with_sdpa(q, k, v):
    weights = torch.softmax(torch.einsum("...qd,...kd->...qk", q, k) / q.shape[-1] ** 0.5, dim=-1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v), weights


def _additive_by_loops(q, k, W_q, W_k, v):
    rows = [torch.stack([torch.tanh(q[..., i, :] @ W_q.T + k[..., j, :] @ W_k.T) @ v
                         for j in range(k.size(-2))], dim=-1) for i in range(q.size(-2))]
    return torch.stack(rows, dim=-2)


def _additive_with_linear(q, k, W_q, W_k, v):
    hidden = torch.nn.functional.linear(q, W_q).unsqueeze(-2) + torch.nn.functional.linear(k, W_k).unsqueeze(-3)
    return (torch.tanh(hidden) * v).sum(-1)


@pytest.mark.parametrize(("exercise_id", "solution"), [
    ("scaled-dot-product", _attention_with_sdpa),
    ("additive-score", _additive_by_loops),
    ("additive-score", _additive_with_linear),
    ("general-score", lambda q, k, W: torch.einsum("...qd,de,...ke->...qk", q, W, k)),
    ("general-score", lambda q, k, W: (q @ W) @ k.mT),
])
@pytest.mark.parametrize("seed", SEEDS)
def test_graders_accept_other_correct_solutions(exercise_id, solution, seed):
    result = check(exercise_id, solution, seed=seed)
    assert result.passed, str(result)


# --- the graders' hints for the shape errors learners hit ------------------------------------------------

def _sdpa_with(transpose):
    def fn(q, k, v):
        weights = torch.softmax(q @ transpose(k) / math.sqrt(q.size(-1)), dim=-1)
        return weights @ v, weights
    return fn


@pytest.mark.parametrize(("exercise_id", "wrong"), [
    ("scaled-dot-product", _sdpa_with(lambda k: k.T)),
    ("scaled-dot-product", _sdpa_with(lambda k: k.transpose(1, 2))),
    ("scaled-dot-product", _sdpa_with(lambda k: k.permute(0, 2, 1))),
    ("general-score", lambda q, k, W: q @ W @ k.T),
    ("general-score", lambda q, k, W: q @ W @ k.transpose(1, 2)),
])
def test_transposing_the_wrong_axes_gets_the_last_two_axes_hint(exercise_id, wrong):
    result = check(exercise_id, wrong, seed=0)
    assert result.status == "error", str(result)
    assert "transpose the last two axes: k.transpose(-2, -1) (or k.mT)" in result.hint


def _additive_pairing(pair, reduce=lambda hidden, v: hidden @ v):
    def fn(q, k, W_q, W_k, v):
        return reduce(torch.tanh(pair(q @ W_q.T, k @ W_k.T)), v)
    return fn


@pytest.mark.parametrize("wrong", [
    _additive_pairing(lambda a, b: a[:, :, None, :] + b[:, None, :, :]),
    _additive_pairing(lambda a, b: a.unsqueeze(2) + b.unsqueeze(1)),
    _additive_pairing(lambda a, b: a[..., :, None, :] + b[..., None, :, :], lambda h, v: (h * v).sum(dim=3)),
], ids=["index", "unsqueeze", "sum-over-dim-3"])
def test_fixed_axes_get_the_index_from_the_end_hint(wrong):
    result = check("additive-score", wrong, seed=0)
    assert result.status == "error" and "no batch dimension" in result.case, str(result)
    assert "index from the end, q[..., :, None, :] and k[..., None, :, :]" in result.hint


def test_a_hand_written_softmax_without_keepdim_is_told_about_keepdim():
    def no_keepdim(q, k, v):
        e = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).exp()
        weights = e / e.sum(dim=-1)
        return weights @ v, weights

    assert "keepdim=True" in check("scaled-dot-product", no_keepdim, seed=0).hint
