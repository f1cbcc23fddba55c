"""An AIR-like model (Eslami et al. 2016) with masks given through ``Distribution.mask``.

Three steps; at each, a presence ``z_pres_t`` (Bernoulli, likelier after a
present object), a position ``z_where_t`` and an appearance ``z_what_t``,
each ``dist.Normal(...).mask(z_pres)`` as in Pyro's AIR example, so that an
absent object's latents cost nothing; the objects are added on an 8x8 canvas
and the image is observed. The hand guide is AIR's: a recurrent network over
the image and everything sampled so far.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from tests.conformance.harness import Program, TrainConfig, seeded

STEPS, WHERE, WHAT, HIDDEN, PIXELS = 3, 3, 4, 16, 64


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(WHAT + WHERE, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 64))

    def forward(self, z_what, z_where):
        return self.net(torch.cat([z_what, z_where], dim=-1))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRUCell(PIXELS + 1 + WHERE + WHAT, HIDDEN)
        self.pres = nn.Linear(HIDDEN, 1)
        self.where = nn.Linear(HIDDEN, 2 * WHERE)
        self.what = nn.Linear(HIDDEN + WHERE, 2 * WHAT)


def build_model(decoder):
    def model(data):
        pyro.module("decode", decoder)
        n = data.size(0)
        with pyro.plate("data", n):
            x = data.new_zeros(n, PIXELS)
            z_pres = data.new_ones(n, 1)
            for t in range(STEPS):
                z_pres = pyro.sample(f"z_pres_{t}", dist.Bernoulli(0.1 + 0.5 * z_pres).to_event(1))
                z_where = pyro.sample(
                    f"z_where_{t}",
                    dist.Normal(data.new_zeros(n, WHERE), data.new_ones(n, WHERE))
                    .mask(z_pres.bool())
                    .to_event(1),
                )
                z_what = pyro.sample(
                    f"z_what_{t}",
                    dist.Normal(data.new_zeros(n, WHAT), data.new_ones(n, WHAT))
                    .mask(z_pres.bool())
                    .to_event(1),
                )
                x = x + decoder(z_what, z_where) * z_pres
            pyro.sample("obs", dist.Normal(x, 0.3).to_event(1), obs=data.reshape(n, -1))

    return model


def build_guide(encoder):
    def guide(data):
        pyro.module("encode", encoder)
        n = data.size(0)
        flat = data.reshape(n, -1)
        with pyro.plate("data", n):
            h = flat.new_zeros(n, HIDDEN)
            z_pres = flat.new_ones(n, 1)
            z_where = flat.new_zeros(n, WHERE)
            z_what = flat.new_zeros(n, WHAT)
            for t in range(STEPS):
                h = encoder.rnn(torch.cat([flat, z_pres, z_where, z_what], -1), h)
                p = torch.sigmoid(encoder.pres(h)) * (0.2 + 0.8 * z_pres)
                z_pres = pyro.sample(f"z_pres_{t}", dist.Bernoulli(p).to_event(1))
                loc, log_scale = encoder.where(h).chunk(2, -1)
                z_where = pyro.sample(
                    f"z_where_{t}",
                    dist.Normal(loc, log_scale.exp()).mask(z_pres.bool()).to_event(1),
                )
                loc, log_scale = encoder.what(torch.cat([h, z_where], -1)).chunk(2, -1)
                z_what = pyro.sample(
                    f"z_what_{t}",
                    dist.Normal(loc, log_scale.exp()).mask(z_pres.bool()).to_event(1),
                )

    return guide


def scenes(n: int, seed: int = 0) -> torch.Tensor:
    """(N, 8, 8) images with one to three bright 2x2 squares."""
    g = seeded(seed)
    out = torch.zeros(n, 8, 8)
    count = torch.randint(1, 4, (n,), generator=g)
    for i in range(n):
        for _ in range(int(count[i])):
            r, c = torch.randint(0, 7, (2,), generator=g).tolist()
            out[i, r : r + 2, c : c + 2] = 1.0
    return out


def build() -> Program:
    torch.manual_seed(0)
    model, guide = build_model(Decoder()), build_guide(Encoder())
    data = scenes(64)
    calls = [((data[:32],), {}), ((data[32:],), {})]
    parents = {}
    for t in range(STEPS):
        # presence after a present object is likelier: z_pres_{t-1} -> z_pres_t;
        # .mask(z_pres_t) makes z_pres_t a parent of z_where_t and z_what_t
        parents[f"z_pres_{t}"] = {f"z_pres_{t - 1}"} if t else set()
        parents[f"z_where_{t}"] = {f"z_pres_{t}"}
        parents[f"z_what_{t}"] = {f"z_pres_{t}"}
    parents["obs"] = {f"{k}_{t}" for k in ("z_pres", "z_where", "z_what") for t in range(STEPS)}
    latent = set(parents) - {"obs"}
    return Program(
        name="air_mask",
        model=model,
        guide=guide,
        call=((data[:16],), {}),
        parents=parents,
        latent=latent,
        observed={"obs"},
        inputs={},
        train=(TrainConfig("trace", lambda: calls, steps=50),),
    )
