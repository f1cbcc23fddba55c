"""CorrelatedMultisetNormal (thesis §9.2.2, App. 9.A–9.B) against torch's
MultivariateNormal on random parameters, with padding masks, and the
saturating aggregation of eq. 9.16–9.17."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from pgmdl.errors import ModelError
from pgmdl.multiset import CorrelatedMultisetNormal, SaturatingSum, masked_sum

F64 = torch.float64


def random_params(device, batch=(3,), k=5, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = batch + (k, d)
    loc = torch.randn(shape, generator=g, dtype=F64)
    scale = 0.3 + torch.rand(shape, generator=g, dtype=F64)
    nu = 2 * torch.randn(shape, generator=g, dtype=F64)
    return loc.to(device), scale.to(device), nu.to(device)


def reference(q: CorrelatedMultisetNormal) -> MultivariateNormal:
    """The same law per coordinate as a dense MultivariateNormal over the parts
    (eq. 9.19–9.20: covariance (I − ρ1ᵀ)D²(I − ρ1ᵀ)ᵀ), built independently."""
    rho, sigma = q.rho.transpose(-1, -2), q.scale.transpose(-1, -2)  # (..., D, K)
    k = rho.shape[-1]
    eye = torch.eye(k, dtype=rho.dtype, device=rho.device)
    a = (eye - rho.unsqueeze(-1) * torch.ones(k, dtype=rho.dtype, device=rho.device)) * (
        sigma.unsqueeze(-2)
    )
    return MultivariateNormal(q.loc.transpose(-1, -2), covariance_matrix=a @ a.transpose(-1, -2))


def test_rho_is_eq_9_11(device):
    loc, scale, nu = random_params(device)
    q = CorrelatedMultisetNormal(loc, scale, nu)
    expected = nu.exp() / (1 + nu.exp().sum(-2, keepdim=True))
    torch.testing.assert_close(q.rho, expected)
    assert bool((q.rho.sum(-2) < 1).all())
    torch.testing.assert_close(q.log_one_minus_rho_sum.exp(), 1 - expected.sum(-2))
    torch.testing.assert_close(q.covariance_matrix(), reference(q).covariance_matrix)


@pytest.mark.parametrize("seed", range(4))
def test_log_prob_entropy_and_kl_match_multivariate_normal(seed, device):
    loc, scale, nu = random_params(device, seed=seed)
    q = CorrelatedMultisetNormal(loc, scale, nu)
    mvn = reference(q)
    value = loc + torch.randn_like(loc)
    torch.testing.assert_close(q.log_prob(value), mvn.log_prob(value.transpose(-1, -2)).sum(-1))
    torch.testing.assert_close(q.entropy(), mvn.entropy().sum(-1))
    prior_loc, prior_scale = torch.randn_like(loc), 0.5 + torch.rand_like(scale)
    prior = MultivariateNormal(
        prior_loc.transpose(-1, -2), scale_tril=torch.diag_embed(prior_scale.transpose(-1, -2))
    )
    expected = kl_divergence(mvn, prior).sum(-1)
    torch.testing.assert_close(q.kl_to_normal(prior_loc, prior_scale), expected)
    # the registered KL, as Pyro's TraceMeanField_ELBO would call it
    p = dist.Normal(prior_loc, prior_scale).to_event(2)
    torch.testing.assert_close(kl_divergence(q, p), expected)


def test_samples_have_the_stated_moments(device):
    loc, scale, nu = random_params(device, batch=(), k=4, d=1, seed=5)
    q = CorrelatedMultisetNormal(loc, scale, nu)
    w = q.rsample((200000,))
    torch.testing.assert_close(w.mean(0), loc, atol=0.02, rtol=0)
    empirical = torch.cov(w[..., 0].T)
    torch.testing.assert_close(empirical, q.covariance_matrix()[0], atol=0.03, rtol=0)
    torch.testing.assert_close(w.var(0), q.variance, atol=0.03, rtol=0)  # eq. 9.7
    torch.testing.assert_close(w.sum(-2).var(0), q.sum_variance, rtol=0.03, atol=1e-4)  # eq. 9.8


def test_rsample_is_reparametrized(device):
    loc, scale, nu = (t.requires_grad_() for t in random_params(device))
    w = CorrelatedMultisetNormal(loc, scale, nu).rsample()
    w.sum().backward()
    assert all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in (loc, scale, nu))


def test_log_prob_is_permutation_equivariant(device):
    loc, scale, nu = random_params(device)
    value = loc + torch.randn_like(loc)
    perm = torch.randperm(loc.shape[-2])
    a = CorrelatedMultisetNormal(loc, scale, nu).log_prob(value)
    b = CorrelatedMultisetNormal(loc[..., perm, :], scale[..., perm, :], nu[..., perm, :]).log_prob(
        value[..., perm, :]
    )
    torch.testing.assert_close(a, b)


def test_padding_is_the_smaller_multiset(device):
    """A multiset of 3 parts padded to 6 slots has the law of the 3-part one."""
    loc, scale, nu = random_params(device, batch=(2,), k=6, seed=7)
    mask = torch.tensor([[True, False, True, False, True, False], [True] * 6], device=device)
    q = CorrelatedMultisetNormal(loc, scale, nu, mask)
    keep = mask[0]
    small = CorrelatedMultisetNormal(loc[0, keep], scale[0, keep], nu[0, keep])
    value = loc + torch.randn_like(loc)
    torch.testing.assert_close(q.log_prob(value)[0], small.log_prob(value[0, keep]))
    torch.testing.assert_close(q.entropy()[0], small.entropy())
    prior_scale = torch.ones_like(scale)
    torch.testing.assert_close(
        q.kl_to_normal(torch.zeros_like(loc), prior_scale)[0],
        small.kl_to_normal(torch.zeros_like(loc[0, keep]), prior_scale[0, keep]),
    )
    # a padded slot does not move the density and is sampled at its mean
    moved = value.clone()
    moved[0, 1] += 100.0
    torch.testing.assert_close(q.log_prob(moved)[0], q.log_prob(value)[0])
    w = q.rsample()
    torch.testing.assert_close(w[0, ~keep], loc[0, ~keep])


def test_empty_multiset(device):
    loc, scale, nu = random_params(device, batch=(), k=3)
    q = CorrelatedMultisetNormal(loc, scale, nu, torch.zeros(3, dtype=torch.bool, device=device))
    assert float(q.log_prob(q.rsample())) == 0.0
    assert float(q.entropy()) == 0.0
    assert float(q.kl_to_normal(torch.zeros_like(loc), torch.ones_like(scale))) == 0.0
    torch.testing.assert_close(q.rsample(), loc)


def test_large_multiset_stays_finite(device):
    loc, scale, nu = random_params(device, batch=(), k=3000, d=2)
    q = CorrelatedMultisetNormal(loc, scale, nu + 20.0)  # Σρ within 1e-9 of 1
    w = q.rsample()
    assert bool(torch.isfinite(q.log_prob(w)))
    assert bool(torch.isfinite(q.kl_to_normal(torch.zeros_like(loc), torch.ones_like(scale))))
    assert float(q.sum_variance.max()) < 1e-6 * float(q.variance.min())


def test_bad_input():
    with pytest.raises(ModelError, match=r"mask has 4 part slots but loc has 3"):
        CorrelatedMultisetNormal(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(3, 2),
                                 torch.ones(4, dtype=torch.bool))  # fmt: skip
    with pytest.raises(ModelError, match="boolean"):
        CorrelatedMultisetNormal(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(3, 2),
                                 torch.ones(3))  # fmt: skip
    with pytest.raises(ModelError, match=r"\(\.\.\., K, D\)"):
        CorrelatedMultisetNormal(torch.zeros(3), torch.ones(3), torch.zeros(3))
    with pytest.raises(ModelError, match="part slots"):
        masked_sum(torch.zeros(2, 3, 1), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ModelError, match="gamma"):
        SaturatingSum(gamma=0.0)


def test_saturating_sum_is_invariant_bounded_and_learnable(device):
    parts = torch.randn(4, 7, 3, device=device)
    mask = torch.rand(4, 7, device=device) > 0.3
    aggregate = SaturatingSum().to(device)
    out = aggregate(parts, mask)
    total = (parts * mask[..., None]).sum(-2)
    torch.testing.assert_close(out, total / (1 + total.abs()))  # γ = 1 at the start
    perm = torch.randperm(7)
    torch.testing.assert_close(aggregate(parts[:, perm], mask[:, perm]), out)
    with torch.no_grad():  # |χ(x)| < 1/γ whatever the number and size of the parts
        assert float(aggregate(1e6 * torch.ones(1, 5, 3, device=device)).max()) < 1 / float(
            aggregate.gamma
        )
    empty = aggregate(parts, torch.zeros_like(mask))
    assert bool((empty == 0).all())
    out.sum().backward()
    assert aggregate.raw_gamma.grad is not None
    assert math.isclose(float(SaturatingSum(gamma=2.5).gamma.detach()), 2.5, rel_tol=1e-6)
