"""NaMI inversion of each program: a faithful and minimal guide structure."""

from __future__ import annotations

import pytest

import pgmdl
from tests.conformance.programs import NAMES, build


@pytest.mark.parametrize("name", NAMES)
def test_inverse_is_faithful_and_minimal(name):
    program = build(name)
    args, kwargs = program.call
    graph = pgmdl.compile(program.model, *args, **kwargs)
    inverse = pgmdl.invert(graph)
    report = pgmdl.check_faithful(graph, inverse)
    assert report.ok, str(report)
    assert pgmdl.is_minimal(graph, inverse), pgmdl.redundant_edges(graph, inverse)
