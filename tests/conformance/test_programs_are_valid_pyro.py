"""Each conformance program and its hand-written guide run under plain Pyro.

No pgmdl here: these tests vouch for the programs themselves, so that a
failure elsewhere in this suite is pgmdl's.
"""

from __future__ import annotations

import math

import pyro
import pytest
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample

from tests.conformance.harness import run_svi
from tests.conformance.programs import NAMES, build


@pytest.mark.parametrize("name", NAMES)
def test_hand_guide_trains_under_plain_pyro(name):
    program = build(name)
    if program.hand_train is None:
        elbo, guide, calls = Trace_ELBO, program.guide, [program.call]
    else:
        elbo, guide, calls = program.hand_train
    losses = run_svi(program.model, guide, elbo(), calls, steps=10)
    assert all(math.isfinite(v) for v in losses), losses


@pytest.mark.parametrize("name", NAMES)
def test_model_trace_has_the_expected_sites(name):
    """The hand-derived site lists match what Pyro itself records."""
    program = build(name)
    args, kwargs = program.call
    trace = poutine.trace(program.model).get_trace(*args, **kwargs)
    samples = {
        n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    }
    latent = {n for n, s in samples.items() if not s["is_observed"]}
    observed = {n for n, s in samples.items() if s["is_observed"]}
    assert latent == set(program.latent)
    assert observed == set(program.observed)
    assert set(program.parents) == latent | observed
    pyro.clear_param_store()
