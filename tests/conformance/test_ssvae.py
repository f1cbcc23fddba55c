"""Semi-supervised M2: one guide for labelled (``ys=labels``) and unlabelled
(``ys=None``) batches, whichever comes first, under Trace_ELBO and TraceEnum_ELBO.

When the model observes ``y`` the guide must read the given labels instead of
sampling them, and ``z``'s conditional must condition on them.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

import pgmdl
from tests.conformance.harness import run_svi
from tests.conformance.programs import ssvae_m2

ELBOS = {
    "trace": (Trace_ELBO, {}),
    "enum": (lambda: TraceEnum_ELBO(max_plate_nesting=1), {"enumerate": "parallel"}),
}


def trained(kind: str, labelled_first: bool, steps: int = 30):
    model, _ = ssvae_m2.build_model_and_guide()
    elbo, options = ELBOS[kind]
    guide = pgmdl.NaMIGuide(model, **options)
    run_svi(model, guide, elbo(), ssvae_m2.batches(labelled_first), steps)
    return model, guide


def guide_samples(guide, *args):
    trace = poutine.trace(guide).get_trace(*args)
    return {
        n: s
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not site_is_subsample(s) and not s["is_observed"]
    }


@pytest.mark.parametrize("kind", ELBOS)
@pytest.mark.parametrize(
    "labelled_first", [False, True], ids=["unlabelled-first", "labelled-first"]
)
def test_guide_reads_the_given_labels(kind, labelled_first):
    _, guide = trained(kind, labelled_first)
    xs, ys = ssvae_m2.digits(12, seed=7)
    sampled = guide_samples(guide, xs, ys)
    assert "y" not in sampled or torch.equal(sampled["y"]["value"], ys), (
        "on a labelled batch the guide sampled y instead of reading the labels"
    )
    assert "z" in sampled
    assert "y" in guide.parents("z")


@pytest.mark.parametrize("kind", ELBOS)
@pytest.mark.parametrize(
    "labelled_first", [False, True], ids=["unlabelled-first", "labelled-first"]
)
def test_guide_samples_the_label_when_unlabelled(kind, labelled_first):
    _, guide = trained(kind, labelled_first)
    xs, _ = ssvae_m2.digits(12, seed=7)
    sampled = guide_samples(guide, xs)
    assert {"y", "z"} <= set(sampled)
    assert sampled["y"]["value"].shape[-1] == ssvae_m2.Y_DIM


@pytest.mark.parametrize("kind", ELBOS)
def test_z_conditional_depends_on_the_given_label(kind):
    _, guide = trained(kind, labelled_first=False, steps=40)
    xs, _ = ssvae_m2.digits(12, seed=7)
    ys_a = torch.nn.functional.one_hot(torch.zeros(12, dtype=torch.long), ssvae_m2.Y_DIM).float()
    ys_b = torch.nn.functional.one_hot(torch.full((12,), 2), ssvae_m2.Y_DIM).float()
    pyro.set_rng_seed(3)
    z_a = guide_samples(guide, xs, ys_a)["z"]["value"]
    pyro.set_rng_seed(3)
    z_b = guide_samples(guide, xs, ys_b)["z"]["value"]
    assert not torch.allclose(z_a, z_b), "q(z | x, y) ignores the label given by the caller"
