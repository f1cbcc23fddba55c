r"""Observation tempering and the β-VAE weighting (thesis §7.A).

The β-VAE (Higgins et al. 2017) weights the reconstruction term of the ELBO
by :math:`1/\beta` (eq. 6.2, up to an overall factor). Read as a model,
that is the *unnormalized* :math:`p(x \mid z)^{1/\beta}\,p(z)` (eq. 7.5).
**Observation tempering** keeps the normalization (eq. 7.6):

.. math::

    \log \hat p_\beta(x \mid z) = \tfrac1\beta \log p(x \mid z)
        - \log \int p(x' \mid z)^{1/\beta}\,dx' .

The two differ in their gradients by the expectation of the score under the
tempered distribution (eq. 7.7–7.8):

.. math::

    \underbrace{\tfrac1\beta \nabla_\lambda \log p(x)}_{\text{β-VAE}}
    = \underbrace{\nabla_\lambda \log \hat p_\beta(x)}_{\text{tempered}}
      + \tfrac1\beta\, \mathbb E_{\hat x \sim \hat p_\beta} \nabla_\lambda \log p(\hat x),

which for a Gaussian of learned scale is :math:`\tfrac{\beta-1}{\beta}\nabla_\lambda \log\sigma`
(eq. 7.10): the β-VAE pushes :math:`\sigma` up when :math:`\beta > 1`, while a
tempered model can compensate exactly (:math:`\sigma^2 \to \sigma^2/\beta`).

For exponential families tempering stays in the family (natural parameters
divided by :math:`\beta`): :func:`tempered` implements it in closed form for
Normal, Laplace, Bernoulli, Categorical and OneHotCategorical, under any
``Independent`` wrapper. :func:`beta_vae_weight` is the β-VAE's plain
:math:`1/\beta` weighting of a site's log-density, as a Pyro effect handler.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
from pyro import poutine
from torch.distributions import Distribution

from pgmdl.errors import ModelError

TEMPERABLE = ("Normal", "Laplace", "Bernoulli", "Categorical", "OneHotCategorical")
"""Distributions :func:`tempered` knows in closed form (possibly inside ``Independent``)."""


def _check_beta(beta: float) -> float:
    if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
        raise ModelError(f"beta={beta!r}: the temperature must be a finite number > 0")
    return float(beta)


def tempered(distribution: Distribution, beta: float) -> Distribution:
    r"""The normalized tempered distribution :math:`\hat p_\beta \propto p^{1/\beta}` (eq. 7.6).

    * Normal(μ, σ) → Normal(μ, σ√β); Laplace(μ, b) → Laplace(μ, bβ);
    * Bernoulli / Categorical / OneHotCategorical(logits) → logits / β.

    Example:
        >>> import torch
        >>> hot = tempered(dist.Normal(torch.tensor(0.0), torch.tensor(1.0)), 4.0)
        >>> float(hot.scale)
        2.0
    """
    beta = _check_beta(beta)
    if isinstance(distribution, dist.Independent):
        base = tempered(distribution.base_dist, beta)
        return dist.Independent(base, distribution.reinterpreted_batch_ndims)
    if isinstance(distribution, dist.Normal):
        return dist.Normal(distribution.loc, distribution.scale * math.sqrt(beta))
    if isinstance(distribution, dist.Laplace):
        return dist.Laplace(distribution.loc, distribution.scale * beta)
    if isinstance(distribution, dist.Bernoulli):
        return dist.Bernoulli(logits=distribution.logits / beta)
    if isinstance(distribution, dist.OneHotCategorical):
        return dist.OneHotCategorical(logits=distribution.logits / beta)
    if isinstance(distribution, dist.Categorical):
        return dist.Categorical(logits=distribution.logits / beta)
    raise ModelError(
        f"tempering {type(distribution).__name__} has no closed form here (known: "
        f"{', '.join(TEMPERABLE)}); for other distributions the β-VAE weighting "
        "beta_vae_weight(beta) is available, but it is not normalized"
    )


def beta_vae_weight(beta: float) -> poutine.scale_messenger.ScaleMessenger:
    r"""An effect handler scaling the log-density of the sites inside it by
    :math:`1/\beta`: the β-VAE's reconstruction weight (eq. 6.2), *not*
    renormalized (compare :func:`tempered`).

    Example:
        >>> import pyro, torch
        >>> def model():
        ...     with beta_vae_weight(4.0):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(1.0))
        >>> trace = pyro.poutine.trace(model).get_trace()
        >>> trace.nodes["x"]["scale"]
        0.25
    """
    return poutine.scale(scale=1.0 / _check_beta(beta))
