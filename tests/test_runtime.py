"""Seeding, device choice and the notebooks' setup() helper."""

import random
import re

import numpy as np
import pytest
import torch

from attn_course.runtime import pick_device, seed_everything, setup

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")


@pytest.fixture
def clean_env(monkeypatch):
    """No ATTN_COURSE_* overrides from the caller's shell; thread count and print options put back after."""
    monkeypatch.delenv("ATTN_COURSE_DEVICE", raising=False)
    monkeypatch.delenv("ATTN_COURSE_THREADS", raising=False)
    threads, np_options = torch.get_num_threads(), np.get_printoptions()
    try:
        yield monkeypatch
    finally:
        torch.set_num_threads(threads)
        torch.set_printoptions(profile="default")
        np.set_printoptions(**np_options)


def draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


@pytest.mark.parametrize("seed", [0, 7, 2**31])
def test_seed_everything_repeats_python_numpy_and_torch(seed):
    seed_everything(seed)
    first = draws()
    seed_everything(seed)
    assert draws() == first
    seed_everything(seed + 1)
    other = draws()
    assert all(a != b for a, b in zip(other, first, strict=True))


def test_seed_everything_negative_seed():
    with pytest.raises(ValueError, match=re.escape("seed must be a whole number >= 0 and < 2**32, got -1")):
        seed_everything(-1)


@pytest.mark.parametrize("seed", [1.5, "0", True, None])
def test_seed_everything_wrong_kind_of_seed(seed):
    with pytest.raises(TypeError, match=re.escape(f"seed must be a whole number >= 0, got {seed!r}")):
        seed_everything(seed)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_pick_device_cpu(clean_env, device):
    clean_env.setenv("ATTN_COURSE_DEVICE", "cuda")  # an explicit argument wins over the environment
    assert pick_device(device) == torch.device("cpu")


def test_pick_device_from_environment(clean_env):
    clean_env.setenv("ATTN_COURSE_DEVICE", "cpu")
    assert pick_device(None) == torch.device("cpu")


def test_pick_device_default(clean_env):
    assert pick_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
def test_pick_device_cuda_without_cuda(clean_env, device):
    with pytest.raises(ValueError, match=re.escape(f"device {device!r} was asked for, but torch sees no CUDA device")):
        pick_device(device)


@NO_CUDA
def test_pick_device_cuda_from_environment_without_cuda(clean_env):
    clean_env.setenv("ATTN_COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        pick_device()


@pytest.mark.parametrize("via_env", [False, True])
def test_pick_device_nonsense(clean_env, via_env):
    if via_env:
        clean_env.setenv("ATTN_COURSE_DEVICE", "nonsense")
    with pytest.raises(ValueError, match=re.escape("device must be like 'cpu' or 'cuda', got 'nonsense'")):
        pick_device(None if via_env else "nonsense")


def test_setup_returns_the_device_and_prints_one_line(clean_env, capsys):
    device = setup(seed=3, device="cpu")
    assert device == torch.device("cpu")
    assert capsys.readouterr().out.splitlines() == ["attn_course ready: device=cpu, seed=3"]
    first = draws()
    setup(seed=3, device="cpu")
    assert draws() == first


@pytest.mark.parametrize(("threads", "env", "expected"), [(1, None, 1), (2, None, 2), (None, "1", 1), (2, "1", 2)])
def test_setup_sets_the_thread_count(clean_env, capsys, threads, env, expected):
    if env is not None:
        clean_env.setenv("ATTN_COURSE_THREADS", env)
    setup(device="cpu", threads=threads)
    assert torch.get_num_threads() == expected
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize(("threads", "env", "error", "message"), [
    (0, None, ValueError, "threads must be > 0, got 0"),
    (1.5, None, TypeError, "threads must be a whole number, got float"),
    (None, "0", ValueError, "threads must be > 0, got 0"),
])
def test_setup_bad_threads(clean_env, threads, env, error, message):
    if env is not None:
        clean_env.setenv("ATTN_COURSE_THREADS", env)
    before = torch.get_num_threads()
    with pytest.raises(error, match=re.escape(message)):
        setup(device="cpu", threads=threads)
    assert torch.get_num_threads() == before


def test_seed_beyond_numpy_range_is_refused_before_seeding_anything():
    random.seed(5)
    before = random.random()
    random.seed(5)
    with pytest.raises(ValueError, match=re.escape("< 2**32")):
        seed_everything(2**32)
    assert random.random() == before  # Python's generator was left alone


def test_threads_variable_that_is_not_a_number(monkeypatch):
    monkeypatch.setenv("ATTN_COURSE_THREADS", "abc")
    with pytest.raises(ValueError, match="ATTN_COURSE_THREADS must be a whole number of threads, got 'abc'"):
        setup(device="cpu")
