r"""Conditional VAE on a context vector (generative model only).

Generative process, for each data point :math:`i = 1, \dots, N` with context :math:`c_i`
(here a one-hot class label, given as an input, not modelled):

.. math::

    z_i \mid c_i &\sim
        \mathcal{N}\big(\mu_\psi(c_i), \operatorname{diag}\sigma^2_\psi(c_i)\big) \\
    x_i \mid z_i, c_i &\sim \operatorname{Bernoulli}\big(\sigma(f_\theta([z_i, c_i]))\big)

Reference: K. Sohn, H. Lee and X. Yan, "Learning Structured Output Representation using Deep
Conditional Generative Models", NeurIPS 2015.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class PriorNet(nn.Module):
    """The conditional prior network p(z | c): loc and (softplus) scale heads."""

    def __init__(self, c_dim: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(c_dim, hidden_dim), nn.Softplus())
        self.loc = nn.Linear(hidden_dim, z_dim)
        self.scale = nn.Linear(hidden_dim, z_dim)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(c)
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4


class CVAE(nn.Module):
    """Prior network, decoder and generative model of a conditional VAE."""

    def __init__(
        self, x_dim: int = 64, c_dim: int = 10, z_dim: int = 8, hidden_dim: int = 128
    ) -> None:
        super().__init__()
        self.x_dim = x_dim
        self.c_dim = c_dim
        self.z_dim = z_dim
        self.prior_net = PriorNet(c_dim, z_dim, hidden_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + c_dim, hidden_dim),
            nn.Softplus(),
            nn.Linear(hidden_dim, x_dim),
        )

    def model(self, c: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """p(z | c) p(x | z, c); ``c`` is the (N, c_dim) context, ``x`` optional data."""
        pyro.module("prior_net", self.prior_net)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", c.shape[0]):
            z_loc, z_scale = self.prior_net(c)
            z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            logits = self.decoder(torch.cat([z, c], dim=-1))
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


cvae = CVAE()
model = cvae.model


def example_args() -> tuple[tuple, dict]:
    """A deterministic batch of 5 one-hot labels (context) and binary images."""
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((5, 64), 0.5), generator=g)
    labels = torch.randint(10, (5,), generator=g)
    c = nn.functional.one_hot(labels, 10).to(x.dtype)
    return (c,), {"x": x}
