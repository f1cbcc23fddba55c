"""Shared fixtures. The device comes from ``PGMDL_TEST_DEVICE`` (default ``cpu``),
so the same suite runs on a GPU with ``PGMDL_TEST_DEVICE=cuda``."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch

from pgmdl.cli import LoadedModel, load_model
from pgmdl.render import dot_available

ROOT = Path(__file__).resolve().parent.parent
FAST = os.environ.get("PGMDL_FAST") == "1"


def test_device() -> torch.device:
    name = os.environ.get("PGMDL_TEST_DEVICE", "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"PGMDL_TEST_DEVICE={name} but CUDA is not available")
    return device


test_device.__test__ = False  # a helper, not a test


@pytest.fixture
def device() -> torch.device:
    return test_device()


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (small models run up to 10x faster than
    with two threads competing on this shared machine), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def load_zoo(name: str, device: torch.device | None = None) -> LoadedModel:
    """A zoo model with its example arguments, moved to ``device``."""
    loaded = load_model(f"{ROOT / 'models' / (name + '.py')}:model")
    if device is None:
        return loaded
    owner = getattr(loaded.model, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        owner.to(device)
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in loaded.args)
    kwargs = {
        k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in loaded.kwargs.items()
    }
    return LoadedModel(loaded.model, args, kwargs, loaded.module, loaded.name)


needs_dot = pytest.mark.skipif(
    not dot_available(),
    reason="Graphviz's `dot` is not installed (apt-get install graphviz); drawing to images "
    "is not tested",
)
