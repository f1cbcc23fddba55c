r"""Quasi-deterministic VAE of weekly electricity consumption curves (thesis §10.3.2).

The model of the thesis' "extreme values" case study of Boltzmann tuning
(BTGM, §10.3.2, Fig. 10.5): a plain VAE trained on the half-hourly
consumption over a week (``T = 336`` half-hours, kW) aggregated over 10
households. Generative process, for each curve :math:`i = 1, \dots, N`:

.. math::

    z_i &\sim \mathcal{N}(0, I_{d_z}) \\
    \mathrm{curve}_i &= s \cdot \operatorname{softplus}\big(f_\theta(z_i)\big)
        \quad \text{(kW, recorded with ``pyro.deterministic``)} \\
    x_i \mid z_i &\sim \mathcal{N}\big(\mathrm{curve}_i,\ \sigma^2 I_T\big)

where :math:`f_\theta` is a decoder MLP, :math:`s` a fixed scale (10 kW, the
order of the data: the networks see curves of order 1, the sites stay in kW)
and :math:`\sigma` one learned scalar (kW) of a
:class:`pgmdl.QuasiDeterministic` observation (thesis ch. 6-7). The softplus
keeps the mean curve non-negative, as a consumption is. The ``"curve"`` site
is the decoder's mean, the differentiable quantity the BTGM criteria of
eq. 10.24-10.26 read (``weekly_peak``, ``top_hours``, ``flexibility`` of
:mod:`pgmdl.datasets.household_power`): the observation noise is independent of
:math:`z` and is left out of them.

The data are SYNTHETIC: :func:`pgmdl.datasets.households` with ``K = 10``
households per curve, a simulator calibrated on one real household of the UCI
"Individual household electric power consumption" data (see that module for
what is calibrated and what is assumed). The thesis' own data (~500 French
households) are not public.

The guide is a :class:`pgmdl.NaMIGuide` (an amortized encoder
:math:`q(z \mid x)`) reading the curves divided by :math:`s` (a
``bindings=`` entry, :func:`household_guide`). :func:`train_household_vae`
trains both on random minibatches of a fixed pool of simulated weeks, in a
param store scope of its own (:meth:`TrainedHouseholdVAE.scope`).

Reference: V. Berger, "Deep latent variable models: from properties to
structures", PhD thesis, 2021, §10.3.2; V. Berger and M. Sebag, "Boltzmann
Tuning of Generative Models", arXiv:2104.05252 (2021).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, TraceMeanField_ELBO
from torch import nn

import pgmdl
from pgmdl.datasets.household_power import households

__all__ = [
    "HouseholdVAE",
    "TrainedHouseholdVAE",
    "example_args",
    "household_curves",
    "household_guide",
    "model",
    "train_household_vae",
]

#: half-hours in a week
STEPS = 336
#: households aggregated in one curve (the thesis' §10.3.2 uses 10)
HOUSEHOLDS = 10


def household_curves(n: int, seed: int) -> torch.Tensor:
    """``(n, 336)`` SYNTHETIC weekly curves (kW) of 10 households each, from
    :func:`pgmdl.datasets.households` (``k_min = k_max = 10``, 7 days)."""
    return households(n, k_min=HOUSEHOLDS, k_max=HOUSEHOLDS, days=7, seed=seed).x


class HouseholdVAE(nn.Module):
    """Decoder, quasi-deterministic observation and generative model of the household VAE.

    Args:
        steps: the curves' length ``T`` (336 half-hours for a week).
        z_dim: latent dimension.
        hidden: hidden widths of the decoder MLP (ELU activations).
        scale: the fixed scale :math:`s` (kW) between the networks' unit and kW.
        sigma_min: the floor of the learned noise scale (kW).
        init: the noise scale's start (kW); ``None``: the data's spread on the
            first observed batch (learning it down anneals the model, §7.3).
    """

    def __init__(
        self,
        steps: int = STEPS,
        *,
        z_dim: int = 8,
        hidden: Sequence[int] = (256, 256),
        scale: float = 10.0,
        sigma_min: float = 0.05,
        init: float | None = None,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.z_dim = z_dim
        self.scale = float(scale)
        layers: list[nn.Module] = []
        width = z_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        layers.append(nn.Linear(width, steps))
        self.decoder = nn.Sequential(*layers)
        self.noise = pgmdl.QuasiDeterministic("global", sigma_min=sigma_min, init=init)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean curve (kW) at latent points ``z`` ``(..., z_dim)``: ``(..., T)``."""
        return self.scale * F.softplus(self.decoder(z))

    def model(self, x: torch.Tensor | None = None, batch_size: int = 1) -> torch.Tensor:
        """p(z) p(x | z); pass ``x`` (``(N, T)`` kW) to condition, or ``batch_size``
        to generate. The decoder's mean is the site ``"curve"`` (kW)."""
        pyro.module("decoder", self.decoder)
        if x is None:
            n = batch_size
            ref = next(self.decoder.parameters())
        else:
            n = x.shape[0]
            ref = x
        with pyro.plate("data", n):
            z_loc = ref.new_zeros((n, self.z_dim))
            z_scale = ref.new_ones((n, self.z_dim))
            z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            curve = pyro.deterministic("curve", self.decode(z), event_dim=1)
            return self.noise("x", curve, obs=x)

    @property
    def sigma(self) -> float:
        """The learned noise scale (kW; NaN before the first call)."""
        s = self.noise.last_sigma
        return float("nan") if s is None else float(s.mean())

    @torch.no_grad()
    def generate(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, T)`` mean curves (kW) at ``n`` draws ``z ~ p(z)``."""
        ref = next(self.decoder.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=ref.dtype).to(ref.device)
        return self.decode(z)


vae = HouseholdVAE()
model = vae.model


def example_args() -> tuple[tuple, dict]:
    """A deterministic batch of 5 SYNTHETIC weekly curves (kW) of 10 households."""
    return (), {"x": household_curves(5, seed=0)}


def household_guide(vae: HouseholdVAE, hidden: Sequence[int] = (256,)) -> pgmdl.NaMIGuide:
    """The :class:`pgmdl.NaMIGuide` of ``vae.model``, its encoder reading the
    curves in units of ``vae.scale`` (a ``bindings=`` entry for the observed site)."""
    return pgmdl.NaMIGuide(vae.model, hidden=tuple(hidden), bindings={"x": _Scaled("x", vae.scale)})


class _Scaled:
    """A guide binding: the model argument ``name`` divided by ``scale`` (a class,
    not a lambda, so that a trained guide pickles)."""

    def __init__(self, name: str, scale: float) -> None:
        self.name = name
        self.scale = scale

    def __call__(self, arguments: dict) -> torch.Tensor:
        return arguments[self.name] / self.scale


# --------------------------------------------------------------------------- training


@dataclass
class TrainedHouseholdVAE:
    """One trained household VAE.

    Attributes:
        vae: the model (decoder and observation); ``vae.model`` is the Pyro program.
        guide: its :class:`pgmdl.NaMIGuide`.
        losses: -ELBO per curve (nats) of every training step.
        seconds: wall-clock training time.
        param_state: the run's param store (see :meth:`scope`).
    """

    vae: HouseholdVAE
    guide: pgmdl.NaMIGuide
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    param_state: dict = field(default_factory=dict)

    @contextmanager
    def scope(self):
        """Enter the run's own param store: run (or tune) ``vae.model`` inside it."""
        with pyro.get_param_store().scope(self.param_state):
            yield

    @property
    def model(self):  # noqa: ANN201 - a bound method
        """The trained Pyro program ``vae.model``."""
        return self.vae.model

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, particles: int = 4) -> float:
        """The ELBO per curve (nats) on ``x`` (kW), averaged over ``particles`` draws."""
        loss = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=False)
        with self.scope():
            return -loss.loss(self.vae.model, self.guide, x) / len(x)


