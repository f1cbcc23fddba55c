"""A conditional VAE whose arguments are a namedtuple batch, a dataclass config and a dict.

Users bundle a batch in a namedtuple (``batch.images``, ``batch.labels``),
the hyper-parameters in a dataclass and extra tensors in a dict; pgmdl must
pass each to the program as itself.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from tests.conformance.harness import Program, TrainConfig, seeded

Batch = namedtuple("Batch", ["images", "labels"])


@dataclass
class Config:
    z_dim: int = 3
    x_dim: int = 16
    n_labels: int = 3
    hidden: int = 16


CONFIG = Config()


def build_model(decoder):
    def model(batch, config, extras):
        assert isinstance(batch, Batch), type(batch)
        assert isinstance(config, Config), type(config)
        pyro.module("decoder", decoder)
        n = batch.images.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(n, config.z_dim), 1.0).to_event(1))
            loc = decoder(torch.cat([z, batch.labels], dim=-1))
            pyro.sample("x", dist.Normal(loc, extras["noise"]).to_event(1), obs=batch.images)

    return model


def build_guide(encoder):
    def guide(batch, config, extras):
        pyro.module("encoder", encoder)
        with pyro.plate("data", batch.images.shape[0]):
            h = encoder(torch.cat([batch.images / extras["noise"], batch.labels], dim=-1))
            loc, log_scale = h.chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return guide


def make_batch(n: int, seed: int) -> Batch:
    g = seeded(seed)
    labels = nn.functional.one_hot(torch.randint(0, CONFIG.n_labels, (n,), generator=g), 3)
    images = labels.float() @ torch.randn(3, CONFIG.x_dim, generator=g)
    return Batch(images + 0.3 * torch.randn(n, CONFIG.x_dim, generator=g), labels.float())


def build() -> Program:
    torch.manual_seed(0)
    c = CONFIG
    decoder = nn.Sequential(
        nn.Linear(c.z_dim + c.n_labels, c.hidden), nn.Tanh(), nn.Linear(c.hidden, c.x_dim)
    )
    encoder = nn.Sequential(
        nn.Linear(c.x_dim + c.n_labels, c.hidden), nn.Tanh(), nn.Linear(c.hidden, 2 * c.z_dim)
    )
    extras = {"noise": torch.tensor(0.5)}
    first, second = make_batch(32, 0), make_batch(32, 1)
    calls = [((first, c, extras), {}), ((second, c, extras), {})]
    return Program(
        name="structured_args",
        model=build_model(decoder),
        guide=build_guide(encoder),
        call=((first, c, extras), {}),
        # z ~ N(0, I) (torch.zeros reads no tensor); x ~ N(decoder(z, labels), noise)
        parents={"z": set(), "x": {"z"}},
        latent={"z"},
        observed={"x"},
        # batch.labels and extras["noise"] feed x; batch.images IS x
        inputs={"batch": {"x"}, "extras": {"x"}},
        train=(TrainConfig("trace", lambda: calls, steps=50),),
    )
