r"""Quasi-deterministic Gaussian VAE of a 2-D manifold (thesis §6.3.2 and ch. 7).

Generative process, for each data point :math:`i = 1, \dots, N`:

.. math::

    z_i &\sim \mathcal{N}(0, I_{d_z}) \\
    x_i \mid z_i &\sim \mathcal{N}\big(f_\theta(z_i),\ \sigma^2 I_2\big)

where :math:`f_\theta` is a decoder MLP and the noise scale :math:`\sigma` is
set by a :class:`pgmdl.QuasiDeterministic` observation: a fixed number, one
learned scalar (``"global"``), the per-batch optimum
:math:`\sigma_\star^2 = e^2 / D` of eq. 7.3 (``"analytic"``), or a learned
function :math:`\sigma(z)` (``"local"``, eq. 7.4: an isotropic
:math:`\sigma(z) I_2` from a small head on the decoder's last hidden layer,
so that the decoder outputs both :math:`f(z)` and :math:`\sigma(z)`, §7.1.2).
The data is the SYNTHETIC sinusoidal manifold of :mod:`pgmdl.datasets.manifolds`.

Architecture. The decoder is ``Linear(d_z, 64) -> ELU -> Linear(64, 64) ->
ELU -> Linear(64, 2)`` with a 2-dimensional latent space by default. The
thesis uses a ResNet decoder and a 10-dimensional latent (footnote 8, "an
infinitely powerful generative model"); here a 2-d latent is the smallest
space in which the effect of §6.3.2 can show (one latent direction along the
curve, a second one in which a too small :math:`\sigma` makes the model store
the noise: "the dimension of the learned manifold increases from 1 to 2"),
and a two-layer MLP is enough to follow the 1.75 periods of the curve while
a run stays at tens of seconds on a CPU. The guide is a
:class:`pgmdl.NaMIGuide` (an amortized encoder :math:`q(z \mid x)`).

Training and evaluation helpers (used by ``benchmarks/variance_learning.py``
and the tutorials):

* :func:`train_manifold_vae`: one run in the large-sample limit: every
  minibatch is a fresh draw from the data process (``pgmdl.fit`` with a
  ``transform`` that replaces the minibatch by new points), so no point is
  seen twice and the model cannot overfit a finite sample; the parameters live
  in a param store scope of their own, so runs never share names;
* :func:`evaluate_manifold_vae`: on fresh held-out points, the ELBO per point
  (nats), the KL in bits, the reconstruction error against the true noise
  variance, the distance of generated :math:`f(z)` to the manifold, the
  coverage gaps, and :math:`\sigma`.

Reference: V. Berger, "Deep latent variable models: from properties to
structures", PhD thesis, 2021, §6.3.2 and ch. 7 (Figs 6.6, 7.1-7.5).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

import pgmdl
from pgmdl.datasets.manifolds import (
    coverage_gap,
    distance_to_manifold,
    log_density,
    sinusoid_manifold,
)
from pgmdl.nn import ResidualMLP

__all__ = [
    "ManifoldEvaluation",
    "ManifoldVAE",
    "TrainedManifoldVAE",
    "evaluate_manifold_vae",
    "example_args",
    "importance_log_weights",
    "manifold_points",
    "model",
    "train_manifold_vae",
]


class ManifoldVAE(nn.Module):
    """Decoder, quasi-deterministic observation and generative model of the manifold VAE.

    Args:
        sigma: the noise scale: a positive number (fixed) or a mode of
            :class:`pgmdl.QuasiDeterministic` (``"global"``, ``"per-dim"``,
            ``"analytic"``, ``"analytic-per-dim"``, ``"local"``).
        z_dim: latent dimension.
        hidden: hidden widths of the decoder MLP (ELU activations).
        sigma_min: the floor of learned and analytic scales.
        init: the starting scale of learned modes (``None``: the data's
            spread on the first batch, about 0.85 here).
        noise_hidden: hidden widths of the ``"local"`` head :math:`\\sigma(z)`.
        sigma_features: what the ``"local"`` head reads: ``"hidden"``, the
            decoder's last hidden layer (σ(z) as an output of the decoder,
            as in thesis §7.1.2 and Kingma & Welling 2014), or ``"z"``.
    """

    def __init__(
        self,
        sigma: str | float = "global",
        *,
        z_dim: int = 2,
        hidden: Sequence[int] = (64, 64),
        sigma_min: float = 1e-3,
        init: float | None = None,
        noise_hidden: Sequence[int] = (32,),
        sigma_features: str = "hidden",
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        layers: list[nn.Module] = []
        width = z_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        layers.append(nn.Linear(width, 2))
        self.decoder = nn.Sequential(*layers)
        # "local": an isotropic sigma(z) I_2, one scale per point from a
        # zero-initialized head, so sigma(z) starts at the global start
        if sigma_features not in ("z", "hidden"):
            raise ValueError(f"sigma_features={sigma_features!r}: use 'z' or 'hidden'")
        self.sigma_features = sigma_features
        width = z_dim if sigma_features == "z" else width
        head = ResidualMLP(width, 1, tuple(noise_hidden)) if sigma == "local" else None
        self.noise = pgmdl.QuasiDeterministic(sigma, sigma_min=sigma_min, init=init, head=head)

    @property
    def local(self) -> bool:
        """Whether :math:`\\sigma` is a function of :math:`z`."""
        return self.noise.mode == "local"

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
            loc, features = self._decode(z)
            return self.noise("x", loc, obs=x, features=features)

    def _decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``f(z)`` and the features of ``sigma(.)`` (``None`` unless local)."""
        if not self.local:
            return self.decoder(z), None
        if self.sigma_features == "z":
            return self.decoder(z), z
        hidden = self.decoder[:-1](z)
        return self.decoder[-1](hidden), hidden

    @torch.no_grad()
    def reconstruct(
        self, guide: Callable[..., Any], x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(z), z)`` with ``z ~ q(z | x)`` drawn from ``guide`` (one draw per point)."""
        z = guide(x)["z"]
        return self.decoder(z), z

    @torch.no_grad()
    def sigma_of(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma` at latent points ``z``, ``(n, 2)``: the fixed or learned
        scale broadcast, :math:`\\sigma(z)` for ``"local"``, the latest per-batch
        optimum for the analytic modes."""
        loc, features = self._decode(z)
        if self.noise.mode.startswith("analytic"):
            if self.noise.last_sigma is None:
                raise RuntimeError("an analytic sigma is known only after observing a batch")
            return self.noise.last_sigma.expand_as(loc).clone()
        fn = self.noise.distribution(loc, features=features)
        return fn.base_dist.scale.expand_as(loc).clone()

    @torch.no_grad()
    def generate(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(z), f(z) + ε)`` for ``n`` draws ``z ~ p(z)``, ``ε ~ N(0, σ²)``: the
        generated manifold (orange in the thesis' figures) and samples (green)."""
        ref = next(self.decoder.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=ref.dtype).to(ref.device)
        loc = self.decoder(z)
        eps = torch.randn(loc.shape, generator=generator, dtype=ref.dtype).to(ref.device)
        return loc, loc + self.sigma_of(z) * eps


vae = ManifoldVAE()
model = vae.model


def example_args() -> tuple[tuple, dict]:
    """A deterministic batch of 8 points of the synthetic manifold."""
    return (), {"x": sinusoid_manifold(8, seed=0).x}


# --------------------------------------------------------------------------- training


@dataclass
class TrainedManifoldVAE:
    """One trained run.

    Attributes:
        vae: the model (decoder and observation).
        guide: the :class:`pgmdl.NaMIGuide`.
        sigma: the ``sigma`` it was built with.
        seed: the run's seed.
        steps: optimizer steps taken.
        losses: -ELBO per point of every step (training minibatches).
        sigmas: the mean :math:`\\sigma` of every step (per-batch value for
            ``"analytic"``, the mean over points and coordinates for ``"local"``).
        seconds: wall-clock training time.
        param_state: the run's param store (see :meth:`scope`).
    """

    vae: ManifoldVAE
    guide: pgmdl.NaMIGuide
    sigma: str | float
    seed: int
    steps: int
    losses: list[float] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)
    seconds: float = 0.0
    param_state: dict = field(default_factory=dict)

    @contextmanager
    def scope(self):
        """Enter the run's own param store (runs never share parameter names)."""
        with pyro.get_param_store().scope(self.param_state):
            yield

    @property
    def final_sigma(self) -> float:
        """The mean :math:`\\sigma` of the last step."""
        return self.sigmas[-1]


