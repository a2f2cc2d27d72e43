"""A teaching Triton kernel: FlashAttention's forward pass with an online softmax and a sliding window.

Read it next to the chapter's PyTorch-tiles version: the kernel does the same steps, one tile at a time, but
each program of the GPU grid keeps its tiles in registers and on-chip memory instead of in tensors.

The math. For one query row q_i (D numbers) and the keys k_j, values v_j (j = 0 .. L-1), attention is
(Vaswani et al. 2017, eq. 1)

    s_ij = scale · q_i · k_j,    o_i = Σ_j exp(s_ij - m_i) v_j / Σ_j exp(s_ij - m_i),    m_i = max_j s_ij.

Subtracting the row maximum m_i changes nothing mathematically and keeps exp() from overflowing. The catch is
that m_i needs every score of the row before the first exp. The **online softmax** (Milakov & Gimelshein
2018, "Online normalizer calculation for softmax", algorithm 3) removes the catch: walk over the keys in
blocks and keep, per row, a running maximum m, a running sum l = Σ exp(s_ij - m) and an unnormalised output
acc = Σ exp(s_ij - m) v_j. When a new block of scores s_new arrives:

    m_new = max(m, max_j s_new_j)                     the maximum so far
    α     = exp(m - m_new)                            how much the old terms shrink under the new maximum
    p_j   = exp(s_new_j - m_new)                      the new block's unnormalised weights
    l     = α · l + Σ_j p_j                           rescale the old sum, add the new terms
    acc   = α · acc + Σ_j p_j v_j                     rescale the old output, add the new block's values
    m     = m_new

and after the last block o_i = acc / l. Every term of l and acc was computed against some older maximum and
then multiplied by exp(old max - newer max) each time the maximum grew, so at the end each term is exactly
exp(s_ij - m_i): the same o_i as the two-pass softmax. FlashAttention (Dao et al. 2022, algorithm 1;
FlashAttention-2, Dao 2023, algorithm 1, which divides by l only once at the end, as here) runs this
recurrence on tiles: a block of BLOCK_M queries against blocks of BLOCK_N keys, so the (L, L) matrix of scores
never exists in memory, only one (BLOCK_M, BLOCK_N) tile of it at a time.

The sliding window (Longformer, Beltagy et al. 2020; Mistral, Jiang et al. 2023) with the course's meaning
(``masking.window_mask``): query i sees key j iff |i - j| < window, and also j <= i if causal. A block of
queries [m0, m0 + BLOCK_M) can only see keys in [m0 - window + 1, m0 + BLOCK_M - 1 + window - 1]: the kernel
loops over the key blocks of that range only and never loads the others. That skipping, not the mask, is
where the O(L · window) cost comes from; the mask only cleans up the edges of the band inside the blocks it
does visit. A row that ends up with no key at all would get zeros (the course convention); with Lq = Lk and
window >= 1 every query sees at least itself, so that only guards the arithmetic.

Two tricks a fast kernel needs and this one keeps: exp2 instead of exp (the hardware computes 2^x; scale
and log2(e) are folded into one multiplication of the scores), and no mask at all when nothing can be masked
(full attention with L a multiple of BLOCK_N), decided at compile time. Production kernels (FlashAttention-2,
Triton's fused-attention tutorial) go further and split the key loop so that only the blocks on the edge of
the causal triangle or of the window pay for the mask.

Shapes: q, k, v: (B, H, L, D) with Lq = Lk = L (self-attention, no KV cache) and Dv = D;
D in {16, 32, 64, 128}. Dtypes: float16 and bfloat16 (the fast path on a GPU; scores and the running
statistics are kept in float32) and float32 (matmuls in full IEEE float32, for checking, not for speed).

Where it runs: on a CUDA GPU (Triton compiles the kernel on first use), or on CPU tensors under Triton's
interpreter (environment variable TRITON_INTERPRET=1, set before Triton is first imported): correct,
about 1000x slower than PyTorch's own attention, for tests and for stepping through the kernel. Triton is
optional: importing this module works without it; calling the kernel without it says how to install it.
"""

from __future__ import annotations

import math
import types

import torch

from . import _checks
from .attention import attend
from .local import sliding_window_attention
from .masking import causal_mask

__all__ = ["HEAD_DIMS", "DTYPES", "available", "flash_attention_forward", "reference"]

