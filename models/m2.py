r"""Semi-supervised VAE "M2" (generative model only).

Generative process, for each data point :math:`i = 1, \dots, N`:

.. math::

    y_i &\sim \operatorname{Cat}(\mathbf{1}_K / K) \quad \text{(one-hot)} \\
    z_i &\sim \mathcal{N}(0, I_{d_z}) \\
    x_i \mid y_i, z_i &\sim \operatorname{Bernoulli}\big(\sigma(f_\theta([z_i, y_i]))\big)

The label :math:`y_i` is observed for labelled data (pass ``y``) and latent otherwise
(``y=None``), as in Pyro's SS-VAE tutorial.

Reference: D. P. Kingma, D. J. Rezende, S. Mohamed and M. Welling, "Semi-Supervised Learning
with Deep Generative Models", NeurIPS 2014.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def _cat_broadcast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dim after broadcasting batch dims (for enumerated ``y``)."""
    batch_shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    a = a.expand(batch_shape + a.shape[-1:])
    b = b.expand(batch_shape + b.shape[-1:])
    return torch.cat([a, b], dim=-1)


class M2(nn.Module):
    """Decoder network and generative model of the M2 semi-supervised VAE."""

    def __init__(
        self, x_dim: int = 64, y_dim: int = 10, z_dim: int = 8, hidden_dim: int = 128
    ) -> None:
        super().__init__()
        self.x_dim = x_dim
        self.y_dim = y_dim
        self.z_dim = z_dim
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + y_dim, hidden_dim),
            nn.Softplus(),
            nn.Linear(hidden_dim, x_dim),
        )

    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """p(y) p(z) p(x | y, z); ``y`` is one-hot, or ``None`` when unlabelled."""
        pyro.module("decoder", self.decoder)
        if x is not None:
            n, ref = x.shape[0], x
        elif y is not None:
            n, ref = y.shape[0], y
        else:
            n = 1 if batch_size is None else batch_size
            ref = next(self.decoder.parameters())
        with pyro.plate("data", n):
            y_logits = ref.new_zeros((n, self.y_dim))
            y = pyro.sample("y", dist.OneHotCategorical(logits=y_logits), obs=y)
            z_loc = ref.new_zeros((n, self.z_dim))
            z_scale = ref.new_ones((n, self.z_dim))
            z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            logits = self.decoder(_cat_broadcast(z, y))
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


m2 = M2()
model = m2.model


def example_args() -> tuple[tuple, dict]:
    """A deterministic labelled batch of 5 binary images with one-hot labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((5, 64), 0.5), generator=g)
    labels = torch.randint(10, (5,), generator=g)
    y = nn.functional.one_hot(labels, 10).to(x.dtype)
    return (), {"x": x, "y": y}
