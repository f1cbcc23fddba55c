"""The tuned model is a Pyro program; bad input gets clear errors and never
touches the original model."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive

import pgmdl
from pgmdl.boltzmann import TunedModel, criterion_gradient_norms, rejection_sample
from pgmdl.errors import ArgumentError, ArgumentTypeError, SiteNotFoundError, TuningError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    yield
    torch.set_num_threads(threads)


class Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)
        )

    def model(self, x=None, batch_size=1):
        pyro.module("decoder", self)
        n = batch_size if x is None else x.shape[0]
        ref = next(self.parameters())
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(ref.new_zeros(n, 2), 1.0).to_event(1))
            mean = pyro.deterministic("mean", self.net(z), event_dim=1)
            pyro.sample("flag", dist.Bernoulli(logits=mean[..., 0]))
            return pyro.sample("x", dist.Normal(mean, 0.1).to_event(1), obs=x)


def peak(values):
    return values["mean"].amax(-1)


@pytest.fixture
def decoder(device):
    torch.manual_seed(0)
    return Decoder().to(device)


def quick(model, **kwargs):
    options = dict(steps=60, num_eval=1024, num_base=2048, model_kwargs={"batch_size": 1})
    options.update(kwargs)
    return pgmdl.boltzmann_tune(model, peak, "z", **options)


def test_tuned_model_is_a_pyro_program(decoder, device):
    tuned = quick(decoder.model, lam=2.0)
    assert isinstance(tuned, TunedModel)
    assert all(p.device.type == device.type for p in tuned.parameters())
    samples = Predictive(tuned, num_samples=3)(batch_size=4)
    assert samples["z"].shape == (3, 4, 2) and samples["x"].shape == (3, 4, 5)
    # same structure as the original model, the tuned site drawn from the flow
    original, graph = pgmdl.compile(decoder.model, batch_size=4), pgmdl.compile(tuned, batch_size=4)
    assert set(graph.dag.edges) == set(original.dag.edges)
    assert graph["z"].distribution == "TunedDistribution"
    assert graph["z"].event_shape == (2,) and graph["z"].plates == ("data",)
    trace = pyro.poutine.trace(tuned).get_trace(batch_size=3)
    trace.compute_log_prob()
    assert trace.nodes["z"]["log_prob"].shape == (3,)
    assert torch.isfinite(trace.nodes["z"]["log_prob"]).all()


def test_tuned_model_renders_like_the_original(decoder):
    tuned = quick(decoder.model, lam=2.0)
    drawn = pgmdl.render(tuned, model_kwargs={"batch_size": 4}, guide="nami").source
    original = pgmdl.render(decoder.model, model_kwargs={"batch_size": 4}, guide="nami").source
    for node in ("z", "mean", "x", "data"):
        assert node in drawn
    assert drawn.count("->") == original.count("->")


def test_tuned_log_density_is_the_change_of_variables(decoder):
    """log p̂(x̂) from the cached sample equals the inverse-flow evaluation."""
    tuned = quick(decoder.model, lam=3.0)
    trace = pyro.poutine.trace(tuned).get_trace(batch_size=64)
    fn, value = trace.nodes["z"]["fn"], trace.nodes["z"]["value"]
    cached = fn.log_prob(value)
    recomputed = fn.dist.log_prob(value.clone())  # not in the cache: inverts the flow
    assert torch.allclose(cached, recomputed, atol=1e-4)


def test_state_dict_round_trip(decoder):
    tuned = quick(decoder.model, lam=2.0)
    fresh = pgmdl.boltzmann.prepare(decoder.model, peak, "z", model_kwargs={"batch_size": 1})
    fresh.load_state_dict(tuned.state_dict())
    torch.manual_seed(3)
    a = tuned.sample(64)["z"]
    torch.manual_seed(3)
    b = fresh.sample(64)["z"]
    assert torch.allclose(a, b)


def test_original_model_is_untouched(decoder):
    before = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    quick(decoder.model, lam=2.0)
    with pytest.raises(TuningError):
        quick(decoder.model, target_value=1e6, max_updates=2, steps=10)
    for k, v in decoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in decoder.parameters())
    torch.manual_seed(0)
    trace = pyro.poutine.trace(decoder.model).get_trace(batch_size=2)
    assert type(trace.nodes["z"]["fn"]).__name__ != "TunedDistribution"


def test_unreachable_target_reports_the_best_value(decoder):
    with pytest.raises(TuningError, match="best reached value") as info:
        quick(decoder.model, target_value=1e6, max_updates=2, steps=10)
    assert info.value.best is not None and info.value.best.value < 1e6
    assert "original model is unchanged" in str(info.value)


def test_site_that_is_not_a_latent(decoder):
    with pytest.raises(SiteNotFoundError, match="Did you mean 'z'"):
        pgmdl.boltzmann_tune(decoder.model, peak, "zz", lam=1.0, model_kwargs={"batch_size": 1})
    with pytest.raises(TuningError, match="observed in this call"):
        pgmdl.boltzmann_tune(
            decoder.model, peak, "x", lam=1.0, model_kwargs={"x": torch.zeros(1, 5)}
        )
    with pytest.raises(TuningError, match="deterministic"):
        pgmdl.boltzmann_tune(decoder.model, peak, "mean", lam=1.0, model_kwargs={"batch_size": 1})
    with pytest.raises(TuningError, match="discrete"):
        pgmdl.boltzmann_tune(decoder.model, peak, "flag", lam=1.0, model_kwargs={"batch_size": 1})


def test_criterion_returning_nan(decoder):
    def bad(values):
        return torch.log(values["mean"][..., 0])  # negative means give NaN

    with pytest.raises(TuningError, match="NaN"):
        pgmdl.boltzmann_tune(decoder.model, bad, "z", lam=1.0, model_kwargs={"batch_size": 1})


def test_criterion_that_is_not_differentiable(decoder):
    with pytest.raises(TuningError, match="not differentiable"):
        pgmdl.boltzmann_tune(
            decoder.model, lambda v: v["flag"], "z", lam=1.0, model_kwargs={"batch_size": 1}
        )
    with pytest.raises(TuningError, match="not differentiable"):
        pgmdl.boltzmann_tune(
            decoder.model,
            lambda v: v["mean"].detach().amax(-1),
            "z",
            lam=1.0,
            model_kwargs={"batch_size": 1},
        )
    with pytest.raises(TuningError, match="flat"):
        pgmdl.boltzmann_tune(
            decoder.model,
            lambda v: (v["z"][..., 0] > 0).float() + 0 * v["z"][..., 0],  # a step
            "z",
            lam=1.0,
            model_kwargs={"batch_size": 1},
        )


def test_criterion_with_the_wrong_shape(decoder):
    with pytest.raises(TuningError, match="one value per execution"):
        pgmdl.boltzmann_tune(
            decoder.model, lambda v: v["mean"], "z", lam=1.0, model_kwargs={"batch_size": 1}
        )
    with pytest.raises(TuningError, match="batch_size=1"):
        pgmdl.boltzmann_tune(decoder.model, peak, "z", lam=1.0, model_kwargs={"batch_size": 3})


def test_constant_criterion(decoder):
    with pytest.raises(TuningError, match="constant"):
        pgmdl.boltzmann_tune(
            decoder.model,
            lambda v: 0 * v["mean"].sum(-1),
            "z",
            lam=1.0,
            model_kwargs={"batch_size": 1},
        )


def test_argument_checks(decoder):
    with pytest.raises(ArgumentTypeError, match="exactly one"):
        pgmdl.boltzmann_tune(decoder.model, peak, "z", lam=1.0, target_kl=1.0)
    with pytest.raises(ArgumentError, match="target_kl"):
        pgmdl.boltzmann_tune(decoder.model, peak, "z", target_kl=-1.0)
    with pytest.raises(ArgumentError, match="flow"):
        pgmdl.boltzmann_tune(decoder.model, peak, "z", lam=1.0, flow="glow")


def test_particle_plate_uses_the_models_own_items(decoder):
    tuned = pgmdl.boltzmann_tune(
        decoder.model,
        peak,
        "z",
        lam=2.0,
        steps=60,
        particle_plate="data",
        model_kwargs={"batch_size": 256},
        num_eval=1024,
        num_base=2048,
    )
    step = tuned.history[-1]
    assert step.value > float(tuned.f_base.mean())
    assert tuned.f_base.numel() == 2048


def test_gradient_norms_and_rejection_sampling():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    norms = criterion_gradient_norms(model, lambda v: 3 * v["z"][..., 0], "z", num_samples=2000)
    assert torch.allclose(norms, torch.ones_like(norms), atol=0.1)  # |∇f| / sd(f) = 1
    values, f, threshold = rejection_sample(
        model, lambda v: v["z"][..., 1], 0.01, num_samples=50_000
    )
    assert f.numel() == 500 and values["z"].shape == (500, 2)
    assert threshold == pytest.approx(2.326, abs=0.08)
    assert bool((f >= threshold).all())


def test_compvae_global_latent_is_tuned_through_its_plate():
    """BTGM on a model of the multiset plug-in: CompVAE's z given the parts' w."""
    from models.compvae import CompVAE

    torch.manual_seed(0)
    m = CompVAE(label_dim=3, x_dim=8, w_dim=2, z_dim=2, hidden=16)
    labels = torch.randn(1, 3, 3).expand(256, 3, 3)
    mask = torch.tensor([[True, True, False]]).expand(256, 3)

    def crit(v):
        return v["z"][..., 0]

    tuned = pgmdl.boltzmann_tune(
        m.model,
        crit,
        ["w", "z"],
        lam=1.0,
        model_args=(labels, mask),
        particle_plate="data",
        steps=150,
        num_eval=2048,
        num_base=4096,
    )
    step = tuned.history[-1]
    assert step.value > float(tuned.f_base.mean()) + 3 * step.value_se
    assert 0 < step.kl < step.theory.kl + 0.1
    assert set(step.site_kl) == {"w", "z"} and step.site_kl["w"] >= -3 * step.kl_se