HEAD_DIMS = (16, 32, 64, 128)  # D: a power of two, so a row of q fits one tile; tl.dot needs D >= 16
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INSTALL_HINT = "pip install triton==3.9.0 (Linux; the course's tests/requirements-triton.txt)"

# Bound by _import_triton() on first use, so that the course package imports without Triton.
triton = None
tl = None


# --- Triton, imported lazily ---------------------------------------------------------------------------

def available() -> bool:
    """True if Triton can be imported (the kernel still needs a CUDA GPU or TRITON_INTERPRET=1)."""
    try:
        _import_triton()
    except ImportError:
        return False
    return True


def _import_triton():
    global triton, tl
    if triton is None:
        try:
            import triton as _triton
            import triton.language as _tl
        except ImportError as error:
            raise ImportError(f"flash_attention_forward needs Triton, which is not installed: {INSTALL_HINT}. "
                              f"Without it, use attn_course.local.sliding_window_attention or "
                              f"F.scaled_dot_product_attention.") from error
        triton, tl = _triton, _tl
    return triton


def _interpreting() -> bool:
    """Does Triton run kernels in its interpreter (TRITON_INTERPRET=1)? Triton reads the variable when it is
    first imported: its own library functions (tl.max, tl.sum, ...) are compiled or interpreted from then on,
    so setting or clearing it later cannot work and is refused with an explanation.

    Triton-internal plumbing (checked against Triton 3.9 only): there is no public "am I interpreted?" flag
    frozen at import, so we look at how Triton built its own library: under the interpreter tl.max is a plain
    Python function, compiled it is a ``triton.runtime.JITFunction``. If a later Triton wraps tl.max
    differently, or renames ``triton.knobs.runtime.interpret``, this check raises (a spurious "set it before
    import" error, or an AttributeError) on every call: fix this function, the kernel itself is unaffected."""
    interpreted = not isinstance(tl.max, triton.runtime.JITFunction)
    if interpreted != bool(triton.knobs.runtime.interpret):
        now = "set" if triton.knobs.runtime.interpret else "not set"
        raise RuntimeError(f"TRITON_INTERPRET=1 is {now} now, but Triton was imported "
                           f"{'with' if interpreted else 'without'} it, and Triton reads it only when it is "
                           f"first imported. Set it before anything imports triton (in a notebook: restart the "
                           f"kernel and run os.environ['TRITON_INTERPRET'] = '1' in the first cell).")
    return interpreted


_KERNEL = None  # the kernel wrapped by triton.jit, made on first use


def _kernel():
    """``triton.jit(_flash_forward_kernel)``: the decorator, applied on first use instead of at import, so
    that this module imports without Triton."""
    global _KERNEL
    if _KERNEL is None:
        fn = _flash_forward_kernel
        if _interpreting():
            # The interpreter re-runs the kernel's source as Python and adds dozens of its own names to the
            # kernel's globals: hand it a private namespace holding what the kernel reads, not this module's.
            # Triton-internal plumbing (Triton 3.9): we rebuild the function around that namespace, relying on
            # the interpreter exec'ing the rewritten source (found through fn.__code__) in fn.__globals__, and
            # on it finding triton.language as a module there (it asserts so). If that changes, the symptom is
            # a NameError or that assertion inside the kernel, or this module's globals gaining Triton's names;
            # the fix is to add the missing name to `namespace` or to drop the rebuild. The compiled (GPU)
            # path does not take this branch.
            namespace = {"__name__": __name__, "triton": triton, "tl": tl}
            fn = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__)
        _KERNEL = triton.jit(fn)
    return _KERNEL


# --- the kernel ------------------------------------------------------------------------------------------
#
# One program computes one block of BLOCK_M query rows of one (batch, head) pair. The grid is one-dimensional,
# B·H · (number of query blocks) programs, numbered so that the query blocks of one head come one after the
# other: the GPU starts programs roughly in that order, so the programs running together mostly share a head
# and its K and V tiles are read from memory once and then hit the L2 cache. (A 2-D grid (query blocks, B·H)
# would do the same but caps B·H at 65535, CUDA's limit on the grid's 2nd and 3rd axes; the 1st axis allows
# 2^31 - 1.) Inside, the program walks over the key blocks its queries can see and keeps
# the online-softmax state (m, l, acc) for its BLOCK_M rows. Arguments in CAPITALS marked tl.constexpr are
# compile-time constants: Triton compiles one version of the kernel per combination of them, so the
# `if CAUSAL:` tests below cost nothing at run time. The tensors arrive as plain pointers to contiguous
# (B·H, L, D) memory: row r of head z starts at element (z·L + r)·D.

