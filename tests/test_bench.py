"""The benchmark runs end to end on tiny sizes and reports what it measured (it times nothing in CI: the
speed targets are checked by running `python -m attn_course.bench mha` and reading its ratios)."""

import json

import pytest
import torch
import torch.nn.functional as F

from attn_course import bench
from attn_course.multihead import MultiHeadAttention


@pytest.mark.parametrize("causal", [False, True])
def test_mha_benchmark_runs_and_writes_its_table(tmp_path, capsys, causal):
    out = tmp_path / "mha.json"
    args = ["mha", "--sizes", "32", "64", "--heads", "2", "--head-dim", "8", "--rounds", "1",
            "--min-run-time", "0.001", "--json", str(out)] + (["--causal"] if causal else [])
    result = bench.main(args)
    printed = capsys.readouterr().out
    for text in ("torch=", "threads=", "sdpa_enabled=", "bare/ours", "MHA(w)/ours", "peak extra memory",
                 "SDPA kernel that ran", "targets"):
        assert text in printed
    saved = json.loads(out.read_text())
    assert saved["env"]["torch"] == torch.__version__ and saved["causal"] is causal
    assert [row["N"] for row in saved["rows"]] == [32, 64] == [row["N"] for row in result["rows"]]
    for row in saved["rows"]:
        assert set(row["ms"]) == {"ours", "bare", "naive", "MHA(w)", "MHA(no w)"}
        assert all(t > 0 for t in row["ms"].values())
        assert row["peak_MiB"]["naive"] > row["peak_MiB"]["ours"] > 0
        assert row["sdpa_kernel"]["ours"] == row["sdpa_kernel"]["bare"] != "none"


def test_candidates_compute_the_same_output():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(1, 10, 16)
    with torch.no_grad():
        outputs = {name: fn() for name, fn in bench.mha_candidates(x, mha, causal=True).items()}
    for name, output in outputs.items():
        torch.testing.assert_close(output, outputs["MHA(w)"], rtol=1e-5, atol=1e-5, msg=name)


@pytest.fixture
def flash_off():
    """Switch SDPA's flash kernels off (the CPU's too) for one test, then restore the switch."""
    before = torch.backends.cuda.flash_sdp_enabled()
    torch.backends.cuda.enable_flash_sdp(False)
    yield
    torch.backends.cuda.enable_flash_sdp(before)


def test_sdpa_kernels_names_the_fused_kernel_the_math_fallback_and_none():
    q = torch.randn(1, 2, 8, 4)
    assert bench.sdpa_kernels(lambda: F.scaled_dot_product_attention(q, q, q)) == "flash (CPU)"
    # dropout: no fused CPU kernel takes it, SDPA falls back to its math path (CompositeImplicit, so the
    # dispatcher never sees its name: the TorchFunctionMode sees the call)
    assert bench.sdpa_kernels(lambda: F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)) == "math"
    assert bench.sdpa_kernels(lambda: q @ q.transpose(-2, -1)) == "none"
    ours, x = MultiHeadAttention(8, 2, dropout=0.1).train(), torch.randn(1, 8, 8)
    assert bench.sdpa_kernels(lambda: ours(x)) == "math"  # training with dropout on the CPU
    assert bench.sdpa_kernels(lambda: ours.eval()(x)) == "flash (CPU)"
    assert bench.sdpa_kernels(lambda: ours(x, return_weights=True)) == "none"  # the reference path


def test_sdpa_kernels_and_environment_see_the_switches(flash_off):
    q = torch.randn(1, 2, 8, 4)
    assert bench.sdpa_kernels(lambda: F.scaled_dot_product_attention(q, q, q)) == "math"
    assert "flash (CPU)" not in bench.environment(torch.device("cpu"), torch.float32)["sdpa_enabled"]


def test_environment_lists_the_cpu_backends_switched_on():
    env = bench.environment(torch.device("cpu"), torch.float32)
    assert env["sdpa_enabled"] == ["flash (CPU)", "math"] and "load_average" in env


def test_peak_memory_sees_a_temporary_tensor():
    def make_and_drop():
        torch.empty(2**20, dtype=torch.uint8).fill_(1)  # 1 MiB, freed at once

    assert bench.peak_memory(make_and_drop, torch.device("cpu")) >= 2**20


def test_peak_memory_falls_back_when_the_private_profiler_api_changed(monkeypatch, capsys):
    def changed(fn):
        raise AttributeError("'_ProfilerResult' object has no attribute 'experimental_event_tree'")

    monkeypatch.setattr(bench, "_cpu_allocations", changed)
    bench._print_once.cache_clear()
    assert bench.peak_memory(lambda: None, torch.device("cpu")) is None
    assert "CPU peak memory unavailable" in capsys.readouterr().out
    result = bench.main(["mha", "--sizes", "16", "32", "--heads", "2", "--head-dim", "4", "--rounds", "1",
                         "--min-run-time", "0.001"])
    assert result["rows"][0]["peak_MiB"]["ours"] is None
    printed = capsys.readouterr().out
    assert "nan" in printed and "CPU peak memory unavailable" not in printed  # said once


