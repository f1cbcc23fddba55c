"""NaMIGuide: a drop-in, amortized AutoGuide with the NaMI inverse's structure."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.infer.autoguide import AutoGuide
from torch import nn

import pgmdl
from pgmdl.errors import GuideError, GuideWarning, SiteNotFoundError
from pgmdl.multiset.conditional import MultisetConditional
from tests.conftest import load_zoo


def _svi(model, guide, elbo=None, lr=1e-2):
    return SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo or Trace_ELBO())


def local_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def hierarchical(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


# ---------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", ["vae", "hvae", "m2", "cvae"])
def test_zoo_guides_follow_the_nami_inverse_and_train(name, device):
    zoo = load_zoo(name, device)
    guide = pgmdl.NaMIGuide(zoo.model)
    assert isinstance(guide, AutoGuide)
    guide.setup(*zoo.args, **zoo.kwargs)
    if name == "m2":
        # y is observed in labelled calls and latent in unlabelled ones: the guide
        # is the inverse of the unlabelled model with y sampled first, so that a
        # labelled call conditions z on the given y (the inverse of that call)
        unlabelled = pgmdl.compile(zoo.model, **{**zoo.kwargs, "y": None})
        inverse = pgmdl.invert(unlabelled, order=["z", "y"])
        labelled = pgmdl.invert(pgmdl.compile(zoo.model, *zoo.args, **zoo.kwargs))
        assert set(labelled.parents("z")) <= set(guide.parents("z"))
    else:
        inverse = pgmdl.invert(pgmdl.compile(zoo.model, *zoo.args, **zoo.kwargs))
    assert guide.sites == inverse.order
    for site in guide.sites:
        assert guide.parents(site) == inverse.parents(site)
    svi = _svi(zoo.model, guide)
    losses = [svi.step(*zoo.args, **zoo.kwargs) for _ in range(30)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    for p in guide.parameters():
        assert p.device.type == device.type


def test_guide_values_live_on_the_data_device(device):
    zoo = load_zoo("hvae", device)
    guide = pgmdl.NaMIGuide(zoo.model)
    values = guide(*zoo.args, **zoo.kwargs)
    assert {v.device.type for v in values.values()} == {device.type}


def test_the_structure_certificate_holds_for_nami_and_fails_for_mean_field():
    zoo = load_zoo("hvae")
    graph = pgmdl.compile(zoo.model, *zoo.args, **zoo.kwargs)
    nami = pgmdl.NaMIGuide(zoo.model, order="reverse").setup(*zoo.args, **zoo.kwargs)
    assert nami.parents("z1") == ("x", "z2")
    assert pgmdl.check_faithful(graph, nami.structure()).ok
    mean_field = pgmdl.NaMIGuide(zoo.model, structure="mean-field").setup(*zoo.args, **zoo.kwargs)
    assert mean_field.parents("z2") == ("x",) and mean_field.parents("z1") == ("x",)
    assert not pgmdl.check_faithful(graph, mean_field.structure()).ok


def test_global_latents_get_free_parameters_and_are_sampled_first():
    x = torch.randn(20)
    guide = pgmdl.NaMIGuide(hierarchical).setup(x)
    assert guide.sites == ("mu", "z")
    assert guide.parents("mu") == ()
    assert guide.parents("z") == ("x", "mu")
    graph = pgmdl.compile(hierarchical, x)
    # a free q(mu) is fitted to one data set: as an amortized structure it ignores x
    assert not pgmdl.check_faithful(graph, guide.structure()).ok
    amortized = pgmdl.NaMIGuide(hierarchical, "reverse", global_latents="amortized").setup(x)
    assert amortized.parents("mu") == ("x",)
    assert amortized.conditional("mu").parents[0].pooled_dims == (-1,)
    assert pgmdl.check_faithful(graph, amortized.structure()).ok


def test_a_model_without_plates_is_amortized_everywhere():
    def model(x):
        z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
        z1 = pyro.sample("z1", dist.Normal(z2, 1.0))
        pyro.sample("x", dist.Normal(z1, 1.0), obs=x)

    guide = pgmdl.NaMIGuide(model).setup(torch.tensor(0.3))
    assert guide.parents("z1") == ("x",) and guide.parents("z2") == ("z1",)


def test_hierarchical_min_fill_joins_the_replicates_of_z_when_globals_are_amortized():
    # min-fill samples mu last: every z_i is then coupled with every other one
    guide = pgmdl.NaMIGuide(hierarchical, global_latents="amortized").setup(torch.randn(5))
    assert isinstance(guide.conditional("z"), MultisetConditional)
    with pytest.warns(GuideWarning, match=r"couples the replicates of 'z' along plate\(s\)"):
        pgmdl.NaMIGuide(hierarchical, global_latents="amortized", joint_sites=()).setup(
            torch.randn(5)
        )


# ---------------------------------------------------------------------- amortization


def test_one_trained_guide_serves_any_batch_size_and_new_data(device):
    pyro.set_rng_seed(0)
    guide = pgmdl.NaMIGuide(local_model, hidden=(16,))
    svi = SVI(local_model, guide, pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.995}), Trace_ELBO())
    for _ in range(400):
        svi.step(torch.randn(64, device=device) * math.sqrt(1.25))
    # exact posterior: z | x ~ N(x / 1.25, 0.25 / 1.25); data points are independent,
    # so one call on a repeated batch draws many samples for each point
    x = torch.tensor([-2.0, 0.0, 1.0, 2.5], device=device)
    for batch in (x[:1], x):
        n = 4000
        samples = guide(batch.repeat(n))["z"].detach().reshape(n, -1)
        assert samples.shape[1] == batch.shape[0]
        assert torch.allclose(samples.mean(0), batch / 1.25, atol=0.1)
        assert torch.allclose(samples.var(0), torch.full_like(batch, 0.2), rtol=0.2)


def test_subsampled_plates_index_the_full_data_and_scale_the_loss():
    n = 50
    data = torch.arange(n, dtype=torch.float)

    def model(data):
        with pyro.plate("data", n, subsample_size=10) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=data[idx])

    guide = pgmdl.NaMIGuide(model).setup(data)
    trace = poutine.trace(guide).get_trace(data)
    idx = trace.nodes["data"]["value"]
    assert trace.nodes["z"]["value"].shape == (10,)
    assert trace.nodes["z"]["scale"] == 5.0
    model_trace = poutine.trace(poutine.replay(model, trace=trace)).get_trace(data)
    assert torch.equal(model_trace.nodes["x"]["value"], data[idx])
    assert _svi(model, guide).step(data) > 0


def test_a_minibatch_of_a_subsampled_plate_keeps_the_full_size_scale():
    n = 100

    def model(x):
        with pyro.plate("data", n, subsample_size=x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    guide = pgmdl.NaMIGuide(model).setup(torch.randn(10))
    trace = poutine.trace(guide).get_trace(torch.randn(4))
    assert trace.nodes["z"]["value"].shape == (4,)
    assert trace.nodes["z"]["scale"] == 25.0


# ---------------------------------------------------------------------- discrete sites


def test_m2_unlabelled_enumerates_the_label_in_the_guide():
    zoo = load_zoo("m2")
    x = zoo.kwargs["x"]
    guide = pgmdl.NaMIGuide(zoo.model, enumerate="parallel")
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    svi = _svi(zoo.model, guide, elbo)
    assert math.isfinite(svi.step(x=x))
    trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x=x)
    y = trace.nodes["y"]
    assert y["infer"]["enumerate"] == "parallel"
    assert y["value"].shape == (10, 1, 10)  # ten one-hot labels, enumerated left of the plate
    assert trace.nodes["z"]["value"].shape[-1] == 8


def test_enumerated_guide_elbo_is_the_exact_expectation_over_the_label():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(2.0 * y - 1.0, 1.0), obs=x)

    x = torch.tensor([0.5, -1.0, 2.0])
    guide = pgmdl.NaMIGuide(model, enumerate="parallel")
    guide.setup(x)
    # the exact ELBO: sum_y q(y|x) [log p(x, y) - log q(y|x)]
    q1 = _base(poutine.trace(guide).get_trace(x).nodes["y"]["fn"]).probs.detach()
    log_p = torch.stack(
        [
            dist.Bernoulli(0.3).log_prob(torch.tensor(v)) + dist.Normal(2 * v - 1, 1.0).log_prob(x)
            for v in (0.0, 1.0)
        ]
    )
    q = torch.stack([1 - q1, q1])
    exact = (q * (log_p - q.log())).sum()
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    assert loss == pytest.approx(-exact.item(), rel=1e-5)


def test_discrete_guides_work_with_tracegraph_elbo():
    zoo = load_zoo("m2")
    guide = pgmdl.NaMIGuide(zoo.model)
    svi = _svi(zoo.model, guide, TraceGraph_ELBO())
    assert all(math.isfinite(svi.step(x=zoo.kwargs["x"])) for _ in range(3))


def test_gmm_assignment_is_left_to_the_model_and_globals_are_free():
    zoo = load_zoo("gmm")
    guide = pgmdl.NaMIGuide(zoo.model)
    svi = _svi(zoo.model, guide, TraceEnum_ELBO(max_plate_nesting=1))
    assert math.isfinite(svi.step(*zoo.args, **zoo.kwargs))
    assert "assignment" not in guide.sites
    assert set(guide.sites) == {"weights", "locs", "scale"}
    assert all(guide.parents(s) == () for s in guide.sites)


def test_categorical_parents_are_fed_one_hot():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            z = pyro.sample("z", dist.Normal(c.float(), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    guide = pgmdl.NaMIGuide(model, order="reverse").setup(torch.randn(4))
    assert guide.parents("z") == ("x", "c")
    assert guide.conditional("z").in_features == 1 + 3
    assert math.isfinite(_svi(model, guide).step(torch.randn(4)))


# ---------------------------------------------------------------------- overrides


def test_family_network_and_conditional_overrides():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            p = pyro.sample("p", dist.Beta(2.0, 2.0))
            s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
            pyro.sample("x", dist.Normal(p, s), obs=x)

    calls = []

    def network(in_features, out_features):
        calls.append((in_features, out_features))
        return nn.Linear(in_features, out_features)

    own = nn.Linear(1, 2)

    def conditional(parents):
        loc, scale = own(parents["x"].unsqueeze(-1)).unbind(-1)
        return dist.LogNormal(loc, nn.functional.softplus(scale))

    guide = pgmdl.NaMIGuide(
        model,
        order="reverse",
        families={"p": "beta"},
        networks={"p": network},
        conditionals={"s": conditional},
    )
    x = torch.randn(6)
    trace = poutine.trace(guide).get_trace(x)
    assert isinstance(_base(trace.nodes["p"]["fn"]), dist.Beta)
    assert isinstance(trace.nodes["s"]["fn"], dist.LogNormal)
    assert calls == [(1, 2)]
    assert math.isfinite(_svi(model, guide).step(x))


def test_conditional_flows_with_zuko():
    zoo = load_zoo("vae")
    guide = pgmdl.NaMIGuide(zoo.model, flows=["z"])
    svi = _svi(zoo.model, guide, lr=1e-3)
    losses = [svi.step(**zoo.kwargs) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    trace = poutine.trace(guide).get_trace(**zoo.kwargs)
    assert trace.nodes["z"]["value"].shape == (5, 8)
    assert any("flow" in name for name, _ in guide.named_parameters())


def test_path_derivative_gradient_vanishes_at_the_exact_posterior():
    """Sticking the landing (thesis eq. 4.4-4.5): with q equal to the posterior,
    log p(x, z) - log q(z | x) is constant in z, so the path-derivative gradient
    is exactly zero for every sample, while the plain estimator's is not."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.tensor([0.3, -1.2, 2.0])
    grads = {}
    for stl in (False, True):
        pyro.clear_param_store()
        guide = pgmdl.NaMIGuide(model, hidden=(), path_derivative=stl).setup(x)
        guide.eval()  # freeze the running normalization (identity at start)
        net = guide.conditional("z").net
        eps = guide.parent_features("x").norm.eps
        with torch.no_grad():  # q(z | x) = N(x / 2, 1 / 2), the exact posterior
            net.linear.weight.copy_(torch.tensor([[0.5 * math.sqrt(1 + eps)], [0.0]]))
            net.bias.copy_(torch.tensor([0.0, _softplus_inv(math.sqrt(0.5) - 1e-4)]))
        loss = Trace_ELBO().differentiable_loss(model, guide, x)
        grads[stl] = torch.autograd.grad(loss, [net.linear.weight, net.bias])
    assert all(g.abs().max() < 1e-5 for g in grads[True])
    assert max(g.abs().max() for g in grads[False]) > 1e-2


