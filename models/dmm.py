r"""Deep Markov model (generative model only), as in Pyro's ``examples/dmm.py``.

Generative process, for each sequence :math:`n = 1, \dots, N` and step
:math:`t = 0, \dots, T_n - 1` (Krishnan et al. 2017, §3, eqs. 1-2):

.. math::

    z_t \mid z_{t-1} &\sim \mathcal{N}\big(\mu_\theta(z_{t-1}),
        \operatorname{diag}\sigma^2_\theta(z_{t-1})\big) \\
    x_t \mid z_t &\sim p_\theta(x_t \mid z_t)

with :math:`z_{-1} = z_0^\star` a learned vector (Pyro's ``z_0``). The
transition is gated (Krishnan et al. §5, "gated transition function"):

.. math::

    g_t &= \operatorname{sigmoid}\big(\mathrm{MLP}_g(z_{t-1})\big), \qquad
    h_t = \mathrm{MLP}_h(z_{t-1}) \\
    \mu_\theta(z_{t-1}) &= (1 - g_t) \odot (W z_{t-1} + b) + g_t \odot h_t, \qquad
    \sigma_\theta(z_{t-1}) = \operatorname{softplus}\big(W_\sigma \operatorname{relu}(h_t)
        + b_\sigma\big)

(:math:`W` starts as the identity). The emission is a two-hidden-layer MLP
giving a diagonal Gaussian (``likelihood="normal"``, for real data such as
the pendulum's images) or independent Bernoullis (``"bernoulli"``, Pyro's
choice for polyphonic music).

Written as Pyro users write it: ``for t in pyro.markov(range(T))`` inside
``pyro.plate("sequences", N)``, sites ``z_{t}`` and ``x_{t}`` with
``obs=x[:, t]``, both under ``poutine.mask(mask=mask[:, t])`` so padded steps
of shorter sequences count for nothing, and ``z_{t}`` under
``poutine.scale(scale=annealing_factor)`` (KL annealing).

References: R. G. Krishnan, U. Shalit and D. Sontag, "Structured Inference
Networks for Nonlinear State Space Models", AAAI 2017; the Pyro DMM example
(https://pyro.ai/examples/dmm.html).
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

__all__ = ["DMM", "Emitter", "GatedTransition", "dmm", "example_args", "model"]


class Emitter(nn.Module):
    """``p(x_t | z_t)``: a two-hidden-layer MLP to Normal (loc, scale) or Bernoulli probs."""

    def __init__(
        self, x_dim: int, z_dim: int, emission_dim: int, likelihood: Literal["normal", "bernoulli"]
    ) -> None:
        super().__init__()
        self.likelihood = likelihood
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_hidden = nn.Linear(emission_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, x_dim)
        self.lin_hidden_to_scale = nn.Linear(emission_dim, x_dim)

    def forward(self, z_t: torch.Tensor) -> dist.TorchDistribution:
        h1 = torch.relu(self.lin_z_to_hidden(z_t))
        h2 = torch.relu(self.lin_hidden_to_hidden(h1))
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(torch.sigmoid(self.lin_hidden_to_input(h2))).to_event(1)
        scale = nn.functional.softplus(self.lin_hidden_to_scale(h2)) + 1e-3
        return dist.Normal(self.lin_hidden_to_input(h2), scale).to_event(1)


class GatedTransition(nn.Module):
    """``p(z_t | z_{t-1})``: the gated transition of Krishnan et al. (2017)."""

    def __init__(self, z_dim: int, transition_dim: int) -> None:
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        with torch.no_grad():  # start as the identity, as Pyro's example does
            self.lin_z_to_loc.weight.copy_(torch.eye(z_dim))
            self.lin_z_to_loc.bias.zero_()

    def forward(self, z_t_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = torch.sigmoid(
            self.lin_gate_hidden_to_z(torch.relu(self.lin_gate_z_to_hidden(z_t_1)))
        )
        proposed_mean = self.lin_proposed_mean_hidden_to_z(
            torch.relu(self.lin_proposed_mean_z_to_hidden(z_t_1))
        )
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = nn.functional.softplus(self.lin_sig(torch.relu(proposed_mean))) + 1e-3
        return loc, scale


class DMM(nn.Module):
    """Networks and generative model of a deep Markov model."""

    def __init__(
        self,
        x_dim: int = 16,
        z_dim: int = 4,
        emission_dim: int = 32,
        transition_dim: int = 32,
        likelihood: Literal["normal", "bernoulli"] = "normal",
    ) -> None:
        super().__init__()
        if likelihood not in ("normal", "bernoulli"):
            raise ValueError(f"likelihood must be 'normal' or 'bernoulli', got {likelihood!r}")
        self.x_dim, self.z_dim = x_dim, z_dim
        self.emitter = Emitter(x_dim, z_dim, emission_dim, likelihood)
        self.trans = GatedTransition(z_dim, transition_dim)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))

    def model(
        self,
        x: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        annealing_factor: float = 1.0,
        *,
        batch_size: int | None = None,
        length: int | None = None,
    ) -> torch.Tensor:
        """``prod_t p(z_t | z_{t-1}) p(x_t | z_t)``.

        Args:
            x: observations ``(N, T, x_dim)``; ``None`` generates them.
            mask: ``(N, T)`` bool, False on padded steps; ``None``: none padded.
            annealing_factor: the weight of the ``z_t`` terms (KL annealing).
            batch_size, length: ``N`` and ``T`` when ``x`` is ``None``.

        Returns:
            the latent path ``(N, T, z_dim)``.
        """
        pyro.module("dmm", self)
        if x is None:
            n, steps = batch_size or 1, length or 1
        else:
            n, steps = x.shape[0], x.shape[1]
        z_prev = self.z_0.expand(n, self.z_dim)
        zs = []
        with pyro.plate("sequences", n):
            for t in pyro.markov(range(steps)):
                z_loc, z_scale = self.trans(z_prev)
                with poutine.mask(mask=True if mask is None else mask[:, t]):
                    with poutine.scale(scale=annealing_factor):
                        z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).to_event(1))
                    pyro.sample(f"x_{t}", self.emitter(z_t), obs=None if x is None else x[:, t])
                zs.append(z_t)
                z_prev = z_t
        return torch.stack(zs, dim=1)


dmm = DMM()
model = dmm.model


def example_args() -> tuple[tuple, dict]:
    """Four SYNTHETIC pendulum sequences of 5 frames (16 pixels), lengths 5, 3, 5, 2."""
    from pgmdl.datasets.controlled_pendulum import pendulum

    data = pendulum(4, 5, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 3, 5, 2])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    return (data.observations * mask[..., None], mask), {}
