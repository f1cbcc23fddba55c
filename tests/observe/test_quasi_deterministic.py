"""QuasiDeterministic and NoiseScale: every sigma mode, the floor, the
initialization, the analytic optimum (eq. 7.3), probabilistic PCA's
closed-form maximum-likelihood noise, and bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam, ClippedAdam

import pgmdl
from pgmdl.errors import ModelError
from pgmdl.observe import SIGMA_MODES, NoiseScale, QuasiDeterministic
from tests.conftest import FAST


def observe_once(noise, loc, obs, **kwargs):
    """Run the observation inside a trace; return the site's message."""

    def model():
        return noise("x", loc, obs=obs, **kwargs)

    return pyro.poutine.trace(model).get_trace().nodes["x"]


def fit_sigma(noise, loc, obs, steps=600, lr=0.05, features=None):
    """Maximize log p(obs | loc) over the noise parameters only."""
    noise.scale.materialize(loc, obs, event_dim=noise.event_dim, features=features)
    optim = torch.optim.Adam(noise.parameters(), lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        loss = -noise.distribution(loc, obs, features=features).log_prob(obs).sum()
        loss.backward()
        optim.step()
    return noise.distribution(loc, obs, features=features).base_dist.scale.detach()


@pytest.mark.parametrize("mode", SIGMA_MODES)
def test_every_mode_observes_a_normal_site(mode, device):
    noise = QuasiDeterministic(mode, sigma_min=1e-2) if mode != "fixed" else QuasiDeterministic(0.3)
    loc, obs = torch.zeros(16, 3, device=device), torch.randn(16, 3, device=device)
    kwargs = {"features": torch.randn(16, 4, device=device)} if mode == "local" else {}
    site = observe_once(noise, loc, obs, **kwargs)
    fn = site["fn"]
    assert isinstance(fn, dist.Independent) and isinstance(fn.base_dist, dist.Normal)
    assert fn.event_shape == (3,) and fn.batch_shape == (16,)
    assert site["infer"]["observe"]["observation"].startswith("x = f(·) + ε, σ")
    scale = fn.base_dist.scale
    assert scale.device.type == device.type
    assert bool((scale >= 1e-2).all())
    for p in noise.parameters():
        assert p.device.type == device.type


def test_learned_sigma_starts_at_the_data_spread(device):
    obs = 3.0 * torch.randn(500, 4, device=device) + 10.0
    for mode in ("global", "per-dim"):
        noise = QuasiDeterministic(mode, sigma_min=1e-3)
        scale = observe_once(noise, torch.zeros_like(obs), obs)["fn"].base_dist.scale
        spread = obs.var(0).mean().sqrt()
        torch.testing.assert_close(scale, torch.full_like(scale, float(spread)), rtol=1e-4, atol=0)
    noise = QuasiDeterministic("global", init=0.7)
    scale = observe_once(noise, torch.zeros_like(obs), obs)["fn"].base_dist.scale
    assert torch.allclose(scale, torch.full_like(scale, 0.7))


def test_local_sigma_starts_flat_and_learns_heteroscedastic_noise(device):
    torch.manual_seed(0)
    h = torch.rand(1000, 1, device=device)
    true_sigma = 0.05 + 0.5 * h  # noise grows with the feature
    obs = true_sigma * torch.randn(1000, 4, device=device)
    loc = torch.zeros_like(obs)
    noise = QuasiDeterministic("local", sigma_min=1e-3, init=1.0, hidden=(16,)).to(device)
    first = observe_once(noise, loc, obs, features=h)["fn"].base_dist.scale
    assert torch.allclose(first, torch.ones_like(first), atol=1e-5)  # zero-initialized head
    learned = fit_sigma(noise, loc, obs, steps=250, lr=0.03, features=h)
    # the ML sigma(h) is the true one: compare on the feature grid
    error = (learned[:, 0] - true_sigma[:, 0]).abs() / true_sigma[:, 0]
    assert float(error.mean()) < 0.1


@pytest.mark.parametrize("update", ["batch", "running"])
def test_analytic_sigma_is_the_root_mean_squared_error(update, device):
    torch.manual_seed(1)
    obs, loc = torch.randn(64, 5, device=device), 0.3 * torch.randn(64, 5, device=device)
    noise = QuasiDeterministic("analytic", sigma_min=1e-3, update=update)
    scale = observe_once(noise, loc, obs)["fn"].base_dist.scale
    expected = (obs - loc).pow(2).mean().sqrt()  # eq. 7.3: sigma^2 = e^2 / D
    torch.testing.assert_close(scale, torch.full_like(scale, float(expected)))
    # it maximizes the likelihood over isotropic sigma
    fn = dist.Normal(loc, expected).to_event(1)
    for factor in (0.98, 1.02):
        assert (
            fn.log_prob(obs).sum()
            > dist.Normal(loc, factor * expected).to_event(1).log_prob(obs).sum()
        )
    per_dim = QuasiDeterministic("analytic-per-dim", sigma_min=1e-3)
    scale = observe_once(per_dim, loc, obs)["fn"].base_dist.scale
    torch.testing.assert_close(scale[0], (obs - loc).pow(2).mean(0).sqrt())


def test_running_analytic_sigma_is_an_exponential_average(device):
    noise = QuasiDeterministic("analytic", update="running", momentum=0.25)
    loc = torch.zeros(10, 2, device=device)
    errors = [1.0, 3.0, 2.0]
    for e in errors:
        observe_once(noise, loc, torch.full((10, 2), math.sqrt(e), device=device))
    running = errors[0]
    for e in errors[1:]:
        running = 0.75 * running + 0.25 * e
    assert float(noise.last_sigma) == pytest.approx(math.sqrt(running), rel=1e-5)
    noise.eval()  # evaluation does not move the average
    observe_once(noise, loc, torch.full((10, 2), 100.0, device=device))
    assert float(noise.last_sigma) == pytest.approx(math.sqrt(running), rel=1e-5)
    sampled = observe_once(noise, loc, None)  # generation uses the average
    assert float(sampled["fn"].base_dist.scale[0, 0]) == pytest.approx(math.sqrt(running), 1e-5)


def test_analytic_sigma_without_data_needs_init():
    noise = QuasiDeterministic("analytic")
    with pytest.raises(ModelError, match="no observation"):
        observe_once(noise, torch.zeros(3, 2), None)
    noise = QuasiDeterministic("analytic", init=0.4)
    assert float(observe_once(noise, torch.zeros(3, 2), None)["fn"].base_dist.scale[0, 0]) == (
        pytest.approx(0.4)
    )


@pytest.mark.parametrize("mode", ["global", "per-dim", "local", "analytic"])
def test_the_floor_holds_whatever_the_parameters(mode, device):
    floor = 0.05
    noise = QuasiDeterministic(mode, sigma_min=floor)
    loc = torch.zeros(8, 3, device=device)
    obs = loc.clone()  # a perfect reconstruction: the unfloored optimum is sigma = 0
    features = torch.randn(8, 2, device=device)
    observe_once(noise, loc, obs, features=features)
    with torch.no_grad():
        for p in noise.parameters():
            p.fill_(-1e4)
    scale = observe_once(noise, loc, obs, features=features)["fn"].base_dist.scale.detach()
    assert bool((scale >= floor).all())
    assert float(scale.min()) == pytest.approx(floor, rel=1e-6)


@pytest.mark.parametrize("mode", ["global", "per-dim"])
def test_learned_sigma_converges_to_the_analytic_optimum(mode, device):
    torch.manual_seed(2)
    obs = torch.randn(400, 3, device=device) * torch.tensor([0.1, 0.5, 1.0], device=device)
    loc = torch.zeros_like(obs)
    learned = fit_sigma(QuasiDeterministic(mode, sigma_min=1e-3), loc, obs)
    mse = obs.pow(2).mean(0)
    expected = mse.sqrt() if mode == "per-dim" else mse.mean().sqrt().expand(3)
    torch.testing.assert_close(learned[0], expected, rtol=0.01, atol=0)


def test_probabilistic_pca_learns_the_maximum_likelihood_noise(device):
    """Tipping & Bishop (1999): for x = W z + b + ε, ε ~ N(0, σ²I), the maximum
    likelihood σ² is the mean of the D − q smallest eigenvalues of the sample
    covariance. The posterior is Gaussian and linear in x, so NaMIGuide can be
    exact and the ELBO's optimum is the likelihood's: the learned global sigma
    (a model parameter, trained with the guide by pgmdl.fit) must reach it."""
    torch.manual_seed(3)
    D, q, n = 6, 2, 3000
    W = torch.randn(D, q)
    x = (torch.randn(n, q) @ W.T + 0.3 * torch.randn(n, D) * torch.linspace(0.5, 1.5, D)).to(device)
    eig = torch.linalg.eigvalsh(torch.cov(x.T.cpu(), correction=0)).double()
    sigma_ml = float(eig[: D - q].mean().sqrt())

    decoder = torch.nn.Linear(q, D).to(device)
    noise = QuasiDeterministic("global", sigma_min=1e-3)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(q, device=device), 1.0).to_event(1))
            return noise("x", decoder(z), obs=x)

    guide = pgmdl.NaMIGuide(model, hidden=())
    pgmdl.fit(
        model,
        guide,
        x,
        epochs=40 if FAST else 80,
        batch_size=500,
        optim=ClippedAdam({"lr": 0.02, "lrd": 0.999}),
        progress=False,
        kl_every=0,
        seed=0,
    )
    assert float(noise.last_sigma) == pytest.approx(sigma_ml, rel=0.05)


