r"""Normalizing flows that push a latent site's own distribution forward.

Boltzmann tuning replaces the distribution :math:`p(x \mid \pi(x))` of a
chosen latent site by its pushforward through a learned bijection :math:`g`
(thesis §10.2.2, eq. 10.18):

.. math::

    \hat x = g(x; \pi(x)), \quad x \sim p(x \mid \pi(x)), \qquad
    \log \hat p(\hat x \mid \pi) = \log p(x \mid \pi) - \log |J_g(x)|.

:class:`SiteFlow` builds :math:`g` for one site from a zuko flow and wraps the
result as a Pyro distribution through :class:`pyro.contrib.zuko.ZukoToPyro`
(zuko's :class:`~zuko.distributions.NormalizingFlow` with transform
:math:`g^{-1}` and the site's own distribution as base), so that sampling
runs :math:`g` forward once and returns the log-density with the sample,
and scoring that sample needs no inverse.

:math:`g` works in the unconstrained space of the site's support (a positive
site is tuned through ``exp``) and, for a real-valued site, on values
standardized by the site's mean and standard deviation,

.. math:: g(x) = m + s\, h\!\left(\frac{x - m}{s}\right),

so that spline flows, defined on :math:`[-5, 5]`, see unit-scale inputs
whatever the site's scale (the affine maps cancel in :math:`\log|J_g|`).
The zuko flow :math:`h` starts at the identity (its output layers are
zeroed), as §10.2.2 asks: the first tuned samples cover the whole support
of :math:`p`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Distribution, biject_to, constraints
from torch.distributions.transforms import AffineTransform, ReshapeTransform, Transform
from zuko.distributions import NormalizingFlow
from zuko.lazy import LazyTransform
from zuko.transforms import ComposedTransform

from pgmdl.errors import ArgumentError, ArgumentTypeError

#: ``factory(features, context) -> LazyTransform``: how a flow is built for a
#: site with ``features`` unconstrained dimensions and ``context`` parent
#: features (0 for an unconditional flow).
FlowFactory = Callable[[int, int], LazyTransform]


def spline_flow(
    features: int,
    context: int = 0,
    *,
    transforms: int = 3,
    bins: int = 8,
    hidden_features: Sequence[int] = (64, 64),
) -> LazyTransform:
    """A coupling neural spline flow (Durkan et al., 2019): zuko's ``NSF``
    with two passes, so that both directions cost one network evaluation per
    layer. One feature gives element-wise splines (conditioned on the context
    when there is one).

    Example:
        >>> h = spline_flow(3, context=2)
        >>> h(torch.zeros(2))(torch.zeros(3)).shape
        torch.Size([3])
    """
    flow = zuko.flows.NSF(
        features,
        context,
        transforms=transforms,
        bins=bins,
        passes=2,
        hidden_features=tuple(hidden_features),
    )
    return flow.transform


def affine_flow(
    features: int,
    context: int = 0,
    *,
    transforms: int = 3,
    hidden_features: Sequence[int] = (64, 64),
) -> LazyTransform:
    """A RealNVP flow (affine couplings; Dinh et al., 2016): cheaper than
    splines, enough when the tuned distribution stays near-Gaussian.

    Example:
        >>> h = affine_flow(2)
        >>> h()(torch.zeros(2)).shape
        torch.Size([2])
    """
    if features == 1:  # couplings need two features; zuko's MAF handles one
        flow = zuko.flows.MAF(
            1, context, transforms=transforms, hidden_features=tuple(hidden_features)
        )
    else:
        flow = zuko.flows.RealNVP(
            features, context, transforms=transforms, hidden_features=tuple(hidden_features)
        )
    return flow.transform


FLOWS: dict[str, FlowFactory] = {"spline": spline_flow, "affine": affine_flow}


def resolve_flow(flow: str | FlowFactory) -> FlowFactory:
    """``"spline"``, ``"affine"`` or a ``factory(features, context)``."""
    if callable(flow):
        return flow
    if flow not in FLOWS:
        raise ArgumentError(
            f"flow must be one of {sorted(FLOWS)} or a callable "
            f"factory(features, context) -> zuko LazyTransform, got {flow!r}"
        )
    return FLOWS[flow]


def set_identity(lazy: LazyTransform) -> None:
    """Zero the output layer of every hyper-network (and every free parameter
    vector) of a zuko flow, which makes zuko's affine and spline transforms
    the identity. :class:`SiteFlow` checks the result numerically."""
    with torch.no_grad():
        for module in lazy.modules():
            hyper = getattr(module, "hyper", None)
            if isinstance(hyper, nn.Module):
                # zuko's MLP layers are not all nn.Linear subclasses: take the
                # last module that owns a weight
                layers = [
                    m for m in hyper.modules() if isinstance(getattr(m, "weight", None), Tensor)
                ]
                if layers:
                    layers[-1].weight.zero_()
                    if getattr(layers[-1], "bias", None) is not None:
                        layers[-1].bias.zero_()
            phi = getattr(module, "phi", None)
            if isinstance(phi, nn.ParameterList):
                for p in phi:
                    p.zero_()


class SiteFlow(nn.Module):
    r"""The learned bijection :math:`g` of one tuned site.

    Args:
        site: the site's name (for messages).
        event_shape: the site's event shape.
        support: the site's support; :math:`g` acts on ``biject_to(support)``'s
            unconstrained space.
        context_features: the number of parent features a conditional flow
            reads (0: unconditional).
        flow: ``"spline"``, ``"affine"`` or a ``factory(features, context)``
            returning a zuko ``LazyTransform``.
        identity_init: start at :math:`g = \mathrm{id}` (§10.2.2).

    Example:
        >>> import pyro.distributions as dist
        >>> g = SiteFlow("z", (2,), constraints.real)
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> x = base.sample((5,))
        >>> torch.allclose(g.transform(base, None)(x), x)  # identity at start
        True
    """

    def __init__(
        self,
        site: str,
        event_shape: Sequence[int],
        support: constraints.Constraint,
        context_features: int = 0,
        flow: str | FlowFactory = "spline",
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.site = site
        self.event_shape = torch.Size(event_shape)
        self.support = support
        self.bijection = biject_to(support)
        self.free_shape = torch.Size(self.bijection.inverse_shape(self.event_shape))
        self.features = max(1, math.prod(self.free_shape))
        self.context_features = int(context_features)
        self.real = support is constraints.real or (
            isinstance(support, constraints.independent)
            and support.base_constraint is constraints.real
        )
        self.standardize = self.real
        self.h = resolve_flow(flow)(self.features, self.context_features)
        if not isinstance(self.h, nn.Module):
            raise ArgumentTypeError(
                f"the flow factory for site {site!r} returned {type(self.h).__name__}; "
                "it must return a zuko LazyTransform (an nn.Module called with the context)."
            )
        if identity_init:
            set_identity(self.h)

    def reset(self) -> None:
        """Back to the identity (used when the outer loop lowers λ, §10.2.2)."""
        set_identity(self.h)

    def calibrate(self, base: Distribution) -> None:
        """Standardize only if ``base`` has a finite mean and standard
        deviation (a Cauchy site is tuned on its raw scale). Called once, on
        the site's distribution in a first run, so that the per-step
        transform does no data-dependent check (no device sync)."""
        if self.standardize:
            try:
                loc, scale = base.mean, base.stddev
            except NotImplementedError:
                self.standardize = False
                return
            ok = torch.isfinite(loc).all() & torch.isfinite(scale).all() & (scale > 0).all()
            self.standardize = bool(ok)

    def transform(self, base: Distribution, context: Tensor | None) -> Transform:
        r""":math:`g` for a site whose own distribution is ``base``, as a
        transform on the site's event shape (standardized by ``base``'s mean
        and standard deviation when the support is real)."""
        parts: list[Transform] = []
        if not self.real:
            parts.append(self.bijection.inv)
        parts.append(ReshapeTransform(self.free_shape, (self.features,)))
        if self.standardize:
            loc, scale = base.mean.detach(), base.stddev.detach()
            shape = loc.shape[: loc.dim() - len(self.free_shape)] + (self.features,)
            loc, scale = loc.reshape(shape), scale.reshape(shape)
            parts.append(AffineTransform(-loc / scale, 1.0 / scale, event_dim=1))
        parts.append(self.h(context))
        if self.standardize:
            parts.append(AffineTransform(loc, scale, event_dim=1))
        parts.append(ReshapeTransform((self.features,), self.free_shape))
        if not self.real:
            parts.append(self.bijection)
        return ComposedTransform(*parts)

    def pushforward(self, base: Distribution, context: Tensor | None) -> NormalizingFlow:
        """The tuned site distribution: ``base`` pushed through :math:`g`
        (eq. 10.18), as zuko's ``NormalizingFlow(g⁻¹, base)``: its
        ``rsample_and_log_prob`` runs :math:`g` forward once. Wrap it in
        :class:`~pyro.contrib.zuko.ZukoToPyro` for ``pyro.sample``."""
        return NormalizingFlow(self.transform(base, context).inv, base)
