"""FastSVI: the same losses, gradients and parameters as pyro.infer.SVI for the
same random draws, and the ordinary path (with a warning) where it cannot trace."""

from __future__ import annotations

import copy
import importlib
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import PyroOptim
from torch import nn

import pgmdl
from pgmdl.infer import FastSVI, FastSVIWarning
from tests.conformance.programs import BUILDERS

STEPS = 5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    yield
    torch.set_num_threads(threads)
    pyro.clear_param_store()


Build = Callable[[], tuple[Callable, Callable, list[tuple[tuple, dict]]]]


def run(
    build: Build,
    fast: bool,
    loss: Callable[[], Any] = Trace_ELBO,
    steps: int = STEPS,
    lr: float = 1e-2,
    seed: int = 0,
) -> dict[str, Any]:
    """``steps`` steps of SVI or FastSVI on fresh copies; losses, parameters, buffers."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide, calls = build()
    cls = FastSVI if fast else SVI
    svi = cls(model, guide, pyro.optim.Adam({"lr": lr}), loss())
    pyro.set_rng_seed(seed + 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = []
        for i in range(steps):
            args, kwargs = calls[i % len(calls)]
            losses.append(svi.step(*args, **kwargs))
    store = pyro.get_param_store()
    params = {name: value.detach().clone() for name, value in store.items()}
    buffers = [b.clone() for b in guide.buffers()] if isinstance(guide, nn.Module) else []
    fast_warnings = [str(w.message) for w in caught if issubclass(w.category, FastSVIWarning)]
    return {"losses": losses, "params": params, "buffers": buffers, "svi": svi,
            "warnings": fast_warnings}  # fmt: skip


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["losses"] == b["losses"]
    assert a["params"].keys() == b["params"].keys()
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
    assert len(a["buffers"]) == len(b["buffers"])
    for x, y in zip(a["buffers"], b["buffers"], strict=True):
        assert torch.equal(x, y)


def compare(build: Build, **kwargs: Any) -> dict[str, Any]:
    """Run both; assert equality; return FastSVI's run."""
    eager = run(build, fast=False, **kwargs)
    fast = run(build, fast=True, **kwargs)
    assert_same(eager, fast)
    return fast


# ---------------------------------------------------------------------------
# A small VAE with a hand-written guide and with NaMIGuide


class Decoder(nn.Module):
    def __init__(self, x_dim: int = 6, z_dim: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, 8), nn.Softplus(), nn.Linear(8, x_dim))
        self.z_dim = z_dim

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.net(z)).to_event(1), obs=x)


class Encoder(nn.Module):
    def __init__(self, x_dim: int = 6, z_dim: int = 2) -> None:
        super().__init__()
        self.net = nn.Linear(x_dim, 2 * z_dim)
        self.z_dim = z_dim

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self)
        raw = self.net(x)
        loc, scale = raw[:, : self.z_dim], nn.functional.softplus(raw[:, self.z_dim :]) + 1e-3
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def data(n: int = 10) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 6), 0.5), generator=torch.Generator().manual_seed(3))


def hand_vae() -> tuple:
    decoder, encoder = Decoder(), Encoder()
    return decoder.model, encoder.guide, [((data(),), {})]


def nami_vae() -> tuple:
    decoder = Decoder()
    guide = pgmdl.NaMIGuide(decoder.model, hidden=(8,)).setup(data())
    return decoder.model, guide, [((data(),), {})]


@pytest.mark.parametrize("loss", [Trace_ELBO, TraceMeanField_ELBO])
@pytest.mark.parametrize("build", [hand_vae, nami_vae], ids=["hand", "nami"])
def test_same_losses_gradients_and_parameters_as_svi(build, loss):
    fast = compare(build, loss=loss, steps=6)
    assert fast["svi"].fallback is None
    assert fast["warnings"] == []
    spec = next(iter(fast["svi"]._specs.values()))
    assert spec.seen == 6 and spec.graph is not None  # replayed from the 4th step


@pytest.mark.parametrize("loss", [Trace_ELBO, TraceMeanField_ELBO])
def test_several_particles(loss):
    compare(nami_vae, loss=lambda: loss(num_particles=3))


def test_parent_norm_statistics_stay_exact_in_their_cumulative_phase():
    """NaMIGuide's running statistics use rate 1/count for 100 steps: traced as tensors."""
    fast = compare(nami_vae, steps=12)
    norms = [m for m in fast["svi"].guide.modules() if isinstance(m, pgmdl.nn.ParentNorm)]
    assert norms and all(m._seen == 12 and int(m.count) == 12 for m in norms)


