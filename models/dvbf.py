r"""Deep Variational Bayes Filter and its fully probabilistic counterpart
(generative models only), for controlled systems such as the pendulum.

**DVBF** (Karl et al. 2017, §2.2-2.3, the locally linear transition of §2.3;
thesis §8.3.2, Figure 8.4). For each sequence :math:`n` the latent path is
*deterministic* given an initial latent :math:`w` and stochastic innovations
:math:`\beta_t`:

.. math::

    w &\sim \mathcal{N}(0, I), \qquad z_0 = f_{\mathrm{init}}(w) \\
    \beta_t &\sim \mathcal{N}(0, I), \qquad
        z_{t+1} = f_\theta(z_t, u_t, \beta_t) = A_t z_t + B_t u_t + C_t \beta_t \\
    x_t \mid z_t &\sim \mathcal{N}\big(\mu_\theta(z_t), \operatorname{diag}\sigma^2_\theta(z_t)\big)

with :math:`(A_t, B_t, C_t) = \sum_{k=1}^K \alpha_t^{(k)} (A^{(k)}, B^{(k)}, C^{(k)})`
and :math:`\alpha_t = \operatorname{softmax}\big(\mathrm{MLP}_\alpha(z_t, u_t)\big)`
(Karl et al. eq. 8: a mixture of ``K`` learned linear systems, the weights a
function of the state and the control). Sites: ``w`` and ``beta_{t}`` are the
latent sites; ``z_{t}`` are recorded with ``pyro.deterministic``; ``x_{t}``
observed with ``obs=x[:, t]``. Because the :math:`z_t` carry no density, the
ELBO does not penalize the information they hold: the pressure to explain
:math:`x_{t+1}` flows to :math:`(z_t, u_t, \beta_t)` (thesis §8.3.2).

**Fully probabilistic state-space model** (thesis §8.3.1, Figure 8.3; Karl
et al. §2.1): the same locally linear transition and emitter, but the states
themselves are the latent sites,

.. math::

    z_0 &\sim \mathcal{N}(0, I), \qquad
    z_{t+1} \mid z_t \sim \mathcal{N}\big(A_t z_t + B_t u_t, \operatorname{diag}\sigma^2\big) \\
    x_t \mid z_t &\sim \mathcal{N}\big(\mu_\theta(z_t), \operatorname{diag}\sigma^2_\theta(z_t)\big)

with a learned transition noise :math:`\sigma`. The thesis's comparison: this
model tends to store in :math:`z_t` only what reconstructs :math:`x_t` and
misses the dynamics (e.g. the pendulum's velocity), which the DVBF recovers.

Both take the controls ``u`` ``(N, T, u_dim)`` as an argument (``u[:, t]``
drives ``t -> t + 1``; the last is unused) and an optional ``mask`` ``(N, T)``
of real steps: each step's sites (``beta_{t-1}``, ``z_{t}``, ``x_{t}``) are
under ``poutine.mask(mask=mask[:, t])``.

References: M. Karl, M. Soelch, J. Bayer and P. van der Smagt, "Deep
Variational Bayes Filters: Unsupervised Learning of State Space Models from
Raw Data", ICLR 2017; V. Berger, "Deep Latent Variable Models: from
properties to structures", PhD thesis, 2021, §8.3.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

__all__ = [
    "DVBF",
    "FullyProbabilisticSSM",
    "GaussianEmitter",
    "LocallyLinearTransition",
    "dvbf",
    "example_args",
    "markov_model",
    "markov_ssm",
    "model",
]


class GaussianEmitter(nn.Module):
    """``p(x_t | z_t)``: an MLP to a diagonal Gaussian."""

    def __init__(self, x_dim: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.Softplus())
        self.loc = nn.Linear(hidden_dim, x_dim)
        self.scale = nn.Linear(hidden_dim, x_dim)

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        h = self.body(z)
        scale = nn.functional.softplus(self.scale(h)) + 1e-3
        return dist.Normal(self.loc(h), scale).to_event(1)


class LocallyLinearTransition(nn.Module):
    """``A_t z + B_t u + C_t beta`` with ``(A_t, B_t, C_t)`` a softmax mixture of
    ``K`` learned matrices, weighted by an MLP of ``(z, u)`` (Karl et al. eq. 8).

    ``beta_dim = 0`` drops the ``C_t beta`` term (the fully probabilistic model).
    """

    def __init__(
        self, z_dim: int, u_dim: int, beta_dim: int, num_systems: int, hidden_dim: int
    ) -> None:
        super().__init__()
        self.weights = nn.Sequential(
            nn.Linear(z_dim + u_dim, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, num_systems)
        )
        eye = torch.eye(z_dim).expand(num_systems, z_dim, z_dim)
        self.A = nn.Parameter(eye + 0.01 * torch.randn(num_systems, z_dim, z_dim))
        self.B = nn.Parameter(0.01 * torch.randn(num_systems, z_dim, u_dim))
        self.C = nn.Parameter(0.01 * torch.randn(num_systems, z_dim, beta_dim))

    def forward(
        self, z: torch.Tensor, u: torch.Tensor, beta: torch.Tensor | None = None
    ) -> torch.Tensor:
        alpha = torch.softmax(self.weights(torch.cat([z, u], dim=-1)), dim=-1)  # (..., K)
        a = torch.einsum("...k,kij->...ij", alpha, self.A)
        b = torch.einsum("...k,kij->...ij", alpha, self.B)
        out = (a @ z[..., None]).squeeze(-1) + (b @ u[..., None]).squeeze(-1)
        if beta is not None:
            c = torch.einsum("...k,kij->...ij", alpha, self.C)
            out = out + (c @ beta[..., None]).squeeze(-1)
        return out


def _shape(x: torch.Tensor | None, u: torch.Tensor, u_dim: int) -> tuple[int, int]:
    if u.dim() != 3 or u.shape[-1] != u_dim:
        raise ValueError(f"u must have shape (N, T, {u_dim}), got {tuple(u.shape)}")
    if x is not None and x.shape[:2] != u.shape[:2]:
        raise ValueError(
            f"x and u must share (N, T); got {tuple(x.shape[:2])} and {tuple(u.shape[:2])}"
        )
    return u.shape[0], u.shape[1]


class DVBF(nn.Module):
    """Networks and generative model of a Deep Variational Bayes Filter (locally linear)."""

    def __init__(
        self,
        x_dim: int = 16,
        z_dim: int = 3,
        u_dim: int = 1,
        w_dim: int | None = None,
        beta_dim: int | None = None,
        num_systems: int = 4,
        hidden_dim: int = 32,
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim, self.u_dim = x_dim, z_dim, u_dim
        self.w_dim = z_dim if w_dim is None else w_dim
        self.beta_dim = z_dim if beta_dim is None else beta_dim
        self.initial = nn.Sequential(
            nn.Linear(self.w_dim, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, z_dim)
        )
        self.transition = LocallyLinearTransition(
            z_dim, u_dim, self.beta_dim, num_systems, hidden_dim
        )
        self.emitter = GaussianEmitter(x_dim, z_dim, hidden_dim)

    def model(
        self, x: torch.Tensor | None, u: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``p(w) prod_t p(beta_t) prod_t p(x_t | z_t)``, ``z`` deterministic.

        Args:
            x: observations ``(N, T, x_dim)``; ``None`` generates them.
            u: controls ``(N, T, u_dim)``.
            mask: ``(N, T)`` bool, False on padded steps; ``None``: none padded.

        Returns:
            the latent path ``(N, T, z_dim)``.
        """
        pyro.module("dvbf", self)
        n, steps = _shape(x, u, self.u_dim)
        zs = []
        with pyro.plate("sequences", n):
            w_loc = u.new_zeros(n, self.w_dim)
            w = pyro.sample("w", dist.Normal(w_loc, torch.ones_like(w_loc)).to_event(1))
            for t in pyro.markov(range(steps)):
                with poutine.mask(mask=True if mask is None else mask[:, t]):
                    if t == 0:
                        z = pyro.deterministic("z_0", self.initial(w), event_dim=1)
                    else:
                        b_loc = u.new_zeros(n, self.beta_dim)
                        beta = pyro.sample(
                            f"beta_{t - 1}", dist.Normal(b_loc, torch.ones_like(b_loc)).to_event(1)
                        )
                        z_next = self.transition(z, u[:, t - 1], beta)
                        z = pyro.deterministic(f"z_{t}", z_next, event_dim=1)
                    pyro.sample(f"x_{t}", self.emitter(z), obs=None if x is None else x[:, t])
                zs.append(z)
        return torch.stack(zs, dim=1)


