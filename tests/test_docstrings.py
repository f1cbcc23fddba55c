"""The examples in public docstrings run and print what they claim."""

import doctest
import importlib

import pytest
import torch

MODULES = [
    "pgmdl.graph.model_graph",
    "pgmdl.graph.nami",
    "pgmdl.graph.faithful",
    "pgmdl.graph.audit",
    "pgmdl.render",
    "pgmdl.observe.noise",
    "pgmdl.observe.quasi_deterministic",
    "pgmdl.observe.tempering",
    "pgmdl.observe.multiscale",
    "pgmdl.observe.theory",
    "pgmdl.multiset.correlated",
    "pgmdl.multiset.aggregate",
    "pgmdl.multiset.graphnn",
    "pgmdl.multiset.plate",
    "pgmdl.multiset.conditional",
    "pgmdl.datasets.multisets",
    "pgmdl.boltzmann.flows",
    "pgmdl.boltzmann.theory",
    "pgmdl.boltzmann.tune",
    "pgmdl.boltzmann.diagnostics",
    "pgmdl.infer.likelihood",
    "pgmdl.infer.missing",
    "pgmdl.datasets.sine_sums",
    "pgmdl.datasets.anchor_images",
    "pgmdl.datasets.household_power",
    "pgmdl.datasets.state_space",
    "pgmdl.datasets.controlled_pendulum",
    "pgmdl.graph.time",
    "pgmdl.guides.plan",
    "pgmdl.guides.bindings",
    "pgmdl.guides.nami_guide",
    "pgmdl.nn.residual",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """Small examples: one thread (two threads on a busy 2-core machine are
    many times slower for tensors this size)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
