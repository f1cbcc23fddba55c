"""The examples in public docstrings run and print what they claim."""

import doctest
import importlib

import pytest

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
    "pgmdl.datasets.sines",
    "pgmdl.datasets.colour_anchors",
    "pgmdl.datasets.households",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
