r"""Quasi-deterministic Gaussian VAE of the 8x8 handwritten digits (base model of BTGM, ch. 10).

Generative process, for each image :math:`i = 1, \dots, N`:

.. math::

    z_i &\sim \mathcal{N}(0, I_{d_z}) \\
    \bar x_i &= \operatorname{sigmoid}\big(f_\theta(z_i)\big) \in (0, 1)^{64}
        \qquad \text{(the site ``"pixels"``, a ``pyro.deterministic``)} \\
    x_i \mid z_i &\sim \mathcal{N}\big(\bar x_i,\ \sigma^2 I_{64}\big)

where :math:`f_\theta` is a decoder MLP and :math:`\sigma` one learned scale
(:class:`pgmdl.QuasiDeterministic`, ``"global"``, chapter 7). The data is REAL:
the 1797 grey-level 8x8 digits bundled with scikit-learn
(:func:`pgmdl.datasets.digits.load_digits` with ``binarize=False``, values in
[0, 1]).

Why a quasi-deterministic observation and a recorded mean. Boltzmann tuning
(thesis §10.2.1, eq. 10.13-10.16) keeps :math:`p(x \mid z)` frozen and moves
only :math:`p(z)`; its KL over :math:`z` bounds the KL over :math:`x` tightly
when :math:`x` is a quasi-deterministic, quasi-invertible function of
:math:`z`. The decoder mean :math:`\bar x` is recorded with
``pyro.deterministic("pixels", mean, event_dim=1)`` so that a criterion
(a classifier, a discriminator) reads it *differentiably* in :math:`z`; the
Gaussian noise of ``"x"`` is outside the tuned sites' control (§10.3.3).

Architecture: decoder ``Linear(d_z, 128) -> ELU -> Linear(128, 128) -> ELU ->
Linear(128, 64) -> sigmoid``, 8 latent dimensions by default; the guide is a
:class:`pgmdl.NaMIGuide` (an amortized Gaussian encoder :math:`q(z \mid x)`).
:func:`train_digit_vae` trains both with :func:`pgmdl.fit` in a param store of
their own (:meth:`TrainedDigitVAE.scope`).

Reference: V. Berger and M. Sebag, "Boltzmann Tuning of Generative Models",
arXiv:2104.05252 (2021); V. Berger, PhD thesis (2022), chapters 7 and 10.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pgmdl
from pgmdl.datasets.digits import load_digits

__all__ = [
    "DigitVAE",
    "TrainedDigitVAE",
    "digit_split",
    "example_args",
    "model",
    "train_digit_vae",
]


class DigitVAE(nn.Module):
    """Decoder, quasi-deterministic observation and generative model of the digit VAE.

    Args:
        z_dim: latent dimension.
        hidden: hidden widths of the decoder MLP (ELU activations).
        sigma: the observation's noise scale: a mode of
            :class:`pgmdl.QuasiDeterministic` (``"global"``: one learned
            scale) or a positive number (fixed).
        sigma_min: the floor of a learned scale.
    """

    def __init__(
        self,
        z_dim: int = 8,
        hidden: Sequence[int] = (128, 128),
        sigma: str | float = "global",
        sigma_min: float = 1e-2,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        layers: list[nn.Module] = []
        width = z_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        layers.append(nn.Linear(width, 64))
        self.decoder = nn.Sequential(*layers)
        self.noise = pgmdl.QuasiDeterministic(sigma, sigma_min=sigma_min)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder mean :math:`\\bar x = \\operatorname{sigmoid}(f_\\theta(z))`, in (0, 1)."""
        return torch.sigmoid(self.decoder(z))

    def model(self, x: torch.Tensor | None = None, batch_size: int = 1) -> torch.Tensor:
        """p(z) p(x | z); pass ``x`` ``(N, 64)`` to condition, or ``batch_size`` to generate.

        The decoder mean is the deterministic site ``"pixels"`` (event_dim 1), the
        noisy observation the site ``"x"``."""
        pyro.module("digit_vae.decoder", self.decoder)
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
            mean = pyro.deterministic("pixels", self.decode(z), event_dim=1)
            return self.noise("x", mean, obs=x)

    @property
    def sigma(self) -> float:
        """The observation's current noise scale (mean over pixels)."""
        with torch.no_grad():
            loc = next(self.decoder.parameters()).new_zeros(1, 64)
            return float(self.noise.distribution(loc).base_dist.scale.mean())

    @torch.no_grad()
    def generate(
        self, n: int, *, generator: torch.Generator | None = None, noisy: bool = False
    ) -> torch.Tensor:
        """``n`` generated images ``(n, 64)``: decoder means :math:`\\bar x`, ``z ~ p(z)``
        (``noisy``: the samples :math:`\\bar x + \\sigma\\epsilon`)."""
        ref = next(self.decoder.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=ref.dtype).to(ref.device)
        mean = self.decode(z)
        if not noisy:
            return mean
        eps = torch.randn(mean.shape, generator=generator, dtype=ref.dtype).to(ref.device)
        return mean + self.sigma * eps


