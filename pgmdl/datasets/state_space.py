r"""A SYNTHETIC linear-Gaussian state-space model with exact evidence and posteriors.

The data made here is SYNTHETIC: sequences drawn from a known linear-Gaussian
state-space model (a linear dynamical system), not measured. It is the test
bed of sequence models (``pyro.markov`` programs): the log-evidence of every
sequence, ``log p(x_{0:T-1})``, is exact by the Kalman filter, and the
posterior marginals ``p(z_t | x_{0:T-1})`` by the Rauch-Tung-Striebel
smoother, so a guide's ELBO and posterior can be compared with the truth.

The model (Bishop 2006, *Pattern Recognition and Machine Learning*, §13.3,
eqs. 13.75-13.77; steps numbered from 0 as in the Pyro program)::

    z_0 ~ N(mu0, S0)
    z_t = A z_{t-1} + w_t,   w_t ~ N(0, Q)        (t = 1 .. T-1)
    x_t = C z_t + v_t,       v_t ~ N(0, R)        (t = 0 .. T-1)

with ``Q``, ``R`` and ``S0`` diagonal (so that every site of the Pyro program
is ``Normal(loc, scale).to_event(1)``, as users write the deep Markov model).
By default ``z`` and ``x`` are 2-D and ``A`` is a damped rotation, a stable
oscillator: ``A = rho R(omega)``, ``rho = 0.95``, ``omega = 0.3`` rad a step.

Exact inference (float64 internally, vectorized over the batch):

* **Kalman filter** (Bishop eqs. 13.86-13.92, in the predict/update form;
  Särkkä 2013, *Bayesian Filtering and Smoothing*, Theorem 4.2). With the
  prediction ``z_t | x_{<t} ~ N(m^-_t, P^-_t)`` the observation's predictive is
  ``x_t | x_{<t} ~ N(C m^-_t, S_t)``, ``S_t = C P^-_t C^T + R``, and
  ``log p(x_{0:T-1}) = sum_t log N(x_t; C m^-_t, S_t)`` (Bishop eq. 13.63). The
  update uses the gain ``K_t = P^-_t C^T S_t^{-1}`` and Joseph's form of the
  covariance, ``P_t = (I - K_t C) P^-_t (I - K_t C)^T + K_t R K_t^T``.
* **RTS smoother** (Bishop eqs. 13.100-13.102; Särkkä Theorem 8.2):
  ``G_t = P_t A^T (P^-_{t+1})^{-1}``,
  ``m^s_t = m_t + G_t (m^s_{t+1} - m^-_{t+1})``,
  ``P^s_t = P_t + G_t (P^s_{t+1} - P^-_{t+1}) G_t^T``.

Sequences of different lengths are padded to a common ``T_max``; a padded
step is treated as a step without an observation, so it adds nothing to the
log-evidence and leaves the posterior of the steps before it unchanged (the
moments reported there are the prior's prediction). Padded values are never
read.

Example (the values are synthetic):

>>> import torch
>>> from pgmdl.datasets.state_space import LinearGaussianSSM
>>> ssm = LinearGaussianSSM()
>>> data = ssm.sample(4, 6, torch.Generator().manual_seed(0), lengths=[6, 5, 3, 6])
>>> data.x.shape, data.lengths.tolist(), data.mask.sum(1).tolist()
(torch.Size([4, 6, 2]), [6, 5, 3, 6], [6, 5, 3, 6])
>>> ssm.log_evidence(data.x, data.lengths).shape
torch.Size([4])
>>> smoothed = ssm.smooth(data.x, data.lengths)
>>> smoothed.mean.shape, smoothed.covariance.shape
(torch.Size([4, 6, 2]), torch.Size([4, 6, 2, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

__all__ = ["GaussianMarginals", "LinearGaussianSSM", "SequenceSample", "sequence_mask"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class SequenceSample:
    """A padded batch of SYNTHETIC sequences and the latent states that made them.

    Attributes:
        x: observations, ``(N, T_max, d_x)``; zeros past each sequence's length.
        z: latent states, ``(N, T_max, d_z)``; zeros past each sequence's length.
        lengths: ``(N,)`` long, each in ``[1, T_max]``.
    """

    x: torch.Tensor
    z: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(N, T_max)`` bool: True on the steps within each sequence's length."""
        return sequence_mask(self.lengths, self.x.shape[1])


