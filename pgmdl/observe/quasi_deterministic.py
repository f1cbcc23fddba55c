r"""Quasi-deterministic observations: :math:`x = f_\theta(z) + \epsilon`, small learned noise.

Thesis ch. 6–7 (V. Berger, 2021). A quasi-deterministic observation model is
a deterministic prediction plus a small noise (eq. 6.1),

.. math::

    p_\theta(x \mid z) = \mathcal N\big(x;\ f_\theta(z),\ \sigma^2 I\big),

so that after training :math:`\hat x = f_\theta(z)` maps the latent space onto
the data manifold. The noise scale :math:`\sigma` is the resolution at which
the model looks at the data: patterns smaller than about
:math:`\sigma\sqrt D` are noise to it (Theorem 6.1), a too small
:math:`\sigma` makes it encode noise in the latent space (§6.3.2), and
learning :math:`\sigma` down from a large start anneals the model (§7.3).
:class:`~pgmdl.observe.noise.NoiseScale` holds the ways of setting it.

Beside the noise scale, :class:`QuasiDeterministic` offers

* **observation tempering** (``temper=β``, §7.A, eq. 7.5–7.8): the normalized
  :math:`\hat p_\beta(x \mid z) \propto p(x \mid z)^{1/\beta}`, for a Gaussian
  :math:`\mathcal N(f, \beta\sigma^2)`; compare ``beta_vae=β``, which weights
  the log-likelihood by :math:`1/\beta` without renormalizing (the β-VAE,
  eq. 6.2; see :mod:`pgmdl.observe.tempering`);
* **noise augmentation** (§7.2): :meth:`QuasiDeterministic.augment` adds
  :math:`\mathcal N(0, \sigma_{min}^2)` noise to a training batch (pass it to
  :func:`pgmdl.fit` as ``transform=``), noise the model cannot compress.

The site is an ordinary ``pyro.sample`` with an ``Independent(Normal)``
distribution, so every Pyro inference algorithm, :class:`pgmdl.NaMIGuide`
and :func:`pgmdl.fit` work unchanged; its ``infer["observe"]["observation"]`` describes
the noise, which the graph compiler keeps (``SiteInfo.observation``) and
:func:`pgmdl.render` draws under the site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pgmdl.errors import ModelError
from pgmdl.observe.noise import SIGMA_MODES, NoiseScale
from pgmdl.observe.tempering import beta_vae_weight
from pgmdl.plugins import register_site_metadata

OBSERVE_KEY = "observe"
"""The ``msg["infer"]`` key of this plug-in's site metadata (:mod:`pgmdl.plugins`):
``{"observation": "x = f(·) + ε, ..."}``, the line :func:`pgmdl.render` draws."""

register_site_metadata(OBSERVE_KEY, describe=lambda data: data.get("observation"))


class QuasiDeterministic(nn.Module):
    r"""A quasi-deterministic Gaussian observation :math:`x = f(z) + \epsilon` for one site.

    Call it inside a model where you would call ``pyro.sample``::

        noise = QuasiDeterministic("global", sigma_min=1e-2)

        def model(x):
            pyro.module("decoder", decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0, 1).expand([2]).to_event(1))
                return noise("x", decoder(z), obs=x)

    Its learned parameters (if any) are registered in Pyro's param store as
    ``"<site>.noise$$$..."`` on every call, like any ``pyro.module``.

    Args:
        sigma: a mode of :data:`~pgmdl.observe.noise.SIGMA_MODES` or a
            positive number (a fixed :math:`\sigma`).
        sigma_min: the floor :math:`\sigma_{min} > 0` of the learned and
            analytic modes (:math:`\sigma = \sigma_{min} + \operatorname{softplus}(\cdot)`).
        event_dim: how many rightmost dimensions of the observation form one
            event (1 for vectors, 2 for ``H×W`` images, 3 for ``C×H×W``).
        init: starting :math:`\sigma` of learned modes; ``None``: the data's
            spread on the first observed batch.
        update: ``"batch"`` or ``"running"`` for the analytic modes.
        momentum: weight of the newest batch in the running average.
        head: the network of ``sigma="local"`` (features → pre-softplus scale).
        hidden: hidden widths of the default ``"local"`` head.
        temper: :math:`\beta > 0` of the normalized observation tempering
            (eq. 7.5–7.6); ``None`` or 1: none.
        beta_vae: :math:`\beta > 0` of the β-VAE weighting (the log-likelihood
            scaled by :math:`1/\beta`, not renormalized); ``None`` or 1: none.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> noise = QuasiDeterministic("global", sigma_min=1e-3)
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        ...         return noise("x", torch.cat([z, z], -1), obs=x)
        >>> trace = pyro.poutine.trace(model).get_trace(torch.randn(8, 4))
        >>> trace.nodes["x"]["infer"]["observe"]["observation"]
        'x = f(·) + ε, σ learned ≥ 0.001'
    """

    def __init__(
        self,
        sigma: str | float = "global",
        *,
        sigma_min: float = 1e-3,
        event_dim: int = 1,
        init: float | None = None,
        update: str = "batch",
        momentum: float = 0.1,
        head: nn.Module | None = None,
        hidden: Sequence[int] = (32,),
        temper: float | None = None,
        beta_vae: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(sigma, bool) or not isinstance(sigma, str | int | float | torch.Tensor):
            raise ModelError(
                f"sigma={sigma!r}: give a mode name {SIGMA_MODES} or a positive number"
            )
        if isinstance(sigma, str):
            mode, value = sigma, None
        else:
            mode, value = "fixed", sigma
        if not isinstance(event_dim, int) or event_dim < 0:
            raise ModelError(f"event_dim={event_dim!r} must be an integer ≥ 0")
        for label, beta in (("temper", temper), ("beta_vae", beta_vae)):
            if beta is not None and not (math.isfinite(beta) and beta > 0):
                raise ModelError(f"{label}={beta!r}: beta must be a finite number > 0")
        self.scale = NoiseScale(
            mode,
            sigma_min=sigma_min,
            value=value,
            init=init,
            update=update,
            momentum=momentum,
            head=head,
            hidden=hidden,
        )
        self.event_dim = event_dim
        self.temper = temper
        self.beta_vae = beta_vae
        self.site: str | None = None
        self._checked = False

    @property
    def mode(self) -> str:
        return self.scale.mode

    @property
    def sigma_min(self) -> float:
        return self.scale.sigma_min

    @property
    def last_sigma(self) -> torch.Tensor | None:
        """The standard deviation of the latest call's distribution (detached; tempering
        included): a scalar, a per-dimension vector, or one value per data point for
        ``"local"``. The noise scale before tempering is ``self.scale.last_sigma``."""
        sigma = self.scale.last_sigma
        if sigma is None or self.temper in (None, 1):
            return sigma
        return sigma * math.sqrt(self.temper)

    def describe(self) -> str:
        """The line :func:`pgmdl.render` draws under the site."""
        text = f"{self.site or 'x'} = f(·) + ε, {self.scale.describe()}"
        if self.temper not in (None, 1):
            text += f", tempered β={self.temper:g}"
        if self.beta_vae not in (None, 1):
            text += f", β-VAE weight 1/{self.beta_vae:g}"
        return text

    def distribution(
        self,
        loc: torch.Tensor,
        obs: torch.Tensor | None = None,
        *,
        features: torch.Tensor | None = None,
    ) -> dist.Distribution:
        r"""The observation distribution :math:`\mathcal N(f, \beta\sigma^2)` (as
        ``Independent`` over the event dims) for a prediction ``loc``; ``obs``
        feeds the analytic modes and the data-dependent initialization."""
        self._check(loc, obs, features)
        return self._normal(loc, obs, features)

    def _normal(
        self, loc: torch.Tensor, obs: torch.Tensor | None, features: torch.Tensor | None
    ) -> dist.Distribution:
        """The distribution for arguments already checked."""
        sigma = self.scale(loc, obs, event_dim=self.event_dim, features=features)
        if self.temper not in (None, 1):
            sigma = sigma * math.sqrt(self.temper)  # N(f, σ²)^(1/β), renormalized
        return dist.Normal(loc, sigma.expand_as(loc) if sigma.dim() else sigma).to_event(
            self.event_dim
        )

    def forward(
        self,
        name: str,
        loc: torch.Tensor,
        obs: torch.Tensor | None = None,
        *,
        features: torch.Tensor | None = None,
        infer: dict | None = None,
    ) -> torch.Tensor:
        """Sample or observe site ``name`` with mean ``loc``; returns the site's value.

        Args:
            name: the site's name (one :class:`QuasiDeterministic` per site).
            loc: the prediction :math:`f_\\theta(z)`.
            obs: the observed value, or ``None`` to sample.
            features: the input of the ``"local"`` noise head.
            infer: extra entries of the site's ``infer`` dict.
        """
        if self.site is None:
            self.site = name
        elif self.site != name:
            raise ModelError(
                f"this QuasiDeterministic observes site {self.site!r} and was called for "
                f"{name!r}: create one QuasiDeterministic per observed site"
            )
        self._check(loc, obs, features)
        self.scale.materialize(loc, obs, event_dim=self.event_dim, features=features)
        self._register(name)
        fn = self._normal(loc, obs, features)  # checked above
        site_infer = {OBSERVE_KEY: {"observation": self.describe()}, **(infer or {})}
        if self.beta_vae not in (None, 1):
            with beta_vae_weight(self.beta_vae):
                return pyro.sample(name, fn, obs=obs, infer=site_infer)
        return pyro.sample(name, fn, obs=obs, infer=site_infer)

    def _register(self, name: str) -> None:
        """Register the learned parameters in Pyro's param store as ``"<site>.noise$$$..."``,
        unless an enclosing module registered with ``pyro.module`` already holds them
        (the observation is a submodule of the user's model): one tensor must not live
        under two names."""
        own = {f"{name}.noise$$${key}": p for key, p in self.named_parameters()}
        if not own:
            return
        store = pyro.get_param_store()
        owners = {key: store.param_name(p) for key, p in own.items()}
        if not any(owner is not None and owner not in own for owner in owners.values()):
            pyro.module(f"{name}.noise", self)
            return
        for key, p in own.items():  # drop the names this observation gave them earlier
            if key in store:
                other = owners[key]
                del store[key]
                if other is not None and other != key:
                    store[other] = p  # restore the enclosing module's entry

    def augment(self, batch: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        r"""``batch`` plus Gaussian noise of standard deviation ``scale``
        (default :math:`\sigma_{min}`): the noise augmentation of §7.2. The model
        cannot compress a noise drawn afresh at every step, so it stops fitting
        details below the floor. Use it on training batches only, e.g.
        ``pgmdl.fit(model, guide, x, transform=noise.augment)``."""
        if not isinstance(batch, torch.Tensor):
            raise ModelError(
                f"augment expects a tensor batch, got {type(batch).__name__}; for several data "
                "arguments use transform=lambda batch: (noise.augment(batch[0]), *batch[1:])"
            )
        std = self.sigma_min if scale is None else scale
        return batch + std * torch.randn_like(batch)

    # ------------------------------------------------------------------ checks

    def _check(
        self, loc: torch.Tensor, obs: torch.Tensor | None, features: torch.Tensor | None
    ) -> None:
        where = f"site {self.site!r}" if self.site else "the observation"
        if not isinstance(loc, torch.Tensor):
            raise ModelError(f"{where}: loc must be a tensor, got {type(loc).__name__}")
        if loc.dim() < self.event_dim:
            raise ModelError(
                f"{where}: loc has shape {tuple(loc.shape)}, fewer than event_dim={self.event_dim} "
                "dimensions; set event_dim to the number of dimensions of one observation"
            )
        if obs is not None:
            if not isinstance(obs, torch.Tensor):
                raise ModelError(f"{where}: obs must be a tensor, got {type(obs).__name__}")
            event = loc.shape[loc.dim() - self.event_dim :]
            if obs.shape[obs.dim() - self.event_dim :] != event or obs.dim() < self.event_dim:
                raise ModelError(
                    f"{where}: loc has shape {tuple(loc.shape)} and obs has shape "
                    f"{tuple(obs.shape)}; their last event_dim={self.event_dim} dimensions (one "
                    "observation) must match. Make the decoder output the observation's shape."
                )
            try:
                torch.broadcast_shapes(loc.shape, obs.shape)
            except RuntimeError as err:
                raise ModelError(
                    f"{where}: the batch dimensions of loc {tuple(loc.shape)} and obs "
                    f"{tuple(obs.shape)} do not broadcast"
                ) from err
            if not self._checked and not bool(torch.isfinite(obs).all()):
                raise ModelError(f"{where}: obs contains NaN or infinite values")
        if self.mode == "local" and features is None:
            raise ModelError(
                f"{where}: sigma='local' computes sigma(h) from features: pass features=h "
                "(the latent z or the decoder's hidden state)"
            )
        self._checked = True
