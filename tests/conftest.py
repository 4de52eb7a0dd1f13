"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture()
def one_torch_thread():
    """Tiny models: torch's intra-op threads only add contention (15x slower HVPs measured
    under a loaded 2-core machine), so tests that use this run single-threaded."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