vae = DigitVAE()
model = vae.model


def example_args() -> tuple[tuple, dict]:
    """The first 5 grey-level digits (real data) as ``x``."""
    return (), {"x": load_digits(binarize=False)[:5]}


def digit_split(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random split of the 1797 grey-level digits: ``(x_train, y_train,
    x_test, y_test)``, images ``(n, 64)`` in [0, 1] and labels 0-9."""
    x, y = load_digits(binarize=False, return_labels=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


# --------------------------------------------------------------------------- training


@dataclass
class TrainedDigitVAE:
    """A trained :class:`DigitVAE` and its guide.

    Attributes:
        vae: the model; ``vae.model`` is the Pyro program to tune.
        guide: the :class:`pgmdl.NaMIGuide` encoder.
        result: :func:`pgmdl.fit`'s :class:`pgmdl.FitResult`.
        test_loss: -ELBO per image on held-out images (nats), or NaN.
        seconds: wall-clock training time.
        param_state: the run's param store (see :meth:`scope`).
    """

    vae: DigitVAE
    guide: pgmdl.NaMIGuide
    result: pgmdl.FitResult
    test_loss: float = float("nan")
    seconds: float = 0.0
    param_state: dict = field(default_factory=dict)

    @contextmanager
    def scope(self):
        """Enter the run's own param store (its parameters by name)."""
        with pyro.get_param_store().scope(self.param_state):
            yield

    @property
    def model(self):  # noqa: ANN201 - a bound method
        """The generative Pyro program ``model(x=None, batch_size=1)``."""
        return self.vae.model


def train_digit_vae(
    x_train: torch.Tensor | None = None,
    x_test: torch.Tensor | None = None,
    *,
    epochs: int = 300,
    batch_size: int = 128,
    lr: float = 3e-3,
    lr_final: float = 3e-4,
    z_dim: int = 8,
    hidden: Sequence[int] = (128, 128),
    guide_hidden: Sequence[int] = (128, 128),
    sigma: str | float = "global",
    sigma_min: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
) -> TrainedDigitVAE:
    """Train a :class:`DigitVAE` with a :class:`pgmdl.NaMIGuide` on grey-level digits.

    :func:`pgmdl.fit` with ``Trace_ELBO``, minibatches of ``batch_size``, and
    ``pyro.optim.ClippedAdam`` whose step size decays geometrically from
    ``lr`` to ``lr_final`` over the run (gradients clipped at 10). The
    parameters live in a param store of their own
    (:meth:`TrainedDigitVAE.scope`); the decoder stays usable outside it (its
    tensors are the trained ones).

    Args:
        x_train: training images ``(N, 64)`` in [0, 1] (default: the training
            part of :func:`digit_split`).
        x_test: held-out images for the reported loss (default: the test part
            of :func:`digit_split` when ``x_train`` is also defaulted).
        epochs: passes over ``x_train``.
        batch_size: images per step.
        lr, lr_final: first and last step size.
        z_dim, hidden, sigma, sigma_min: see :class:`DigitVAE`.
        guide_hidden: the encoder's hidden widths (``NaMIGuide(hidden=...)``).
        seed: seeds the weights and :func:`pgmdl.fit`.
        progress: show :func:`pgmdl.fit`'s progress bar.

    Returns:
        the :class:`TrainedDigitVAE`.
    """
    if x_train is None:
        x_train, _, default_test, _ = digit_split()
        x_test = default_test if x_test is None else x_test
    torch.manual_seed(seed)
    net = DigitVAE(z_dim=z_dim, hidden=hidden, sigma=sigma, sigma_min=sigma_min)
    steps = epochs * -(-len(x_train) // batch_size)
    optim = pyro.optim.ClippedAdam(
        {"lr": lr, "lrd": (lr_final / lr) ** (1 / max(steps, 1)), "clip_norm": 10.0}
    )
    start = time.perf_counter()
    with pyro.get_param_store().scope() as state:
        guide = pgmdl.NaMIGuide(net.model, hidden=tuple(guide_hidden))
        result = pgmdl.fit(
            net.model,
            guide,
            x_train,
            epochs=epochs,
            batch_size=batch_size,
            optim=optim,
            progress=progress,
            kl_every=max(epochs, 1),
            seed=seed,
        )
        test_loss = float("nan")
        if x_test is not None:
            elbo = pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=False)
            with torch.no_grad():
                test_loss = elbo.loss(net.model, guide, x_test) / len(x_test)
    return TrainedDigitVAE(net, guide, result, test_loss, time.perf_counter() - start, state)
