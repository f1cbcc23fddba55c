"""NaMI on a pyro.markov loop by its slice (pgmdl.graph.time_inverse): the
elimination read off two short prototypes and unrolled is the elimination of
the unrolled loop, edge for edge, for every order."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgmdl
from models import dmm, dvbf
from pgmdl.datasets import LinearGaussianSSM
from pgmdl.datasets.controlled_pendulum import pendulum
from pgmdl.graph.nami import eliminate
from pgmdl.graph.plated import plated_dag
from pgmdl.graph.time import time_structure
from pgmdl.graph.time_inverse import eliminate_by_slices


def second_order(x):
    n = x.shape[0]
    previous = before = x.new_zeros(n)
    with pyro.plate("sequences", n):
        for t in pyro.markov(range(x.shape[1]), history=2):
            z = pyro.sample(f"z_{t}", dist.Normal(0.5 * previous + 0.3 * before, 1.0))
            before, previous = previous, z
            pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])


def global_drift(x):
    """A latent outside the loop that every step reads."""
    drift = pyro.sample("drift", dist.Normal(0.0, 1.0))
    z = x.new_zeros(x.shape[0])
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(x.shape[1])):
            z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z + drift, 1.0))
            pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])


def from_one(x):
    """Steps numbered from 1, observations x[:, t - 1], as in Pyro's DMM example."""
    z = x.new_zeros(x.shape[0], 2)
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(1, x.shape[1] + 1)):
            z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, 1.0).to_event(1))
            pyro.sample(f"obs_x_{t}", dist.Normal(z, 1.0).to_event(1), obs=x[:, t - 1, :])


def _ssm(length):
    data = LinearGaussianSSM().sample(3, length, torch.Generator().manual_seed(0), min_length=1)
    return LinearGaussianSSM().model, (data.x, data.mask)


def _pendulum(model):
    def make(length):
        data = pendulum(3, length, generator=torch.Generator().manual_seed(0))
        return model, (data.observations, data.controls, torch.ones(3, length, dtype=torch.bool))

    return make


CASES = {
    "linear-Gaussian with mask": _ssm,
    "deep Markov model": lambda n: (
        dmm.model,
        (torch.randn(3, n, dmm.example_args()[0][0].shape[-1]),),
    ),
    "Markov model with controls": _pendulum(dvbf.markov_model),
    "second order": lambda n: (second_order, (torch.randn(3, n),)),
    "global latent": lambda n: (global_drift, (torch.randn(3, n),)),
    "steps from 1": lambda n: (from_one, (torch.randn(3, n, 2),)),
}


@pytest.mark.parametrize("order", ["min-fill", "reverse", "topological"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_slice_unrolls_to_the_elimination_of_the_unrolled_loop(case, order):
    for length in (9, 13):
        model, args = CASES[case](length)
        graph = pgmdl.compile(model, *args)
        dag = plated_dag(graph)
        sliced = eliminate_by_slices(dag, time_structure(graph), lambda d: eliminate(d, order))
        assert sliced is not None, (case, order, length)
        full = eliminate(dag, order)
        assert sliced.order == full.order
        assert sliced.parents == full.parents
        assert sliced.kinds == full.kinds
        assert dict(sliced.coupled) == dict(full.coupled)
        assert sorted(sliced.prior) == sorted(full.prior)


def test_a_loop_the_rules_do_not_rebuild_is_eliminated_unrolled():
    """The DVBF's innovations all feed a deterministic state: its slice is not
    read (yet); invert() falls back to the unrolled elimination, same result."""
    model, args = _pendulum(dvbf.model)(9)
    graph = pgmdl.compile(model, *args)
    dag = plated_dag(graph)
    order = "reverse"
    assert eliminate_by_slices(dag, time_structure(graph), lambda d: eliminate(d, order)) is None
    assert pgmdl.invert(graph, order=order).order == tuple(reversed(eliminate(dag, order).order))


def test_invert_uses_the_slice_and_certifies_its_result():
    model, args = _ssm(12)
    graph = pgmdl.compile(model, *args)
    inverse = pgmdl.invert(graph, order="reverse")
    assert set(inverse.parents("z_3")) == {"z_2", "mask"} | {f"x_{t}" for t in range(3, 12)}
    assert pgmdl.check_faithful(graph, inverse).ok


def test_the_summary_says_the_loop_was_inverted_by_its_slice():
    model, args = _ssm(12)
    inverse = pgmdl.invert(pgmdl.compile(model, *args), order="reverse")
    assert inverse.by_slices and "inverted by its slice" in inverse.summary()
    short = pgmdl.invert(pgmdl.compile(*_ssm(5)[:1], *_ssm(5)[1]), order="reverse")
    assert not short.by_slices  # a short loop is eliminated unrolled
