r"""Variational families: from a network's raw output to a distribution.

A guide conditional is a network followed by a *family*: the network maps the
site's parents to a raw vector :math:`r \in \mathbb{R}^P` per replicate, and
the family turns :math:`r` into a distribution on the site's support. Which
family a site gets is read from its support (:func:`default_family`):

================================  ==================================================
support                           default family
================================  ==================================================
real, real vector                 ``"normal"``: :math:`\mathcal{N}(\mu, \sigma^2)`,
                                  diagonal over the event
positive, unit interval,          ``"normal"`` pushed through
simplex, intervals, ...           :math:`T = \text{biject\_to}(\text{support})`:
                                  LogNormal, logit-Normal, logistic-Normal...
boolean                           ``"bernoulli"`` (logits from the network)
integer interval [a, b]           ``"categorical"`` over the :math:`b - a + 1` values
one-hot                           ``"one-hot-categorical"``
================================  ==================================================

Other families on request (``NaMIGuide(families={site: name})``):
``"softplus-normal"`` (positive), ``"beta"`` (unit interval), ``"dirichlet"``
(simplex). A support without a family (Poisson counts, Cholesky factors...)
raises :class:`~pgmdl.errors.GuideError` naming the site and support.

Initialization follows the thesis' design advice (Berger 2021, §4.2.4): the
last layer of every conditional network starts at zero, so each conditional
starts as the constant distribution given by the family's
:meth:`Family.init_bias`: a given scale in the unconstrained space
(``NaMIGuide(init_scale=...)``) around the prior's typical value (``init``),
which lets the guide start close to the prior instead of imposing an
arbitrary organization on the latent space.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to
from torch.distributions.transforms import (
    ComposeTransform,
    ExpTransform,
    IndependentTransform,
    SoftplusTransform,
    StickBreakingTransform,
    Transform,
)

from pgmdl.errors import GuideError

#: lower bound added to every scale and concentration, for numerical safety
MIN_SCALE = 1e-4
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus^{-1}(1)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(x) + MIN_SCALE


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    y = (y - MIN_SCALE).clamp_min(1e-6)
    return y + torch.log(-torch.expm1(-y))


class Family:
    """A variational family for one site.

    Attributes:
        name: the family's registry name (``"normal"``, ``"bernoulli"``...).
        event_shape: the shape of one replicate of the site (its event shape
            and any batch dimensions not declared by a plate).
        num_params: the length of the raw vector :math:`r` the network
            produces per replicate.
        is_discrete: whether samples are discrete (no reparameterization).
    """

    name = "family"
    is_discrete = False

    def __init__(self, event_shape: torch.Size) -> None:
        self.event_shape = torch.Size(event_shape)
        self.num_params = 0

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        """The raw vector of the initial, constant conditional.

        Args:
            init: a typical value of the site, of shape ``event_shape``
                (for discrete sites: the prior's probabilities), or ``None``.
            scale: the initial scale in the unconstrained space, for the
                families that have one (Gaussian families); others ignore it.
        """
        raise NotImplementedError

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        """The distribution for raw outputs of shape ``batch + (num_params,)``;
        its batch shape is ``batch`` and its event shape ``event_shape``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event_shape={tuple(self.event_shape)})"