def test_tempering_with_a_learned_sigma_is_compensated_exactly(device):
    """Footnote 9 of §7.A: tempering a Gaussian of learned scale is a
    reparametrization sigma² → beta sigma², which learning undoes."""
    torch.manual_seed(4)
    obs = 0.4 * torch.randn(300, 2, device=device)
    loc = torch.zeros_like(obs)
    plain = fit_sigma(QuasiDeterministic("global"), loc, obs)
    beta = 4.0
    tempered = QuasiDeterministic("global", temper=beta)
    effective = fit_sigma(tempered, loc, obs)
    torch.testing.assert_close(effective, plain, rtol=0.01, atol=0)
    raw_sigma = tempered.scale.sigma_min + torch.nn.functional.softplus(tempered.scale.raw)
    expected = float(plain[0, 0]) / math.sqrt(beta)
    assert float(raw_sigma.detach()) == pytest.approx(expected, rel=0.01)


def test_beta_vae_weight_scales_the_site(device):
    noise = QuasiDeterministic(0.5, beta_vae=4.0)
    loc, obs = torch.zeros(5, 2, device=device), torch.ones(5, 2, device=device)
    trace = pyro.poutine.trace(lambda: noise("x", loc, obs=obs)).get_trace()
    trace.compute_log_prob()
    site = trace.nodes["x"]
    assert site["scale"] == 0.25
    plain = dist.Normal(loc, 0.5).to_event(1).log_prob(obs).sum()
    torch.testing.assert_close(trace.log_prob_sum(), 0.25 * plain)
    assert "β-VAE weight 1/4" in site["infer"]["observe"]["observation"]


