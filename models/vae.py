r"""Bernoulli variational autoencoder (generative model only).

Generative process, for each data point :math:`i = 1, \dots, N`:

.. math::

    z_i &\sim \mathcal{N}(0, I_{d_z}) \\
    x_i \mid z_i &\sim \operatorname{Bernoulli}\big(\sigma(f_\theta(z_i))\big)

where :math:`f_\theta` is a neural decoder producing logits.

Reference: D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class VAE(nn.Module):
    """Decoder network and generative model of a Bernoulli VAE."""

    def __init__(self, x_dim: int = 64, z_dim: int = 8, hidden_dim: int = 128) -> None:
        super().__init__()
        self.x_dim = x_dim
        self.z_dim = z_dim
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden_dim),
            nn.Softplus(),
            nn.Linear(hidden_dim, x_dim),
        )

    def model(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """p(z) p(x | z); pass ``x`` to condition, or ``batch_size`` to generate."""
        pyro.module("decoder", self.decoder)
        if x is None:
            n = 1 if batch_size is None else batch_size
            ref = next(self.decoder.parameters())
        else:
            n = x.shape[0]
            ref = x
        with pyro.plate("data", n):
            z_loc = ref.new_zeros((n, self.z_dim))
            z_scale = ref.new_ones((n, self.z_dim))
            z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            logits = self.decoder(z)
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


vae = VAE()
model = vae.model


def example_args() -> tuple[tuple, dict]:
    """A deterministic batch of 5 binary 64-pixel images."""
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((5, 64), 0.5), generator=g)
    return (), {"x": x}
