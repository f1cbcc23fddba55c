"""Likelihood estimation and imputation against factor analysis' closed forms.

z ~ N(0, I_k), x | z ~ N(μ + W z, Ψ): marginally x ~ N(μ, W Wᵀ + Ψ), so
log p(x) and p(x_m | x_o) are Gaussian in closed form. The exact posterior
is N(M⁻¹ Wᵀ Ψ⁻¹ (x − μ), M⁻¹) with M = I + Wᵀ Ψ⁻¹ W; a mean-field guide (the
a diagonal Gaussian) is what a VAE's encoder would
learn: Metropolis-within-Gibbs is exact with it, pseudo-Gibbs is not.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgmdl
from pgmdl.errors import ModelError

K_DIM, X_DIM = 2, 5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    yield
    torch.set_num_threads(threads)


class FactorAnalysis:
    def __init__(self, device):
        g = torch.Generator().manual_seed(1)
        w = torch.randn(X_DIM, K_DIM, generator=g) * 1.5
        w[:, 1] = 0.9 * w[:, 0] + 0.4 * w[:, 1]  # correlated factors: a correlated posterior
        self.w = w.to(device)
        self.mu = torch.randn(X_DIM, generator=g).to(device)
        self.psi = (0.2 + torch.rand(X_DIM, generator=g)).to(device) * 0.3
        m = torch.eye(K_DIM, device=device) + self.w.T @ (self.w / self.psi[:, None])
        self.post_cov = torch.linalg.inv(m)
        self.sigma = self.w @ self.w.T + torch.diag(self.psi)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(K_DIM), 1.0).to_event(1))
            loc = self.mu + z @ self.w.T
            pyro.sample("x", dist.Normal(loc, self.psi.sqrt()).to_event(1), obs=x)

    def post_mean(self, x):
        return ((x - self.mu) / self.psi) @ self.w @ self.post_cov

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            tril = torch.linalg.cholesky(self.post_cov)
            pyro.sample("z", dist.MultivariateNormal(self.post_mean(x), scale_tril=tril))

    def mean_field_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            scale = torch.diagonal(self.post_cov).sqrt()  # the exact marginals, no correlation
            pyro.sample("z", dist.Normal(self.post_mean(x), scale).to_event(1))

    def conditional(self, x, observed):
        o, m = observed, ~observed
        s = self.sigma
        gain = s[m][:, o] @ torch.linalg.inv(s[o][:, o])
        mean = self.mu[m] + gain @ (x[o] - self.mu[o])
        cov = s[m][:, m] - gain @ s[o][:, m]
        return mean, cov


@pytest.fixture
def fa(device):
    return FactorAnalysis(device)


def test_log_likelihood_matches_the_marginal(fa, device):
    x = dist.MultivariateNormal(fa.mu, fa.sigma).sample((20,))
    exact = dist.MultivariateNormal(fa.mu, fa.sigma).log_prob(x)
    tight = pgmdl.log_likelihood(fa.model, fa.exact_guide, x, num_particles=10)
    assert torch.allclose(tight.per_point, exact, atol=1e-3)  # exact proposal: no variance
    assert float(tight.se.max()) < 1e-3
    ll = pgmdl.log_likelihood(fa.model, fa.mean_field_guide, x, num_particles=3000)
    gap = ll.per_point - exact
    assert bool((gap.abs() < 4 * ll.se + 0.02).all()), (gap, ll.se)
    assert ll.total == pytest.approx(float(exact.sum()), abs=4 * ll.total_se + 0.1)
    one = pgmdl.log_likelihood(fa.model, fa.mean_field_guide, x, num_particles=1)
    assert one.mean < ll.mean  # K = 1 is the ELBO: looser


def _chains(fa, method, guide, device, steps=200):
    """2000 chains on copies of one data point with its last two entries missing."""
    x = dist.MultivariateNormal(fa.mu, fa.sigma).sample()
    observed = torch.tensor([True, True, True, False, False], device=device)
    data = x.expand(2000, X_DIM).clone()
    data[:, ~observed] = 0.0
    mask = observed.expand(2000, X_DIM)
    result = pgmdl.impute(fa.model, guide, data, mask, method=method, num_steps=steps)
    draws = result.samples[0][:, ~observed]  # the chains' last states
    return x, observed, draws, result


def test_metropolis_within_gibbs_samples_the_exact_conditional(fa, device):
    x, observed, draws, result = _chains(fa, "mwg", fa.mean_field_guide, device)
    mean, cov = fa.conditional(x, observed)
    se = (torch.diagonal(cov) / draws.shape[0]).sqrt()
    assert bool(((draws.mean(0) - mean).abs() < 4 * se).all())
    assert torch.allclose(torch.cov(draws.T), cov, rtol=0.12, atol=0.01)
    assert bool((result.samples[0][:, observed] == x[observed]).all())  # observed kept
    assert 0.05 < float(result.acceptance.mean()) < 1.0


def test_pseudo_gibbs_is_biased_with_an_approximate_guide(fa, device):
    x, observed, draws, _ = _chains(fa, "pseudo-gibbs", fa.mean_field_guide, device)
    _, cov = fa.conditional(x, observed)
    ratio = torch.diagonal(torch.cov(draws.T)) / torch.diagonal(cov)
    # without the posterior correlation, the chain's conditional spread is far too wide
    assert float(ratio.min()) > 1.5, ratio
    # and exact with the exact posterior (then pseudo-Gibbs is a Gibbs sampler)
    x, observed, draws, _ = _chains(fa, "pseudo-gibbs", fa.exact_guide, device)
    mean, cov = fa.conditional(x, observed)
    assert torch.allclose(torch.cov(draws.T), cov, rtol=0.12, atol=0.01)


def test_importance_imputation(fa, device):
    x = dist.MultivariateNormal(fa.mu, fa.sigma).sample((50,))
    observed = torch.rand(50, X_DIM, device=device) < 0.6
    observed[:, 0] = True
    result = pgmdl.impute(
        fa.model,
        fa.mean_field_guide,
        x,
        observed,
        method="importance",
        num_particles=4000,
        num_samples=20,
    )
    for n in range(5):
        if observed[n].all():
            continue
        mean, cov = fa.conditional(x[n], observed[n])
        error = (result.mean[n][~observed[n]] - mean).abs()
        assert bool((error < 0.25 * torch.diagonal(cov).sqrt() + 0.02).all()), (error, cov)
    assert result.samples.shape == (20, 50, X_DIM)
    assert bool((result.samples[:, observed] == x[observed]).all())


def test_bad_input(fa, device):
    x = torch.zeros(4, X_DIM, device=device)
    with pytest.raises(pgmdl.ArgumentError, match="must match"):
        pgmdl.impute(fa.model, fa.exact_guide, x, torch.ones(4, 3, dtype=torch.bool))
    mask = torch.ones(4, X_DIM, dtype=torch.bool, device=device)
    mask[2] = False
    with pytest.raises(pgmdl.ArgumentError, match=r"rows \[2\] have every value missing"):
        pgmdl.impute(fa.model, fa.exact_guide, x, mask)

    def other_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    with pytest.raises(ModelError, match="another model"):
        pgmdl.impute(fa.model, other_guide, x, torch.ones_like(mask))
    with pytest.raises(pgmdl.ArgumentError, match="method"):
        pgmdl.impute(fa.model, fa.exact_guide, x, torch.ones_like(mask), method="gibbs")


@pytest.mark.parametrize(
    "family",
    [
        lambda loc: dist.Normal(loc, 0.5),
        lambda loc: dist.Bernoulli(logits=loc),
        lambda loc: dist.StudentT(3.0, loc, 0.5),
    ],
    ids=["normal", "bernoulli", "student-t"],
)
def test_per_dimension_scores_every_factorizing_family(family):
    from pgmdl.infer.importance import per_dimension

    loc = torch.randn(4, 6)
    base = family(loc)
    value = base.sample()
    per_dim = per_dimension(base.to_event(1), value)
    assert per_dim.shape == (4, 6)
    assert torch.allclose(per_dim.sum(-1), base.to_event(1).log_prob(value))
    masked = per_dimension(base.mask(torch.ones(4, 6, dtype=torch.bool)).to_event(1), value)
    assert torch.allclose(masked, per_dim)
    with pytest.raises(ModelError, match="factorize"):
        per_dimension(dist.MultivariateNormal(loc, torch.eye(6)), value)


def test_with_missing_scores_and_trains_on_observed_entries_only():
    from pgmdl.infer.missing import missing_guide, with_missing

    weight = torch.nn.Parameter(torch.ones(3))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(weight, 1.0).to_event(1), obs=x)

    masked = with_missing(model)
    x = torch.tensor([[0.0, 5.0, 1.0]])
    mask = torch.tensor([[True, False, True]])
    trace = pyro.poutine.trace(masked).get_trace(x, mask=mask)
    expected = dist.Normal(weight, 1.0).log_prob(x)[0, [0, 2]].sum()
    assert torch.allclose(trace.log_prob_sum(), expected)
    trace.log_prob_sum().backward()
    assert weight.grad[1] == 0 and weight.grad[0] != 0  # the missing entry gives no gradient
    assert pgmdl.compile(masked, x, mask=mask)["x"].is_observed

    def latent_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample(
                "x", dist.Normal(z.sum(-1, keepdim=True).expand(-1, 3), 1.0).to_event(1), obs=x
            )

    guide = missing_guide(with_missing(latent_model))
    guide(x * mask, mask=mask)  # the encoder reads the zero-filled data
    with pytest.raises(ModelError, match="Independent"):

        def scalar(x):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

        pyro.poutine.trace(with_missing(scalar)).get_trace(torch.tensor(0.0), mask=mask)


def test_log_likelihood_rejects_another_models_guide(fa, device):
    def other_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    with pytest.raises(ModelError, match="another model"):
        pgmdl.log_likelihood(fa.model, other_guide, torch.zeros(3, X_DIM, device=device))


def test_log_likelihood_of_observed_entries():
    """z ~ N(0, 1), x_d | z ~ N(z, 1): log p(x_1) = log N(x_1; 0, 2), through a
    with_missing model or the mask= argument."""
    from pgmdl.infer.missing import with_missing

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample(
                "x", dist.Normal(z[..., None].expand(z.shape + (2,)), 1.0).to_event(1), obs=x
            )

    def guide(x, mask=None):  # the exact posterior given x_1 alone: N(x_1 / 2, 1/2)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x[:, 0] / 2, 0.5**0.5))

    x = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])
    exact = dist.Normal(0.0, 2**0.5).log_prob(x[:, 0])
    ll = pgmdl.log_likelihood(with_missing(model), guide, {"x": x, "mask": mask}, num_particles=10)
    assert torch.allclose(ll.per_point, exact, atol=1e-5)
    ll = pgmdl.log_likelihood(model, guide, x, mask=mask, num_particles=10)
    assert torch.allclose(ll.per_point, exact, atol=1e-5)
    with pytest.raises(pgmdl.ArgumentError, match="must match"):
        pgmdl.log_likelihood(model, guide, x, mask=mask[:, :1])


def test_estimates_leave_a_guide_in_training_mode_untouched():
    """Running statistics (NaMIGuide's ParentNorm) must not move while estimating."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            loc = z.sum(-1, keepdim=True).expand(z.shape[:-1] + (4,))
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    x = torch.randn(64, 4) + 3.0
    guide = pgmdl.NaMIGuide(model)
    guide(x)
    guide.train()
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    pgmdl.log_likelihood(model, guide, x[:8], num_particles=20)
    mask = torch.ones(8, 4, dtype=torch.bool)
    mask[:, :2] = False
    pgmdl.impute(model, guide, x[:8], mask, method="mwg", num_steps=5)
    pgmdl.impute(model, guide, x[:8], mask, method="importance", num_particles=10)
    after = guide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert guide.training


def test_missing_guide_reads_the_mask_only_when_asked():
    """The mask is an input of the encoder (a parent of z); read_mask=False feeds
    it a constant, so the encoder's output no longer depends on the mask."""
    from pgmdl.infer.missing import missing_guide, with_missing

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample(
                "x", dist.Normal(z.sum(-1, keepdim=True).expand(-1, 3), 1.0).to_event(1), obs=x
            )

    masked = with_missing(model)
    x = torch.zeros(6, 3)  # zero-filled data identical for both masks
    one = torch.tensor([[True, False, True]]).expand(6, 3)
    other = torch.tensor([[False, True, False]]).expand(6, 3)
    for read_mask in (True, False):
        pyro.clear_param_store()
        guide = missing_guide(masked, hidden=(8,), read_mask=read_mask)
        guide(x, mask=torch.rand(6, 3) < 0.5)  # varied masks: the normalizer sees a spread
        assert "mask" in guide.parents("z")
        guide.eval()
        with torch.no_grad():  # the output layer starts at zero: move every weight
            for param in guide.parameters():
                param.add_(torch.randn_like(param))

        def loc(mask, guide=guide):
            with torch.no_grad():
                trace = pyro.poutine.trace(guide).get_trace(x, mask=mask)
            return trace.nodes["z"]["fn"].base_dist.loc

        differs = not torch.allclose(loc(one), loc(other))
        assert differs == read_mask
