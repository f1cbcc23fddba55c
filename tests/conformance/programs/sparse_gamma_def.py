"""Sparse gamma deep exponential family (Ranganath et al. 2015), two layers.

As in Pyro's sparse gamma DEF example: Gamma weights (globals), Gamma latents
per data point whose rate is scaled by the layer above, Poisson counts. The
hand guide is amortized for the local latents (LogNormal, as many users write
for Gamma sites), with free parameters for the weights.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig, seeded

TOP, BOTTOM, VOCAB = 2, 3, 10
ALPHA_Z, BETA_Z, ALPHA_W, BETA_W = 1.0, 1.0, 1.0, 1.0


def model(x):
    w_top = pyro.sample("w_top", dist.Gamma(ALPHA_W, BETA_W).expand([TOP, BOTTOM]).to_event(2))
    w_bottom = pyro.sample(
        "w_bottom", dist.Gamma(ALPHA_W, BETA_W).expand([BOTTOM, VOCAB]).to_event(2)
    )
    with pyro.plate("data", x.size(0)):
        z_top = pyro.sample("z_top", dist.Gamma(ALPHA_Z, BETA_Z).expand([TOP]).to_event(1))
        mean_bottom = torch.matmul(z_top, w_top)
        z_bottom = pyro.sample("z_bottom", dist.Gamma(ALPHA_Z, BETA_Z / mean_bottom).to_event(1))
        mean_obs = torch.matmul(z_bottom, w_bottom)
        pyro.sample("obs", dist.Poisson(mean_obs).to_event(1), obs=x)


class Encoder(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 16), nn.Tanh(), nn.Linear(16, 2 * n_out))

    def forward(self, h):
        loc, log_scale = self.net(h).chunk(2, dim=-1)
        return loc, torch.exp(log_scale.clamp(-6.0, 2.0))


def make_guide(bottom_encoder, top_encoder):
    def guide(x):
        pyro.module("bottom_encoder", bottom_encoder)
        pyro.module("top_encoder", top_encoder)
        positive = constraints.positive
        w_top_loc = pyro.param("w_top_loc", lambda: torch.zeros(TOP, BOTTOM))
        w_top_scale = pyro.param("w_top_scale", lambda: 0.1 * torch.ones(TOP, BOTTOM), positive)
        w_top = pyro.sample("w_top", dist.LogNormal(w_top_loc, w_top_scale).to_event(2))
        # the weights are coupled in the posterior (both explain the counts)
        coupling = pyro.param("w_coupling", lambda: torch.zeros(BOTTOM, VOCAB))
        w_bottom_loc = pyro.param("w_bottom_loc", lambda: torch.zeros(BOTTOM, VOCAB))
        w_bottom_scale = pyro.param(
            "w_bottom_scale", lambda: 0.1 * torch.ones(BOTTOM, VOCAB), positive
        )
        w_bottom_loc = w_bottom_loc + coupling * w_top.log().mean()
        w_bottom = pyro.sample("w_bottom", dist.LogNormal(w_bottom_loc, w_bottom_scale).to_event(2))
        weights = torch.cat([w_top.log().flatten(), w_bottom.log().flatten()])
        with pyro.plate("data", x.size(0)):
            h = torch.cat([torch.log1p(x), weights.expand(x.size(0), -1)], dim=-1)
            loc, scale = bottom_encoder(h)
            z_bottom = pyro.sample("z_bottom", dist.LogNormal(loc, scale).to_event(1))
            h_top = torch.cat([z_bottom.log(), w_top.log().flatten().expand(x.size(0), -1)], -1)
            loc, scale = top_encoder(h_top)
            pyro.sample("z_top", dist.LogNormal(loc, scale).to_event(1))

    return guide


def counts(n: int, seed: int = 0) -> torch.Tensor:
    g = seeded(seed)
    rates = torch.rand(BOTTOM, VOCAB, generator=g) * 3.0
    mix = torch.rand(n, BOTTOM, generator=g)
    return torch.poisson(mix @ rates, generator=g)


def build() -> Program:
    torch.manual_seed(0)
    bottom = Encoder(VOCAB + TOP * BOTTOM + BOTTOM * VOCAB, BOTTOM)
    top = Encoder(BOTTOM + TOP * BOTTOM, TOP)
    guide = make_guide(bottom, top)
    x = counts(40)
    calls = [((x[:20],), {}), ((x[20:],), {})]
    return Program(
        name="sparse_gamma_def",
        model=model,
        guide=guide,
        call=((x[:20],), {}),
        parents={
            "w_top": set(),
            "w_bottom": set(),
            "z_top": set(),
            "z_bottom": {"z_top", "w_top"},  # rate beta_z / (z_top @ w_top)
            "obs": {"z_bottom", "w_bottom"},  # Poisson(z_bottom @ w_bottom)
        },
        latent={"w_top", "w_bottom", "z_top", "z_bottom"},
        observed={"obs"},
        inputs={},
        train=(TrainConfig("trace", lambda: calls, steps=50),),
    )
