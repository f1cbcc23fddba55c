"""pgmdl.render draws each program, alone and beside its NaMI guide (DOT source)."""

from __future__ import annotations

import pytest

import pgmdl
from tests.conformance.programs import NAMES, build


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("guide", [None, "nami"])
def test_render_writes_dot_source(name, guide, tmp_path):
    program = build(name)
    args, kwargs = program.call
    target = tmp_path / "m.gv"
    dot = pgmdl.render(
        program.model, model_args=args, model_kwargs=kwargs, filename=target, guide=guide
    )
    source = target.read_text()
    assert source == dot.source and source.startswith("digraph")
    for site in program.parents:
        assert site in source, f"site {site!r} not drawn"
