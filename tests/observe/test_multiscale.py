"""Multiscale (Laplacian-pyramid) observations, eq. 6.3–6.4: pooling identities,
the log-density of the pyramid, the compiled structure, NaMIGuide and render."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pgmdl
from pgmdl.errors import ModelError
from pgmdl.observe import MultiscaleObservation, QuasiDeterministic, downscale, upscale

LATENT, T = 3, 16


def test_pooling_identities(device):
    y = torch.randn(5, 4, 8, device=device)
    torch.testing.assert_close(downscale(upscale(y)), y)  # 1-D, last dim
    torch.testing.assert_close(downscale(upscale(y, 2, 2), 2, 2), y)  # 2-D
    image = torch.arange(16.0, device=device).reshape(4, 4)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]], device=device)
    torch.testing.assert_close(downscale(image, 2, 2), expected)
    torch.testing.assert_close(downscale(torch.arange(9.0, device=device), 3),
                               torch.tensor([1.0, 4.0, 7.0], device=device))  # fmt: skip


class CurveModel(nn.Module):
    """z → a coarse curve of T/4 points, then two residual refinements."""

    def __init__(self, sigma="global"):
        super().__init__()
        self.coarse = nn.Linear(LATENT, T // 4)
        self.details = nn.ModuleList(
            [nn.Linear(T // 4 + LATENT, T // 2), nn.Linear(T // 2 + LATENT, T)]
        )
        self.pyramid = MultiscaleObservation(3, sigma=sigma, sigma_min=1e-3)

    def predictors(self):
        def refine(layer):
            return lambda previous, z: layer(torch.cat([previous, z], -1))

        return [self.coarse] + [refine(layer) for layer in self.details]

    def model(self, x=None, n=None):
        pyro.module("curves", self)
        n = x.shape[0] if x is not None else n
        device = self.coarse.weight.device
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, device=device), 1.0).to_event(1))
            return self.pyramid("x", self.predictors(), z, obs=x)


def curves(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, T)
    phase, amp = torch.rand(n, 1, generator=g) * 6.28, 1 + torch.rand(n, 1, generator=g)
    return (amp * torch.sin(6.28 * t + phase) + 0.05 * torch.randn(n, T, generator=g)).to(device)


def test_sites_shapes_and_log_density(device):
    curve = CurveModel(sigma=0.2).to(device)
    x = curves(6, device)
    trace = pyro.poutine.trace(curve.model).get_trace(x)
    names = curve.pyramid.site_names("x")
    assert names == ["x_0", "x_1", "x"]
    targets = curve.pyramid.targets(x)
    assert [t.shape[-1] for t in targets] == [4, 8, 16]
    for name, target in zip(names, targets, strict=True):
        assert trace.nodes[name]["value"].equal(target)
    # log p(x_0, x_1, x | z) = Σ_i log N(target_i; upscale(target_{i-1}) + f_i, σ²)
    z = trace.nodes["z"]["value"]
    f = curve.predictors()
    locs = [f[0](z)] + [upscale(targets[i - 1]) + f[i](targets[i - 1], z) for i in (1, 2)]
    expected = sum(
        dist.Normal(loc, 0.2).to_event(1).log_prob(t).sum()
        for loc, t in zip(locs, targets, strict=True)
    )
    observed = sum(trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]).sum() for n in names)
    torch.testing.assert_close(observed, expected)


def test_generation_runs_coarse_to_fine(device):
    curve = CurveModel(sigma=1e-4).to(device)
    x = curve.model(None, n=7)
    assert x.shape == (7, T) and x.device.type == device.type
    trace = pyro.poutine.trace(curve.model).get_trace(None, n=7)
    x0, x1 = trace.nodes["x_0"]["value"], trace.nodes["x_1"]["value"]
    z = trace.nodes["z"]["value"]
    residual = curve.predictors()[1](x0, z)
    torch.testing.assert_close(x1, upscale(x0) + residual, atol=1e-3, rtol=0)


def test_compiled_structure_is_the_pyramid():
    curve = CurveModel()
    graph = pgmdl.compile(curve.model, curves(8, "cpu"))
    edges = set(graph.dag.edges())
    assert {("x_0", "x_1"), ("x_1", "x"), ("z", "x_0"), ("z", "x_1"), ("z", "x")} <= edges
    assert graph["x"].bound_argument == "x"
    assert graph["x_0"].derived_from[0] == "x" and graph["x_1"].derived_from[0] == "x"
    assert graph["x_0"].observation == "x_0 = f(·) + ε, σ learned ≥ 0.001"
    source = pgmdl.render(graph).source
    assert "σ learned ≥ 0.001" in source


def test_nami_guide_reads_the_coarse_levels_from_the_full_data(device):
    torch.manual_seed(0)  # the networks' initial weights (unseeded, the test was flaky)
    curve = CurveModel().to(device)
    x = curves(256, device)
    guide = pgmdl.NaMIGuide(curve.model, hidden=(32,))
    guide.setup(x)
    assert set(guide.parents("z")) == {"x_0", "x_1", "x"}
    pyro.poutine.trace(curve.model).get_trace(x)
    initial = [float(n.last_sigma) for n in curve.pyramid.noises]
    result = pgmdl.fit(curve.model, guide, x, epochs=30, batch_size=64, progress=False,
                       kl_every=0, seed=0, optim=pyro.optim.Adam({"lr": 0.01}))  # fmt: skip
    assert result.epoch_losses[-1] < result.epoch_losses[0] - 5.0
    # the guide conditions on the coarse levels computed from the minibatch it is given
    trace = pyro.poutine.trace(guide).get_trace(x[:5])
    assert trace.nodes["z"]["value"].shape == (5, LATENT)
    # the noise scales are submodules of a module registered with pyro.module: each
    # parameter is in the param store once, under the enclosing module's name
    store = pyro.get_param_store()
    names = [store.param_name(p) for p in curve.parameters()]
    model_names = [k for k in store if k.startswith("curves$$$")]
    assert None not in names and len(set(names)) == len(names) == len(model_names)
    assert not any(".noise$$$" in n for n in store)
    pyramid_sigmas = [float(n.last_sigma) for n in curve.pyramid.noises]
    # learned down from the data's spread (about 1.0 -> 0.40-0.47 here)
    assert all(s < 0.6 * s0 for s, s0 in zip(pyramid_sigmas, initial, strict=True))


def test_images_with_channels(device):
    pyramid = MultiscaleObservation(2, spatial_dims=2, event_dim=3, sigma=0.1)
    images = torch.rand(4, 3, 8, 8, device=device)

    def model(images):
        with pyro.plate("data", images.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, device=device), 1.0).to_event(1))
            coarse = z.sum(-1)[:, None, None, None].expand(-1, 3, 4, 4)
            return pyramid("img", [lambda z: coarse, lambda prev, z: torch.zeros_like(upscale(
                prev, 2, 2))], z, obs=images)  # fmt: skip

    trace = pyro.poutine.trace(model).get_trace(images)
    assert trace.nodes["img_0"]["value"].shape == (4, 3, 4, 4)
    assert trace.nodes["img"]["fn"].event_shape == (3, 8, 8)


def test_bad_input():
    with pytest.raises(ModelError, match="levels"):
        MultiscaleObservation(0)
    with pytest.raises(ModelError, match="spatial_dims"):
        MultiscaleObservation(2, spatial_dims=3)
    with pytest.raises(ModelError, match="noises= has 1 entries"):
        MultiscaleObservation(2, noises=[QuasiDeterministic(0.1)])
    curve = CurveModel()
    with pytest.raises(ModelError, match="divisible"):
        pyro.poutine.trace(curve.model).get_trace(torch.zeros(2, 18))
    with pytest.raises(ModelError, match="2 predictors for 3 levels"):
        curve.pyramid("x", curve.predictors()[:2], torch.zeros(2, LATENT), obs=curves(2, "cpu"))
    bad = curve.predictors()
    bad[1] = lambda previous, z: torch.zeros(2, 5)
    pyramid = CurveModel().pyramid
    with pytest.raises(ModelError, match=r"site 'x_1' \(level 1\).*\(2, 5\)"):
        pyro.poutine.trace(pyramid).get_trace("x", bad, torch.zeros(2, LATENT), curves(2, "cpu"))