# ---------------------------------------------------------------------- errors


def test_a_model_without_latent_sites_is_refused():
    def model(x):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(GuideError, match="no latent site"):
        pgmdl.NaMIGuide(model)(torch.tensor(0.0))


def test_a_latent_without_a_family_names_site_and_support():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Poisson(3.0))
            pyro.sample("x", dist.Normal(k, 1.0), obs=x)

    with pytest.raises(GuideError, match=r"'k' has support 'nonnegative_integer'.*conditionals="):
        pgmdl.NaMIGuide(model)(torch.randn(3))


def test_wrong_shapes_and_missing_observations_are_named():
    zoo = load_zoo("vae")
    x = zoo.kwargs["x"]
    guide = pgmdl.NaMIGuide(zoo.model).setup(x=x)
    with pytest.raises(GuideError, match=r"observed site 'x' has shape \(5, 10\)"):
        guide(x=x[:, :10])
    with pytest.raises(GuideError, match=r"observed site 'x'.*None in this call"):
        guide(x=None)


def test_an_observed_value_computed_from_arguments_needs_a_binding():
    def model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data[:, 0] * 2)

    data = torch.randn(4, 2)
    with pytest.raises(GuideError, match=r"observed site 'x'.*bindings="):
        pgmdl.NaMIGuide(model)(data)
    guide = pgmdl.NaMIGuide(model, bindings={"x": lambda arguments: arguments["data"][:, 0] * 2})
    assert guide(data)["z"].shape == (4,)