def _flash_forward_kernel(
    Q, K, V, Out,                   # pointers to the first element of q, k, v and the output
    seq_len,                        # L, the number of queries and of keys
    window,                         # the window w (|i - j| < w); ignored unless HAS_WINDOW
    qk_scale,                       # scale · log2(e): scores come out ready for exp2
    HEAD_DIM: tl.constexpr,         # D
    BLOCK_M: tl.constexpr,          # queries per program
    BLOCK_N: tl.constexpr,          # keys per step of the loop
    CAUSAL: tl.constexpr,           # only keys j <= i
    HAS_WINDOW: tl.constexpr,       # only keys with |i - j| < window
    MASKED: tl.constexpr,           # False when no score can be masked: the mask is compiled out
    DOT_PRECISION: tl.constexpr,    # "ieee" for float32 inputs (no TF32 rounding), None (default) otherwise
):
    # --- which tile am I? -----------------------------------------------------------------------------
    program = tl.program_id(0)                            # 0 .. B·H · query blocks - 1
    query_blocks = tl.cdiv(seq_len, BLOCK_M)
    start_m = (program % query_blocks) * BLOCK_M          # first query row of this program
    head = (program // query_blocks).to(tl.int64)         # which of the B·H (batch, head) pairs; int64 so
    base = head * seq_len * HEAD_DIM                      # that the offset cannot overflow on big tensors

    offs_m = start_m + tl.arange(0, BLOCK_M)              # (BLOCK_M,) query positions i
    offs_n = tl.arange(0, BLOCK_N)                        # (BLOCK_N,) key positions j, relative to the block
    offs_d = tl.arange(0, HEAD_DIM)                       # (D,) feature index

    # --- load this program's queries once: a (BLOCK_M, D) tile --------------------------------------------
    # Rows past the end of the sequence (the last block may stick out) are loaded as zeros and never stored.
    q_ptrs = Q + base + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_len, other=0.0)

    # --- the online-softmax state, one entry per query row, in float32 ------------------------------------
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)     # running maximum (in log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                   # running sum of the weights
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)         # running weighted sum of the values

    # --- the key blocks these queries can see: [lo, hi) -----------------------------------------------------
    # Causal: the last query of the block, start_m + BLOCK_M - 1, sees keys up to itself.
    # Window: the first query sees keys from start_m - window + 1; the last one (if not causal) keys up to
    # start_m + BLOCK_M - 1 + window - 1. Everything outside [lo, hi) is skipped, never loaded: this is the
    # O(L·w) saving. lo is rounded down to a block boundary (clamped at 0 first: // of a negative number
    # rounds towards zero in Triton, as in C).
    lo = 0
    hi = seq_len
    if CAUSAL:
        hi = tl.minimum(hi, start_m + BLOCK_M)
    if HAS_WINDOW:
        lo = tl.maximum(start_m - window + 1, 0) // BLOCK_N * BLOCK_N
        if not CAUSAL:
            hi = tl.minimum(hi, start_m + BLOCK_M - 1 + window)

    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n                           # (BLOCK_N,) absolute key positions j

        # --- load a (BLOCK_N, D) tile of keys and of values ------------------------------------------------
        kv_offsets = base + cols[:, None] * HEAD_DIM + offs_d[None, :]
        if MASKED:
            k = tl.load(K + kv_offsets, mask=cols[:, None] < seq_len, other=0.0)
            v = tl.load(V + kv_offsets, mask=cols[:, None] < seq_len, other=0.0)
        else:                                             # every key of the block exists: no bounds check
            k = tl.load(K + kv_offsets)
            v = tl.load(V + kv_offsets)

        # --- scores of the tile: s = q kᵀ · scale · log2(e), (BLOCK_M, BLOCK_N) in float32 ------------------
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale

        # --- the mask: True = may attend (keys past the end, the future, outside the window) ---------------
        if MASKED:
            allowed = cols[None, :] < seq_len             # (1, BLOCK_N) -> broadcast to (BLOCK_M, BLOCK_N)
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None])
            if HAS_WINDOW:
                distance = offs_m[:, None] - cols[None, :]            # i - j
                allowed = allowed & (distance < window) & (-distance < window)
            s = tl.where(allowed, s, float("-inf"))       # exp2(-inf) = 0: a masked key gets weight 0

        # --- online softmax, step 1: the new running maximum -------------------------------------------------
        m_new = tl.maximum(m_i, tl.max(s, axis=1))        # (BLOCK_M,)
        # A row whose keys were all masked so far has m_new = -inf, and -inf - (-inf) is NaN. Subtract 0
        # instead for such rows: their p and alpha then come out as exp2(-inf) = 0, and nothing changes.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)

        # --- step 2: rescale what we had, alpha = exp(m_old - m_new) -------------------------------------
        alpha = tl.math.exp2(m_i - m_sub)                 # (BLOCK_M,), 1 if the maximum did not move

        # --- step 3: the tile's unnormalised weights p = exp(s - m_new) --------------------------------------
        p = tl.math.exp2(s - m_sub[:, None])              # (BLOCK_M, BLOCK_N), each in [0, 1]

        # --- step 4: update the running sum and the output ---------------------------------------------------
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        # p goes back to the inputs' dtype for the matmul (fp16/bf16 tensor cores); acc stays float32.
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)   # acc += p @ v
        m_i = m_new

    # --- normalise once at the end: o = acc / l; a row that saw no key (l = 0) gets zeros ------------------
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]

    o_ptrs = Out + base + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_len)


