r"""Two-level hierarchical VAE (generative model only).

Generative process, for each data point :math:`i = 1, \dots, N`:

.. math::

    z^{(2)}_i &\sim \mathcal{N}(0, I) \\
    z^{(1)}_i \mid z^{(2)}_i &\sim
        \mathcal{N}\big(\mu_\theta(z^{(2)}_i), \operatorname{diag}\sigma^2_\theta(z^{(2)}_i)\big) \\
    x_i \mid z^{(1)}_i &\sim \operatorname{Bernoulli}\big(\sigma(f_\theta(z^{(1)}_i))\big)

The observation depends on the top layer :math:`z^{(2)}` only through :math:`z^{(1)}`.

References: D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014;
C. K. Sønderby et al., "Ladder Variational Autoencoders", NeurIPS 2016.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class GaussianHead(nn.Module):
    """An MLP with two heads giving the loc and (softplus) scale of a diagonal Gaussian."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Softplus())
        self.loc = nn.Linear(hidden_dim, out_dim)
        self.scale = nn.Linear(hidden_dim, out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(h)
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4


class HierarchicalVAE(nn.Module):
    """Networks and generative model of a two-level hierarchical VAE."""

    def __init__(
        self, x_dim: int = 64, z1_dim: int = 8, z2_dim: int = 4, hidden_dim: int = 128
    ) -> None:
        super().__init__()
        self.x_dim = x_dim
        self.z1_dim = z1_dim
        self.z2_dim = z2_dim
        self.z1_net = GaussianHead(z2_dim, z1_dim, hidden_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z1_dim, hidden_dim),
            nn.Softplus(),
            nn.Linear(hidden_dim, x_dim),
        )

    def model(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """p(z2) p(z1 | z2) p(x | z1); pass ``x`` to condition, or ``batch_size`` to generate."""
        pyro.module("z1_net", self.z1_net)
        pyro.module("decoder", self.decoder)
        if x is None:
            n = 1 if batch_size is None else batch_size
            ref = next(self.decoder.parameters())
        else:
            n = x.shape[0]
            ref = x
        with pyro.plate("data", n):
            z2_loc = ref.new_zeros((n, self.z2_dim))
            z2_scale = ref.new_ones((n, self.z2_dim))
            z2 = pyro.sample("z2", dist.Normal(z2_loc, z2_scale).to_event(1))
            z1_loc, z1_scale = self.z1_net(z2)
            z1 = pyro.sample("z1", dist.Normal(z1_loc, z1_scale).to_event(1))
            logits = self.decoder(z1)
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


hvae = HierarchicalVAE()
model = hvae.model


def example_args() -> tuple[tuple, dict]:
    """A deterministic batch of 5 binary 64-pixel images."""
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((5, 64), 0.5), generator=g)
    return (), {"x": x}
