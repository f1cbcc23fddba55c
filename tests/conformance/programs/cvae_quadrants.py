"""Conditional VAE completing an image from its other quadrants, after Pyro's CVAE example.

``images`` is (N, 8, 8); the model reads the two top quadrants as its input
and observes the bottom-left quadrant, both sliced from the SAME tensor:
``obs=target.reshape(-1, 16)``. The prior network reads the input quadrants;
``pyro.plate("data")`` has no size, as in Pyro's example. The hand guide's
recognition network reads input and target.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from tests.conformance.harness import Program, TrainConfig, seeded

Z_DIM, HIDDEN = 3, 16


class Net(nn.Module):
    def __init__(self, n_in, n_out, normal=True):
        super().__init__()
        self.fc1 = nn.Linear(n_in, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, 2 * n_out if normal else n_out)
        self.normal = normal

    def forward(self, *xs):
        h = self.fc2(torch.relu(self.fc1(torch.cat(xs, dim=-1))))
        if not self.normal:
            return torch.sigmoid(h)
        loc, log_scale = h.chunk(2, dim=-1)
        return loc, torch.exp(log_scale)


class CVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.prior_net = Net(32, Z_DIM)
        self.generation_net = Net(Z_DIM, 16, normal=False)
        self.recognition_net = Net(32 + 16, Z_DIM)

    def model(self, images):
        pyro.module("generation_net", self)
        inputs = images[:, :4, :].reshape(-1, 32)  # top-left and top-right quadrants
        target = images[:, 4:, :4]  # bottom-left quadrant
        with pyro.plate("data"):
            prior_loc, prior_scale = self.prior_net(inputs)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            loc = self.generation_net(zs)
            pyro.sample(
                "y",
                dist.Bernoulli(loc, validate_args=False).to_event(1),
                obs=target.reshape(-1, 16),
            )

    def guide(self, images):
        inputs = images[:, :4, :].reshape(-1, 32)
        target = images[:, 4:, :4].reshape(-1, 16)
        with pyro.plate("data"):
            loc, scale = self.recognition_net(inputs, target)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def images(n: int, seed: int = 0) -> torch.Tensor:
    """Binary 8x8 images whose bottom-left quadrant mirrors the top-left one."""
    g = seeded(seed)
    top = (torch.rand(n, 4, 8, generator=g) < 0.4).float()
    bottom = torch.cat([top[:, :, :4].flip(1), torch.zeros(n, 4, 4)], dim=-1)
    return torch.cat([top, bottom], dim=1)


def build() -> Program:
    torch.manual_seed(0)
    cvae = CVAE()
    data = images(64)
    calls = [((data[:32],), {}), ((data[32:],), {})]
    return Program(
        name="cvae_quadrants",
        model=cvae.model,
        guide=cvae.guide,
        call=((data[:16],), {}),
        # z ~ N(prior_net(top half)), y ~ Bernoulli(generation_net(z))
        parents={"z": set(), "y": {"z"}},
        latent={"z"},
        observed={"y"},
        inputs={"images": {"z"}},  # the top half feeds z's prior; the quadrant IS y
        train=(TrainConfig("trace", lambda: calls, steps=50),),
    )