class GaussianMarginals(NamedTuple):
    """Per-step Gaussian marginals of the latent states.

    Attributes:
        mean: ``(N, T_max, d_z)``.
        covariance: ``(N, T_max, d_z, d_z)``.
    """

    mean: torch.Tensor
    covariance: torch.Tensor


def sequence_mask(lengths: torch.Tensor | Sequence[int], length: int) -> torch.Tensor:
    """``(N, length)`` bool mask, True at steps ``t < lengths[n]``, on the lengths' device."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(
            f"lengths must be 1-D (one per sequence), got shape {tuple(lengths.shape)}"
        )
    steps = torch.arange(int(length), device=lengths.device)
    return steps[None, :] < lengths[:, None]


class LinearGaussianSSM:
    """A SYNTHETIC linear-Gaussian state-space model with exact inference.

    ``z_0 ~ N(mu0, diag(s0^2))``, ``z_t = A z_{t-1} + N(0, diag(q^2))``,
    ``x_t = C z_t + N(0, diag(r^2))`` (see the module docstring for the exact
    filter and smoother and their references).

    Args:
        z_dim: latent dimension ``d_z``.
        x_dim: observed dimension ``d_x``.
        transition: ``A``, ``(d_z, d_z)``; default ``damping`` times a rotation
            by ``rotation`` radians in each consecutive pair of coordinates (a
            last odd coordinate is only damped), stable with spectral radius
            ``damping``.
        emission: ``C``, ``(d_x, d_z)``; default drawn once, entries
            ``N(0, 1 / d_z)``, from ``torch.Generator().manual_seed(seed)``.
        transition_scale: ``q``, a float or ``(d_z,)``: the standard
            deviations of the transition noise.
        emission_scale: ``r``, a float or ``(d_x,)``: the standard deviations
            of the observation noise.
        initial_loc: ``mu0``, ``(d_z,)``; default zeros.
        initial_scale: ``s0``, a float or ``(d_z,)``.
        rotation: the default ``A``'s rotation angle per step.
        damping: the default ``A``'s contraction.
        seed: seed of the default ``C``.
        dtype: dtype of what :meth:`sample` and :meth:`model` make without data.
        device: their device without data; default torch's default device.

    Raises:
        ValueError: a parameter of the wrong shape, non-finite, or a scale
            that is not positive.

    Parameters are kept in float64 on the CPU and converted on use, so one
    model serves every device and dtype.
    """

    def __init__(
        self,
        z_dim: int = 2,
        x_dim: int = 2,
        *,
        transition: torch.Tensor | None = None,
        emission: torch.Tensor | None = None,
        transition_scale: float | torch.Tensor = 0.3,
        emission_scale: float | torch.Tensor = 0.5,
        initial_loc: torch.Tensor | None = None,
        initial_scale: float | torch.Tensor = 1.0,
        rotation: float = 0.3,
        damping: float = 0.95,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        for value, what in ((z_dim, "z_dim"), (x_dim, "x_dim")):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        self.z_dim, self.x_dim = z_dim, x_dim
        if transition is None:
            transition = _damped_rotation(z_dim, rotation, damping)
        if emission is None:
            g = torch.Generator().manual_seed(seed)
            emission = torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64) / math.sqrt(
                z_dim
            )
        if initial_loc is None:
            initial_loc = torch.zeros(z_dim, dtype=torch.float64)
        self._A = _matrix(transition, (z_dim, z_dim), "transition")
        self._C = _matrix(emission, (x_dim, z_dim), "emission")
        self._mu0 = _matrix(initial_loc, (z_dim,), "initial_loc")
        self._q = _scale(transition_scale, z_dim, "transition_scale")
        self._r = _scale(emission_scale, x_dim, "emission_scale")
        self._s0 = _scale(initial_scale, z_dim, "initial_scale")
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None

    # ------------------------------------------------------------------ parameters

    @property
    def transition(self) -> torch.Tensor:
        """``A``, ``(d_z, d_z)`` float64 (a copy)."""
        return self._A.clone()

    @property
    def emission(self) -> torch.Tensor:
        """``C``, ``(d_x, d_z)`` float64 (a copy)."""
        return self._C.clone()

    @property
    def initial_loc(self) -> torch.Tensor:
        """``mu0``, ``(d_z,)`` float64 (a copy)."""
        return self._mu0.clone()

    @property
    def transition_scale(self) -> torch.Tensor:
        """``q``, ``(d_z,)`` float64: ``Q = diag(q^2)``."""
        return self._q.clone()

    @property
    def emission_scale(self) -> torch.Tensor:
        """``r``, ``(d_x,)`` float64: ``R = diag(r^2)``."""
        return self._r.clone()

    @property
    def initial_scale(self) -> torch.Tensor:
        """``s0``, ``(d_z,)`` float64: ``S0 = diag(s0^2)``."""
        return self._s0.clone()

    def to(self, device: torch.device | str) -> LinearGaussianSSM:
        """Make ``device`` the default device of :meth:`sample` and :meth:`model`; returns self."""
        self.device = torch.device(device)
        return self

    @staticmethod
    def mask(lengths: torch.Tensor | Sequence[int], length: int) -> torch.Tensor:
        """``(N, length)`` bool, True at the steps within each sequence (:func:`sequence_mask`)."""
        return sequence_mask(lengths, length)

    def __repr__(self) -> str:
        return f"LinearGaussianSSM(z_dim={self.z_dim}, x_dim={self.x_dim})"

    # ------------------------------------------------------------------ Pyro model

    def model(
        self,
        x: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        num_sequences: int | None = None,
        length: int | None = None,
    ) -> torch.Tensor:
        """The state-space model as a Pyro program, written as users write the DMM.

        Sites, for ``t = 0 .. T-1`` inside ``pyro.plate("sequences", N)`` and
        ``pyro.markov``: ``z_{t}`` (``Normal(loc, scale).to_event(1)``, the
        initial distribution at ``t = 0``) and ``x_{t}`` with ``obs=x[:, t]``.
        With a ``mask`` both sites of step ``t`` are under
        ``poutine.mask(mask=mask[:, t])``, as in Pyro's DMM example, so padded
        steps add nothing to the log joint.

        Args:
            x: observations ``(N, T, d_x)``; ``None`` samples them.
            mask: ``(N, T)`` bool, True on real steps; ``None``: all real.
            num_sequences, length: ``N`` and ``T`` when ``x`` is ``None``
                (default 1 each), in ``self.dtype`` on ``self.device``.

        Returns:
            the latent states, ``(N, T, d_z)``.
        """
        if x is None:
            n = 1 if num_sequences is None else int(num_sequences)
            steps = 1 if length is None else int(length)
            dtype, device = self.dtype, self.device
        else:
            if x.dim() != 3 or x.shape[-1] != self.x_dim:
                raise ValueError(f"x must have shape (N, T, {self.x_dim}), got {tuple(x.shape)}")
            n, steps = x.shape[0], x.shape[1]
            dtype, device = x.dtype, x.device
        transition = self._A.to(device=device, dtype=dtype)
        emission = self._C.to(device=device, dtype=dtype)
        q = self._q.to(device=device, dtype=dtype)
        r = self._r.to(device=device, dtype=dtype)
        initial_loc = self._mu0.to(device=device, dtype=dtype).expand(n, self.z_dim)
        initial_scale = self._s0.to(device=device, dtype=dtype)
        zs: list[torch.Tensor] = []
        with pyro.plate("sequences", n):
            for t in pyro.markov(range(steps)):
                if t == 0:
                    z_loc, z_scale = initial_loc, initial_scale
                else:
                    z_loc, z_scale = zs[-1] @ transition.T, q
                with poutine.mask(mask=True if mask is None else mask[:, t]):
                    z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).to_event(1))
                    pyro.sample(
                        f"x_{t}",
                        dist.Normal(z_t @ emission.T, r).to_event(1),
                        obs=None if x is None else x[:, t],
                    )
                zs.append(z_t)
        return torch.stack(zs, dim=1)

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        num_sequences: int,
        length: int,
        generator: torch.Generator | None = None,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        min_length: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> SequenceSample:
        """Draw ``num_sequences`` SYNTHETIC sequences by ancestral sampling.

        Args:
            num_sequences: ``N``.
            length: ``T_max``, the padded length.
            generator: a :class:`torch.Generator` for reproducible draws; the
                noise is drawn on its device, then moved to ``device``.
            lengths: each sequence's length, in ``[1, length]``; default: all
                ``length`` (or drawn, see ``min_length``).
            min_length: with ``lengths=None``, draw each length uniformly in
                ``[min_length, length]`` from ``generator``.
            device, dtype: of the result (default ``self.device``, ``self.dtype``).

        Returns:
            a :class:`SequenceSample`; steps past a sequence's length are zeros.
        """
        n, steps = _positive(num_sequences, "num_sequences"), _positive(length, "length")
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        draw_on = generator.device if generator is not None else device
        noise = torch.randn(
            n,
            steps,
            self.z_dim + self.x_dim,
            generator=generator,
            dtype=torch.float64,
            device=draw_on,
        )
        if lengths is None:
            if min_length is None:
                lengths = torch.full((n,), steps, dtype=torch.long)
            else:
                low = _positive(min_length, "min_length")
                if low > steps:
                    raise ValueError(f"min_length={low} exceeds length={steps}")
                lengths = torch.randint(low, steps + 1, (n,), generator=generator, device=draw_on)
        elif min_length is not None:
            raise ValueError("give lengths or min_length, not both")
        lengths = _check_lengths(lengths, n, steps, minimum=1).to("cpu")
        noise = noise.cpu()
        w, v = noise[..., : self.z_dim], noise[..., self.z_dim :]
        z = torch.empty(n, steps, self.z_dim, dtype=torch.float64)
        z[:, 0] = self._mu0 + self._s0 * w[:, 0]
        for t in range(1, steps):
            z[:, t] = z[:, t - 1] @ self._A.T + self._q * w[:, t]
        x = z @ self._C.T + self._r * v
        keep = sequence_mask(lengths, steps)[..., None]
        x, z = x * keep, z * keep
        return SequenceSample(
            x=x.to(device=device, dtype=dtype),
            z=z.to(device=device, dtype=dtype),
            lengths=lengths.to(device),
        )

    # ------------------------------------------------------------------ exact quantities

    def log_evidence(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> torch.Tensor:
        """Exact ``log p(x_{0:T_n-1})`` of each sequence, by the Kalman filter.

        Args:
            x: ``(N, T_max, d_x)``.
            lengths: ``(N,)``, each in ``[0, T_max]``; default all ``T_max``.
                Steps past a length are not read.

        Returns:
            ``(N,)`` in the dtype (float64 for integer data) and on the device of ``x``.
        """
        return self._kalman(x, lengths)[0]

    def filter(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> GaussianMarginals:
        """Filtered marginals ``p(z_t | x_{0:t})``; past a length, the prior's prediction."""
        _, filtered, _, out = self._kalman(x, lengths)
        return GaussianMarginals(*(m.to(out) for m in filtered))

    def smooth(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> GaussianMarginals:
        """Exact posterior marginals ``p(z_t | x_{0:T_n-1})`` by the RTS smoother.

        Past a sequence's length they are the prior's prediction given the
        whole sequence.
        """
        _, (mean_f, cov_f), (mean_p, cov_p), out = self._kalman(x, lengths)
        steps = mean_f.shape[1]
        transition = self._A.to(mean_f.device)
        mean_s, cov_s = mean_f.clone(), cov_f.clone()
        for t in range(steps - 2, -1, -1):
            # G_t = P_t A^T (P^-_{t+1})^{-1}, by a Cholesky solve of the symmetric P^-.
            chol = torch.linalg.cholesky(cov_p[:, t + 1])
            gain = torch.cholesky_solve(transition @ cov_f[:, t], chol).transpose(-1, -2)
            mean_s[:, t] = mean_f[:, t] + (
                gain @ (mean_s[:, t + 1] - mean_p[:, t + 1])[..., None]
            ).squeeze(-1)
            cov = cov_f[:, t] + gain @ (cov_s[:, t + 1] - cov_p[:, t + 1]) @ gain.transpose(-1, -2)
            cov_s[:, t] = (cov + cov.transpose(-1, -2)) / 2
        return GaussianMarginals(mean_s.to(out), cov_s.to(out))

    def log_joint(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``log p(x_{0:T_n-1}, z_{0:T_n-1})`` of each sequence, in closed form.

        Args:
            x: ``(N, T_max, d_x)``; z: ``(N, T_max, d_z)``.
            lengths: as in :meth:`log_evidence`.

        Returns:
            ``(N,)`` in the dtype and on the device of ``x``.
        """
        x64, lengths, out = self._prepare(x, lengths)
        z64 = torch.as_tensor(z, device=x64.device).to(torch.float64)
        if z64.shape != (*x64.shape[:2], self.z_dim):
            raise ValueError(
                f"z must have shape {(*x64.shape[:2], self.z_dim)}, got {tuple(z64.shape)}"
            )
        a, c, mu0, q, r, s0 = (
            p.to(x64.device) for p in (self._A, self._C, self._mu0, self._q, self._r, self._s0)
        )
        loc = torch.cat([mu0.expand(z64.shape[0], 1, -1), z64[:, :-1] @ a.T], dim=1)
        scale = torch.cat([s0.expand(1, -1), q.expand(z64.shape[1] - 1, -1)], dim=0)
        log_z = _diag_normal(z64, loc, scale)
        log_x = _diag_normal(x64, z64 @ c.T, r)
        keep = sequence_mask(lengths, x64.shape[1])
        return torch.where(keep, log_z + log_x, torch.zeros_like(log_z)).sum(1).to(out)

    # ------------------------------------------------------------------ internals

    def _prepare(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        x = torch.as_tensor(x)
        if x.dim() != 3 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (N, T, {self.x_dim}), got {tuple(x.shape)}")
        out = x.dtype if x.dtype.is_floating_point else torch.float64
        n, steps = x.shape[:2]
        if lengths is None:
            lengths = torch.full((n,), steps, dtype=torch.long, device=x.device)
        lengths = _check_lengths(lengths, n, steps, minimum=0).to(x.device)
        return x.to(torch.float64), lengths, out

    def _kalman(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None
    ) -> tuple[
        torch.Tensor,
        tuple[torch.Tensor, torch.Tensor],
        tuple[torch.Tensor, torch.Tensor],
        torch.dtype,
    ]:
        """Log-evidence (N,), filtered and predicted moments (float64), output dtype."""
        x64, lengths, out = self._prepare(x, lengths)
        device = x64.device
        n, steps = x64.shape[:2]
        a, c, mu0 = (p.to(device) for p in (self._A, self._C, self._mu0))
        q_cov = torch.diag(self._q.to(device) ** 2)
        r_cov = torch.diag(self._r.to(device) ** 2)
        eye = torch.eye(self.z_dim, dtype=torch.float64, device=device)
        observed = sequence_mask(lengths, steps)
        mean_p = torch.empty(n, steps, self.z_dim, dtype=torch.float64, device=device)
        cov_p = torch.empty(n, steps, self.z_dim, self.z_dim, dtype=torch.float64, device=device)
        mean_f, cov_f = torch.empty_like(mean_p), torch.empty_like(cov_p)
        log_evidence = torch.zeros(n, dtype=torch.float64, device=device)
        mean = mu0.expand(n, self.z_dim)
        cov = torch.diag(self._s0.to(device) ** 2).expand(n, self.z_dim, self.z_dim)
        for t in range(steps):
            if t > 0:
                mean = mean @ a.T
                cov = a @ cov @ a.T + q_cov
            mean_p[:, t], cov_p[:, t] = mean, cov
            obs = observed[:, t]
            predicted_x = mean @ c.T
            # Padded steps are never read: their innovation is set to zero.
            innovation = torch.where(obs[:, None], x64[:, t] - predicted_x, 0.0)
            s = c @ cov @ c.T + r_cov
            chol = torch.linalg.cholesky(s)
            white = torch.linalg.solve_triangular(chol, innovation[..., None], upper=False)
            log_pdf = (
                -0.5 * white.squeeze(-1).pow(2).sum(-1)
                - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                - 0.5 * self.x_dim * _LOG_2PI
            )
            log_evidence = log_evidence + torch.where(obs, log_pdf, 0.0)
            # K = P C^T S^{-1}: solve S K^T = C P.
            gain = torch.cholesky_solve(c @ cov, chol).transpose(-1, -2)
            updated_mean = mean + (gain @ innovation[..., None]).squeeze(-1)
            joseph = eye - gain @ c
            updated_cov = joseph @ cov @ joseph.transpose(-1, -2) + gain @ r_cov @ gain.transpose(
                -1, -2
            )
            updated_cov = (updated_cov + updated_cov.transpose(-1, -2)) / 2
            mean = torch.where(obs[:, None], updated_mean, mean)
            cov = torch.where(obs[:, None, None], updated_cov, cov)
            mean_f[:, t], cov_f[:, t] = mean, cov
        return log_evidence.to(out), (mean_f, cov_f), (mean_p, cov_p), out


def _damped_rotation(dim: int, angle: float, damping: float) -> torch.Tensor:
    a = torch.zeros(dim, dim, dtype=torch.float64)
    cos, sin = math.cos(angle), math.sin(angle)
    for i in range(0, dim - 1, 2):
        a[i : i + 2, i : i + 2] = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    if dim % 2:
        a[-1, -1] = 1.0
    return damping * a


def _matrix(value: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64).detach().cpu().clone()
    if tuple(value.shape) != shape:
        raise ValueError(f"{what} must have shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{what} must be finite")
    return value


def _scale(value: float | torch.Tensor, dim: int, what: str) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if value.dim() == 0:
        value = value.expand(dim)
    value = _matrix(value, (dim,), what)
    if not (value > 0).all():
        raise ValueError(f"{what} must be positive, got {value.tolist()}")
    return value


def _positive(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_lengths(
    lengths: torch.Tensor | Sequence[int], n: int, steps: int, *, minimum: int
) -> torch.Tensor:
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    lengths = lengths.long()
    if n and (int(lengths.min()) < minimum or int(lengths.max()) > steps):
        raise ValueError(f"lengths must be in [{minimum}, {steps}], got {lengths.tolist()}")
    return lengths


def _diag_normal(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension of ``log N(value; loc, scale^2)``."""
    z = (value - loc) / scale
    return (-0.5 * z**2 - scale.log() - 0.5 * _LOG_2PI).sum(-1)