def train_household_vae(
    x: torch.Tensor,
    *,
    steps: int = 3000,
    batch_size: int = 128,
    lr: float = 2e-3,
    lr_final: float = 2e-4,
    seed: int = 0,
    z_dim: int = 8,
    hidden: Sequence[int] = (256, 256),
    guide_hidden: Sequence[int] = (256,),
    scale: float = 10.0,
    sigma_min: float = 0.05,
) -> TrainedHouseholdVAE:
    """Train a :class:`HouseholdVAE` and its :class:`pgmdl.NaMIGuide` on curves ``x``.

    Each step takes a random minibatch of ``batch_size`` rows of ``x``
    (``(N, T)``, kW); the loss is ``TraceMeanField_ELBO`` (the Gaussian KL of
    :math:`z` in closed form), the optimizer ``ClippedAdam`` with the step size
    decaying geometrically from ``lr`` to ``lr_final`` (gradients clipped at 10).
    The parameters live in a param store scope of their own
    (:meth:`TrainedHouseholdVAE.scope`), so several runs never share names.

    Args:
        x: the training curves (SYNTHETIC, e.g. :func:`household_curves`).
        steps: optimizer steps.
        batch_size: curves per step.
        lr, lr_final: first and last step size.
        seed: seeds the initial weights and the minibatches.
        z_dim, hidden, scale, sigma_min: as in :class:`HouseholdVAE`.
        guide_hidden: hidden widths of the encoder.

    Returns:
        the :class:`TrainedHouseholdVAE`.
    """
    torch.manual_seed(seed)
    net = HouseholdVAE(
        x.shape[-1], z_dim=z_dim, hidden=hidden, scale=scale, sigma_min=sigma_min
    ).to(x.device)
    g = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(x))
    decay = (lr_final / lr) ** (1.0 / max(steps, 1))
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": decay, "clip_norm": 10.0})
    losses: list[float] = []
    start = time.perf_counter()
    with pyro.get_param_store().scope() as state:
        guide = household_guide(net, guide_hidden)
        svi = SVI(net.model, guide, optim, TraceMeanField_ELBO())
        for _ in range(steps):
            rows = torch.randint(len(x), (batch_size,), generator=g).to(x.device)
            losses.append(svi.step(x[rows]) / batch_size)
    return TrainedHouseholdVAE(net, guide, losses, time.perf_counter() - start, state)
