"""Benchmarks that print ratios against baselines measured in the same run (speed targets live here, not in
timed tests: a shared CI machine makes absolute times meaningless, ratios less so).

    python -m attn_course.bench mha [--device cpu|cuda] [--dtype float32|bfloat16] [--sizes 512 1024 ...]
                                    [--causal] [--threads T] [--rounds R] [--json out.json]
    python -m attn_course.bench local [--sizes 8192 16384] [--window 256] [--causal] [--device] [--dtype]

Each benchmark is a function registered in ``BENCHMARKS`` with its own command-line options; the helpers
(``environment``, ``median_time``, ``peak_memory``, ``sdpa_kernels``, ``print_table``) are shared, so a
new benchmark (e.g. ``local``) is one more function. Times are medians of
``torch.utils.benchmark.Timer.blocked_autorange``; each candidate is timed in ``--rounds`` interleaved
rounds and the fastest round kept, so a burst of load from other processes skews one round, not the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode

from .multihead import MultiHeadAttention

MiB = 2**20
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --- shared helpers ----------------------------------------------------------------------------------

def environment(device: torch.device, dtype: torch.dtype) -> dict:
    """What the numbers depend on: device, dtype, torch version, threads, SDPA backends enabled."""
    env = {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability(device))
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["cpus"] = os.cpu_count()
        if hasattr(os, "getloadavg"):  # other processes on the machine make the times noisier
            env["load_average"] = round(os.getloadavg()[0], 2)
    env["sdpa_enabled"] = sdpa_enabled(device)
    return env


def sdpa_enabled(device: torch.device) -> list[str]:
    """The SDPA backends switched on. The switches live in ``torch.backends.cuda`` but the CPU dispatcher
    reads two of them too: ``enable_flash_sdp(False)`` turns off the CPU's flash kernel as well."""
    cuda = torch.backends.cuda
    switches = {"flash": "flash_sdp_enabled", "memory-efficient": "mem_efficient_sdp_enabled",
                "cudnn": "cudnn_sdp_enabled", "math": "math_sdp_enabled"}  # cudnn: torch >= 2.3
    if device.type != "cuda":
        switches = {"flash (CPU)": "flash_sdp_enabled", "math": "math_sdp_enabled"}
    return [name for name, switch in switches.items() if getattr(cuda, switch, lambda: False)()]


class _SdpaCalls(TorchFunctionMode):
    """Counts the calls of ``F.scaled_dot_product_attention`` inside the ``with`` block. Needed because its
    math fallback, ``_scaled_dot_product_attention_math``, is CompositeImplicit: the dispatcher sees only
    what it decomposes into (matrix products, softmax), never its name."""

    def __enter__(self):
        self.calls = 0
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) == "scaled_dot_product_attention":
            self.calls += 1
        return func(*args, **(kwargs or {}))


class OpNames(TorchDispatchMode):
    """Records the name of every aten operator that runs inside the ``with`` block."""

    def __enter__(self):
        self.names = []
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


_KERNELS = {"_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
            "_scaled_dot_product_flash_attention": "flash",
            "_scaled_dot_product_efficient_attention": "memory-efficient",
            "_scaled_dot_product_cudnn_attention": "cudnn",
            "_scaled_dot_product_fused_attention_overrideable": "fused (device-specific)"}


def sdpa_kernels(fn: Callable[[], object]) -> str:
    """Which SDPA kernel(s) ``fn`` ran: the fused operators it dispatched to, or "math" when it called
    ``F.scaled_dot_product_attention`` but no fused kernel ran (the fallback: plain matrix products and a
    softmax), or "none" when it did not call SDPA at all."""
    with torch.no_grad(), _SdpaCalls() as sdpa, OpNames() as ops:
        fn()
    names = {name.removeprefix("aten::").split(".")[0] for name in ops.names}
    used = sorted(label for op, label in _KERNELS.items() if op in names)
    if used:
        return ", ".join(used)
    if "_native_multi_head_attention" in names:  # nn.MultiheadAttention's fused path hides its kernel
        return "fused MHA (_native_multi_head_attention)"
    return "math" if sdpa.calls else "none"


