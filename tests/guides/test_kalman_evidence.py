"""Issue 19's evidence: NaMIGuide(model), nothing else, trained on minibatches
whose length varies, comes within 0.05 nats per step of the exact Kalman
log-evidence, at lengths it saw and at longer ones (SYNTHETIC linear-Gaussian
state-space model). Slow: CI runs a shorter training with a looser bound."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pgmdl
from pgmdl.datasets import LinearGaussianSSM
from tests.conftest import FAST

STEPS, BATCH, BOUND = (600, 64, 0.25) if FAST else (3000, 128, 0.05)


def gap_per_step(ssm, guide, length: int, n: int = 256) -> float:  # noqa: ANN001
    test = ssm.sample(n, length, torch.Generator().manual_seed(100 + length))
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=10).loss(ssm.model, guide, test.x, test.mask)
    return (loss + ssm.log_evidence(test.x).sum().item()) / (n * length)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["min-fill", "reverse"])
def test_the_default_guide_comes_within_bound_of_the_kalman_evidence(order):
    torch.set_num_threads(1)
    ssm = LinearGaussianSSM()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pgmdl.NaMIGuide(ssm.model, order=order)
    optim = pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.1 ** (1 / STEPS)})
    svi = SVI(ssm.model, guide, optim, Trace_ELBO())
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        length = int(torch.randint(5, 16, (), generator=generator))
        batch = ssm.sample(BATCH, length, generator, min_length=max(1, length - 4))
        svi.step(batch.x, batch.mask)
    assert guide.sequence is not None and guide.sequence.problem is None  # shared
    guide.eval()
    gaps = {length: gap_per_step(ssm, guide, length) for length in (10, 40)}
    assert all(0.0 < gap < BOUND for gap in gaps.values()), gaps
