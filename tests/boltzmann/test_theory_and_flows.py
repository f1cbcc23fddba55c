"""The Boltzmann family's formulas (eq. 10.6-10.9, 10.22-10.23) and the site flows."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from pgmdl.boltzmann import Moments, SiteFlow, reweighted, second_order_step, tail_kl
from pgmdl.boltzmann.theory import kl_derivatives, value_derivatives


@pytest.fixture
def skewed():
    """f ~ Exp(1) under p: p̂_λ is Exp(1 - λ), with KL and E f in closed form."""
    g = torch.Generator().manual_seed(0)
    return torch.empty(2_000_000, dtype=torch.float64).exponential_(generator=g)


@pytest.mark.parametrize("lam", [0.1, 0.3, 0.5])
def test_reweighting_matches_the_exponential_tilt(skewed, lam):
    rate = 1.0 - lam
    point = reweighted(skewed, lam)
    assert point.value == pytest.approx(1.0 / rate, rel=0.01)
    exact_kl = math.log(rate) + 1.0 / rate - 1.0  # KL(Exp(r) || Exp(1))
    assert point.kl == pytest.approx(exact_kl, rel=0.02)


@pytest.mark.parametrize("lam", [0.2, 0.4])
def test_derivative_identities(lam):
    """Eq. 10.6-10.9 against finite differences of the closed forms for Exp."""

    def kl(x):
        return math.log(1 - x) + 1 / (1 - x) - 1

    def value(x):
        return 1 / (1 - x)

    r = 1 - lam
    m = Moments(mean=1 / r, var=1 / r**2, third=2 / r**3)  # moments of Exp(r)
    h = 1e-4
    d1, d2 = kl_derivatives(lam, m)
    assert d1 == pytest.approx((kl(lam + h) - kl(lam - h)) / (2 * h), rel=1e-5)
    assert d2 == pytest.approx((kl(lam + h) - 2 * kl(lam) + kl(lam - h)) / h**2, rel=1e-3)
    v1, v2 = value_derivatives(m)
    assert v1 == pytest.approx((value(lam + h) - value(lam - h)) / (2 * h), rel=1e-5)
    assert v2 == pytest.approx((value(lam + h) - 2 * value(lam) + value(lam - h)) / h**2, rel=1e-3)


def test_second_order_step_solves_the_quadratic():
    # K(λ) = λ²/2 from λ = 1 (K = 0.5, K' = 1, K'' = 1) to K = 2: λ = 2
    assert 1.0 + second_order_step(0.5 - 2.0, 1.0, 1.0) == pytest.approx(2.0)
    # from λ = 0 the first derivative vanishes: λ = sqrt(2 D / Var)
    assert second_order_step(-6.91, 0.0, 1.0) == pytest.approx(math.sqrt(2 * 6.91))
    # no real root: falls back to Newton
    assert second_order_step(1.0, 1.0, 1.0) == pytest.approx(-1.0)
    assert tail_kl(0.001) == pytest.approx(6.9078, abs=1e-4)
    with pytest.raises(ValueError):
        tail_kl(0.0)


@pytest.mark.parametrize("flow", ["spline", "affine"])
@pytest.mark.parametrize("features,context", [(1, 0), (1, 2), (3, 0), (3, 2)])
def test_site_flow_starts_at_the_identity(flow, features, context):
    g = SiteFlow("z", (features,), constraints.independent(constraints.real, 1), context, flow)
    base = dist.Normal(torch.randn(5, features), 2.0).to_event(1)
    g.calibrate(base)
    x = base.sample()
    c = torch.randn(5, context) if context else None
    y, ladj = g.transform(base, c).call_and_ladj(x)
    assert torch.allclose(y, x, atol=1e-5)
    assert torch.allclose(ladj, torch.zeros(5), atol=1e-5)


@pytest.mark.parametrize(
    "support,base",
    [
        (
            constraints.independent(constraints.real, 1),
            dist.Normal(torch.zeros(3), 3.0).to_event(1),
        ),
        (constraints.positive, dist.Gamma(2.0, 1.0)),
        (constraints.unit_interval, dist.Beta(2.0, 3.0)),
    ],
)
def test_site_flow_log_density_is_the_change_of_variables(support, base):
    """log p̂(x̂) = log p(x) - log|det ∂g/∂x|, checked with autograd's Jacobian."""
    torch.manual_seed(0)
    event = tuple(base.event_shape)
    g = SiteFlow("s", event, support, 0, "spline")
    for p in g.parameters():
        p.data.normal_(0.0, 0.3)  # away from the identity
    g.calibrate(base)
    pushed = g.pushforward(base, None)
    x = base.sample()
    t = g.transform(base, None)
    jac = torch.autograd.functional.jacobian(lambda v: t(v), x)
    jac = jac.reshape(max(1, x.numel()), max(1, x.numel()))
    expected = base.log_prob(x) - torch.linalg.slogdet(jac).logabsdet
    y = t(x).detach()
    assert bool(support.check(y).all())
    assert torch.allclose(pushed.log_prob(y), expected, atol=1e-3)
