r"""The correlated-Gaussian posterior over a multiset of parts (thesis §9.2.2, App. 9.A–9.B).

CompVAE's guide must pin down the *sum* of the parts' latents
:math:`\widetilde W = \sum_i W_i` (the decoder reads it) without having to
tell similar parts apart. Each coordinate of the parts is drawn as (eq. 9.6)

.. math::

    w_i = \mu_i + \sigma_i\epsilon_i - \rho_i \sum_j \sigma_j\epsilon_j,
    \qquad \epsilon_j \sim \mathcal N(0, 1),
    \qquad \rho_i = \frac{e^{\nu_i}}{1 + \sum_j e^{\nu_j}} \quad (9.11),

i.e. :math:`w = \mu + (I - \rho\mathbf 1^\top) D\epsilon` with
:math:`D = \operatorname{diag}(\sigma)`. Then
:math:`\operatorname{Var}(W_i) = (1-2\rho_i)\sigma_i^2 + \rho_i^2\sum_j\sigma_j^2`
(eq. 9.7 prints :math:`\rho_j^2` in the sum; expanding eq. 9.6 gives
:math:`\rho_i^2`, which is also what eq. 9.28 uses) and
:math:`\operatorname{Var}(\widetilde W) = (1-\sum_i\rho_i)^2\sum_i\sigma_i^2`
(eq. 9.8): each part may stay uncertain while their sum is sharp.

By the matrix determinant lemma (eq. 9.21–9.23),
:math:`\tfrac12\log|\Sigma| = \log(1-\sum_i\rho_i) + \sum_i\log\sigma_i`
(eq. 9.10), and by Sherman–Morrison the noise is recovered from a value as
:math:`D\epsilon = u + \rho\,\frac{\mathbf 1^\top u}{1-\sum_i\rho_i}`,
:math:`u = w - \mu`, so the density (eq. 9.9) is exact and linear in the
number of parts. With the parametrization 9.11,
:math:`1 - \sum_i\rho_i = 1/(1+\sum_j e^{\nu_j})`, computed as
:math:`-\operatorname{softplus}(\operatorname{logsumexp}\nu)` in log space.

The KL divergence to a factorized Gaussian prior
:math:`\prod_i\mathcal N(m_i, s_i^2)` has the closed form (eq. 9.28)

.. math::

    \sum_i\Big[\frac{(\mu_i-m_i)^2 + (1-2\rho_i)\sigma_i^2 + \rho_i^2\sum_j\sigma_j^2}{2s_i^2}
    + \log\frac{s_i}{\sigma_i}\Big] - \log\Big(1-\sum_i\rho_i\Big) - \frac K2 .

Sets of different sizes share one tensor through padding: ``mask`` marks the
parts that exist; a padded part takes the value :math:`\mu_i` and counts
nowhere (not in :math:`\rho`, not in the density, not in the KL). Pyro has no
ragged plates, so this is how a minibatch holds multisets of any size,
including empty ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Independent, kl_divergence, register_kl
from torch.distributions.utils import broadcast_all

from pgmdl.errors import ModelError

_LOG_2PI = math.log(2 * math.pi)


class CorrelatedMultisetNormal(TorchDistribution):
    r"""Jointly Gaussian latents of the parts of a multiset, correlated through their sum.

    Args:
        loc: :math:`\mu`, shape ``(..., K, D)``: ``K`` part slots (padded), ``D``
            independent coordinates per part.
        scale: :math:`\sigma > 0`, same shape.
        nu: :math:`\nu` (unconstrained), same shape; :math:`\rho` is the
            softmax-with-an-extra-zero of eq. 9.11 over the present parts, per
            coordinate.
        mask: ``(..., K)`` booleans, ``True`` for the parts that exist
            (default: all).

    The event shape is ``(K, D)``: one multiset is one event.

    Example:
        >>> loc, scale = torch.zeros(3, 2), torch.ones(3, 2)
        >>> q = CorrelatedMultisetNormal(loc, scale, nu=torch.full((3, 2), 3.0))
        >>> w = q.rsample((20000,))
        >>> bool(w.sum(-2).var(0).max() < 0.05 < w.var(0).min())   # sharp sum, loose parts
        True
    """

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "nu": constraints.real,
    }
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        nu: torch.Tensor,
        mask: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        loc, scale, nu = broadcast_all(loc, scale, nu)
        if loc.dim() < 2:
            raise ModelError(
                f"loc, scale and nu need shape (..., K, D) (parts, coordinates); got "
                f"{tuple(loc.shape)}"
            )
        if mask is None:
            mask = torch.ones(loc.shape[:-1], dtype=torch.bool, device=loc.device)
        elif mask.dtype != torch.bool:
            raise ModelError(f"mask must be a boolean tensor, got dtype {mask.dtype}")
        if mask.shape[-1:] != loc.shape[-2:-1]:
            raise ModelError(
                f"mask has {mask.shape[-1] if mask.dim() else 0} part slots but loc has "
                f"{loc.shape[-2]} (shape {tuple(loc.shape)} is (..., K, D)); the mask is (..., K)"
            )
        batch_shape = torch.broadcast_shapes(loc.shape[:-2], mask.shape[:-1])
        event_shape = loc.shape[-2:]
        self.loc = loc.expand(batch_shape + event_shape)
        self.scale = scale.expand(batch_shape + event_shape)
        self.nu = nu.expand(batch_shape + event_shape)
        self.mask = mask.expand(batch_shape + event_shape[:1])
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    # ------------------------------------------------------------------ parameters

    @property
    def _present(self) -> torch.Tensor:
        return self.mask.unsqueeze(-1).to(self.loc.dtype)  # (..., K, 1)

    def _rho_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rho, log(1 - Σρ))`` from one log-sum-exp over the present parts."""
        nu = self.nu.masked_fill(~self.mask.unsqueeze(-1), -math.inf)
        log_norm = F.softplus(torch.logsumexp(nu, dim=-2, keepdim=True))  # log(1 + Σ e^ν)
        return torch.exp(nu - log_norm), -log_norm.squeeze(-2)

    @property
    def log_one_minus_rho_sum(self) -> torch.Tensor:
        r""":math:`\log(1-\sum_i\rho_i)
        = -\operatorname{softplus}(\operatorname{logsumexp}_i\nu_i)`, shape ``(..., D)``."""
        return self._rho_terms()[1]

    @property
    def rho(self) -> torch.Tensor:
        r""":math:`\rho_i = e^{\nu_i}/(1+\sum_j e^{\nu_j})` (eq. 9.11), 0 for padded parts."""
        return self._rho_terms()[0]

    @property
    def num_parts(self) -> torch.Tensor:
        """How many parts each multiset has, shape ``batch_shape``."""
        return self.mask.sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """Per-part variance (eq. 9.7, corrected), 0 for padded parts."""
        s2 = self.scale.pow(2) * self._present
        rho = self.rho
        return (1 - 2 * rho) * s2 + rho.pow(2) * s2.sum(-2, keepdim=True)

    @property
    def sum_variance(self) -> torch.Tensor:
        r""":math:`\operatorname{Var}(\widetilde W) = (1-\sum\rho)^2\sum\sigma^2` (eq. 9.8),
        shape ``(..., D)``."""
        s2 = (self.scale.pow(2) * self._present).sum(-2)
        return torch.exp(2 * self.log_one_minus_rho_sum) * s2

    def covariance_matrix(self) -> torch.Tensor:
        r"""The ``(..., D, K, K)`` covariance of each coordinate over the parts,
        :math:`(I-\rho\mathbf 1^\top)D^2(I-\rho\mathbf 1^\top)^\top` (eq. 9.20), with
        padded parts' rows and columns zero. For tests and small ``K`` only."""
        present = self._present
        rho = (self.rho * present).transpose(-1, -2)  # (..., D, K)
        sigma = (self.scale * present).transpose(-1, -2)
        eye = torch.eye(self.loc.shape[-2], dtype=self.loc.dtype, device=self.loc.device)
        ones = present.transpose(-1, -2).unsqueeze(-2)  # 1ᵀ over the present parts
        a = (eye - rho.unsqueeze(-1) * ones) * sigma.unsqueeze(-2)
        return a @ a.transpose(-1, -2)

    # ------------------------------------------------------------------ sampling and density

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.event_shape
        return CorrelatedMultisetNormal(
            self.loc.expand(shape),
            self.scale.expand(shape),
            self.nu.expand(shape),
            self.mask.expand(batch_shape + self.event_shape[:1]),
            validate_args=False,
        )

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        noise = self.scale * eps * self._present  # σ_j ε_j, 0 for padded parts
        return self.loc + noise - self.rho * noise.sum(-2, keepdim=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact log-density of eq. 9.9–9.10, summed over parts and coordinates."""
        if self._validate_args:
            self._validate_sample(value)
        present = self._present
        u = (value - self.loc) * present
        rho, log_c = self._rho_terms()
        log_c = log_c.unsqueeze(-2)  # log(1 - Σρ), (..., 1, D)
        noise = u + rho * u.sum(-2, keepdim=True) * torch.exp(-log_c)  # D ε
        eps = noise / self.scale
        per_coordinate = (
            -0.5 * (eps.pow(2) * present).sum(-2)
            - (self.scale.log() * present).sum(-2)
            - log_c.squeeze(-2)
            - 0.5 * _LOG_2PI * present.sum(-2)
        )
        return per_coordinate.sum(-1)

    def entropy(self) -> torch.Tensor:
        """Closed form (eq. 9.25–9.26), summed over coordinates."""
        present = self._present
        k = present.sum(-2)  # (..., 1) broadcast per coordinate
        per_coordinate = (
            0.5 * k * (1 + _LOG_2PI)
            + self.log_one_minus_rho_sum
            + (self.scale.log() * present).sum(-2)
        )
        return per_coordinate.sum(-1)

    def kl_to_normal(self, prior_loc: torch.Tensor, prior_scale: torch.Tensor) -> torch.Tensor:
        r"""KL to the factorized prior :math:`\prod_i\mathcal N(m_i, s_i^2)` (eq. 9.28),
        over the present parts; ``prior_loc`` and ``prior_scale`` broadcast to ``(..., K, D)``."""
        present = self._present
        m, s = prior_loc.expand_as(self.loc), prior_scale.expand_as(self.loc)
        s2 = self.scale.pow(2)
        rho, log_c = self._rho_terms()
        total_s2 = (s2 * present).sum(-2, keepdim=True)
        quad = ((self.loc - m).pow(2) + (1 - 2 * rho) * s2 + rho.pow(2) * total_s2) / (2 * s.pow(2))
        terms = (quad + torch.log(s) - torch.log(self.scale)) * present
        per_coordinate = terms.sum(-2) - log_c - 0.5 * present.sum(-2)
        return per_coordinate.sum(-1)


@register_kl(CorrelatedMultisetNormal, Independent)
def _kl_correlated_independent_normal(q: CorrelatedMultisetNormal, p: Independent) -> torch.Tensor:
    """KL(q || p) for p = Normal(m, s) with the parts and coordinates as its two event dims."""
    base = p.base_dist
    if not isinstance(base, torch.distributions.Normal) or p.reinterpreted_batch_ndims != 2:
        raise NotImplementedError
    return q.kl_to_normal(base.loc, base.scale)


__all__ = ["CorrelatedMultisetNormal", "kl_divergence"]