def test_augment_adds_noise_of_the_floor(device):
    noise = QuasiDeterministic("global", sigma_min=0.2)
    batch = torch.zeros(20000, device=device)
    noisy = noise.augment(batch)
    assert float(noisy.std()) == pytest.approx(0.2, rel=0.03)
    assert noise.augment(batch, scale=0.0).equal(batch)
    with pytest.raises(ModelError, match="tensor batch"):
        noise.augment((batch,))


def test_fit_applies_the_transform_to_training_batches(device):
    seen = []
    noise = QuasiDeterministic("global", sigma_min=0.1)
    decoder = torch.nn.Linear(1, 2).to(device)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, device=device), 1.0).to_event(1))
            return noise("x", decoder(z), obs=x)

    def transform(batch):
        seen.append(batch.clone())
        return noise.augment(batch)

    x = torch.zeros(12, 2, device=device)
    guide = pgmdl.NaMIGuide(model)
    pgmdl.fit(model, guide, x, epochs=2, batch_size=6, progress=False, kl_every=0,
              transform=transform)  # fmt: skip
    assert len(seen) == 4 and all(b.shape == (6, 2) for b in seen)
    with pytest.raises(TypeError, match="transform must return a tensor"):
        pgmdl.fit(model, guide, x, epochs=1, progress=False, kl_every=0,
                  transform=lambda b: (b,))  # fmt: skip