# --- block sizes ----------------------------------------------------------------------------------------------

def _launch_config(d: int, dtype: torch.dtype, device: torch.device, block_m: int | None = None,
                   block_n: int | None = None) -> tuple[int, int, int, int]:
    """(block_m, block_n, num_warps, num_stages) for the GPU; what FlashAttention-2-style kernels use.

    - BLOCK_M = 128 queries per program: the Q tile is loaded once and reused against every key block, so
      bigger is better until registers run out (acc alone is BLOCK_M·D floats; 128×128 fp32 = 64 KB
      spread over the program's threads).
    - BLOCK_N = 64 keys per step: the (BLOCK_M, BLOCK_N) score tile and p also live in registers.
    - num_warps = 8 (256 threads) for D = 128 so each thread holds a manageable share of acc; 4 for D <= 64.
    - num_stages = 3: Triton software-pipelines the loop, loading the next K and V tiles while the current
      ones are multiplied; each stage is a copy of the K and V tiles in shared memory.
    - float32 (for checking) uses (64, 32) tiles: its elements are twice the size and IEEE float32 matmuls
      do not use the tensor cores. It also gets 8 warps from D = 64 on: its matmuls run on the ordinary FMA
      units, whose register layout needs more registers per element, and on 4 warps ptxas spilled registers
      to memory (sm_80, Triton 3.9: about 0.7 KB per thread at D = 64, 18 KB at D = 128; 8 warps: none at
      D = 64, 0.2 KB at D = 128). 8 warps rather than BLOCK_M = 32 because halving the tile spilled more.
    Tiles (and stages) shrink until the shared memory of ``_shared_memory_needed`` fits the GPU: Hopper (H100)
    and A100 have 164 KB or more, consumer Ampere/Ada (RTX 30xx/40xx, L4) about 100 KB, Turing (T4) 64 KB.
    Block sizes you give are checked (powers of two, 16 to 256) and kept: only the stages and the sizes you
    left as None shrink; if they still do not fit, a ValueError says so.
    """
    user_m = block_m is not None
    user_n = block_n is not None
    block_m = _check_block("block_m", block_m) if user_m else (128 if dtype != torch.float32 else 64)
    block_n = _check_block("block_n", block_n) if user_n else (64 if dtype != torch.float32 else 32)
    num_warps = 8 if d >= 128 or (dtype == torch.float32 and d >= 64) else 4
    num_stages = 3
    budget = _shared_memory(device)
    size = torch.finfo(dtype).bits // 8

    def needed():
        return _shared_memory_needed(block_m, block_n, d, size, num_stages)

    while needed() > budget and num_stages > 2:
        num_stages -= 1
    while needed() > budget and not user_n and block_n > 16:
        block_n //= 2
    while needed() > budget and not user_m and block_m > 16:
        block_m //= 2
    if needed() > budget:
        raise ValueError(f"block_m={block_m}, block_n={block_n} need about {needed() // 1024} KB of shared "
                         f"memory for D = {d} in {str(dtype).removeprefix('torch.')}, and this GPU allows "
                         f"{budget // 1024} KB per program: use smaller blocks, or leave block_m and block_n "
                         f"as None to let the kernel pick them")
    return block_m, block_n, num_warps, num_stages