def test_bad_options_are_refused_with_the_choices():
    with pytest.raises(GuideError, match="global_latents"):
        pgmdl.NaMIGuide(local_model, global_latents="some")
    with pytest.raises(GuideError, match="order="):
        pgmdl.NaMIGuide(local_model, order="backwards")
    with pytest.raises(SiteNotFoundError, match="'zz'"):
        pgmdl.NaMIGuide(local_model, families={"zz": "normal"})(torch.randn(3))
    with pytest.raises(GuideError, match="first call"):
        pgmdl.NaMIGuide(local_model).parents("z")


def _base(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _softplus_inv(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def test_a_second_guide_trains_its_own_parameters_despite_shared_names():
    x = torch.randn(16)
    first = pgmdl.NaMIGuide(local_model, hidden=(4,))
    _svi(local_model, first).step(x)
    second = pgmdl.NaMIGuide(local_model, hidden=(4,))
    svi = _svi(local_model, second)
    svi.step(x)  # sets up: takes over the stored values, then owns the store entries
    before = [p.detach().clone() for p in second.parameters()]
    svi.step(x)
    assert any(not torch.equal(a, b) for a, b in zip(before, second.parameters(), strict=True))
    stored = dict(pyro.get_param_store().named_parameters())
    assert all(any(p is s for s in stored.values()) for p in second.parameters())


def test_fit_resumes_a_nami_guide_exactly_running_statistics_included(tmp_path):
    x = torch.randn(64)

    def run(epochs, resume, path):
        pyro.clear_param_store()
        guide = pgmdl.NaMIGuide(local_model, hidden=(4,))
        pgmdl.fit(
            local_model, guide, x, epochs=epochs, batch_size=16, seed=3,
            checkpoint=path, resume=resume, progress=False, kl_every=0,
        )  # fmt: skip
        return guide

    straight = run(4, False, tmp_path / "a.pt")
    run(2, False, tmp_path / "b.pt")
    resumed = run(4, True, tmp_path / "b.pt")
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_plates_without_guide_sites_are_left_to_the_model():
    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    guide = pgmdl.NaMIGuide(model)
    for n in (10, 4):  # a later call with another data size must not be pinned to the first
        assert math.isfinite(Trace_ELBO().loss(model, guide, torch.randn(n)))


def test_free_global_latents_get_parameters_per_replicate_of_their_plates():
    def model(x):
        with pyro.plate("k", 3):
            mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu.sum(), 1.0), obs=x)

    starts = torch.tensor([-5.0, 0.0, 5.0])
    guide = pgmdl.NaMIGuide(model, init_loc_fn=lambda site: starts).setup(torch.randn(5))
    raw = guide.conditional("mu").net.bias
    assert raw.shape == (3, 2)  # (loc, scale) for each of the three components
    assert torch.equal(raw[:, 0], starts)
    q = poutine.trace(guide).get_trace(torch.randn(5)).nodes["mu"]["fn"]
    assert torch.allclose(q.mean, starts)
