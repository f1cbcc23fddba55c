"""Observation tempering (normalized, eq. 7.5–7.6) against the β-VAE weighting:
normalization, closed forms and the gradient identities eq. 7.8 and 7.10."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from pgmdl.errors import ModelError
from pgmdl.observe import beta_vae_weight, tempered

BETAS = [0.25, 0.5, 2.0, 5.0]


def grid(device, low=-200.0, high=200.0, n=400001):
    return torch.linspace(low, high, n, dtype=torch.float64, device=device)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("family", ["Normal", "Laplace"])
def test_continuous_tempering_is_the_normalized_power(family, beta, device):
    """p̂_β(x) = p(x)^(1/β) / ∫ p^(1/β): compare with quadrature on a grid."""
    loc = torch.tensor(0.7, dtype=torch.float64, device=device)
    scale = torch.tensor(1.3, dtype=torch.float64, device=device)
    base = getattr(dist, family)(loc, scale)
    x = grid(device)
    power = base.log_prob(x) / beta
    log_z = torch.logsumexp(power, 0) + math.log(float(x[1] - x[0]))
    expected = power - log_z
    torch.testing.assert_close(tempered(base, beta).log_prob(x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta", BETAS)
def test_discrete_tempering_is_the_normalized_power(beta, device):
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0], device=device)
    for base, values in (
        (dist.Categorical(logits=logits), torch.arange(4, device=device)),
        (dist.OneHotCategorical(logits=logits), torch.eye(4, device=device)),
    ):
        power = base.log_prob(values) / beta
        torch.testing.assert_close(
            tempered(base, beta).log_prob(values), power - torch.logsumexp(power, 0)
        )
    bern = dist.Bernoulli(logits=logits)
    both = torch.stack([bern.log_prob(torch.zeros(4, device=device)),
                        bern.log_prob(torch.ones(4, device=device))]) / beta  # fmt: skip
    torch.testing.assert_close(
        tempered(bern, beta).log_prob(torch.ones(4, device=device)),
        both[1] - torch.logsumexp(both, 0),
    )


def test_tempering_keeps_independent_wrappers(device):
    base = dist.Normal(torch.zeros(3, device=device), torch.ones(3, device=device)).to_event(1)
    hot = tempered(base, 4.0)
    assert isinstance(hot, dist.Independent) and hot.event_shape == (3,)
    torch.testing.assert_close(hot.base_dist.scale, torch.full((3,), 2.0, device=device))


def test_gaussian_gradient_identity_eq_7_10(device):
    """(1/β) ∇ log p(x) = ∇ log p̂_β(x) + (β − 1)/β ∇ log σ for a 1-D Gaussian."""
    beta = 3.0
    x = torch.tensor(0.4, dtype=torch.float64, device=device)
    mu = torch.tensor(-0.2, dtype=torch.float64, device=device, requires_grad=True)
    log_sigma = torch.tensor(-0.5, dtype=torch.float64, device=device, requires_grad=True)

    def grads(value):
        return torch.autograd.grad(value, (mu, log_sigma), retain_graph=True)

    base = dist.Normal(mu, log_sigma.exp())
    beta_vae = grads(base.log_prob(x) / beta)
    tempered_grad = grads(tempered(base, beta).log_prob(x))
    torch.testing.assert_close(beta_vae[0], tempered_grad[0])  # the mean: no difference
    torch.testing.assert_close(beta_vae[1], tempered_grad[1] + (beta - 1) / beta)


@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_general_gradient_identity_eq_7_8(beta, device):
    """(1/β) ∇ log p(x) = ∇ log p̂_β(x) + (1/β) E_{x̂ ~ p̂_β} ∇ log p(x̂), exactly (finite
    support: the expectation is a sum)."""
    logits = torch.tensor([0.5, -1.0, 1.5], device=device, requires_grad=True)
    values = torch.arange(3, device=device)
    base = dist.Categorical(logits=logits)
    hot = tempered(base, beta)
    x = torch.tensor(2, device=device)
    lhs = torch.autograd.grad(base.log_prob(x) / beta, logits, retain_graph=True)[0]
    tempered_grad = torch.autograd.grad(hot.log_prob(x), logits, retain_graph=True)[0]
    weights = hot.probs.detach()
    scores = torch.stack(
        [torch.autograd.grad(base.log_prob(v), logits, retain_graph=True)[0] for v in values]
    )
    correction = (weights[:, None] * scores).sum(0) / beta
    torch.testing.assert_close(lhs, tempered_grad + correction)
    if beta != 1:  # the β-VAE gradient is not the tempered one
        assert not torch.allclose(lhs, tempered_grad)


def test_beta_vae_weight_is_not_normalized(device):
    """exp((1/β) log p) does not integrate to one; the tempered density does."""
    base = dist.Normal(torch.tensor(0.0, dtype=torch.float64, device=device), 0.5)
    x = grid(device, -20, 20, 40001)
    step = float(x[1] - x[0])
    for beta in (0.5, 3.0):
        weighted = (base.log_prob(x) / beta).exp().sum() * step
        normalized = tempered(base, beta).log_prob(x).exp().sum() * step
        assert float(normalized) == pytest.approx(1.0, abs=1e-6)
        assert abs(float(weighted) - 1.0) > 0.05
    with beta_vae_weight(2.0) as handler:
        assert handler.scale == 0.5


def test_bad_input():
    with pytest.raises(ModelError, match="StudentT has no closed form"):
        tempered(dist.StudentT(3.0), 2.0)
    with pytest.raises(ModelError, match="beta=0"):
        tempered(dist.Normal(0.0, 1.0), 0)
    with pytest.raises(ModelError, match="beta=-1"):
        beta_vae_weight(-1.0)
