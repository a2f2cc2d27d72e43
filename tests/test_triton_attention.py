"""The teaching Triton kernel (attn_course.triton_attention): correct on the CPU under Triton's interpreter,
and on a GPU against SDPA.

Triton reads TRITON_INTERPRET=1 once, when it is first imported (its own tl.max, tl.sum, ... are compiled
or interpreted from then on), and other test modules may import it first. So the interpreter tests run in a
subprocess started with TRITON_INTERPRET=1 (test_kernel_under_the_interpreter, as tests/test_widgets.py
re-runs the widget tests); run them directly with
``TRITON_INTERPRET=1 .venv/bin/python -m pytest tests/test_triton_attention.py -p no:nbval -o addopts=``.
The GPU tests run in the ordinary process, on a CUDA device.

Triton is optional for the course but ``make test`` installs it (tests/requirements-triton.txt): without it
these tests skip, except under CI, where a missing Triton fails (as test_widgets.py does for ipywidgets 7).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from attn_course import triton_attention
from attn_course.masking import window_mask
from attn_course.triton_attention import flash_attention_forward, reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # this process is the interpreter run


@pytest.fixture
def triton():
    """The triton module; skip without it (fail under CI, where make test must have installed it)."""
    if os.environ.get("CI") and importlib.util.find_spec("triton") is None:
        pytest.fail("Triton is missing: make test installs it from tests/requirements-triton.txt")
    return pytest.importorskip("triton", reason="Triton is not installed (pip install -r tests/requirements-triton.txt)")


@pytest.fixture
def interpreter(triton):
    """Only in the TRITON_INTERPRET=1 run: the kernel runs on the CPU, in Triton's interpreter."""
    if not INTERPRETED:
        pytest.skip("runs in a subprocess with TRITON_INTERPRET=1 (test_kernel_under_the_interpreter)")
    return triton


on_gpu = pytest.mark.skipif(not CUDA or INTERPRETED, reason="needs a CUDA device (and the compiled kernel)")


def qkv(seed, *shape, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen).to(device, dtype) for _ in range(3)]


# --- without Triton --------------------------------------------------------------------------------------------

def test_module_imports_and_explains_without_triton(monkeypatch):
    """The package must work without Triton: import is lazy, and the call says how to install it."""
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    monkeypatch.setitem(sys.modules, "triton.language", None)
    monkeypatch.setattr(triton_attention, "triton", None)
    monkeypatch.setattr(triton_attention, "tl", None)
    assert triton_attention.available() is False
    q, k, v = qkv(0, 1, 1, 4, 16)
    with pytest.raises(ImportError, match=r"pip install triton==3\.9\.0"):
        flash_attention_forward(q, k, v)
    # the reference needs no Triton
    assert reference(q, k, v).shape == (1, 1, 4, 16)


# --- the launch configuration (plain Python: no Triton, no GPU) -----------------------------------------------

KB = 1024
H100, A100, RTX, T4 = 227 * KB, 163 * KB, 99 * KB, 64 * KB  # shared memory one program may use
CUDA_DEVICE = torch.device("cuda")


def config(monkeypatch, budget, d, dtype, block_m=None, block_n=None):
    monkeypatch.setattr(triton_attention, "_shared_memory", lambda device: budget)
    return triton_attention._launch_config(d, dtype, CUDA_DEVICE, block_m, block_n)


@pytest.mark.parametrize(("budget", "expected"), [
    (H100, (128, 64, 8, 3)), (A100, (128, 64, 8, 3)),
    (RTX, (128, 64, 8, 2)),  # the tiles stay: only a stage goes (the old estimate halved block_n here)
    (T4, (128, 32, 8, 2)),
])
def test_launch_config_float16_d128(monkeypatch, budget, expected):
    assert config(monkeypatch, budget, 128, torch.float16) == expected
    assert config(monkeypatch, budget, 128, torch.bfloat16) == expected


@pytest.mark.parametrize(("budget", "d", "expected"), [
    (A100, 128, (64, 32, 8, 3)), (RTX, 128, (64, 32, 8, 2)), (T4, 128, (64, 16, 8, 2)),
    (A100, 64, (64, 32, 8, 3)),  # 8 warps from D = 64 on: 4 spilled registers
    (A100, 32, (64, 32, 4, 3)),
])
def test_launch_config_float32(monkeypatch, budget, d, expected):
    assert config(monkeypatch, budget, d, torch.float32) == expected


