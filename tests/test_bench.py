"""The benchmark runs end to end on tiny sizes and reports what it measured (it times nothing in CI: the
speed targets are checked by running `python -m attn_course.bench mha` and reading its ratios)."""

import json

import pytest
import torch

from attn_course import bench


@pytest.mark.parametrize("causal", [False, True])
def test_mha_benchmark_runs_and_writes_its_table(tmp_path, capsys, causal):
    out = tmp_path / "mha.json"
    args = ["mha", "--sizes", "32", "64", "--heads", "2", "--head-dim", "8", "--rounds", "1",
            "--min-run-time", "0.001", "--json", str(out)] + (["--causal"] if causal else [])
    result = bench.main(args)
    printed = capsys.readouterr().out
    for text in ("torch=", "threads=", "MHA(w)/ours", "peak extra memory", "SDPA kernel that ran", "targets"):
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


def test_peak_memory_sees_a_temporary_tensor():
    def make_and_drop():
        torch.empty(2**20, dtype=torch.uint8).fill_(1)  # 1 MiB, freed at once

    assert bench.peak_memory(make_and_drop, torch.device("cpu")) >= 2**20


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench.main(["mha", "--device", "cuda"])