def median_time(fns: dict[str, Callable[[], object]], *, threads: int, rounds: int,
                min_run_time: float) -> dict[str, float]:
    """Median seconds per call of each function, the best of ``rounds`` interleaved rounds."""
    for fn in fns.values():  # warm up: first calls pay for one-time set-up (thread pools, kernel choice)
        fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads)
            best[name] = min(best[name], timer.blocked_autorange(min_run_time=min_run_time).median)
    return best


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: the profiler's C++ side logs two lines each time it starts and stops."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated while ``fn()`` runs, above what was allocated before (inputs and weights are
    not counted). CUDA: the caching allocator's peak. CPU: every allocation and free the profiler sees
    (kernels' scratch buffers included, not only the tensors Python gets back), replayed in time order;
    None, with a message, if this torch's profiler lacks the private event tree that this relies on."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        sizes = _cpu_allocations(fn)
    except (ImportError, AttributeError, RuntimeError) as error:
        _print_once(f"(CPU peak memory unavailable with torch {torch.__version__}: the profiler's private "
                    f"event tree changed ({type(error).__name__}: {error}); memory columns show nan)")
        return None
    live = peak = 0
    for _, size in sorted(sizes):
        live += size
        peak = max(peak, live)
    return peak


@functools.cache
def _print_once(message: str) -> None:
    print(message)


def _cpu_allocations(fn: Callable[[], object]) -> list[tuple[int, int]]:
    """(time in ns, bytes) of every allocation (> 0) and free (< 0) while ``fn()`` runs on the CPU. Uses
    the profiler's event tree: private (it may change between torch versions), but the only timeline."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    sizes, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation:  # alloc_size < 0 for a free
            sizes.append((event.start_time_ns, event.extra_fields.alloc_size))
    return sizes


def print_table(header: list[str], rows: list[list], formats: list[str]) -> None:
    """Right-aligned columns as wide as the wider of the header and the formatted cells."""
    cells = [[format(value, fmt) for value, fmt in zip(row, formats)] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


# --- mha: multi-head attention against nn.MultiheadAttention and the bare SDPA composition ----------------

def _bare_sdpa(x: torch.Tensor, mha: nn.MultiheadAttention, causal: bool) -> torch.Tensor:
    """The least a fused self-attention can do: one in-projection, SDPA, one out-projection, no checks."""
    b, n, e = x.shape
    h = mha.num_heads
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)  # (B, N, 3E)
    q, k, v = qkv.view(b, n, 3, h, e // h).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, D)
    context = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, N, D)
    return F.linear(context.transpose(1, 2).reshape(b, n, e), mha.out_proj.weight, mha.out_proj.bias)


def mha_candidates(x: torch.Tensor, torch_mha: nn.MultiheadAttention, causal: bool) -> dict[str, Callable]:
    """The functions timed by ``mha``, all computing the same self-attention output of x (B, N, E)."""
    e, h = torch_mha.embed_dim, torch_mha.num_heads
    ours = {impl: MultiHeadAttention(e, h, impl=impl).to(x.device, x.dtype).eval()
            for impl in ("sdpa", "reference")}
    for module in ours.values():
        module.load_state_dict(torch_mha.state_dict())
    # nn.MultiheadAttention wants the causal mask as well as is_causal (a hint). A boolean mask would be
    # turned into a float one on every call; ours and bare pass is_causal alone, so build the float mask
    # (0 where allowed, -inf above the diagonal) once, outside the timing.
    n = x.size(1)
    mask = None
    if causal:
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)  # True above the diagonal
        mask = torch.zeros(n, n, dtype=x.dtype, device=x.device).masked_fill(future, -math.inf)
    return {
        "ours": lambda: ours["sdpa"](x, is_causal=causal)[0],
        "bare": lambda: _bare_sdpa(x, torch_mha, causal),
        "naive": lambda: ours["reference"](x, is_causal=causal)[0],
        "MHA(w)": lambda: torch_mha(x, x, x, attn_mask=mask, is_causal=causal)[0],
        "MHA(no w)": lambda: torch_mha(x, x, x, attn_mask=mask, is_causal=causal, need_weights=False)[0],
    }


MHA_LEGEND = """\
  ours       MultiHeadAttention(impl="sdpa")(x)                   (attn_course, no weights returned)
  bare       F.linear(x, in_proj) -> F.scaled_dot_product_attention -> F.linear(out_proj), no checks
  naive      MultiHeadAttention(impl="reference")(x)              (materialises the (B, H, N, N) weights)
  MHA(w)     nn.MultiheadAttention(x, x, x)                       (its default call: need_weights=True)
  MHA(no w)  nn.MultiheadAttention(x, x, x, need_weights=False)   (torch's own fused path)
  causal: ours, bare, naive get is_causal=True; MHA(w), MHA(no w) get is_causal=True and the float
  N x N causal mask (0 / -inf), built once outside the timing"""


def mha(args: argparse.Namespace) -> dict:
    """Forward time and peak memory of multi-head self-attention, B=1, H heads of size D, N tokens."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    e = args.heads * args.head_dim
    torch_mha = nn.MultiheadAttention(e, args.heads, batch_first=True).to(device, dtype).eval()
    sizes = args.sizes or ([1024, 2048, 4096, 8192] if device.type == "cuda" else [512, 1024, 2048, 4096])
    result = {"benchmark": "mha", "env": environment(device, dtype), "heads": args.heads,
              "head_dim": args.head_dim, "causal": args.causal, "rows": []}
    _print_env(result["env"])
    print(f"mha: forward only, eval mode, torch.no_grad(); B=1, H={args.heads}, D={args.head_dim} (E={e}), "
          f"{'causal ' if args.causal else ''}self-attention; median ms, best of {args.rounds} rounds")
    print(MHA_LEGEND)
    for n in sizes:
        x = torch.randn(1, n, e, device=device, dtype=dtype)
        fns = mha_candidates(x, torch_mha, args.causal)
        with torch.no_grad():
            times = median_time(fns, threads=args.threads, rounds=args.rounds, min_run_time=args.min_run_time)
            memory = {name: peak_memory(fns[name], device) for name in ("ours", "bare", "naive")}
        kernels = {name: sdpa_kernels(fns[name]) for name in ("ours", "bare", "MHA(no w)")}
        result["rows"].append({"N": n, "ms": {k: 1e3 * t for k, t in times.items()},
                               "peak_MiB": {k: None if m is None else m / MiB for k, m in memory.items()},
                               "sdpa_kernel": kernels})
    _print_mha(result, e, device)
    return result


def _print_env(env: dict) -> None:
    print("  ".join(f"{key}={', '.join(value) if isinstance(value, list) else value}"
                    for key, value in env.items()))


def _print_mha(result: dict, e: int, device: torch.device) -> None:
    rows = result["rows"]
    others = ("bare", "naive", "MHA(w)", "MHA(no w)")
    print("\ntime (ms) and ratios other/ours (> 1 means ours is faster; bare/ours just below 1 is "
          "ours' overhead)")
    print_table(["N", "ours", *others, *(f"{name}/ours" for name in others)],
                [[r["N"], r["ms"]["ours"], *(r["ms"][k] for k in others),
                  *(r["ms"][k] / r["ms"]["ours"] for k in others)] for r in rows],
                ["d"] + [".2f"] * 5 + [".2f"] * 4)
    print("\npeak extra memory (MiB; inputs and weights not counted) and its growth from the previous N "
          "(x2 per doubling of N is O(N·D), x4 is O(N²))")
    table = []
    for i, r in enumerate(rows):
        mem = {k: _number(m) for k, m in r["peak_MiB"].items()}
        before = rows[i - 1]["peak_MiB"] if i else {}
        growth = [mem[k] / before[k] if before.get(k) else math.nan for k in ("ours", "naive")]
        per_token = mem["ours"] * MiB / (r["N"] * e * torch.finfo(DTYPES[result["env"]["dtype"]]).bits / 8)
        table.append([r["N"], mem["ours"], mem["bare"], mem["naive"], *growth, per_token])
    print_table(["N", "ours", "bare", "naive", "ours growth", "naive growth", "ours / (N·E elements)"],
                table, ["d", ".1f", ".1f", ".1f", ".2f", ".2f", ".1f"])
    kernels = {name: sorted({r["sdpa_kernel"][name] for r in rows}) for name in rows[0]["sdpa_kernel"]}
    print("\nSDPA kernel that ran: " + "; ".join(f"{name}: {' / '.join(k)}" for name, k in kernels.items()))
    _print_mha_bars(rows, device)


def _number(value: float | None) -> float:
    """A measurement, nan where it could not be taken (None in the JSON)."""
    return math.nan if value is None else value


def _print_mha_bars(rows: list[dict], device: torch.device) -> None:
    """The issue's targets, each marked met or missed: at every size, or only at the largest one."""
    def mark(ok):
        return "met" if ok else "MISSED"

    def faster(name):  # other/ours: > 1 means ours is faster
        return lambda r: r["ms"][name] / r["ms"]["ours"]

    # (label, ratio, bar, at_least, only_largest_N)
    if device.type == "cuda":
        checks = [("ours within 1.05x of bare: bare/ours >= 0.95", faster("bare"), 1 / 1.05, True, False),
                  ("ours >= 4x faster than naive at the largest N (the bar is set at N=8192): naive/ours",
                   faster("naive"), 4.0, True, True)]
    else:
        checks = [("ours >= 1.8x faster than MHA(w), the default call: MHA(w)/ours", faster("MHA(w)"), 1.8,
                   True, False),
                  ("ours within 1.1x of bare: bare/ours >= 0.91", faster("bare"), 1 / 1.1, True, False)]
    print("\ntargets (issue 4):")
    for label, ratio, bar, at_least, only_largest in checks:
        cells = []
        for r in rows:
            value = ratio(r)
            judged = not only_largest or r is rows[-1]
            verdict = f" {mark(value >= bar if at_least else value <= bar)}" if judged else ""
            cells.append(f"N={r['N']}: {value:.2f}x{verdict}")
        print(f"  {label}: " + ", ".join(cells))
    memory = [_number(r["peak_MiB"]["ours"]) for r in rows]
    growth = [memory[i] / memory[i - 1] * rows[i - 1]["N"] / rows[i]["N"]
              for i in range(1, len(rows)) if memory[i - 1]]
    if growth and not any(math.isnan(g) for g in growth):
        print(f"  ours' peak memory O(N·D), not O(N²): growth per doubling of N / 2 = "
              f"{', '.join(f'{g:.2f}' for g in growth)} (1 is linear, 2 quadratic) "
              f"{mark(max(growth) < 1.5)}")


def _mha_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", type=int, default=8, help="H (default 8)")
    parser.add_argument("--head-dim", type=int, default=64, help="D, features per head (default 64)")
    parser.add_argument("--causal", action="store_true", help="causal self-attention")


# --- local: the sliding window, blocked SDPA against dense band-masked SDPA, FlexAttention and banded ------

LOCAL_LEGEND = """\
  blocked  sliding_window_attention(impl="blocked")   (chunks of c = min(64, w) queries against whole key
           chunks around them, overlapping views of the keys (padded copies only at the ends), fused SDPA
           kernel; the middle chunks share one 4-D band mask; CPU backward in groups)
  dense    F.scaled_dot_product_attention(q, k, v, attn_mask=band)   (the (1, 1, N, N) boolean band mask,
           built once outside the timing; 4-D, else SDPA silently takes its slow math path)
  flex     sliding_window_attention(impl="flex")      (compiled FlexAttention; forward only on the CPU;
           the compile is timed apart, on the first call, and printed)
  banded   sliding_window_attention(impl="banded")    (the readable O(N·w) version: matmul, softmax, matmul)"""


def local_candidates(q, k, v, window: int, causal: bool) -> dict[str, Callable]:
    """The forward functions timed by ``local``, all computing the same sliding-window context."""
    from .local import sliding_window_attention
    from .masking import window_mask

    band = window_mask(q.size(-2), window=window, causal=causal, device=q.device)[None, None]  # (1, 1, N, N)
    return {
        "blocked": lambda: sliding_window_attention(q, k, v, window, causal=causal, impl="blocked"),
        "dense": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=band),
        "flex": lambda: sliding_window_attention(q, k, v, window, causal=causal, impl="flex"),
        "banded": lambda: sliding_window_attention(q, k, v, window, causal=causal, impl="banded"),
    }


def _with_backward(fn: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
    """forward + backward of ``fn``: the gradients of (output · a fixed random probe) w.r.t. the inputs."""
    probe = {}

    def step():
        out = fn()
        if "grad" not in probe:
            probe["grad"] = torch.randn_like(out)
        return torch.autograd.grad(out, inputs, probe["grad"])
    return step


def local(args: argparse.Namespace) -> dict:
    """Sliding-window attention: forward and forward+backward time and peak memory, B=1, H heads, N tokens."""
    import time

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    sizes = args.sizes or [8192, 16384]
    backward_flex = device.type != "cpu"  # FlexAttention has no CPU backward
    result = {"benchmark": "local", "env": environment(device, dtype), "heads": args.heads,
              "head_dim": args.head_dim, "window": args.window, "causal": args.causal, "rows": []}
    _print_env(result["env"])
    print(f"local: sliding window w={args.window}, {'causal' if args.causal else 'bidirectional'}; B=1, "
          f"H={args.heads}, D={args.head_dim}; median ms, best of {args.rounds} rounds, every size and candidate "
          f"in every round (dense only for N <= {args.dense_max})")
    print(LOCAL_LEGEND)
    # Every (N, candidate) is timed in the same interleaved rounds, so the ratios between sizes (the growth
    # bar) and between candidates compare measurements taken under the same load, not minutes apart.
    forward, both, compile_s = {}, {}, {}
    for n in sizes:
        q, k, v = (torch.randn(1, args.heads, n, args.head_dim, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        candidates = local_candidates(q, k, v, args.window, args.causal)
        start = time.perf_counter()
        with torch.no_grad():
            candidates["flex"]()  # the first call of a new shape compiles
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compile_s[n] = time.perf_counter() - start
        for name, fn in candidates.items():
            if name != "dense" or n <= args.dense_max:
                forward[n, name] = fn
                if name != "flex" or backward_flex:
                    both[n, name] = _with_backward(fn, (q, k, v))
    timing = {"threads": args.threads, "rounds": args.rounds, "min_run_time": args.min_run_time}
    with torch.no_grad():
        fwd = median_time(forward, **timing)
        fwd_memory = {key: peak_memory(fn, device) for key, fn in forward.items()}
    fb = median_time(both, **timing)
    fb_memory = {key: peak_memory(fn, device) for key, fn in both.items()}
    for n in sizes:
        kernels = {name: sdpa_kernels(forward[n, name]) for name in ("blocked", "dense") if (n, name) in forward}

        def of(values, scale=1.0, n=n):  # {candidate: value} at this N
            return {m: None if x is None else scale * x for (size, m), x in values.items() if size == n}
        result["rows"].append({
            "N": n, "flex_compile_s": compile_s[n], "sdpa_kernel": kernels,
            "forward_ms": of(fwd, 1e3), "forward_backward_ms": of(fb, 1e3),
            "forward_peak_MiB": of(fwd_memory, 1 / MiB), "forward_backward_peak_MiB": of(fb_memory, 1 / MiB)})
    _print_local(result)
    return result


def _print_local(result: dict) -> None:
    rows = result["rows"]
    names = ("blocked", "dense", "flex", "banded")

    def cell(row, key, name):
        return _number(row[key].get(name))

    for key, title in (("forward_ms", "forward time (ms), torch.no_grad()"),
                       ("forward_backward_ms", "forward+backward time (ms)"),
                       ("forward_peak_MiB", "forward peak extra memory (MiB)"),
                       ("forward_backward_peak_MiB", "forward+backward peak extra memory (MiB)")):
        print(f"\n{title}; other/blocked: > 1 means blocked is faster (smaller); nan: not measured")
        others = [m for m in names[1:] if any(m in r[key] for r in rows)]
        print_table(["N", *names, *(f"{m}/blocked" for m in others)],
                    [[r["N"], *(cell(r, key, m) for m in names),
                      *(cell(r, key, m) / cell(r, key, "blocked") for m in others)] for r in rows],
                    ["d"] + [".1f"] * 4 + [".2f"] * len(others))
    print("\nflex compile (first call at each N, not in the times): "
          + ", ".join(f"N={r['N']}: {r['flex_compile_s']:.1f} s" for r in rows))
    kernels = {m: sorted({r["sdpa_kernel"][m] for r in rows if m in r["sdpa_kernel"]}) for m in ("blocked", "dense")}
    print("SDPA kernel that ran: " + "; ".join(f"{m}: {' / '.join(k)}" for m, k in kernels.items() if k))
    _print_local_bars(rows)


def _print_local_bars(rows: list[dict]) -> None:
    """The issue's CPU targets for impl="blocked", each marked met or missed (or not measured)."""
    def verdict(value, bar, at_least):
        if math.isnan(value):
            return "not measured"
        return f"{value:.2f} {'met' if (value >= bar if at_least else value <= bar) else 'MISSED'}"

    by_n = {r["N"]: r for r in rows}
    base = by_n.get(8192)
    print("\ntargets (issue 5, CPU):")
    if base is None:
        print("  (the bars are set at N=8192: run with --sizes 8192 16384)")
    else:
        fb, mem = base["forward_backward_ms"], base["forward_backward_peak_MiB"]
        speed = _number(fb.get("dense")) / fb["blocked"]
        memory = _number(mem.get("blocked")) / _number(mem.get("dense"))
        print(f"  forward+backward >= 12x faster than dense masked SDPA at N=8192: dense/blocked = "
              f"{verdict(speed, 12, True)}")
        print(f"  forward+backward peak memory <= 0.4x dense at N=8192: blocked/dense = "
              f"{verdict(memory, 0.4, False)}")
        if 16384 in by_n:
            for key, label in (("forward_backward_ms", "forward+backward"), ("forward_ms", "forward")):
                growth = by_n[16384][key]["blocked"] / base[key]["blocked"]
                print(f"  {label} time(16384) / time(8192) <= 2.3: {verdict(growth, 2.3, False)}")
    for r in rows:
        ratio = _number(r["forward_ms"].get("flex")) / r["forward_ms"]["blocked"]
        print(f"  forward within 1.1x of compiled FlexAttention at N={r['N']}: flex/blocked >= 0.91: "
              f"{verdict(ratio, 1 / 1.1, True)}")


def _local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", type=int, default=8, help="H (default 8)")
    parser.add_argument("--head-dim", type=int, default=64, help="D, features per head (default 64)")
    parser.add_argument("--window", type=int, default=256, help="w (default 256)")
    parser.add_argument("--causal", action="store_true", help="causal sliding window")
    parser.add_argument("--dense-max", type=int, default=8192,
                        help="time dense masked SDPA only up to this N (default 8192: O(N²), slow)")


# --- command line -------------------------------------------------------------------------------------

# name -> (run(args) -> results, add_arguments(subparser)); a new benchmark is one more entry
BENCHMARKS: dict[str, tuple[Callable[[argparse.Namespace], dict],
                            Callable[[argparse.ArgumentParser], None]]] = {
    "mha": (mha, _mha_arguments),
    "local": (local, _local_arguments),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m attn_course.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for name, (run, add_arguments) in BENCHMARKS.items():
        sub = subparsers.add_parser(name, help=run.__doc__.split("\n")[0])
        sub.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        sub.add_argument("--dtype", choices=list(DTYPES), default=None,
                         help="default float32 on the CPU, bfloat16 on CUDA")
        sub.add_argument("--sizes", type=int, nargs="+", help="sequence lengths N")
        sub.add_argument("--threads", type=int, default=torch.get_num_threads(),
                         help=f"CPU threads (default {torch.get_num_threads()})")
        sub.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds, best kept (5)")
        sub.add_argument("--min-run-time", type=float, default=0.05, help="seconds per measurement (0.05)")
        sub.add_argument("--json", metavar="PATH", help="also write the results as JSON")
        add_arguments(sub)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    torch.set_num_threads(args.threads)
    run, _ = BENCHMARKS[args.benchmark]
    result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