class CapturingAdam(PyroOptim):
    """Adam that records the gradients it is given (not a plain PyroOptim:
    FastSVI calls it exactly as SVI does)."""

    def __init__(self) -> None:
        super().__init__(torch.optim.Adam, {"lr": 0.01})
        self.grads: list[dict[str, torch.Tensor]] = []

    def __call__(self, params, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        params = list(params)
        store = pyro.get_param_store()
        self.grads.append({store.param_name(p): p.grad.clone() for p in params})
        super().__call__(params, *args, **kwargs)


@pytest.mark.parametrize("build", [hand_vae, nami_vae], ids=["hand", "nami"])
def test_gradients_equal_svis(build):
    grads = []
    for cls in (SVI, FastSVI):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide, calls = build()
        optim = CapturingAdam()
        svi = cls(model, guide, optim, Trace_ELBO())
        pyro.set_rng_seed(1)
        for _ in range(5):  # the 4th and 5th are replayed
            svi.step(*calls[0][0])
        grads.append(optim.grads)
    assert len(grads[0]) == len(grads[1]) == 5
    for eager, fast in zip(*grads, strict=True):
        assert eager.keys() == fast.keys()
        for name in eager:
            assert torch.equal(eager[name], fast[name]), name


def test_evaluate_loss_is_svis():
    results = []
    for fast in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide, calls = hand_vae()
        svi = (FastSVI if fast else SVI)(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        pyro.set_rng_seed(1)
        for _ in range(4):
            svi.step(*calls[0][0])
        results.append(svi.evaluate_loss(*calls[0][0]))
    assert results[0] == results[1]


# ---------------------------------------------------------------------------
# The zoo and the conformance programs


def zoo_names() -> list[str]:
    names = []
    for name in ("vae", "cvae", "hvae", "m2", "digit_vae", "household_vae", "manifold_vae",
                 "dmm", "dvbf", "gmm", "compvae"):  # fmt: skip
        module = importlib.import_module(f"models.{name}")
        if hasattr(module, "model") and hasattr(module, "example_args"):
            names.append(name)
    return names


def zoo_build(name: str) -> Build:
    def build() -> tuple:  # a fresh module: fresh networks (seeded by run)
        module = importlib.reload(importlib.import_module(f"models.{name}"))
        args, kwargs = module.example_args()
        guide = pgmdl.NaMIGuide(module.model).setup(*args, **kwargs)
        return module.model, guide, [(args, kwargs)]

    return build


#: zoo models that take the ordinary path: the GMM's discrete assignment (its
#: NaMIGuide leaves it to enumeration); M2 is called with its labels observed
#: (no discrete latent)
DISCRETE_ZOO = {"gmm"}


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_models_with_namiguide(name):
    fast = compare(zoo_build(name))
    if name in DISCRETE_ZOO:
        assert fast["svi"].fallback is not None and len(fast["warnings"]) == 1
    else:
        assert fast["svi"].fallback is None, fast["svi"].fallback


def conformance_build(name: str) -> Build:
    def build() -> tuple:
        program = BUILDERS[name]()
        return program.model, program.guide, [program.call]

    return build


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_conformance_programs_with_their_hand_written_guides(name):
    fast = compare(conformance_build(name), lr=1e-3)
    reason = fast["svi"].fallback
    if reason is not None:  # a dynamic or non-reparameterized program: said why
        assert len(fast["warnings"]) == 1 and reason in fast["warnings"][0]


# ---------------------------------------------------------------------------
# Plug-ins: a multiset model and a quasi-deterministic observation


def test_compvae_multiset_model():
    """CompVAE's multiset plate and set encoder check that the parts are finite
    (``if bool(...): raise``): pgmdl's own input checks run at trace time, and
    the step is replayed with SVI's losses and parameters."""
    fast = compare(zoo_build("compvae"), steps=6)
    assert fast["svi"].fallback is None, fast["svi"].fallback
    assert fast["warnings"] == []


@pytest.mark.parametrize("sigma", ["global", "local", 0.1])
def test_quasi_deterministic_model(sigma):
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))

    def build() -> tuple:
        noise = pgmdl.QuasiDeterministic(sigma, sigma_min=1e-3)
        weights = nn.Linear(2, 4)

        def model(x: torch.Tensor) -> None:
            pyro.module("weights", weights)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
                noise("x", weights(z), obs=x, **({"features": z} if sigma == "local" else {}))

        return model, pgmdl.NaMIGuide(model, hidden=(8,)).setup(x), [((x,), {})]

    fast = compare(build)
    assert fast["svi"].fallback is None, fast["svi"].fallback


# ---------------------------------------------------------------------------
# Specialization and fallbacks


def test_a_model_that_changes_shape_between_calls_specializes_again():
    decoder, encoder = Decoder(), Encoder()
    calls = [((data(10),), {}), ((data(4),), {})]

    def build() -> tuple:
        return decoder.model, encoder.guide, calls

    state = copy.deepcopy((decoder.state_dict(), encoder.state_dict()))

    def fresh() -> tuple:
        decoder.load_state_dict(state[0])
        encoder.load_state_dict(state[1])
        return build()

    fast = compare(fresh, steps=10)
    svi = fast["svi"]
    assert svi.fallback is None and len(svi._specs) == 2
    assert len(fast["warnings"]) == 1 and "new argument shapes" in fast["warnings"][0]