def test_launch_config_keeps_your_block_sizes_if_they_fit(monkeypatch):
    assert config(monkeypatch, RTX, 128, torch.float16, 128, 16) == (128, 16, 8, 3)
    assert config(monkeypatch, RTX, 128, torch.float16, 64, 64) == (64, 64, 8, 3)
    # only the size left as None shrinks
    assert config(monkeypatch, T4, 128, torch.float16, block_m=128) == (128, 32, 8, 2)
    assert config(monkeypatch, T4, 128, torch.float16, block_n=64) == (64, 64, 8, 2)


def test_launch_config_refuses_block_sizes_that_cannot_fit(monkeypatch):
    with pytest.raises(ValueError, match=r"block_m=256, block_n=128 need about \d+ KB .* allows 99 KB.*None"):
        config(monkeypatch, RTX, 128, torch.float16, 256, 128)
    with pytest.raises(ValueError, match=r"block_n=64 need about"):
        config(monkeypatch, T4, 128, torch.float32, block_n=64)  # block_m shrinks to 16, still too big


@pytest.mark.parametrize(("block_m", "block_n", "message"), [
    (24, None, "block_m must be a power of two between 16 and 256"),
    (None, 8, "block_n must be >= 16"),
    (512, None, "block_m must be a power of two"),
    (None, 32.0, "block_n must be a whole number"),
])
def test_launch_config_checks_your_block_sizes(monkeypatch, block_m, block_n, message):
    with pytest.raises((ValueError, TypeError), match=message):
        config(monkeypatch, H100, 64, torch.float16, block_m, block_n)


# Shared memory Triton 3.9 allocated for the kernel, compiled ahead of time for sm_80 / sm_90 with its bundled
# ptxas: (bytes per element, BLOCK_M, BLOCK_N, D, num_stages, bytes). The estimate must never be below
# (it is 1.0x to 3.6x above: generous for unusual tiles, close for the defaults).
MEASURED_SHARED = [
    (2, 128, 64, 128, 3, 65536), (2, 128, 64, 128, 2, 49152), (2, 128, 64, 64, 3, 24576),
    (2, 256, 16, 128, 3, 73728), (2, 64, 128, 128, 3, 81920), (2, 16, 128, 128, 3, 40960),
    (4, 64, 32, 128, 3, 106496), (4, 32, 32, 128, 3, 86016), (4, 64, 32, 64, 3, 57600),
    (4, 32, 32, 64, 3, 45184), (4, 128, 16, 128, 3, 107008), (4, 64, 16, 128, 3, 69888),
    (4, 32, 16, 128, 3, 51328),
]


@pytest.mark.parametrize(("size", "block_m", "block_n", "d", "stages", "measured"), MEASURED_SHARED)
def test_shared_memory_estimate_is_conservative(size, block_m, block_n, d, stages, measured):
    estimate = triton_attention._shared_memory_needed(block_m, block_n, d, size, stages)
    assert estimate >= measured


# --- correctness under the interpreter (CPU, small sizes, float32) --------------------------------------------

MASKS = [(False, None), (True, None), (False, 1), (True, 1), (False, 3), (True, 3), (False, 64), (True, 100)]


@pytest.mark.parametrize("length", [1, 5, 16, 33, 64])
@pytest.mark.parametrize(("causal", "window"), MASKS)
def test_matches_reference_under_the_interpreter(interpreter, length, causal, window):
    """Blocks of 16 so that L = 33 and 64 span several query and key blocks (and the last one sticks out).
    Windows 1 and 3 skip key blocks and leave rows whose first visited block is fully masked (the
    running maximum is still -inf there: the kernel's NaN guard); window >= L is full attention."""
    d = 16 if length % 2 else 32
    q, k, v = qkv(length, 2, 3, length, d)
    out = flash_attention_forward(q, k, v, causal=causal, window=window, block_m=16, block_n=16)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, reference(q, k, v, causal, window), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("block_m", "block_n"), [(None, None), (16, 32), (32, 16), (64, 64)])
@pytest.mark.parametrize(("causal", "window"), [(False, None), (True, 5), (False, 20)])
def test_block_sizes_do_not_change_the_result(interpreter, block_m, block_n, causal, window):
    q, k, v = qkv(1, 1, 2, 50, 16)
    out = flash_attention_forward(q, k, v, causal=causal, window=window, block_m=block_m, block_n=block_n)
    torch.testing.assert_close(out, reference(q, k, v, causal, window), rtol=0, atol=1e-4)


def test_scale_and_non_contiguous_inputs(interpreter):
    q, k, v = (x.transpose(1, 2) for x in qkv(2, 2, 24, 3, 32))  # (B, L, H, D) -> (B, H, L, D), a view
    assert not q.is_contiguous()
    out = flash_attention_forward(q, k, v, causal=True, scale=0.3, block_m=16, block_n=16)
    torch.testing.assert_close(out, reference(q, k, v, True, None, scale=0.3), rtol=0, atol=1e-4)


