"""Checkpoints: a round trip restores the weights; every way a file can be wrong gets a clear message."""

import pytest
import torch
from torch import nn

from attn_course.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def make(hidden=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def test_round_trip_restores_weights_config_and_extra(tmp_path):
    model = make()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, config={"hidden": 4}, step=7, curve=[1.0, 0.5])
    other = make()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    payload = load_checkpoint(path, other)
    assert payload["config"] == {"hidden": 4}
    assert payload["extra"] == {"step": 7, "curve": [1.0, 0.5]}
    assert payload["class"] == "Sequential"
    for a, b in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(a, b)
    assert not list(tmp_path.glob("sub/.*.tmp")), "the temporary file must be gone"


def test_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


def test_corrupt_and_truncated_files(tmp_path):
    good = save_checkpoint(tmp_path / "m.pt", make(), config={})
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for name in ("garbage.pt", "cut.pt"):
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_checkpoint(tmp_path / name)


def test_foreign_file(tmp_path):
    torch.save(make().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not written by attn_course"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save({"format": "attn_course-checkpoint", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_other_class_and_other_sizes(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", make(hidden=4), config={"hidden": 4})
    with pytest.raises(CheckpointError, match="holds a Sequential, not a Linear"):
        load_checkpoint(path, nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*\(8, 3\) vs|shape mismatch.*vs \(8, 3\)"):
        load_checkpoint(path, make(hidden=8))
    deeper = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="missing 2 weight"):
        load_checkpoint(path, deeper)


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", make(), config={"v": 1})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make(hidden=8), config={"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path, make())["config"] == {"v": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        save_checkpoint("x.pt", object(), config={})
    with pytest.raises(TypeError, match="config must be a dict"):
        save_checkpoint("x.pt", make(), config=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_one_says_so(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", make(), config={})
    with pytest.raises(CheckpointError, match="no CUDA device; load with map_location='cpu'"):
        load_checkpoint(path, map_location="cuda")