def _shared_memory_needed(block_m: int, block_n: int, d: int, size: int, num_stages: int) -> int:
    """Bytes of shared memory the compiled kernel is expected to use, a slight over-estimate.

    Triton's pipeliner keeps num_stages - 1 copies of the K and V tiles (BLOCK_N·D each) in flight in shared
    memory; the copy being multiplied is in registers. The Q tile (BLOCK_M·D) usually stays in registers but
    goes through shared memory for float32 (FMA matmuls) and on Hopper for large BLOCK_M (wgmma reads it
    there), so it is counted; p (BLOCK_M·BLOCK_N) changes register layout through shared memory before the
    second matmul. Plus 8 KB of room for the compiler's scratch. Checked against what Triton 3.9 allocates
    for sm_80 and sm_90 (compiled ahead of time): from that figure to about 2x above it, never below.
    """
    elements = block_m * d + (num_stages - 1) * 2 * block_n * d + block_m * block_n
    return elements * size + 8 * 1024


def _shared_memory(device: torch.device) -> int:
    """Bytes of shared memory one program may use on ``device`` (Triton's driver knows; else a guess)."""
    if device.type != "cuda":
        return 1 << 30  # the interpreter: no limit
    try:
        index = torch.cuda.current_device() if device.index is None else device.index
        props = triton.runtime.driver.active.utils.get_device_properties(index)
        return int(props["max_shared_mem"])
    except Exception:  # an unusual driver: assume a consumer GPU (about 100 KB)
        return 99 * 1024


# --- the Python side: checks, layout, launch ----------------------------------------------------------------

