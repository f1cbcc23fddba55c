"""Image VAE fed image-shaped batches: the model flattens them itself.

The structure of Pyro's VAE tutorial: a decoder registered with
``pyro.module``, ``x = x.reshape(-1, 64)`` inside the model, ``obs=x``, and a
hand-written encoder guide. Images are 8x8 (``(N, 1, 8, 8)`` batches).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from tests.conformance.harness import Program, TrainConfig, seeded

Z_DIM, HIDDEN, PIXELS = 4, 16, 64


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(Z_DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, PIXELS)

    def forward(self, z):
        return torch.sigmoid(self.fc2(nn.functional.softplus(self.fc1(z))))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(PIXELS, HIDDEN)
        self.fc21 = nn.Linear(HIDDEN, Z_DIM)
        self.fc22 = nn.Linear(HIDDEN, Z_DIM)

    def forward(self, x):
        hidden = nn.functional.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


def images(n: int, seed: int = 0) -> torch.Tensor:
    """Binary 8x8 images: two stroke prototypes with 10% of pixels flipped."""
    g = seeded(seed)
    protos = (torch.rand(2, 1, 8, 8, generator=g) < 0.4).float()
    which = torch.randint(0, 2, (n,), generator=g)
    flip = (torch.rand(n, 1, 8, 8, generator=g) < 0.1).float()
    return (protos[which] + flip) % 2


def build() -> Program:
    torch.manual_seed(0)
    decoder, encoder = Decoder(), Encoder()

    def model(x):
        pyro.module("decoder", decoder)
        x = x.reshape(-1, PIXELS)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], Z_DIM)))
            z_scale = x.new_ones(torch.Size((x.shape[0], Z_DIM)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        x = x.reshape(-1, PIXELS)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    data = images(64)
    batches = [((data[i : i + 32],), {}) for i in (0, 32)]
    return Program(
        name="vae_reshape",
        model=model,
        guide=guide,
        call=((data[:16],), {}),
        # latent ~ N(0, I) (x.new_zeros reads only the dtype), obs ~ Bernoulli(decoder(latent))
        parents={"latent": set(), "obs": {"latent"}},
        latent={"latent"},
        observed={"obs"},
        inputs={},  # the image tensor IS the observation (reshaped): no other input
        train=(TrainConfig("trace", lambda: batches, steps=50),),
    )
