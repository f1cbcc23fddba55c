"""The sequence models of the zoo (models/dmm.py, models/dvbf.py): they run on
the SYNTHETIC pendulum and on random data, have the sites each step should
have, score nothing on padded steps, and compile to the per-step structure
their docstrings state."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro.poutine.subsample_messenger import _Subsample

import pgmdl
from models.dmm import DMM
from models.dvbf import DVBF, FullyProbabilisticSSM
from pgmdl.datasets.controlled_pendulum import pendulum
from tests.conftest import load_zoo

T, N = 5, 4
LENGTHS = torch.tensor([5, 3, 5, 1])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _mask(device) -> torch.Tensor:
    return (torch.arange(T)[None, :] < LENGTHS[:, None]).to(device)


def _pendulum(device):
    data = pendulum(N, T, generator=torch.Generator().manual_seed(0), device=device)
    return data.observations, data.controls


def _random(device, x_dim=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, T, x_dim, generator=g).to(device), torch.randn(N, T, 1, generator=g).to(
        device
    )


def _build(kind: str, device):
    torch.manual_seed(0)
    if kind == "dmm":
        return DMM().to(device)
    if kind == "dvbf":
        return DVBF().to(device)
    return FullyProbabilisticSSM().to(device)


KINDS = ["dmm", "dvbf", "markov"]


def _call(kind, x, u, mask=None):
    args = (x,) if kind == "dmm" else (x, u)
    return (*args, mask)


def _sample_sites(trace) -> list[str]:
    """The sample sites, the plate's subsample site left out."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not isinstance(site["fn"], _Subsample)
    ]


def _latents(trace):
    return {
        name: trace.nodes[name]["value"]
        for name in _sample_sites(trace)
        if not trace.nodes[name]["is_observed"]
        and not trace.nodes[name]["infer"].get("_deterministic")
    }


def _step_of(name: str) -> int | None:
    """The step whose mask covers a latent: z_t -> t, beta_s -> s + 1, w -> None."""
    if name.startswith("z_"):
        return int(name[2:])
    if name.startswith("beta_"):
        return int(name[5:]) + 1
    return None


@pytest.mark.parametrize("data", ["pendulum", "random"])
@pytest.mark.parametrize("kind", KINDS)
def test_runs_with_the_expected_sites_per_step(kind, data, device):
    net = _build(kind, device)
    x, u = _pendulum(device) if data == "pendulum" else _random(device)
    trace = poutine.trace(net.model).get_trace(*_call(kind, x, u, _mask(device)))
    names = _sample_sites(trace)
    if kind == "dvbf":
        want = ["w", "z_0", "x_0"]
        want += [name for t in range(1, T) for name in (f"beta_{t - 1}", f"z_{t}", f"x_{t}")]
    else:
        want = [name for t in range(T) for name in (f"z_{t}", f"x_{t}")]
    assert names == want
    for t in range(T):
        site = trace.nodes[f"x_{t}"]
        assert (
            site["is_observed"] and site["value"] is x[:, t] or torch.equal(site["value"], x[:, t])
        )
        assert [f.name for f in site["cond_indep_stack"]] == ["sequences"]
        assert torch.equal(site["mask"], _mask(device)[:, t])
        z = trace.nodes[f"z_{t}"]
        assert z["value"].shape == (N, net.z_dim)
        assert z["fn"].batch_shape == (N,) and z["fn"].event_shape == (net.z_dim,)
        if kind == "dvbf":
            assert z["infer"].get("_deterministic")
            if t > 0:
                beta = trace.nodes[f"beta_{t - 1}"]
                assert not beta["is_observed"] and beta["value"].shape == (N, net.beta_dim)
        else:
            assert not z["is_observed"]
    assert trace.nodes["_RETURN"]["value"].shape == (N, T, net.z_dim)
    assert torch.isfinite(trace.log_prob_sum())


@pytest.mark.parametrize("kind", KINDS)
def test_padded_steps_count_for_nothing(kind, device):
    net = _build(kind, device)
    x, u = _random(device)
    mask = _mask(device)
    trace = poutine.trace(net.model).get_trace(*_call(kind, x, u, mask))
    latents = _latents(trace)

    def log_joint(x, u, latents, mask):
        conditioned = poutine.condition(net.model, data=latents)
        return poutine.trace(conditioned).get_trace(*_call(kind, x, u, mask)).log_prob_sum()

    base = log_joint(x, u, latents, mask)
    g = torch.Generator().manual_seed(2)
    padded = ~mask
    x2 = torch.where(padded[..., None], 5 * torch.randn(x.shape, generator=g).to(x), x)
    u2 = torch.where(padded[..., None], 5 * torch.randn(u.shape, generator=g).to(u), u)
    latents2 = {}
    for name, value in latents.items():
        step = _step_of(name)
        latents2[name] = (
            value if step is None else torch.where(padded[:, step, None], value + 3, value)
        )
    assert torch.equal(log_joint(x2, u2, latents2, mask), base)
    # without the mask the padded steps do count
    assert not torch.allclose(log_joint(x2, u2, latents2, None), base)
    # and changing a real step's observation changes the log joint
    x3 = x.clone()
    x3[0, T - 1] += 1.0
    assert not torch.equal(log_joint(x3, u, latents, mask), base)