def test_large_scores_do_not_overflow(interpreter):
    """Scores in the hundreds: exp would overflow float32 without the running maximum."""
    q, k, v = qkv(3, 1, 1, 40, 16)
    out = flash_attention_forward(q * 30, k * 30, v, window=7, block_m=16, block_n=16)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference(q * 30, k * 30, v, False, 7), rtol=0, atol=1e-4)


def test_key_blocks_outside_the_band_are_never_read(interpreter):
    """The O(L·w) saving: a key block no query of a block can see is skipped, not loaded and masked.
    A NaN in a value poisons every row that loads its block (0 · NaN = NaN even with weight 0)."""
    q, k, v = qkv(4, 1, 1, 64, 16)
    v[..., 40, :] = float("nan")  # key 40 lives in key block [32, 48)
    clean = v.nan_to_num(0.0)
    # window 3, blocks of 16: the queries 0..15 read keys 0..17, i.e. key blocks [0, 16) and [16, 32) only
    out = flash_attention_forward(q, k, v, window=3, block_m=16, block_n=16)
    torch.testing.assert_close(out[..., :16, :], reference(q, k, clean, False, 3)[..., :16, :], rtol=0, atol=1e-4)
    assert out[..., 16:48, :].isnan().any()  # the blocks that do read key 40 (its own query is NaN)
    # causal: the queries 0..31 never read keys past 31
    out = flash_attention_forward(q, k, v, causal=True, block_m=16, block_n=16)
    torch.testing.assert_close(out[..., :32, :], reference(q, k, clean, True, None)[..., :32, :], rtol=0, atol=1e-4)


@pytest.mark.parametrize(("causal", "window"), [(False, None), (True, None), (False, 3), (True, 5)])
def test_float16_under_the_interpreter(interpreter, causal, window):
    q, k, v = qkv(5, 1, 2, 33, 32, dtype=torch.float16)
    out = flash_attention_forward(q, k, v, causal=causal, window=window, block_m=16, block_n=16)
    assert out.dtype == torch.float16
    expected = reference(q.double(), k.double(), v.double(), causal, window)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=5e-3)


def test_empty_inputs(interpreter):
    q, k, v = qkv(6, 0, 2, 8, 16)
    assert flash_attention_forward(q, k, v).shape == (0, 2, 8, 16)
    q, k, v = qkv(6, 1, 2, 0, 16)
    assert flash_attention_forward(q, k, v, window=2).shape == (1, 2, 0, 16)


# --- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "error", "message"), [
    (lambda q, k, v: (q[..., :8], k[..., :8], v[..., :8]), ValueError, r"head size D in \(16, 32, 64, 128\).*D = 8"),
    (lambda q, k, v: tuple(torch.cat([x, x[..., :8]], -1) for x in (q, k, v)), ValueError, "D = 24"),
    (lambda q, k, v: (q, k[:, :, :3], v[:, :, :3]), ValueError, r"shape \(B, H, L, D\)"),
    (lambda q, k, v: (q, k, v[..., :8]), ValueError, r"Lq = Lk = L, Dv = D"),
    (lambda q, k, v: (q[0], k[0], v[0]), ValueError, "must have 4 dimensions"),
    (lambda q, k, v: (q.double(), k.double(), v.double()), TypeError, "float16, bfloat16, float32"),
    (lambda q, k, v: (q, k.half(), v), TypeError, "share one dtype"),
    (lambda q, k, v: (q.long(), k, v), TypeError, "floating-point"),
])
def test_bad_tensors_are_explained(interpreter, change, error, message):
    q, k, v = change(*qkv(7, 1, 2, 5, 16))
    with pytest.raises(error, match=message):
        flash_attention_forward(q, k, v)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"window": 0}, ValueError, "window must be >= 1"),
    ({"window": -2}, ValueError, "window must be >= 1"),
    ({"window": 2.5}, TypeError, "window must be a whole number"),
    ({"causal": 1}, TypeError, "causal must be True or False"),
    ({"scale": 0.0}, ValueError, "scale must be > 0"),
    ({"block_m": 24}, ValueError, "block_m must be a power of two"),
    ({"block_n": 8}, ValueError, "block_n must be >= 16"),
    ({"block_n": 512}, ValueError, "block_n must be a power of two between 16 and 256"),
])
def test_bad_settings_are_explained(interpreter, kwargs, error, message):
    q, k, v = qkv(8, 1, 2, 5, 16)
    with pytest.raises(error, match=message):
        flash_attention_forward(q, k, v, **kwargs)


def test_bfloat16_is_refused_by_the_interpreter(interpreter):
    q, k, v = qkv(9, 1, 1, 5, 16, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="interpreter multiplies bfloat16"):
        flash_attention_forward(q, k, v)


