"""KLWarmup: the latent terms weighted by beta, against a closed-form beta-ELBO."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pgmdl.errors import ArgumentError
from pgmdl.infer import KLWarmup


def _model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def _guide(x: torch.Tensor) -> None:
    loc = pyro.param("loc", torch.zeros_like(x))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 0.3))


def _closed_form(x: torch.Tensor, z: torch.Tensor, loc: torch.Tensor, beta: float) -> float:
    """-log p(x|z) + beta KL(q || p) for q = N(loc, 0.3), p = N(0, 1), p(x|z) = N(z, 0.5)."""
    s = 0.3
    nll = -dist.Normal(z, 0.5).log_prob(x)
    kl = -torch.log(torch.tensor(s)) + (s**2 + loc**2) / 2 - 0.5
    return float((nll + beta * kl).sum())


def test_the_schedule_is_linear_from_start_to_one() -> None:
    warmup = KLWarmup(steps=4, start=0.2)
    betas = []
    for _ in range(6):
        betas.append(warmup.beta)
        warmup.advance()
    assert betas == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert KLWarmup(0).beta == 1.0


@pytest.mark.parametrize("steps_done", [0, 1, 3])
def test_the_loss_is_the_closed_form_beta_elbo(device: torch.device, steps_done: int) -> None:
    x = torch.tensor([0.5, -1.0, 2.0], device=device)
    warmup = KLWarmup(steps=4)
    warmup.advance(steps_done)
    pyro.clear_param_store()
    pyro.param("loc", torch.tensor([0.2, -0.4, 1.0], device=device))
    pyro.set_rng_seed(0)
    elbo = TraceMeanField_ELBO()  # the KL term in closed form, log p(x|z) at one draw
    loss = elbo.loss(warmup.wrap(_model), warmup.wrap(_guide), x)
    pyro.set_rng_seed(0)
    z = pyro.poutine.trace(_guide).get_trace(x).nodes["z"]["value"].detach()
    loc = pyro.param("loc").detach()
    assert loss == pytest.approx(_closed_form(x, z, loc, warmup.beta), rel=1e-5)
    assert warmup.beta == steps_done / 4


def test_only_latent_sites_are_weighted_in_model_and_guide() -> None:
    x = torch.tensor([0.5, -1.0])
    warmup = KLWarmup(steps=10, start=0.3)
    model_trace = pyro.poutine.trace(warmup.wrap(_model)).get_trace(x)
    guide_trace = pyro.poutine.trace(warmup.wrap(_guide)).get_trace(x)
    assert model_trace.nodes["z"]["scale"] == pytest.approx(0.3)
    assert guide_trace.nodes["z"]["scale"] == pytest.approx(0.3)
    assert model_trace.nodes["x"]["scale"] == 1.0


def test_warmup_in_svi_reaches_the_posterior_mean() -> None:
    """After the warm-up the loss is the ELBO again: the guide's loc goes to the exact
    posterior mean x * 1 / (1 + 0.25) of the conjugate model."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    x = torch.tensor([0.5, -1.0, 2.0])
    warmup = KLWarmup(steps=100)
    svi = SVI(
        warmup.wrap(_model),
        warmup.wrap(_guide),
        pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.997}),
        Trace_ELBO(),
    )
    for _ in range(1500):
        svi.step(x)
        warmup.advance()
    assert pyro.param("loc").detach() == pytest.approx(x / 1.25, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": -1}, "steps=-1"),
        ({"steps": 2.5}, "steps=2.5"),
        ({"steps": 10, "start": 1.5}, "start=1.5"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        KLWarmup(**kwargs)


@pytest.mark.parametrize(
    "name", ["vae_reshape", "structured_args", "ssvae_m2_labelled", "ssvae_m2_unlabelled"]
)
def test_programs_as_users_write_them(name: str) -> None:
    """On the conformance programs (data reshaped in the model, namedtuple and config
    arguments, M2's y observed in labelled batches and latent in unlabelled ones), with
    their hand-written guides: at beta = 1 the loss is the plain ELBO's to the bit, and at
    beta = 0.5 exactly the sites that are latent in a call are weighted."""
    from tests.conformance.programs import build

    program = build(name)
    calls = list(program.train[0].batches())[:2] if program.train else [program.call]
    for args, kwargs in calls:
        warmup = KLWarmup(steps=2)
        warmup.advance(2)
        pyro.set_rng_seed(0)
        plain = Trace_ELBO().loss(program.model, program.guide, *args, **kwargs)
        pyro.set_rng_seed(0)
        weighted = Trace_ELBO().loss(
            warmup.wrap(program.model), warmup.wrap(program.guide), *args, **kwargs
        )
        assert weighted == plain
        warmup = KLWarmup(steps=2)
        warmup.advance(1)
        trace = pyro.poutine.trace(warmup.wrap(program.model)).get_trace(*args, **kwargs)
        sites = [n for n in trace.nodes.values() if n["type"] == "sample"]
        assert sites
        for node in sites:
            expected = 1.0 if node["is_observed"] else 0.5
            assert float(node["scale"]) == pytest.approx(expected), node["name"]