def train_manifold_vae(
    sigma: str | float = "global",
    *,
    steps: int = 4000,
    batch_size: int = 1024,
    lr: float = 3e-3,
    lr_final: float = 3e-4,
    seed: int = 0,
    z_dim: int = 2,
    hidden: Sequence[int] = (64, 64),
    guide_hidden: Sequence[int] = (64, 64),
    sigma_min: float = 1e-3,
    init: float | None = None,
    noise_hidden: Sequence[int] = (32,),
    sigma_features: str = "hidden",
    sigma_lr_scale: float = 1.0,
    steps_per_epoch: int = 40,
    callback: Callable[[int, TrainedManifoldVAE], bool | None] | None = None,
) -> TrainedManifoldVAE:
    """Train a :class:`ManifoldVAE` with a :class:`pgmdl.NaMIGuide` in the large-sample limit.

    Every minibatch of ``batch_size`` points is a fresh draw from the data
    process (``pgmdl.fit``'s ``transform`` replaces the placeholder minibatch;
    the draws come from a generator seeded with ``seed``). ``pgmdl.fit`` runs
    ``steps // steps_per_epoch`` epochs of ``steps_per_epoch`` steps; Adam's
    step size decays geometrically from ``lr`` to ``lr_final``
    (``pyro.optim.ClippedAdam`` with ``lrd``, gradients clipped at 10). The
    run has a param store of its own (:meth:`TrainedManifoldVAE.scope`).

    Args:
        sigma: the observation's noise scale (see :class:`ManifoldVAE`).
        steps: optimizer steps (rounded down to whole epochs, at least one).
        batch_size: points per step.
        lr: first step size of Adam.
        lr_final: last step size.
        seed: seeds the initial weights, the data stream and ``pgmdl.fit``.
        z_dim: latent dimension.
        hidden: decoder hidden widths.
        guide_hidden: encoder hidden widths (``NaMIGuide(hidden=...)``).
        sigma_min: the floor of learned and analytic scales.
        init: starting scale of learned modes (``None``: the data's spread).
        noise_hidden: hidden widths of the ``"local"`` head.
        sigma_features: the ``"local"`` head's input (see :class:`ManifoldVAE`).
        sigma_lr_scale: step size of the noise scale's own parameters (the
            learned sigma, or the ``"local"`` head and offset) relative to
            the others'.
        steps_per_epoch: steps per ``pgmdl.fit`` epoch (the callback's grain).
        callback: ``callback(epoch, run)`` after each epoch, in the run's
            param store scope, with ``run.steps``, ``run.losses`` and
            ``run.sigmas`` up to date; returning ``True`` stops training.

    Returns:
        the :class:`TrainedManifoldVAE`.
    """
    steps_per_epoch = max(1, min(steps_per_epoch, steps))
    epochs = max(1, steps // steps_per_epoch)
    total = epochs * steps_per_epoch
    torch.manual_seed(seed)
    vae = ManifoldVAE(
        sigma,
        z_dim=z_dim,
        hidden=hidden,
        sigma_min=sigma_min,
        init=init,
        noise_hidden=noise_hidden,
        sigma_features=sigma_features,
    )
    stream = torch.Generator().manual_seed(10_000 + seed)
    placeholder = sinusoid_manifold(steps_per_epoch * batch_size, generator=stream).x
    run = TrainedManifoldVAE(vae=vae, guide=None, sigma=sigma, seed=seed, steps=0)  # type: ignore[arg-type]

    def fresh(batch: torch.Tensor) -> torch.Tensor:
        return sinusoid_manifold(len(batch), generator=stream, dtype=batch.dtype).x

    pending: list[torch.Tensor] = []  # sigma of each step since the last epoch

    def record(x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        out = vae.model(x, batch_size)
        if recording:  # a tensor: float() here would hide values from the graph tracer
            pending.append(vae.noise.last_sigma.mean())
        return out

    def each_epoch(epoch: int, result: pgmdl.FitResult) -> bool | None:
        run.steps = result.steps
        run.losses = list(result.losses)
        run.sigmas.extend(torch.stack(pending).tolist())
        pending.clear()
        return callback(epoch, run) if callback is not None else None

    recording = False
    with pyro.get_param_store().scope() as state:
        guide = pgmdl.NaMIGuide(record, hidden=guide_hidden)
        guide(placeholder[:batch_size])  # set the guide up (and sigma's start) before training
        run.guide = guide
        decay = (lr_final / lr) ** (1.0 / total)

        def optim_args(name: str) -> dict:
            scale = sigma_lr_scale if name.startswith("x.noise.") else 1.0
            return {"lr": lr * scale, "lrd": decay}

        optim = pyro.optim.ClippedAdam(optim_args)
        start = time.perf_counter()
        recording = True
        pgmdl.fit(
            record,
            guide,
            placeholder,
            epochs=epochs,
            batch_size=batch_size,
            optim=optim,
            progress=False,
            seed=seed,
            kl_every=0,
            transform=fresh,
            callback=each_epoch,
        )
        recording = False
        run.seconds = time.perf_counter() - start
    run.param_state = state
    return run


# --------------------------------------------------------------------------- evaluation


@dataclass
class ManifoldEvaluation:
    """Held-out measures of one run (see :func:`evaluate_manifold_vae`).

    Attributes:
        elbo: ELBO per point, nats (mean over points of a ``particles``-sample
            average).
        elbo_se: its standard error over points.
        iwae: the importance-weighted bound with ``particles`` samples, nats per
            point (tighter than the ELBO, still a lower bound of log p(x)).
        log_p_data: mean exact log-density of the data distribution at the
            test points: no model's expected log-likelihood is higher.
        kl_bits: KL(q(z|x) || p(z)) per point, bits.
        recon_mse: mean squared reconstruction error per coordinate,
            ``|x - f(z)|² / 2`` with ``z ~ q(z|x)``.
        noise_var: mean true noise variance per coordinate of the test points.
        mse_ratio: ``recon_mse / noise_var``; well below 1 means the model
            stores part of the noise in z.
        sigma: mean σ over the generated points (the σ itself when global).
        sigma_lo, sigma_hi: 5th and 95th percentiles of σ over generated points
            and coordinates (equal to ``sigma`` when global).
        sigma_star: sqrt(recon_mse), the optimal global σ of eq. 7.3.
        recon_distance: mean distance of the reconstructions f(z), z ~ q(z|x),
            to the clean curve.
        gen_distance: mean distance of the generated f(z), z ~ p(z), to it.
        recon_coverage, gen_coverage: coverage gaps of those sets (same size).
        sample_distance: mean distance of generated samples f(z) + ε to the
            curve; the data's own is ``data_distance``.
        data_distance: mean distance of the held-out points to the curve
            (about 0.027: E|normal noise component| = s(t)·sqrt(2/π)).
        sigma_log_error: mean over held-out points and coordinates of
            ``|log σ - log s(t)|``, σ at z ~ q(z|x): how well σ matches the true
            local noise (0 for a perfect ``"local"`` model; a global σ cannot
            go below the spread of log s(t), 0.52 at best).
    """

    elbo: float
    elbo_se: float
    iwae: float
    log_p_data: float
    kl_bits: float
    recon_mse: float
    noise_var: float
    mse_ratio: float
    sigma: float
    sigma_lo: float
    sigma_hi: float
    sigma_star: float
    recon_distance: float
    gen_distance: float
    recon_coverage: float
    gen_coverage: float
    sample_distance: float
    data_distance: float
    sigma_log_error: float


@torch.no_grad()
def _particle(run: TrainedManifoldVAE, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One particle: per-point log p(x|z), log p(z), log q(z|x), f(z) and σ(z)."""
    guide_trace = poutine.trace(run.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(run.vae.model, trace=guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    z = guide_trace.nodes["z"]["value"]
    return (
        model_trace.nodes["x"]["log_prob"],
        model_trace.nodes["z"]["log_prob"],
        guide_trace.nodes["z"]["log_prob"],
        run.vae.decoder(z),
        model_trace.nodes["x"]["fn"].base_dist.scale,
    )


@torch.no_grad()
def importance_log_weights(
    run: TrainedManifoldVAE, x: torch.Tensor, particles: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-point importance log-weights and the σ at the guide's codes.

    Returns ``(log_w, sigma)``: ``log_w`` is ``(particles, n)``, the values
    :math:`\log p(x, z_k) - \log q(z_k \mid x)`, :math:`z_k \sim q(z \mid x)`
    (their mean over ``k`` is a per-point ELBO, their ``logsumexp`` minus
    :math:`\log K` the per-point IWAE-K bound of :math:`\log p(x)`); ``sigma``
    is ``(n,)``, the mean over particles of the σ of the first coordinate. The
    guide is put in ``eval()`` mode while measuring, in the run's param store.
    """
    was_training = run.guide.training
    run.guide.eval()
    try:
        with run.scope():
            log_w, sigma = [], []
            for _ in range(particles):
                lx, lz, lq, f, scale = _particle(run, x)
                log_w.append(lx + lz - lq)
                sigma.append(scale.expand_as(f)[:, 0])
    finally:
        run.guide.train(was_training)
    return torch.stack(log_w), torch.stack(sigma).mean(0)


def evaluate_manifold_vae(
    run: TrainedManifoldVAE, *, n: int = 5000, particles: int = 16, seed: int = 12345
) -> ManifoldEvaluation:
    """Measure a trained run on ``n`` fresh held-out points (seeded by ``seed``).

    The guide's running feature statistics are frozen (``eval()``) while
    measuring. The ELBO per point is the mean over points of
    :math:`\\frac1K \\sum_k \\log p(x, z_k) - \\log q(z_k \\mid x)`,
    :math:`z_k \\sim q(z \\mid x)`, ``K = particles``; for ``sigma="analytic"``
    the scale is the optimum on the held-out set itself (as it would be on a
    batch). Generation uses ``n`` draws of ``z ~ p(z)``.
    """
    data = sinusoid_manifold(n, seed=seed)
    x = data.x
    was_training = run.guide.training
    run.guide.eval()
    try:
        with run.scope():
            log_lik, log_prior, log_q, recons, log_sigma = [], [], [], [], []
            for _ in range(particles):
                lx, lz, lq, f, scale = _particle(run, x)
                log_lik.append(lx)
                log_prior.append(lz)
                log_q.append(lq)
                recons.append(f)
                log_sigma.append(scale.expand_as(f).log())
            log_lik, log_prior, log_q = (torch.stack(v) for v in (log_lik, log_prior, log_q))
            log_w = log_lik + log_prior - log_q  # (K, n)
            elbo_points = log_w.mean(0)
            iwae = torch.logsumexp(log_w, 0) - math.log(particles)
            kl = (log_q - log_prior).mean()
            err = torch.stack([(x - f).pow(2).mean(-1) for f in recons]).mean()
            recon = recons[0]
            generator = torch.Generator().manual_seed(seed + 1)
            gen_loc, gen_sample = run.vae.generate(n, generator=generator)
            z = torch.randn(n, run.vae.z_dim, generator=generator)
            sig = run.vae.sigma_of(z).flatten()
    finally:
        run.guide.train(was_training)
    noise_var = float((data.noise_std**2).mean())
    log_s = data.noise_std.log()[:, None]
    sigma_log_error = torch.stack([(ls - log_s).abs().mean() for ls in log_sigma]).mean()
    recon_mse = float(err)
    lo, hi = torch.quantile(sig, torch.tensor([0.05, 0.95], dtype=sig.dtype)).tolist()
    return ManifoldEvaluation(
        elbo=float(elbo_points.mean()),
        elbo_se=float(elbo_points.std() / math.sqrt(n)),
        iwae=float(iwae.mean()),
        log_p_data=float(log_density(x).mean()),
        kl_bits=float(kl) / math.log(2),
        recon_mse=recon_mse,
        noise_var=noise_var,
        mse_ratio=recon_mse / noise_var,
        sigma=float(sig.mean()),
        sigma_lo=lo,
        sigma_hi=hi,
        sigma_star=math.sqrt(recon_mse),
        recon_distance=float(distance_to_manifold(recon).mean()),
        gen_distance=float(distance_to_manifold(gen_loc).mean()),
        recon_coverage=float(coverage_gap(recon)),
        gen_coverage=float(coverage_gap(gen_loc)),
        sample_distance=float(distance_to_manifold(gen_sample).mean()),
        data_distance=float(distance_to_manifold(x).mean()),
        sigma_log_error=float(sigma_log_error),
    )


def manifold_points(run: TrainedManifoldVAE, n: int = 2000, *, seed: int = 54321) -> dict:
    """Points to draw a run as in the thesis' figures, for ``n`` fresh data points:

    ``x`` the data (blue), ``recon`` the reconstructions f(z), z ~ q(z|x) (orange
    in Fig 6.6), ``gen_loc`` the generated manifold f(z), z ~ p(z) (orange in
    Fig 6.7), ``gen`` generated samples f(z) + ε (green), ``t`` the data's
    positions on the curve and ``sigma`` the σ at each data point's code
    (one value per point; from the first coordinate).
    """
    data = sinusoid_manifold(n, seed=seed)
    was_training = run.guide.training
    run.guide.eval()
    try:
        with run.scope(), torch.no_grad():
            recon, z = run.vae.reconstruct(run.guide, data.x)
            sigma = run.vae.sigma_of(z)[:, 0]
            gen_loc, gen = run.vae.generate(n, generator=torch.Generator().manual_seed(seed + 1))
    finally:
        run.guide.train(was_training)
    return {
        "x": data.x,
        "t": data.t,
        "recon": recon,
        "gen_loc": gen_loc,
        "gen": gen,
        "sigma": sigma,
    }
