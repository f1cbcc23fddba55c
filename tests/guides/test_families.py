"""Variational families: chosen from the support, correct shapes, support and start."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to

from pgmdl.errors import GuideError
from pgmdl.guides.families import FAMILY_NAMES, default_family, make_family

PRIORS = {
    "normal": (dist.Normal(torch.zeros(3), 1.0).to_event(1), "normal"),
    "lognormal": (dist.LogNormal(torch.zeros(3), 1.0).to_event(1), "normal"),
    "beta": (dist.Beta(torch.full((3,), 2.0), 3.0).to_event(1), "normal"),
    "dirichlet": (dist.Dirichlet(torch.ones(4)), "normal"),
    "uniform": (dist.Uniform(torch.full((3,), 2.0), 5.0).to_event(1), "normal"),
    "lkj": (dist.LKJCholesky(3, 1.0), "normal"),
    "bernoulli": (dist.Bernoulli(torch.full((3,), 0.2)).to_event(1), "bernoulli"),
    "categorical": (dist.Categorical(torch.tensor([0.2, 0.3, 0.5])), "categorical"),
    "onehot": (dist.OneHotCategorical(torch.tensor([0.2, 0.3, 0.5])), "one-hot-categorical"),
}


@pytest.mark.parametrize("name", PRIORS)
def test_default_family_samples_in_the_support_with_the_right_shapes(name, device):
    prior, expected = PRIORS[name]
    support = prior.support
    base = support.base_constraint if isinstance(support, constraints.independent) else support
    assert default_family(base) == expected
    shape = prior.batch_shape + prior.event_shape
    family = make_family(None, "z", support, shape)
    raw = family.init_bias(None).to(device).expand(5, 2, family.num_params)
    q = family(raw)
    assert q.batch_shape == (5, 2)
    assert q.event_shape == shape
    value = q.sample()
    assert bool(support.check(value).all())
    assert torch.isfinite(q.log_prob(value)).all()
    assert q.log_prob(value).shape == (5, 2)


def test_normal_family_starts_at_the_typical_value_with_unit_scale():
    family = make_family(None, "z", constraints.positive, torch.Size([2]))
    raw = family.init_bias(torch.tensor([1.0, math.e]))
    q = family(raw)
    base = q.base_dist.base_dist  # TransformedDistribution(Independent(Normal))
    assert torch.allclose(base.loc, torch.tensor([0.0, 1.0]))  # log of the typical value
    assert torch.allclose(base.scale, torch.ones(2), atol=2e-4)
    assert isinstance(family.transform, type(biject_to(constraints.positive)))


def test_simplex_family_works_in_the_unconstrained_space_of_dimension_k_minus_1():
    family = make_family(None, "w", constraints.simplex, torch.Size([4]))
    assert family.num_params == 2 * 3
    init = torch.tensor([0.1, 0.2, 0.3, 0.4])
    q = family(family.init_bias(init))
    # the median of a logistic-normal is the transform of the loc: the typical value
    assert torch.allclose(family.transform(q.base_dist.base_dist.loc), init, atol=1e-5)


def test_categorical_family_starts_at_the_prior_probabilities():
    probs = torch.tensor([0.2, 0.3, 0.5])
    family = make_family(None, "c", constraints.integer_interval(0, 2), torch.Size([]))
    q = family(family.init_bias(probs))
    assert torch.allclose(q.base_dist.probs if hasattr(q, "base_dist") else q.probs, probs)


def test_bernoulli_family_starts_at_the_prior_probabilities():
    family = make_family(None, "b", constraints.boolean, torch.Size([2]))
    q = family(family.init_bias(torch.tensor([0.2, 0.9])))
    assert torch.allclose(q.base_dist.probs, torch.tensor([0.2, 0.9]), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "support", "shape"),
    [
        ("softplus-normal", constraints.positive, (3,)),
        ("lognormal", constraints.positive, (3,)),
        ("beta", constraints.unit_interval, (3,)),
        ("dirichlet", constraints.simplex, (4,)),
    ],
)
def test_named_families_live_on_their_support(name, support, shape):
    family = make_family(name, "z", support, torch.Size(shape))
    q = family(family.init_bias(None))
    value = q.rsample((7,))
    assert bool(support.check(value).all())
    assert torch.isfinite(q.log_prob(value)).all()


def test_a_support_without_a_family_names_the_site_and_the_way_out():
    with pytest.raises(GuideError, match=r"'counts'.*nonnegative_integer.*conditionals="):
        make_family(None, "counts", dist.Poisson(3.0).support, torch.Size([]))


def test_a_family_on_the_wrong_support_is_refused():
    with pytest.raises(GuideError, match=r"family 'beta' does not live on the support of site 'z'"):
        make_family("beta", "z", constraints.real, torch.Size([]))
    with pytest.raises(GuideError, match=r"unknown family 'gamma'"):
        make_family("gamma", "z", constraints.positive, torch.Size([]))
    assert "gamma" not in FAMILY_NAMES


def test_a_full_covariance_family_closes_the_gap_a_diagonal_one_cannot():
    """z ~ N(0, I_2), x ~ N(z_1 + z_2, 0.1^2): the posterior correlates z_1 and z_2
    (correlation ~ -1). The best diagonal Gaussian stays
    KL = 1/2 (sum_i log Lambda_ii - log det Lambda) away (Lambda the posterior
    precision); the "mvn" family reaches the exact evidence."""
    import math

    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO

    import pgmdl

    noise = 0.1

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), noise), obs=x)

    x = torch.randn(64, generator=torch.Generator().manual_seed(0)) * math.sqrt(2 + noise**2)
    exact = dist.Normal(0.0, math.sqrt(2 + noise**2)).log_prob(x).mean().item()
    precision = torch.eye(2) + torch.ones(2, 2) / noise**2
    diagonal_floor = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()
    gaps = {}
    for family in ("normal", "mvn"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = pgmdl.NaMIGuide(model, families={"z": family})
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(1500):
            svi.step(x)
        guide.eval()
        with torch.no_grad():
            loss = Trace_ELBO(num_particles=200, vectorize_particles=True).loss(model, guide, x)
        gaps[family] = loss / 64 + exact
    assert diagonal_floor > 1.0  # the test means something: the floor is large
    assert gaps["normal"] > 0.9 * diagonal_floor, gaps
    assert gaps["mvn"] < 0.1, gaps