@pytest.mark.parametrize("kind", KINDS)
def test_generates_without_data(kind, device):
    net = _build(kind, device)
    _, u = _random(device)
    if kind == "dmm":
        trace = poutine.trace(net.model).get_trace(batch_size=3, length=4)
        assert trace.nodes["x_3"]["value"].shape == (3, 16)
    else:
        trace = poutine.trace(net.model).get_trace(None, u)
        assert trace.nodes[f"x_{T - 1}"]["value"].shape == (N, 16)
    assert not any(s["is_observed"] for n, s in trace.nodes.items() if n.startswith("x_"))


def test_dmm_bernoulli_likelihood(device):
    net = DMM(x_dim=6, likelihood="bernoulli").to(device)
    x = (torch.rand(N, T, 6, generator=torch.Generator().manual_seed(3)) < 0.5).float().to(device)
    trace = poutine.trace(net.model).get_trace(x, _mask(device))
    assert type(trace.nodes["x_0"]["fn"].base_dist).__name__ == "Bernoulli"
    assert torch.isfinite(trace.log_prob_sum())
    with pytest.raises(ValueError, match="likelihood"):
        DMM(likelihood="poisson")


def test_dmm_annealing_scales_the_latent_terms(device):
    net = DMM().to(device)
    x, _ = _pendulum(device)
    trace = poutine.trace(net.model).get_trace(x, None, 0.1)
    assert trace.nodes["z_2"]["scale"] == 0.1 and trace.nodes["x_2"]["scale"] == 1.0


def test_dmm_compiles_to_a_markov_chain():
    net = _build("dmm", "cpu")
    x, _ = _pendulum("cpu")
    graph = pgmdl.compile(net.model, x, _mask("cpu"))
    print(graph.summary())
    assert set(graph.latent_sites) == {f"z_{t}" for t in range(T)}
    assert set(graph.observed_sites) == {f"x_{t}" for t in range(T)}
    assert graph.parents("z_0") == ()  # z_{-1} is a parameter
    for t in range(1, T):
        assert f"z_{t - 1}" in graph.parents(f"z_{t}")
        assert set(graph.parents(f"z_{t}")) == {f"z_{t - 1}"}
    for t in range(T):
        assert set(graph.parents(f"x_{t}")) == {f"z_{t}"}
    assert set(graph.inputs["mask"]) == {f"{v}_{t}" for t in range(T) for v in "zx"}


def test_dvbf_compiles_with_innovations_feeding_deterministic_states():
    net = _build("dvbf", "cpu")
    x, u = _pendulum("cpu")
    graph = pgmdl.compile(net.model, x, u, _mask("cpu"))
    print(graph.summary())
    assert set(graph.latent_sites) == {"w"} | {f"beta_{t}" for t in range(T - 1)}
    assert set(graph.deterministic_sites) == {f"z_{t}" for t in range(T)}
    assert set(graph.observed_sites) == {f"x_{t}" for t in range(T)}
    assert set(graph.parents("z_0")) == {"w"}
    for t in range(T - 1):
        assert graph.parents(f"beta_{t}") == ()
        # beta_t feeds z_{t+1} = f(z_t, u_t, beta_t), a deterministic site
        assert set(graph.parents(f"z_{t + 1}")) == {f"z_{t}", f"beta_{t}"}
        assert set(graph.children(f"beta_{t}")) == {f"z_{t + 1}"}
    for t in range(T):
        assert set(graph.parents(f"x_{t}")) == {f"z_{t}"}
    assert set(graph.inputs["u"]) == {f"z_{t}" for t in range(1, T)}


def test_fully_probabilistic_model_compiles_to_a_controlled_markov_chain():
    net = _build("markov", "cpu")
    x, u = _pendulum("cpu")
    graph = pgmdl.compile(net.model, x, u, _mask("cpu"))
    print(graph.summary())
    assert set(graph.latent_sites) == {f"z_{t}" for t in range(T)}
    assert not graph.deterministic_sites
    for t in range(1, T):
        assert set(graph.parents(f"z_{t}")) == {f"z_{t - 1}"}
    assert set(graph.inputs["u"]) == {f"z_{t}" for t in range(1, T)}


@pytest.mark.parametrize("name", ["dmm", "dvbf"])
def test_zoo_modules_load_with_their_example_args(name):
    loaded = load_zoo(name)
    trace = poutine.trace(loaded.model).get_trace(*loaded.args, **loaded.kwargs)
    assert trace.nodes["x_4"]["is_observed"]
    graph = pgmdl.compile(loaded.model, *loaded.args, **loaded.kwargs)
    assert "x_4" in graph.observed_sites


@pytest.mark.parametrize("kind", ["dmm", "dvbf"])
def test_nami_guide_samples_exactly_the_latents_and_trains(kind):
    """A smoke test of the guide machinery on these programs: the guide samples
    the model's latent sites (never the deterministic states) under the same
    masks, and a few SVI steps give finite losses."""
    net = _build(kind, "cpu")
    x, u = _pendulum("cpu")
    mask = _mask("cpu")
    args = _call(kind, x * mask[..., None], u, mask)
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(net.model)
    trace = poutine.trace(guide).get_trace(*args)
    sampled = set(_sample_sites(trace))
    model_trace = poutine.trace(net.model).get_trace(*args)
    assert sampled == set(_latents(model_trace))
    for name in sampled:
        step = _step_of(name)
        if step is not None:
            assert torch.equal(trace.nodes[name]["mask"], mask[:, step])
    svi = SVI(net.model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(*args) for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