def test_out_of_resources_is_explained(interpreter, monkeypatch):
    """If the compiler needs more shared memory than the estimate said, the error says what to change."""
    def launch(*args, **kwargs):
        raise interpreter.runtime.errors.OutOfResources(120 * KB, 99 * KB, "shared memory")

    monkeypatch.setattr(triton_attention, "_kernel", lambda: {(4,): launch})  # grid: 1 · 2 heads · 2 blocks
    q, k, v = qkv(7, 1, 2, 20, 16)
    with pytest.raises(RuntimeError, match=r"does not fit this GPU \(out of resource: shared memory.*"
                                           r"block_m=16, block_n=16.*pass smaller block_m and block_n"):
        flash_attention_forward(q, k, v, block_m=16, block_n=16)


@pytest.mark.skipif(INTERPRETED, reason="the ordinary run's check")
def test_cpu_tensors_need_the_interpreter(triton):
    q, k, v = qkv(10, 1, 1, 5, 16)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 before Triton is first imported"):
        flash_attention_forward(q, k, v)


def test_changing_the_interpreter_switch_late_is_explained(triton, monkeypatch):
    """Triton is already imported (the fixture): flipping TRITON_INTERPRET now cannot take effect."""
    if INTERPRETED:
        monkeypatch.delenv("TRITON_INTERPRET")
    else:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = qkv(10, 1, 1, 5, 16)
    with pytest.raises(RuntimeError, match="reads it only when it is first imported"):
        flash_attention_forward(q, k, v)


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="already the interpreter run")
def test_kernel_under_the_interpreter(triton):
    """Run this module again in a fresh process with TRITON_INTERPRET=1 set before Triton is imported."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:nbval", "-p", "no:cacheprovider",
                           "-o", "addopts=", "-m", "not gpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


# --- on a GPU: against SDPA ------------------------------------------------------------------------------------

ATOL = {torch.float16: 1e-2, torch.bfloat16: 6e-2}


def sdpa(q, k, v, causal, window):
    if window is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    band = window_mask(q.size(-2), window=window, causal=causal, device=q.device)  # (L, L), True = may attend
    return F.scaled_dot_product_attention(q, k, v, attn_mask=band)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize(("length", "causal", "window"), [
    (1024, False, None), (1024, True, None), (1000, False, 128), (1000, True, 256), (777, False, 1),
])
@pytest.mark.usefixtures("triton")
@pytest.mark.gpu
@on_gpu
def test_matches_sdpa_on_the_gpu(dtype, d, length, causal, window):
    q, k, v = qkv(11, 2, 4, length, d, dtype=dtype, device="cuda")
    out = flash_attention_forward(q, k, v, causal=causal, window=window)
    assert out.device.type == "cuda" and out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), sdpa(q, k, v, causal, window).float(), rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize(("causal", "window"), [(False, None), (True, 33)])
@pytest.mark.usefixtures("triton")
@pytest.mark.gpu
@on_gpu
def test_float32_on_the_gpu_is_exact(causal, window, d):
    """float32 runs its matmuls in IEEE float32 (no TF32): close to a float64 reference."""
    q, k, v = qkv(12, 1, 2, 300, d, device="cuda")
    out = flash_attention_forward(q, k, v, causal=causal, window=window)
    expected = reference(q.double(), k.double(), v.double(), causal, window)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.usefixtures("triton")
@pytest.mark.gpu
@on_gpu
def test_more_than_65535_heads_on_the_gpu(causal):
    """B·H = 66000 (batch · heads) programs' worth of heads: more than CUDA allows on a grid's 2nd axis."""
    q, k, v = qkv(14, 2, 33_000, 20, 16, dtype=torch.float16, device="cuda")
    out = flash_attention_forward(q, k, v, causal=causal)
    torch.testing.assert_close(out.float(), sdpa(q, k, v, causal, None).float(), rtol=0, atol=ATOL[torch.float16])


@pytest.mark.slow
@pytest.mark.usefixtures("triton")
@pytest.mark.gpu
@on_gpu
def test_speed_against_sdpa_on_the_gpu():
    """The course's bar: full attention, D = 128, N = 4096, fp16, at least 0.7x the speed of SDPA's default."""
    from triton.testing import do_bench

    q, k, v = qkv(13, 4, 16, 4096, 128, dtype=torch.float16, device="cuda")
    ours = do_bench(lambda: flash_attention_forward(q, k, v))
    theirs = do_bench(lambda: F.scaled_dot_product_attention(q, k, v))
    assert theirs / ours >= 0.7, f"Triton {ours:.3f} ms against SDPA {theirs:.3f} ms: {theirs / ours:.2f}x"
