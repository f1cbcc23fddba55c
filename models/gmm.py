r"""Gaussian mixture model with explicit discrete assignments.

Generative process with :math:`K` components in :math:`\mathbb{R}^D`:

.. math::

    \pi &\sim \operatorname{Dirichlet}(0.5 \cdot \mathbf{1}_K) \\
    \mu_k &\sim \mathcal{N}(0, 10^2 I_D), \quad k = 1, \dots, K \\
    \sigma &\sim \operatorname{LogNormal}(0, 2^2) \\
    c_i \mid \pi &\sim \operatorname{Categorical}(\pi), \quad i = 1, \dots, N \\
    x_i \mid c_i, \mu, \sigma &\sim \mathcal{N}(\mu_{c_i}, \sigma^2 I_D)

The assignment :math:`c_i` is marked for parallel enumeration, so it can be summed out
exactly with ``TraceEnum_ELBO`` (guide on the remaining sites).

Reference: C. M. Bishop, "Pattern Recognition and Machine Learning", Springer 2006, ch. 9;
Pyro tutorial "Gaussian Mixture Model".
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex


def model(
    x: torch.Tensor | None = None,
    num_components: int = 3,
    batch_size: int | None = None,
    dim: int = 2,
) -> torch.Tensor:
    """Mixture of ``num_components`` isotropic Gaussians; pass ``x`` of shape (N, dim)."""
    if x is None:
        n = 1 if batch_size is None else batch_size
        ref = torch.zeros(())  # default dtype and device
    else:
        n, dim = x.shape
        ref = x
    k = num_components
    weights = pyro.sample("weights", dist.Dirichlet(ref.new_full((k,), 0.5)))
    with pyro.plate("components", k):
        locs = pyro.sample(
            "locs", dist.Normal(ref.new_zeros((k, dim)), ref.new_full((k, dim), 10.0)).to_event(1)
        )
    scale = pyro.sample("scale", dist.LogNormal(ref.new_zeros(()), ref.new_full((), 2.0)))
    with pyro.plate("data", n):
        assignment = pyro.sample(
            "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
        )
        # locs has batch dims (..., K): pick component `assignment` and keep any leading
        # batch dims (e.g. vectorized particles) left of the "data" dim, so this also works
        # when `assignment` is enumerated in parallel; `scale` broadcasts over the event dim.
        loc = Vindex(locs.unsqueeze(-3))[..., assignment, :]
        return pyro.sample("x", dist.Normal(loc, scale.unsqueeze(-1)).to_event(1), obs=x)


def example_args() -> tuple[tuple, dict]:
    """A deterministic batch of 5 points in the plane."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((5, 2), generator=g)
    return (), {"x": x}
