"""Conditionals shared across the steps of a pyro.markov loop
(:mod:`pgmdl.guides.sequence`, ``NaMIGuide(time_shared=True)``)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pgmdl
from pgmdl.datasets import LinearGaussianSSM
from pgmdl.guides.sequence import StepConditional, TimeSharedSeries


def sample(length: int, n: int = 32, seed: int = 0):
    return LinearGaussianSSM().sample(n, length, generator=torch.Generator().manual_seed(seed))


def parameters(guide) -> int:  # noqa: ANN001
    return sum(p.numel() for p in guide.parameters())


@pytest.mark.parametrize("order, direction", [("reverse", "future"), ("min-fill", "past")])
def test_every_step_shares_one_conditional_whose_size_does_not_grow(order, direction):
    ssm = LinearGaussianSSM()
    sizes = {}
    for length in (5, 9):
        pyro.clear_param_store()
        guide = pgmdl.NaMIGuide(ssm.model, order=order, time_shared=True).setup(sample(length).x)
        steps = [guide.conditional(f"z_{t}") for t in range(length)]
        assert all(isinstance(s, StepConditional) for s in steps)
        shared = {id(s.shared) for s in steps}
        assert len(shared) == 1 and steps[0].shared.direction == direction
        assert isinstance(steps[0].shared, TimeSharedSeries)
        assert sum(s.first for s in steps) == 1  # one GRU run per call
        sizes[length] = parameters(guide)
    assert sizes[5] == sizes[9]
    pyro.clear_param_store()
    per_step = [
        parameters(pgmdl.NaMIGuide(ssm.model, order=order).setup(sample(n).x)) for n in (5, 9)
    ]
    assert per_step[1] > per_step[0]  # one network per step, reading O(T) inputs


def test_the_shared_guide_trains_toward_the_exact_evidence():
    ssm = LinearGaussianSSM()
    train, test = sample(6, 64, seed=1), sample(6, 128, seed=2)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True)
    svi = SVI(ssm.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(train.x) for _ in range(300)]
    guide.eval()
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=20).loss(ssm.model, guide, test.x) / 128
    exact = -ssm.log_evidence(test.x).mean().item()
    gap = (loss - exact) / 6
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    assert 0.0 < gap < 0.6, f"gap per step {gap:.3f}"


def test_a_series_that_does_not_fit_keeps_its_own_conditionals():
    """Observations of one step only (a filtering structure forced by a model
    whose latents do not chain): nothing grows, nothing is shared."""

    def independent(x):
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", dist.Normal(0.0, 1.0))
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])

    guide = pgmdl.NaMIGuide(independent, time_shared=True).setup(torch.zeros(3, 4))
    assert not isinstance(guide.conditional("z_2"), StepConditional)
    assert guide.parents("z_2") == ("x_2",)
