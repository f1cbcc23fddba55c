"""pgmdl.compile on each program AS WRITTEN: sites, hand-checked parents, inputs."""

from __future__ import annotations

import pytest

import pgmdl
from tests.conformance.harness import inputs_by_argument, parent_mismatches
from tests.conformance.programs import NAMES, build


def compiled(name):
    program = build(name)
    args, kwargs = program.call
    return program, pgmdl.compile(program.model, *args, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_latent_and_observed_sites(name):
    program, graph = compiled(name)
    assert set(graph.latent_sites) == set(program.latent)
    assert set(graph.observed_sites) == set(program.observed)
    assert not graph.deterministic_sites


@pytest.mark.parametrize("name", NAMES)
def test_parents_are_the_hand_checked_ones(name):
    program, graph = compiled(name)
    wrong = parent_mismatches(graph, program.parents)
    assert not wrong, "wrong parents:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("name", [n for n in NAMES if build(n).inputs is not None])
def test_inputs_are_the_hand_checked_ones(name):
    program, graph = compiled(name)
    got = inputs_by_argument(graph.inputs)
    want = {k: set(v) for k, v in program.inputs.items()}
    assert got == want, f"inputs {dict(graph.inputs)}"