def test_too_many_signatures_fall_back_for_good():
    decoder, encoder = Decoder(), Encoder()
    svi = FastSVI(decoder.model, encoder.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO(),
                  max_specializations=3)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(2, 8):
            svi.step(data(n))
    messages = [str(w.message) for w in caught if issubclass(w.category, FastSVIWarning)]
    assert len(messages) == 2  # a new signature (once), then too many
    assert "new argument shapes" in messages[0] and "max_specializations=3" in messages[1]
    assert "max_specializations" in svi.fallback


def test_unsupported_loss_falls_back_with_a_reason():
    model, guide, _ = hand_vae()
    with pytest.warns(FastSVIWarning, match="TraceGraph_ELBO is not supported"):
        svi = FastSVI(model, guide, pyro.optim.Adam({"lr": 0.01}), TraceGraph_ELBO())
    assert isinstance(svi.step(data()), float)
    with pytest.warns(FastSVIWarning, match="vectorize_particles"):
        FastSVI(model, guide, pyro.optim.Adam({"lr": 0.01}),
                Trace_ELBO(num_particles=2, vectorize_particles=True))  # fmt: skip


def test_control_flow_on_a_sampled_value_falls_back_naming_the_line():
    def model(x: torch.Tensor) -> None:
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        if loc > 0:  # control flow on a sampled value
            loc = loc * 2
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def build() -> tuple:
        return model, AutoNormal(model), [((torch.randn(5),), {})]

    fast = compare(build)
    reason = fast["svi"].fallback
    assert reason is not None and "reads a tensor's value in Python" in reason
    assert "test_fast_svi.py" in reason and "if loc > 0" in reason
    assert len(fast["warnings"]) == 1


def test_a_users_check_that_raises_still_falls_back():
    """Only pgmdl's own input checks run at trace time; the program's take the ordinary path."""

    def model(x: torch.Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x is not finite")
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    fast = compare(lambda: (model, AutoNormal(model), [((torch.randn(5),), {})]))
    assert "if not bool(torch.isfinite(x).all())" in fast["svi"].fallback


def test_non_reparameterized_guide_falls_back():
    def model(x: torch.Tensor) -> None:
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        c = pyro.sample("c", dist.Bernoulli(p))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        a = pyro.param("a", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
        pyro.sample("p", dist.Beta(2.0, 2.0))
        pyro.sample("c", dist.Bernoulli(a))

    fast = compare(lambda: (model, guide, [((torch.randn(5),), {})]))
    assert "'c' (Bernoulli) is not reparameterized" in fast["svi"].fallback


def test_python_state_that_changes_every_step_is_detected():
    counter = {"n": 0}

    def model(x: torch.Tensor) -> None:
        counter["n"] += 1
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc + counter["n"], 1.0), obs=x)

    def build() -> tuple:
        counter["n"] = 0
        return model, AutoNormal(model), [((torch.randn(5),), {})]

    fast = compare(build)
    assert "changed between two consecutive steps" in fast["svi"].fallback


def test_param_store_cleared_specializes_again():
    """After ``pyro.clear_param_store()`` the modules register their parameters
    anew: FastSVI says so, traces again, and goes on as SVI does."""

    def steps(cls: type) -> list[float]:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide, calls = hand_vae()
        svi = cls(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        pyro.set_rng_seed(1)
        losses = [svi.step(*calls[0][0]) for _ in range(4)]
        pyro.clear_param_store()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses += [svi.step(*calls[0][0]) for _ in range(4)]
        if cls is FastSVI:
            assert [str(w.message) for w in caught][0].startswith("FastSVI: the param store")
            assert svi.fallback is None
        return losses

    assert steps(SVI) == steps(FastSVI)


def test_optimizer_state_is_shared_with_pyros_per_parameter_optimizers():
    model, guide, calls = hand_vae()
    optim = pyro.optim.Adam({"lr": 0.01})
    svi = FastSVI(model, guide, optim, Trace_ELBO())
    for _ in range(6):
        svi.step(*calls[0][0])
    state = optim.get_state()
    steps = {int(s["state"][0]["step"]) for s in state.values()}
    assert steps == {6}


def test_other_optimizers_are_called_as_svi_calls_them():
    """A scheduler is not a plain PyroOptim: called per parameter, as SVI does."""
    runs = []
    for cls in (SVI, FastSVI):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide, calls = hand_vae()
        optim = pyro.optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.01}, "gamma": 0.9}
        )
        svi = cls(model, guide, optim, Trace_ELBO())
        pyro.set_rng_seed(1)
        runs.append([svi.step(*calls[0][0]) for _ in range(5)])
    assert runs[0] == runs[1] and svi.fallback is None