class NormalFamily(Family):
    r"""A diagonal Gaussian in the unconstrained space, pushed onto the support.

    .. math::

        q(z) = T_{\#}\,\mathcal{N}\big(u;\ \mu(r),\ \operatorname{diag}\sigma(r)^2\big),
        \qquad \sigma = \operatorname{softplus}(\cdot) + 10^{-4},

    with :math:`T` = ``biject_to(support)`` (identity on the reals, ``exp`` on
    the positive reals: LogNormal, sigmoid on the unit interval:
    logit-Normal, stick-breaking on the simplex: logistic-Normal), or a given
    transform (``softplus`` for ``"softplus-normal"``).
    """

    name = "normal"

    def __init__(
        self,
        event_shape: torch.Size,
        support: constraints.Constraint,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(event_shape)
        self.transform = _interior(biject_to(support)) if transform is None else transform
        self.identity = _is_identity(self.transform)
        self.unconstrained_shape = self.transform.inverse_shape(self.event_shape)
        self.size = self.unconstrained_shape.numel()
        self.num_params = 2 * self.size

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        loc = torch.zeros(self.size)
        if init is not None:
            value = self.transform.inv(init.detach().to(torch.get_default_dtype()).cpu())
            value = value.reshape(-1)
            loc = torch.where(torch.isfinite(value), value, torch.zeros_like(value))
        raw_scale = _softplus_inverse(torch.full((self.size,), float(scale)))
        return torch.cat([loc, raw_scale])

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        shape = raw.shape[:-1] + self.unconstrained_shape
        loc = raw[..., : self.size].reshape(shape)
        scale = _softplus(raw[..., self.size :]).reshape(shape)
        base = dist.Normal(loc, scale).to_event(len(self.unconstrained_shape))
        if self.identity:
            return base
        # a fresh cached transform per call: the log-density of the value just sampled
        # uses the Gaussian draw it came from, not T^{-1}(value) recomputed in floating
        # point, which cancels catastrophically near the support's boundary (the
        # stick-breaking inverse of a point with components ~1e-8 is off by ~1e9 nats
        # in float32) and lets the optimizer drive the ELBO without bound
        return dist.TransformedDistribution(base, [self.transform.with_cache(1)])

    def pushed(self, base: dist.TorchDistribution) -> dist.TorchDistribution:
        """A distribution over the flat unconstrained vector (``size`` values: a
        flow's, a full-covariance Gaussian's) reshaped and pushed onto the support."""
        transforms = []
        if self.unconstrained_shape != torch.Size([self.size]):
            transforms.append(
                torch.distributions.transforms.ReshapeTransform(
                    torch.Size([self.size]), self.unconstrained_shape
                )
            )
        if not self.identity:
            transforms.append(self.transform.with_cache(1))
        return dist.TransformedDistribution(base, transforms) if transforms else base


class MultivariateNormalFamily(NormalFamily):
    r"""A full-covariance Gaussian in the unconstrained space, pushed onto the support.

    .. math::

        q(z) = T_{\#}\,\mathcal{N}\big(u;\ \mu(r),\ L(r) L(r)^\top\big),

    :math:`L` lower triangular with a softplus diagonal (+ :math:`10^{-4}`) and
    free entries below it: :math:`d + d(d+1)/2` raw outputs for :math:`d`
    unconstrained dimensions. Where the posterior correlates the components
    of one replicate (a state-space model's state given its neighbours and
    the data), a diagonal Gaussian leaves a gap no training closes.
    """

    name = "mvn"

    def __init__(
        self,
        event_shape: torch.Size,
        support: constraints.Constraint,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(event_shape, support, transform)
        self.num_params = self.size + self.size * (self.size + 1) // 2
        self._rows, self._cols = torch.tril_indices(self.size, self.size)

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        diagonal = super().init_bias(init, scale)
        tril = torch.zeros(self.size * (self.size + 1) // 2)
        tril[self._rows == self._cols] = diagonal[self.size :]
        return torch.cat([diagonal[: self.size], tril])

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        loc = raw[..., : self.size]
        entries = raw[..., self.size :]
        diagonal = self._rows == self._cols
        entries = torch.where(diagonal.to(raw.device), _softplus(entries), entries)
        tril = raw.new_zeros(raw.shape[:-1] + (self.size, self.size))
        tril[..., self._rows, self._cols] = entries
        base = _ReparameterizedMultivariateNormal(loc, scale_tril=tril, validate_args=False)
        return self.pushed(base)


class _ReparameterizedMultivariateNormal(dist.MultivariateNormal):
    r"""A MultivariateNormal that scores its own last draw :math:`z = \mu + L\varepsilon`
    from :math:`\varepsilon` (:math:`\log q(z) = -\sum_i \log L_{ii} -
    \tfrac12 \lVert\varepsilon\rVert^2 - \tfrac d2 \log 2\pi`), without the
    triangular solve; the same value and, since :math:`L^{-1}(z - \mu) = \varepsilon`
    whatever the parameters, the same gradient. Any other value is scored as
    usual."""

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + (self._unbroadcasted_scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        self._drawn = (value, eps)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        drawn = getattr(self, "_drawn", None)
        if drawn is None or value is not drawn[0]:
            return super().log_prob(value)
        eps = drawn[1]
        half_log_det = self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        d = self._event_shape[0]
        return -0.5 * (d * math.log(2 * math.pi) + eps.pow(2).sum(-1)) - half_log_det


class InteriorStickBreakingTransform(StickBreakingTransform):
    r"""Stick-breaking onto the simplex, each component at least the dtype's
    smallest normal number.

    The components are products of sigmoids; under a sparse prior
    (``Dirichlet`` with concentrations below 1, as in LDA) a logistic-Normal
    draw underflows to denormals or 0 in float32, where the prior's
    log-density gradient :math:`(\alpha - 1)/p` is infinite and the ELBO's
    gradient becomes NaN. Clamping moves the value by less than
    ``finfo.tiny`` and blocks the gradient of the clamped components only.
    """

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return super()._call(x).clamp_min(torch.finfo(x.dtype).tiny)


class InteriorExpTransform(ExpTransform):
    r""":math:`\exp` onto the positive reals, kept within the dtype's normal range
    :math:`[\text{tiny}, \text{max}]`.

    A LogNormal draw whose location drifts below :math:`-87` (float32)
    underflows to a denormal or 0; under a sparse ``Gamma`` prior (shape
    below 1, as in a sparse gamma DEF) the prior's log-density gradient
    :math:`(\alpha - 1)/z` then overflows and the ELBO's gradient turns NaN.
    A draw above :math:`e^{88}` is ``inf``. Clamping moves the value by less
    than ``finfo.tiny`` at the bottom and keeps it finite at the top; only
    the clamped components lose their gradient.
    """

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        info = torch.finfo(x.dtype)
        return super()._call(x).clamp(info.tiny, info.max)


def _interior(transform: Transform) -> Transform:
    """``transform`` with values kept off the float boundary of its codomain
    (stick-breaking on the simplex, ``exp`` on the positive reals)."""
    if type(transform) is StickBreakingTransform:
        return InteriorStickBreakingTransform()
    if type(transform) is ExpTransform:
        return InteriorExpTransform()
    if isinstance(transform, IndependentTransform):
        return IndependentTransform(
            _interior(transform.base_transform), transform.reinterpreted_batch_ndims
        )
    if isinstance(transform, ComposeTransform):
        return ComposeTransform([_interior(part) for part in transform.parts])
    return transform


class BetaFamily(Family):
    r"""Beta on the unit interval: :math:`\alpha, \beta = \operatorname{softplus}(r)`,
    starting at mean ``init`` with total concentration 2 (uniform at 0.5)."""

    name = "beta"

    def __init__(self, event_shape: torch.Size) -> None:
        super().__init__(event_shape)
        self.size = self.event_shape.numel()
        self.num_params = 2 * self.size

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        mean = torch.full((self.size,), 0.5)
        if init is not None:
            mean = init.detach().cpu().reshape(-1).to(mean.dtype).clamp(0.05, 0.95)
        return _softplus_inverse(torch.cat([2 * mean, 2 * (1 - mean)]))

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        shape = raw.shape[:-1] + self.event_shape
        c1 = _softplus(raw[..., : self.size]).reshape(shape)
        c0 = _softplus(raw[..., self.size :]).reshape(shape)
        return dist.Beta(c1, c0).to_event(len(self.event_shape))


class DirichletFamily(Family):
    r"""Dirichlet on the simplex: :math:`\alpha = \operatorname{softplus}(r)`,
    starting at mean ``init`` with total concentration :math:`K`."""

    name = "dirichlet"

    def __init__(self, event_shape: torch.Size) -> None:
        super().__init__(event_shape)
        self.k = self.event_shape[-1]
        self.size = self.event_shape.numel()
        self.num_params = self.size

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        mean = torch.full(self.event_shape, 1.0 / self.k)
        if init is not None:
            mean = init.detach().cpu().to(mean.dtype).clamp_min(1e-3)
            mean = mean / mean.sum(-1, keepdim=True)
        return _softplus_inverse(self.k * mean).reshape(-1)

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        concentration = _softplus(raw).reshape(raw.shape[:-1] + self.event_shape)
        return dist.Dirichlet(concentration).to_event(len(self.event_shape) - 1)


class BernoulliFamily(Family):
    """Independent Bernoulli variables with logits :math:`r`, starting at the
    prior's probabilities."""

    name = "bernoulli"
    is_discrete = True

    def __init__(self, event_shape: torch.Size) -> None:
        super().__init__(event_shape)
        self.num_params = self.event_shape.numel()

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        if init is None:
            return torch.zeros(self.num_params)
        p = init.detach().cpu().to(torch.get_default_dtype()).reshape(-1).clamp(1e-4, 1 - 1e-4)
        return torch.log(p) - torch.log1p(-p)

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        logits = raw.reshape(raw.shape[:-1] + self.event_shape)
        return dist.Bernoulli(logits=logits).to_event(len(self.event_shape))


class CategoricalFamily(Family):
    """Categorical over ``low, ..., low + K - 1`` with logits :math:`r`,
    starting at the prior's probabilities. ``one_hot=True`` gives
    ``OneHotCategorical`` (the value's last dimension is the category)."""

    name = "categorical"
    is_discrete = True

    def __init__(self, event_shape: torch.Size, num_categories: int, *, one_hot: bool = False):
        super().__init__(event_shape)
        self.k = num_categories
        self.one_hot = one_hot
        self.name = "one-hot-categorical" if one_hot else "categorical"
        # the shape of the logits of one replicate: one row of K per categorical variable
        cells = self.event_shape[:-1] if one_hot else self.event_shape
        self.cells = torch.Size(cells)
        self.num_params = self.cells.numel() * self.k

    def init_bias(self, init: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        if init is None:
            return torch.zeros(self.num_params)
        probs = init.detach().cpu().to(torch.get_default_dtype()).clamp_min(1e-6)
        probs = probs / probs.sum(-1, keepdim=True)
        return torch.log(probs).expand(self.cells + (self.k,)).reshape(-1)

    def __call__(self, raw: torch.Tensor) -> dist.TorchDistribution:
        logits = raw.reshape(raw.shape[:-1] + self.cells + (self.k,))
        if self.one_hot:
            return dist.OneHotCategorical(logits=logits).to_event(len(self.cells))
        return dist.Categorical(logits=logits).to_event(len(self.cells))


#: family names accepted by ``NaMIGuide(families=...)``
FAMILY_NAMES = (
    "normal",
    "mvn",
    "lognormal",
    "softplus-normal",
    "beta",
    "dirichlet",
    "bernoulli",
    "categorical",
    "one-hot-categorical",
)


def make_family(
    name: str | None, site: str, support: constraints.Constraint, event_shape: torch.Size
) -> Family:
    """The family ``name`` (or the default for ``support`` when ``None``) for a site.

    Args:
        name: a name from :data:`FAMILY_NAMES`, or ``None`` for the default.
        site: the site's name (for error messages).
        support: the support of the site's distribution in the model.
        event_shape: the shape of one replicate (see :class:`Family`).

    Raises:
        GuideError: the support has no family, or the named family does not
            live on the support; the message names the site and support.
    """
    base = base_support(support)
    support_label = _support_label(support)
    if name is None:
        name = default_family(base)
        if name is None:
            raise GuideError(
                f"latent site {site!r} has support {support_label}, for which NaMIGuide has "
                "no variational family. Give the site its own conditional: "
                f"NaMIGuide(model, conditionals={{{site!r}: fn}}) with fn(parents) returning a "
                "distribution on that support, or enumerate it in the model "
                '(infer={"enumerate": "parallel"}) if it is discrete and finite.'
            )
    check = _FAMILY_SUPPORTS.get(name)
    if check is None:
        raise GuideError(
            f"unknown family {name!r} for site {site!r}; known families: {list(FAMILY_NAMES)}"
        )
    if not check(base):
        raise GuideError(
            f"family {name!r} does not live on the support of site {site!r} ({support_label}); "
            f"families for this support: {_families_for(base) or 'none'}"
        )
    if name in ("normal", "lognormal"):
        return NormalFamily(event_shape, support)
    if name == "mvn":
        return MultivariateNormalFamily(event_shape, support)
    if name == "softplus-normal":
        return NormalFamily(event_shape, support, SoftplusTransform())
    if name == "beta":
        return BetaFamily(event_shape)
    if name == "dirichlet":
        return DirichletFamily(event_shape)
    if name == "bernoulli":
        return BernoulliFamily(event_shape)
    if name == "one-hot-categorical":
        return CategoricalFamily(event_shape, event_shape[-1], one_hot=True)
    low, high = integer_bounds(base)
    family = CategoricalFamily(event_shape, high - low + 1)
    if low != 0:
        raise GuideError(
            f"site {site!r} has support {support_label}; the categorical family covers "
            "integer intervals starting at 0. Shift the variable in the model."
        )
    return family


def default_family(support: constraints.Constraint) -> str | None:
    """The default family name for a support (unwrapped), or ``None``."""
    for name in ("bernoulli", "categorical", "one-hot-categorical", "normal"):
        if _FAMILY_SUPPORTS[name](support):
            return name
    return None


def _families_for(support: constraints.Constraint) -> list[str]:
    return [name for name in FAMILY_NAMES if _FAMILY_SUPPORTS[name](support)]


def base_support(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def _support_label(support: constraints.Constraint) -> str:
    from pgmdl.graph.sites import support_name

    return repr(support_name(support))


def _continuous_bijectable(support: constraints.Constraint) -> bool:
    if support.is_discrete:
        return False
    try:
        biject_to(support)
    except NotImplementedError:
        return False
    return True


def integer_bounds(support: constraints.Constraint) -> tuple[int, int]:
    low, high = support.lower_bound, support.upper_bound
    return int(torch.as_tensor(low).reshape(-1)[0]), int(torch.as_tensor(high).reshape(-1)[0])


def is_finite_integer_interval(support: constraints.Constraint) -> bool:
    if not isinstance(support, constraints.integer_interval):
        return False
    bounds = [torch.as_tensor(b) for b in (support.lower_bound, support.upper_bound)]
    return all(b.numel() == 1 or bool((b == b.reshape(-1)[0]).all()) for b in bounds)


def _is_identity(transform: Transform) -> bool:
    while isinstance(transform, torch.distributions.transforms.IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, torch.distributions.transforms.ComposeTransform) and not (
        transform.parts
    )


_FAMILY_SUPPORTS: dict[str, Callable[[constraints.Constraint], bool]] = {
    "normal": _continuous_bijectable,
    "mvn": _continuous_bijectable,
    "lognormal": lambda s: s is constraints.positive,
    "softplus-normal": lambda s: s is constraints.positive,
    "beta": lambda s: s is constraints.unit_interval,
    "dirichlet": lambda s: s is constraints.simplex,
    "bernoulli": lambda s: s is constraints.boolean,
    "categorical": is_finite_integer_interval,
    "one-hot-categorical": lambda s: s is constraints.one_hot,
}