def test_targets_judge_the_naive_bar_at_the_largest_size_only(capsys):
    rows = [{"N": n, "ms": {"ours": 1.0, "bare": 1.0, "naive": ratio, "MHA(w)": 2.0},
             "peak_MiB": {"ours": n / 1000}} for n, ratio in ((1024, 2.0), (2048, 5.0))]
    bench._print_mha_bars(rows, torch.device("cuda"))
    printed = capsys.readouterr().out
    assert "N=1024: 2.00x," in printed and "N=2048: 5.00x met" in printed and "MISSED" not in printed


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench.main(["mha", "--device", "cuda"])


# --- local: the sliding window --------------------------------------------------------------------------

@pytest.fixture
def eager_flex(monkeypatch):
    """FlexAttention uncompiled: the smoke test checks the table, not the compile (tens of seconds)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from attn_course import local

    monkeypatch.setattr(local, "FLEX_COMPILE", False)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("causal", [False, True])
def test_local_benchmark_runs_and_writes_its_table(tmp_path, capsys, eager_flex, causal):
    out = tmp_path / "local.json"
    args = ["local", "--sizes", "48", "96", "--window", "8", "--heads", "2", "--head-dim", "8", "--rounds", "1",
            "--min-run-time", "0.001", "--dense-max", "48", "--json", str(out)] + (["--causal"] if causal else [])
    result = bench.main(args)
    printed = capsys.readouterr().out
    for text in ("torch=", "forward+backward time", "dense/blocked", "flex/blocked", "peak extra memory",
                 "flex compile", "SDPA kernel that ran: blocked: flash (CPU); dense: flash (CPU)", "targets",
                 "the bars are set at N=8192", "forward within 1.1x of compiled FlexAttention"):
        assert text in printed, text
    saved = json.loads(out.read_text())
    assert saved["causal"] is causal and saved["window"] == 8
    assert [row["N"] for row in saved["rows"]] == [48, 96] == [row["N"] for row in result["rows"]]
    first, second = saved["rows"]
    assert set(first["forward_ms"]) == {"blocked", "dense", "flex", "banded"}
    assert set(second["forward_ms"]) == {"blocked", "flex", "banded"}  # dense only up to --dense-max
    assert set(first["forward_backward_ms"]) == {"blocked", "dense", "banded"}  # no flex backward on CPU
    assert all(t > 0 for row in saved["rows"] for t in row["forward_backward_ms"].values())


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_local_benchmark_times_every_size_and_candidate_in_the_same_rounds(monkeypatch, capsys, eager_flex):
    """The growth bar divides the time at one N by the time at another: both must come from the same
    interleaved rounds, as the candidates' ratios do, not from runs minutes apart under other loads."""
    calls = []
    timed = bench.median_time

    def recording(fns, **kwargs):
        calls.append((list(fns), kwargs["rounds"]))
        return timed(fns, **kwargs)

    monkeypatch.setattr(bench, "median_time", recording)
    bench.main(["local", "--sizes", "48", "96", "--window", "8", "--heads", "2", "--head-dim", "8", "--rounds",
                "2", "--min-run-time", "0.001", "--dense-max", "48"])
    capsys.readouterr()
    assert calls == [([(48, "blocked"), (48, "dense"), (48, "flex"), (48, "banded"),
                       (96, "blocked"), (96, "flex"), (96, "banded")], 2),
                     ([(48, "blocked"), (48, "dense"), (48, "banded"), (96, "blocked"), (96, "banded")], 2)]


def test_local_candidates_compute_the_same_output(eager_flex):
    import warnings

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8) for _ in range(3))
    for causal in (False, True):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outputs = {name: fn() for name, fn in bench.local_candidates(q, k, v, 6, causal).items()}
        for name, output in outputs.items():
            torch.testing.assert_close(output, outputs["banded"], rtol=1e-5, atol=1e-5, msg=name)


def test_local_targets_are_judged_at_8192_and_16384(capsys):
    def row(n, scale):
        return {"N": n, "forward_ms": {"blocked": 100 * scale, "flex": 95 * scale},
                "forward_backward_ms": {"blocked": 400 * scale, "dense": 6000.0},
                "forward_backward_peak_MiB": {"blocked": 50.0, "dense": 300.0}}

    bench._print_local_bars([row(8192, 1), row(16384, 2.5)])
    printed = capsys.readouterr().out
    assert "dense/blocked = 15.00 met" in printed and "blocked/dense = 0.17 met" in printed
    assert "forward+backward time(16384) / time(8192) <= 2.3: 2.50 MISSED" in printed
    assert "flex/blocked >= 0.91: 0.95 met" in printed