def _check_inputs(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.tensor(name, x, ndim=4)
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"q, k and v must all have shape (B, H, L, D) (self-attention: Lq = Lk = L, Dv = D), "
                         f"got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if q.dtype not in DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
        raise TypeError(f"the Triton kernel supports the dtypes {names}, got {q.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device} and {v.device}")
    d = q.size(-1)
    if d not in HEAD_DIMS:
        raise ValueError(f"the Triton kernel needs a head size D in {HEAD_DIMS} (a power of two, so a row fits "
                         f"one tile), got D = {d}; pad the features with zeros up to the next one")


def _check_block(name: str, value) -> int:
    value = _checks.number(name, value, integer=True, minimum=16, strict=False)
    if value > 256 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two between 16 and 256 (tl.dot works on tiles of at "
                         f"least 16), got {value}")
    return value


def _check_device(q: torch.Tensor) -> None:
    if _interpreting():
        if q.dtype == torch.bfloat16:
            raise TypeError("Triton 3.9's interpreter multiplies bfloat16 tiles wrongly (tl.dot): under "
                            "TRITON_INTERPRET=1 use float32 or float16; bfloat16 works on a GPU")
        return  # the interpreter runs on the CPU; CUDA tensors are copied to it and back
    if q.device.type == "cpu":
        raise RuntimeError("Triton compiles kernels for GPUs; CPU tensors run only under Triton's interpreter. "
                           "Set the environment variable TRITON_INTERPRET=1 before Triton is first imported "
                           "(in a notebook: os.environ['TRITON_INTERPRET'] = '1' in the first cell) to run the "
                           "kernel step by step in Python on the CPU: correct, but about 1000x slower than "
                           "F.scaled_dot_product_attention. Or move the tensors to a CUDA GPU.")
    if q.device.type != "cuda":
        raise RuntimeError(f"the Triton kernel runs on CUDA GPUs (or on the CPU under TRITON_INTERPRET=1), "
                           f"got tensors on {q.device}")


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                            window: int | None = None, scale: float | None = None,
                            block_m: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """FlashAttention's forward pass in Triton (Dao et al. 2022, algorithm 1; Dao 2023, algorithm 1), with
    the online softmax of Milakov & Gimelshein 2018 and an optional sliding window.

    q, k, v: (B, H, L, D), the same shape (Lq = Lk = L, Dv = D), D in {16, 32, 64, 128}, dtype float16,
    bfloat16 or float32, on a CUDA GPU (or on the CPU with TRITON_INTERPRET=1). causal: query i sees only keys
    j <= i. window: None for no window, else w >= 1: query i sees key j only if |i - j| < w (as
    ``masking.window_mask``; w = 1 is "only yourself"); key blocks outside the window are skipped. scale:
    None for 1/√D. block_m, block_n: queries per program and keys per loop step (powers of two, 16 to 256);
    None picks them for the GPU (see ``_launch_config``); sizes you give must fit the GPU's shared memory
    (ValueError if not). Returns the context (B, H, L, D) in the inputs'
    dtype. Forward only: no gradients (use SDPA or ``sliding_window_attention(impl="blocked")`` to train).
    Agrees with ``reference`` up to rounding.
    """
    _import_triton()
    _check_inputs(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}")
    if window is not None:
        window = _checks.number("window", window, integer=True, minimum=1, strict=False)
    d = q.size(-1)
    scale = 1.0 / math.sqrt(d) if scale is None else _checks.positive("scale", scale)
    _check_device(q)

    block_m, block_n, num_warps, num_stages = _launch_config(d, q.dtype, q.device, block_m, block_n)

    batch, heads, seq_len, _ = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # (B, H, L, D)
    if out.numel() == 0:
        return out

    # A window wider than the sequence is no window: compile the plain version (no mask when L fits).
    has_window = window is not None and window < seq_len
    masked = causal or has_window or seq_len % block_n != 0

    # The kernel reads rows of D contiguous numbers: (B, H, L, D) -> contiguous memory = (B·H, L, D).
    q, k, v = (x.contiguous() for x in (q, k, v))
    # One program per (head, query block), flattened into one axis (see the comment above the kernel).
    grid = (batch * heads * triton.cdiv(seq_len, block_m),)
    try:
        _kernel()[grid](
            q, k, v, out, seq_len, window if has_window else seq_len, scale * math.log2(math.e),
            HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, HAS_WINDOW=has_window,
            MASKED=masked, DOT_PRECISION="ieee" if q.dtype == torch.float32 else None,
            num_warps=num_warps, num_stages=num_stages,
        )
    except triton.runtime.errors.OutOfResources as error:  # our estimate was too low for this compiler/GPU
        raise RuntimeError(f"the compiled kernel does not fit this GPU ({error}) with block_m={block_m}, "
                           f"block_n={block_n}, num_stages={num_stages}, D = {d}, {q.dtype}: pass smaller "
                           f"block_m and block_n (e.g. half of these)") from error
    return out


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              window: int | None = None, scale: float | None = None) -> torch.Tensor:
    """What ``flash_attention_forward`` computes, written with the course's readable functions: dense scores,
    a boolean mask, a masked softmax (``attention.attend``, or ``local.sliding_window_attention`` with a
    window). q, k, v: (B, H, L, D) (any leading dimensions, any floating dtype); returns the context
    (B, H, L, D)."""
    if window is not None:
        return sliding_window_attention(q, k, v, window, causal=causal, scale=scale)
    mask = causal_mask(q.size(-2), k.size(-2), device=q.device) if causal else None  # (Lq, Lk)
    context, _ = attend(q, k, v, mask=mask, scale=scale)
    return context


def _demo() -> None:  # pragma: no cover - `python -m attn_course.triton_attention` on a GPU
    """Time the kernel against SDPA on full attention, D = 128 (the bar: at least 0.7x SDPA's speed)."""
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (the interpreter is for correctness, not speed)")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for n in (1024, 4096, 8192):
        q, k, v = (torch.randn(4, 16, n, 128, device="cuda", dtype=torch.float16, generator=gen)
                   for _ in range(3))
        ours = triton.testing.do_bench(lambda: flash_attention_forward(q, k, v))  # noqa: B023
        sdpa = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v))  # noqa: B023
        error = (flash_attention_forward(q, k, v) - F.scaled_dot_product_attention(q, k, v)).abs().max()
        print(f"N={n:5d}: triton {ours:.3f} ms, SDPA {sdpa:.3f} ms, speed {sdpa / ours:.2f}x SDPA, "
              f"max |diff| {error.item():.1e}")


if __name__ == "__main__":  # pragma: no cover
    _import_triton()
    _demo()
