"""Fixtures of the AI tests. Torch-free on purpose: the modules gate themselves on torch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _two_cpu_threads() -> Iterator[None]:
    """Run as CI does (2 cores), whatever this machine has."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)
