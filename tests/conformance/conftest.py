"""Fixtures of the conformance suite: one thread, a fixed seed per test."""

from __future__ import annotations

import pyro
import pytest
import torch

from tests.conformance.programs import build


@pytest.fixture(autouse=True)
def _seed_and_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def program(request):
    """The Program named by the test's ``name`` parameter, freshly built."""
    return build(request.param)