def test_svi_trains_the_noise_parameters_through_the_param_store(device):
    noise = QuasiDeterministic("global", sigma_min=1e-3, init=2.0)
    obs = 0.1 * torch.randn(256, 3, device=device)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            return noise("x", torch.zeros_like(x), obs=x)

    svi = SVI(model, lambda x: None, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(obs)
    assert "x.noise$$$scale.raw" in pyro.get_param_store()
    assert float(noise.last_sigma) == pytest.approx(float(obs.pow(2).mean().sqrt()), rel=0.05)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("sigma_min", [0.0, -1.0, float("nan"), float("inf")])
def test_floor_must_be_positive(sigma_min):
    with pytest.raises(ModelError, match="sigma_min"):
        QuasiDeterministic("global", sigma_min=sigma_min)


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ModelError, match="'learned' is not a noise-scale mode.*global"):
        QuasiDeterministic("learned")
    with pytest.raises(ModelError, match="fixed sigma"):
        QuasiDeterministic(-0.5)
    with pytest.raises(ModelError, match="mode name"):
        QuasiDeterministic(None)
    with pytest.raises(ModelError, match="head= is only used"):
        NoiseScale("global", head=torch.nn.Linear(2, 1))


def test_shape_mismatch_names_the_site_and_shapes():
    noise = QuasiDeterministic("global")
    with pytest.raises(ModelError, match=r"site 'x'.*\(4, 3\).*\(4, 5\)") as err:
        observe_once(noise, torch.zeros(4, 3), torch.zeros(4, 5))
    assert "event_dim=1" in str(err.value)
    noise = QuasiDeterministic("global")
    with pytest.raises(ModelError, match="do not broadcast"):
        observe_once(noise, torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ModelError, match="event_dim=2"):
        observe_once(QuasiDeterministic(0.1, event_dim=2), torch.zeros(3), None)


def test_other_bad_input():
    with pytest.raises(ModelError, match="features="):
        observe_once(QuasiDeterministic("local"), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ModelError, match="NaN"):
        observe_once(QuasiDeterministic("global"), torch.zeros(2, 2), torch.full((2, 2), math.nan))
    with pytest.raises(ModelError, match="temper"):
        QuasiDeterministic("global", temper=0.0)
    noise = QuasiDeterministic(0.1)
    observe_once(noise, torch.zeros(2), torch.zeros(2))
    with pytest.raises(ModelError, match="one QuasiDeterministic per observed site"):
        pyro.poutine.trace(lambda: noise("y", torch.zeros(2), obs=torch.zeros(2))).get_trace()


def test_a_floored_observation_has_a_bounded_likelihood(device):
    """Whatever the decoder and the noise parameters, log p(x | z) of n points of
    dimension p is at most -(n p / 2) log(2 π σ_min²) (Mattei & Frellsen 2018)."""
    from pgmdl.observe.theory import gaussian_likelihood_bound

    torch.manual_seed(5)
    floor = 0.05
    obs = torch.randn(30, 4, device=device)
    bound = gaussian_likelihood_bound(30, 4, floor**2)
    for mode in ("global", "per-dim", "local"):
        noise = QuasiDeterministic(mode, sigma_min=floor)
        features = torch.randn(30, 3, device=device)
        for scale in (1.0, 10.0, 1e3):
            observe_once(noise, obs, obs, features=features)  # materialize
            with torch.no_grad():
                for name, p in noise.named_parameters():  # random head, low offset
                    p.copy_(torch.randn_like(p) if "head" in name else -scale * torch.rand_like(p))
                fn = noise.distribution(obs, obs, features=features)  # loc = x: the worst case
                log_lik = float(fn.log_prob(obs).sum())
            assert log_lik <= bound + 1e-6
        if mode != "local":  # every sigma at the floor: the bound is attained
            assert log_lik == pytest.approx(bound, rel=1e-4)


@pytest.mark.parametrize("update", ["batch", "running"])
def test_analytic_sigma_compiles_and_trains_with_nami(update, device):
    """The analytic sigma reads the observation, but as a plug-in estimate: the
    compiled graph has no x -> x edge and NaMIGuide builds as for any sigma."""
    decoder = torch.nn.Linear(2, 3).to(device)
    noise = QuasiDeterministic("analytic", update=update)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, device=device), 1.0).to_event(1))
            return noise("x", decoder(z), obs=x)

    x = torch.randn(64, 3, device=device)
    graph = pgmdl.compile(model, x)
    assert set(graph.dag.edges()) == {("z", "x")}
    assert "σ² = MSE" in graph["x"].observation
    guide = pgmdl.NaMIGuide(model)
    result = pgmdl.fit(model, guide, x, epochs=5, batch_size=32, progress=False, kl_every=0)
    assert all(math.isfinite(v) for v in result.losses)
