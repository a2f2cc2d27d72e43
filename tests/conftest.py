"""Fixtures shared by several test modules."""

import pytest
import torch


def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Models this small train fastest on one thread (and are then immune to a busy second core)."""
    yield from _single_thread()


@pytest.fixture(scope="module")
def one_thread_per_module():
    """``one_thread`` for a whole module, module-scoped fixtures (a model trained once) included."""
    yield from _single_thread()