class FullyProbabilisticSSM(nn.Module):
    """The same transition and emitter with stochastic states (thesis §8.3.1)."""

    def __init__(
        self,
        x_dim: int = 16,
        z_dim: int = 3,
        u_dim: int = 1,
        num_systems: int = 4,
        hidden_dim: int = 32,
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim, self.u_dim = x_dim, z_dim, u_dim
        self.transition = LocallyLinearTransition(z_dim, u_dim, 0, num_systems, hidden_dim)
        self.transition_scale = nn.Parameter(torch.full((z_dim,), -2.0))  # softplus ~ 0.13
        self.emitter = GaussianEmitter(x_dim, z_dim, hidden_dim)

    def model(
        self, x: torch.Tensor | None, u: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``p(z_0) prod_t p(z_{t+1} | z_t, u_t) prod_t p(x_t | z_t)``.

        Args: as :meth:`DVBF.model`. Returns: the latent path ``(N, T, z_dim)``.
        """
        pyro.module("markov_ssm", self)
        n, steps = _shape(x, u, self.u_dim)
        scale = nn.functional.softplus(self.transition_scale) + 1e-3
        zs = []
        with pyro.plate("sequences", n):
            for t in pyro.markov(range(steps)):
                if t == 0:
                    loc = u.new_zeros(n, self.z_dim)
                    z_dist = dist.Normal(loc, torch.ones_like(loc)).to_event(1)
                else:
                    z_dist = dist.Normal(self.transition(zs[-1], u[:, t - 1]), scale).to_event(1)
                with poutine.mask(mask=True if mask is None else mask[:, t]):
                    z = pyro.sample(f"z_{t}", z_dist)
                    pyro.sample(f"x_{t}", self.emitter(z), obs=None if x is None else x[:, t])
                zs.append(z)
        return torch.stack(zs, dim=1)


dvbf = DVBF()
model = dvbf.model
markov_ssm = FullyProbabilisticSSM()
markov_model = markov_ssm.model


def example_args() -> tuple[tuple, dict]:
    """Four SYNTHETIC pendulum sequences of 5 frames and their controls; lengths 5, 3, 5, 2."""
    from pgmdl.datasets.controlled_pendulum import pendulum

    data = pendulum(4, 5, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 3, 5, 2])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    return (data.observations * mask[..., None], data.controls, mask), {}
