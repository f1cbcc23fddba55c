r"""The noise scale :math:`\sigma` of a quasi-deterministic observation.

A quasi-deterministic observation (thesis §6.2, eq. 6.1) is
:math:`x = f_\theta(z) + \epsilon` with :math:`\epsilon \sim \mathcal N(0, \sigma^2)`
small. :math:`\sigma` decides what the model calls signal (kept in the latent
space) and what it calls noise (§6.3), so how it is set matters as much as
the decoder. :class:`NoiseScale` holds one of the ways the thesis studies:

``"fixed"``
    a constant (a hyperparameter; equivalent to a β-VAE weight, eq. 6.2).
``"global"``
    one learned scalar (Rezende & Viola 2018; thesis §7.1.1).
``"per-dim"``
    one learned scale per coordinate of the observation.
``"analytic"`` / ``"analytic-per-dim"``
    the optimum given the current reconstructions, eq. 7.3:
    :math:`\sigma_\star^2 = e^2 / D` with :math:`e^2` the mean squared
    reconstruction error (per coordinate for ``"analytic-per-dim"``),
    computed on each batch (``update="batch"``) or as a running average
    (``update="running"``, Rybkin et al. 2021). It is used as a constant: the
    derivative of the objective with respect to :math:`\sigma` vanishes at
    :math:`\sigma_\star`, so no gradient is lost; and like a parameter it is
    no edge of the compiled graph.
``"local"``
    :math:`\sigma(h)` from a network head on features ``h`` (the latent, or
    the decoder's hidden state): a heteroscedastic noise (Kingma & Welling
    2014; thesis §7.1.2).

**Floor.** Every learned mode is parametrized as
:math:`\sigma = \sigma_{min} + \operatorname{softplus}(\cdot)` (thesis §7.2,
footnote 4), and the analytic modes use the constrained optimum
:math:`\max(\sigma_\star, \sigma_{min})`: the Gaussian density is then at most
:math:`(2\pi\sigma_{min}^2)^{-D/2}`, so the likelihood of a finite data set is
bounded (Mattei & Frellsen 2018; see :mod:`pgmdl.observe.theory`).

**Initialization.** Learned scales start large, of the order of the data's
spread (§7.3: learning :math:`\sigma` down from a large value acts as an
annealing): by default :math:`\sigma_0 = \sqrt{\operatorname{tr}\operatorname{Cov}(x) / D}`
on the first observed batch, the optimum of eq. 7.3 for the constant
reconstruction :math:`f = \bar x`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.ops.provenance import detach_provenance
from torch import nn

from pgmdl.errors import ModelError
from pgmdl.nn import ResidualMLP

SIGMA_MODES = ("fixed", "global", "per-dim", "analytic", "analytic-per-dim", "local")
"""The noise-scale modes :class:`NoiseScale` accepts."""

LEARNED_MODES = ("global", "per-dim", "local")
ANALYTIC_UPDATES = ("batch", "running")


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """:math:`\\operatorname{softplus}^{-1}(y) = y + \\log(1 - e^{-y})` for ``y > 0``, stable."""
    return y + torch.log(-torch.expm1(-y))


def data_scale(obs: torch.Tensor, event_dim: int) -> float | None:
    r""":math:`\sqrt{\operatorname{tr}\operatorname{Cov}(x) / D}` over the batch
    dimensions of ``obs`` (``None`` with fewer than two rows)."""
    event_shape = obs.shape[obs.dim() - event_dim :]
    rows = obs.reshape(-1, *event_shape) if event_dim else obs.reshape(-1)
    if rows.shape[0] < 2:
        return None
    return float(rows.detach().float().var(dim=0).mean().sqrt())


class NoiseScale(nn.Module):
    r"""A noise scale :math:`\sigma` for one observed site, in one of :data:`SIGMA_MODES`.

    Parameters are created on the first call (their shape follows the
    observation's event shape), on the device and dtype of the prediction.

    Args:
        mode: one of :data:`SIGMA_MODES`.
        sigma_min: the floor :math:`\sigma_{min} > 0` of learned and analytic modes.
        value: the constant of ``"fixed"`` (float or tensor broadcasting to
            the event shape).
        init: the starting :math:`\sigma` of learned modes (and of analytic
            modes before any observed batch); ``None`` reads it from the first
            observed batch (see the module docstring) or uses 1 when the first
            call has no observation.
        update: ``"batch"`` or ``"running"`` (analytic modes).
        momentum: weight of the newest batch in the running average.
        head: the network of ``"local"`` (maps features to one or ``D``
            pre-softplus values); by default a :class:`~pgmdl.nn.ResidualMLP`
            with ``hidden`` layers, zero-initialized, so :math:`\sigma(h)` starts at
            :math:`\sigma_0` everywhere (§7.1.2: start large, move slowly).
        hidden: hidden widths of the default head.

    Example:
        >>> scale = NoiseScale("global", sigma_min=1e-3)
        >>> x = torch.randn(100, 5) * 2
        >>> sigma = scale(torch.zeros(100, 5), x, event_dim=1)
        >>> bool(1.5 < float(sigma.detach()) < 2.5)   # starts at the data's spread
        True
    """

    def __init__(
        self,
        mode: str = "global",
        *,
        sigma_min: float = 1e-3,
        value: float | torch.Tensor | None = None,
        init: float | None = None,
        update: str = "batch",
        momentum: float = 0.1,
        head: nn.Module | None = None,
        hidden: Sequence[int] = (32,),
    ) -> None:
        super().__init__()
        if mode not in SIGMA_MODES:
            raise ModelError(
                f"sigma={mode!r} is not a noise-scale mode; use one of {SIGMA_MODES} "
                "or a positive number for a fixed sigma"
            )
        if not (isinstance(sigma_min, int | float) and math.isfinite(sigma_min) and sigma_min > 0):
            raise ModelError(
                f"sigma_min={sigma_min!r}: the floor must be a finite number > 0 (without a floor "
                "a Gaussian likelihood is unbounded; see pgmdl.observe.theory)"
            )
        if mode == "fixed":
            if value is None:
                raise ModelError("sigma='fixed' needs value= (the constant sigma)")
            fixed = torch.as_tensor(value, dtype=torch.get_default_dtype())
            if not bool(torch.isfinite(fixed).all()) or bool((fixed <= 0).any()):
                raise ModelError(f"fixed sigma={value!r} must be finite and > 0")
            self.register_buffer("value", fixed)
        if init is not None and not (math.isfinite(init) and init > 0):
            raise ModelError(f"init={init!r}: the starting sigma must be a finite number > 0")
        if update not in ANALYTIC_UPDATES:
            raise ModelError(f"update={update!r}: use one of {ANALYTIC_UPDATES}")
        if not 0 < momentum <= 1:
            raise ModelError(f"momentum={momentum!r} must be in (0, 1]")
        if head is not None and mode != "local":
            raise ModelError(f"head= is only used by sigma='local', not {mode!r}")
        self.mode = mode
        self.sigma_min = float(sigma_min)
        self.init = init
        self.update = update
        self.momentum = momentum
        self.hidden = tuple(hidden)
        self.head = head
        self.raw: nn.Parameter | None = None
        self.offset: nn.Parameter | None = None
        self.register_buffer("running_mse", None)
        self.last_sigma: torch.Tensor | None = None
        """The :math:`\\sigma` of the latest call (detached), for monitoring."""

    # ------------------------------------------------------------------ public

    @property
    def is_learned(self) -> bool:
        return self.mode in LEARNED_MODES

    def forward(
        self,
        loc: torch.Tensor,
        obs: torch.Tensor | None,
        *,
        event_dim: int,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:math:`\\sigma` for a prediction ``loc`` (and the observation, if any),
        broadcastable to ``loc``."""
        self.materialize(loc, obs, event_dim=event_dim, features=features)
        if self.mode == "fixed":
            sigma = self.value.to(loc)
        elif self.mode in ("global", "per-dim"):
            sigma = self.sigma_min + F.softplus(self.raw)
        elif self.mode == "local":
            sigma = self._local(loc, obs, event_dim, features)
        else:
            sigma = self._analytic(loc, obs, event_dim)
        self.last_sigma = sigma.detach()
        return sigma

    def describe(self) -> str:
        """A short description (drawn under the site by :func:`pgmdl.render`)."""
        floor = f" ≥ {self.sigma_min:g}"
        if self.mode == "fixed":
            value = self.value
            shown = f"{float(value):g}" if value.numel() == 1 else f"fixed {tuple(value.shape)}"
            return f"σ = {shown}"
        if self.mode == "global":
            return f"σ learned{floor}"
        if self.mode == "per-dim":
            return f"σ learned per dim{floor}"
        if self.mode == "local":
            return f"σ(h) learned{floor}"
        per = " per dim" if self.mode == "analytic-per-dim" else ""
        return f"σ² = MSE{per} ({self.update}){floor}"

    # ------------------------------------------------------------------ modes

    def _start(self, obs: torch.Tensor | None, event_dim: int) -> float:
        """The starting sigma: ``init``, the data's spread or 1, kept above the floor."""
        start = self.init
        if start is None and obs is not None:
            start = data_scale(obs, event_dim)
        if start is None:
            start = 1.0
        return max(start, 2.0 * self.sigma_min)

    def _raw_start(self, obs: torch.Tensor | None, event_dim: int, like: torch.Tensor):
        start = torch.tensor(self._start(obs, event_dim) - self.sigma_min, dtype=like.dtype)
        return inverse_softplus(start).to(like.device)

    def materialize(
        self,
        loc: torch.Tensor,
        obs: torch.Tensor | None,
        *,
        event_dim: int,
        features: torch.Tensor | None = None,
    ) -> None:
        """Create the parameters on the first call (their shapes follow ``loc``'s event
        shape and the features' width). Call it before registering the module with
        ``pyro.module``, so the parameters exist when Pyro looks for them."""
        if self.mode in ("global", "per-dim") and self.raw is None:
            raw = self._raw_start(obs, event_dim, loc)
            if self.mode == "per-dim":
                raw = raw.expand(loc.shape[loc.dim() - event_dim :]).clone()
            self.raw = nn.Parameter(raw)
        if self.mode == "local" and self.offset is None:
            if features is None:
                raise ModelError(
                    "sigma='local' computes sigma(h) from features: call the observation with "
                    "features=h (the latent z or the decoder's hidden state)"
                )
            self.offset = nn.Parameter(self._raw_start(obs, event_dim, loc))
            if self.head is None:
                width = loc.shape[-1] if event_dim == 1 else 1
                self.head = ResidualMLP(features.shape[-1], width, self.hidden).to(loc)

    def _local(
        self,
        loc: torch.Tensor,
        obs: torch.Tensor | None,
        event_dim: int,
        features: torch.Tensor | None,
    ) -> torch.Tensor:
        raw = self.head(features) + self.offset  # materialize checked the features
        if event_dim > 1:  # one sigma per data point: broadcast over the other event dims
            raw = raw.reshape(raw.shape + (1,) * (event_dim - 1))
        return self.sigma_min + F.softplus(raw)

    def _analytic(
        self, loc: torch.Tensor, obs: torch.Tensor | None, event_dim: int
    ) -> torch.Tensor:
        event_shape = loc.shape[loc.dim() - event_dim :]
        if obs is not None:
            # A plug-in estimate, like a parameter set by optimization: it carries no
            # gradient and no graph dependency (under pgmdl.compile's provenance
            # tracking, x would otherwise be read as its own parent).
            error = (detach_provenance(obs).detach() - detach_provenance(loc).detach()).pow(2)
            error = error.reshape(-1, *event_shape).mean(0)  # per coordinate, eq. 7.3
            if self.mode == "analytic":
                error = error.mean()
            if self.update == "running" and self.training:
                if self.running_mse is None or self.running_mse.shape != error.shape:
                    self.running_mse = error.clone()
                else:
                    self.running_mse.mul_(1 - self.momentum).add_(self.momentum * error)
            mse = error if self.update == "batch" else self.running_mse
            if mse is None:  # running mode in eval before any training batch
                mse = error
        elif self.running_mse is not None:
            mse = self.running_mse
        elif self.init is not None:
            mse = torch.tensor(self.init**2, dtype=loc.dtype, device=loc.device)
        else:
            raise ModelError(
                f"sigma={self.mode!r} sets sigma from reconstruction errors, and this call has no "
                "observation and no running average yet; observe a batch first or pass init="
            )
        return mse.to(loc).clamp(min=self.sigma_min**2).sqrt()
