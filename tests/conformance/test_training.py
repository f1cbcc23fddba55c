"""NaMIGuide on each program AS WRITTEN: SVI runs, the loss is finite and decreases."""

from __future__ import annotations

import warnings

import pytest

import pgmdl
from tests.conformance.harness import assert_decreasing, run_svi
from tests.conformance.programs import build, training_cases


@pytest.mark.parametrize(("name", "config"), training_cases())
def test_nami_guide_trains(name, config):
    program = build(name)
    (cfg,) = [c for c in program.train if c.name == config]
    with warnings.catch_warnings():
        for category in cfg.allowed_warnings:
            warnings.simplefilter("ignore", category)
        guide = pgmdl.NaMIGuide(program.model, **cfg.nami_kwargs)
        losses = run_svi(program.model, guide, cfg.elbo(), cfg.batches(), cfg.steps, cfg.lr)
    assert_decreasing(losses)
