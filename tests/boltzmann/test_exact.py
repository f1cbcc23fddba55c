"""BTGM against closed forms.

A Gaussian prior tilted by a linear criterion stays Gaussian:
:math:`p(z) e^{\\lambda a^\\top z} \\propto \\mathcal N(\\mu + \\lambda \\Sigma a, \\Sigma)`,
with :math:`D_{KL} = \\lambda^2 a^\\top \\Sigma a / 2` and
:math:`\\mathbb{E} f = a^\\top \\mu + \\lambda a^\\top \\Sigma a`. A Gamma tilted by
:math:`e^{-\\lambda z}` is the Gamma with rate :math:`\\beta + \\lambda`.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

import pgmdl
from pgmdl.boltzmann import tail_kl

MU = torch.tensor([1.0, -1.0, 0.5])
TRIL = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.2, -0.3, 0.7]])
A = torch.tensor([0.5, -1.0, 0.3])


def gaussian(device):
    mu, tril = MU.to(device), TRIL.to(device)

    def model():
        pyro.sample("z", dist.MultivariateNormal(mu, scale_tril=tril))

    return model


def linear(values):
    return values["z"] @ A.to(values["z"].device)


def quad_form() -> float:
    sigma = TRIL @ TRIL.T
    return float(A @ sigma @ A)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    yield
    torch.set_num_threads(threads)


def test_fixed_lambda_matches_the_shifted_gaussian(device):
    tuned = pgmdl.boltzmann_tune(gaussian(device), linear, "z", lam=1.0, steps=300, num_eval=16384)
    step = tuned.history[-1]
    exact_kl = quad_form() / 2
    assert step.kl == pytest.approx(exact_kl, rel=0.05)
    exact_value = float(A @ MU) + quad_form()
    assert step.value == pytest.approx(exact_value, rel=0.03)
    # the whole distribution: mean and covariance of the tuned samples
    z = tuned.sample(16384)["z"].cpu().double()
    sigma = (TRIL @ TRIL.T).double()
    shift = (sigma @ A.double()).norm()
    assert (z.mean(0) - (MU.double() + sigma @ A.double())).norm() < 0.05 * shift + 0.03
    assert torch.allclose(torch.cov(z.T), sigma, atol=0.08)
    # the theory column is the same closed form, from reweighted base samples
    assert step.theory.kl == pytest.approx(exact_kl, rel=0.05)
    # log Z(1) = aᵀμ + aᵀΣa/2 by importance sampling from the tuned model, and
    # the flows' distance to the exact tilt, KL(p̂ || p_λ), is near 0
    assert step.log_z == pytest.approx(float(A @ MU) + quad_form() / 2, abs=0.01)
    assert abs(step.gap) < 0.02


def test_target_kl_is_hit_within_five_percent_in_few_updates(device):
    target = 2.0
    tuned = pgmdl.boltzmann_tune(gaussian(device), linear, "z", target_kl=target, steps=300)
    assert len(tuned.history) <= 10
    exact_lam = math.sqrt(2 * target / quad_form())
    assert tuned.lam == pytest.approx(exact_lam, rel=0.05)
    again = tuned.estimate(16384)  # fresh samples, not the ones the loop stopped on
    assert again.kl == pytest.approx(target, rel=0.05)


def test_target_kl_of_the_top_tenth_of_a_percent():
    tuned = pgmdl.boltzmann_tune(gaussian("cpu"), linear, "z", target_kl=tail_kl(0.001), steps=300)
    assert len(tuned.history) <= 10
    assert tuned.lam == pytest.approx(math.sqrt(2 * tail_kl(0.001) / quad_form()), rel=0.05)


def test_target_value_both_directions():
    up = float(A @ MU) + 1.5 * quad_form()
    tuned = pgmdl.boltzmann_tune(gaussian("cpu"), linear, "z", target_value=up, steps=300)
    assert tuned.lam == pytest.approx(1.5, rel=0.05)
    down = float(A @ MU) - 0.5 * quad_form()
    tuned = pgmdl.boltzmann_tune(gaussian("cpu"), linear, "z", target_value=down, steps=300)
    assert tuned.lam == pytest.approx(-0.5, rel=0.08)
    assert tuned.history[-1].value < float(A @ MU)


def test_kl_decomposes_over_tuned_sites():
    """Eq. 10.17: two independent sites, each shifted by λ σ_i² a_i."""
    scales = (1.0, 2.0)
    weights = (1.0, 0.5)

    def model():
        z1 = pyro.sample("z1", dist.Normal(0.0, scales[0]))
        z2 = pyro.sample("z2", dist.Normal(0.0, scales[1]))
        pyro.sample("y", dist.Normal(z1 + z2, 1.0))

    def crit(v):
        return weights[0] * v["z1"] + weights[1] * v["z2"]

    lam = 0.8
    tuned = pgmdl.boltzmann_tune(model, crit, ["z1", "z2"], lam=lam, steps=300, num_eval=16384)
    step = tuned.history[-1]
    for site, s, a in zip(("z1", "z2"), scales, weights, strict=True):
        assert step.site_kl[site] == pytest.approx(lam**2 * a**2 * s**2 / 2, rel=0.1, abs=0.01)
    assert step.kl == pytest.approx(sum(step.site_kl.values()), rel=1e-6)
    assert "y" not in tuned.sites


def test_conditional_flow_learns_a_parent_dependent_shift():
    """z2 | z1 ~ N(z1, e^{z1}): the tilt e^{λ z2} shifts z2 by λ e^{z1}, which
    depends on the parent; KL = λ² E[e^{z1}] / 2 = λ² e^{1/2} / 2."""

    def model():
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        pyro.sample("z2", dist.Normal(z1, torch.exp(0.5 * z1)))

    def crit(v):
        return v["z2"]

    lam = 0.5
    exact = lam**2 * math.exp(0.5) / 2
    tuned = pgmdl.boltzmann_tune(model, crit, "z2", lam=lam, steps=500, num_eval=16384)
    assert tuned.contexts == {"z2": ("z1",)}
    assert tuned.history[-1].kl == pytest.approx(exact, rel=0.1)
    samples = tuned.sample(16384)
    z1, z2 = samples["z1"], samples["z2"]
    for lo, hi in ((-1.0, -0.5), (0.5, 1.0)):
        inside = (z1 > lo) & (z1 < hi)
        shift = (z2 - z1)[inside].mean()
        expected = (lam * torch.exp(z1[inside])).mean()
        assert float(shift) == pytest.approx(float(expected), abs=0.1)
    # an unconditional flow cannot express it: its objective is lower
    plain = pgmdl.boltzmann_tune(model, crit, "z2", lam=lam, steps=500, context=None)
    cond, uncond = tuned.history[-1], plain.history[-1]
    assert lam * cond.value - cond.kl > lam * uncond.value - uncond.kl + 0.01


def test_positive_site_is_tuned_through_its_support():
    """Gamma(α, β) tilted by e^{-λ z} is Gamma(α, β + λ)."""
    alpha, beta, lam = 3.0, 2.0, 1.0

    def model():
        pyro.sample("s", dist.Gamma(alpha, beta))

    tuned = pgmdl.boltzmann_tune(model, lambda v: -v["s"], "s", lam=lam, steps=400, num_eval=16384)
    exact = kl_divergence(dist.Gamma(alpha, beta + lam), dist.Gamma(alpha, beta))
    assert tuned.history[-1].kl == pytest.approx(float(exact), rel=0.1)
    s = tuned.sample(16384)["s"]
    assert bool((s > 0).all())
    assert float(s.mean()) == pytest.approx(alpha / (beta + lam), rel=0.03)


def test_retune_sweeps_lambda_with_warm_starts():
    tuned = pgmdl.boltzmann_tune(gaussian("cpu"), linear, "z", lam=0.5, steps=200)
    tuned.retune(lam=1.0)
    tuned.retune(lam=0.7)
    starts = [step.start for step in tuned.history]
    assert starts == ["identity", "warm", "snapshot λ=0.5"]
    for step in tuned.history:
        assert abs(step.kl - step.lam**2 * quad_form() / 2) < 3 * step.kl_se + 0.02
    tuned.retune(target_kl=1.0)
    assert tuned.history[-1].kl == pytest.approx(1.0, rel=0.05)
    with pytest.raises(TypeError, match="exactly one"):
        tuned.retune()
