r"""The Boltzmann family :math:`\hat p_\lambda \propto p\, e^{\lambda f}` in numbers.

For a base distribution :math:`p` and a criterion :math:`f`, the tilted
distributions

.. math:: \hat p_\lambda(x) = \frac{p(x)\, e^{\lambda f(x)}}{Z(\lambda)},
    \qquad Z(\lambda) = \mathbb{E}_p\, e^{\lambda f}
    \qquad \text{(thesis eq. 10.5)}

trace the Pareto front between :math:`\mathbb{E}_{\hat p_\lambda} f` and
:math:`D_{KL}(\hat p_\lambda \| p)`. Their derivatives in :math:`\lambda` are
moments of :math:`f` under :math:`\hat p_\lambda` (eq. 10.6-10.9, proofs in
appendix 10.B):

.. math::

    \frac{d}{d\lambda} D_{KL} = \lambda \operatorname{Var} f, \quad
    \frac{d^2}{d\lambda^2} D_{KL} = \operatorname{Var} f + \lambda\, \mu_3, \quad
    \frac{d}{d\lambda} \mathbb{E} f = \operatorname{Var} f, \quad
    \frac{d^2}{d\lambda^2} \mathbb{E} f = \mu_3,

with :math:`\mu_3 = \mathbb{E}(f - \mathbb{E} f)^3`, which is what the outer
loop's second-order update of :math:`\lambda` uses
(:func:`second_order_step`, Algorithms 10.1 and 10.2). Given samples of
:math:`f` under :math:`p`, self-normalized reweighting predicts both ends of
the front for any :math:`\lambda` (eq. 10.22-10.23, appendix 10.C):

.. math::

    \mathbb{E}_{\hat p_\lambda} f = \frac{\mathbb{E}_p f e^{\lambda f}}{\mathbb{E}_p e^{\lambda f}},
    \qquad
    D_{KL}(\hat p_\lambda \| p) = \lambda\, \mathbb{E}_{\hat p_\lambda} f
        - \log \mathbb{E}_p e^{\lambda f}.

(The thesis prints eq. 10.23 and 10.52 without the factor :math:`\lambda`
in front of the first term; eq. 10.43 and 10.51 have it, and it is needed:
with it the KL of a Gaussian tilted by a linear :math:`f` is
:math:`\lambda^2 \sigma^2 / 2`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pgmdl.errors import ArgumentError


@dataclass(frozen=True)
class TheoryPoint:
    """The reweighting prediction at one :math:`\\lambda`.

    Attributes:
        lam: :math:`\\lambda`.
        value: :math:`\\mathbb{E}_{\\hat p_\\lambda} f` (eq. 10.22).
        kl: :math:`D_{KL}(\\hat p_\\lambda \\| p)` (eq. 10.23, with its :math:`\\lambda`).
        ess: Kish's effective sample size of the weights: below a few
            hundred the prediction rests on a handful of base samples and
            is not to be trusted.
    """

    lam: float
    value: float
    kl: float
    ess: float


def reweighted(f_base: Tensor, lam: float) -> TheoryPoint:
    """Predict :math:`\\mathbb{E}_{\\hat p_\\lambda} f` and the KL from samples
    ``f_base`` of :math:`f` under :math:`p` (eq. 10.22-10.23).

    Example:
        >>> f = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
        >>> point = reweighted(f, 1.0)  # N(0,1) tilted by e^f is N(1, 1): KL 1/2
        >>> round(point.value, 1), round(point.kl, 1)
        (1.0, 0.5)
    """
    f = f_base.detach().double().flatten()
    logits = lam * f
    log_z = torch.logsumexp(logits, 0) - math.log(f.numel())
    w = torch.softmax(logits, 0)
    value = float((w * f).sum())
    kl = lam * value - float(log_z)
    ess = float(1.0 / (w * w).sum())
    return TheoryPoint(float(lam), value, max(kl, 0.0), ess)


def pareto_front(f_base: Tensor, lams: Tensor | list[float]) -> list[TheoryPoint]:
    """:func:`reweighted` along a list of :math:`\\lambda` (Fig. 10.2-10.3)."""
    return [reweighted(f_base, float(lam)) for lam in lams]


@dataclass(frozen=True)
class Moments:
    """Mean, variance and third central moment of :math:`f` under one
    distribution, from samples."""

    mean: float
    var: float
    third: float

    @staticmethod
    def of(f: Tensor) -> Moments:
        f = f.detach().double().flatten()
        mean = f.mean()
        c = f - mean
        return Moments(float(mean), float((c * c).mean()), float((c * c * c).mean()))


def kl_derivatives(lam: float, m: Moments) -> tuple[float, float]:
    """:math:`(dD_{KL}/d\\lambda,\\ d^2 D_{KL}/d\\lambda^2)` at :math:`\\lambda`
    from the moments of :math:`f` under :math:`\\hat p_\\lambda` (eq. 10.6, 10.8)."""
    return lam * m.var, m.var + lam * m.third


def value_derivatives(m: Moments) -> tuple[float, float]:
    """:math:`(d\\mathbb{E}f/d\\lambda,\\ d^2\\mathbb{E}f/d\\lambda^2)` (eq. 10.7, 10.9)."""
    return m.var, m.third


def second_order_step(gap: float, d1: float, d2: float) -> float:
    """The step :math:`\\delta` that brings a quantity with value offset
    ``gap`` = current - target, first derivative ``d1`` and second
    derivative ``d2`` to its target under the quadratic model
    :math:`\\text{gap} + d_1 \\delta + d_2 \\delta^2 / 2 = 0`.

    Of the two roots, the one nearest the Newton step :math:`-\\text{gap}/d_1`
    is taken; without a real root (or with a negligible curvature) the
    Newton step is returned. ``d1 = 0`` (the KL at :math:`\\lambda = 0`)
    gives the pure second-order root :math:`\\sqrt{-2\\,\\text{gap}/d_2}`.

    Example:
        >>> second_order_step(-2.0, 0.0, 1.0)  # KL = λ²/2 reaches 2 at λ = 2
        2.0
        >>> round(second_order_step(-1.0, 1.0, 0.0), 6)  # linear: Newton
        1.0
    """
    if d1 == 0.0:
        if d2 <= 0.0 or -gap / d2 < 0:
            return float("nan")
        return math.sqrt(-2.0 * gap / d2)
    newton = -gap / d1
    disc = d1 * d1 - 2.0 * d2 * gap
    if abs(d2) < 1e-12 * max(abs(d1), 1e-300) or disc < 0.0:
        return newton
    sq = math.sqrt(disc)
    roots = ((-d1 + sq) / d2, (-d1 - sq) / d2)
    return min(roots, key=lambda r: abs(r - newton))


def criterion_scale(f_base: Tensor) -> tuple[float, float]:
    """The affine normalization of §10.2.3: the mean and standard deviation
    of :math:`f` under :math:`p`. Tilting by :math:`\\lambda f` equals tilting
    by :math:`(\\lambda s)\\,(f - m)/s`, so the Pareto front does not change;
    the outer loop works on the normalized criterion, where a unit of
    :math:`\\lambda` means the same for every criterion."""
    f = f_base.detach().double().flatten()
    return float(f.mean()), float(f.std())


def tail_kl(rate: float) -> float:
    """The KL of :math:`p` restricted to a set of mass ``rate``,
    :math:`-\\log(\\text{rate})`: ``tail_kl(0.001)`` ≈ 6.91 nats is the
    target the thesis uses for the top 0.1% (§10.3.2, footnote 8)."""
    if not 0.0 < rate <= 1.0:
        raise ArgumentError(f"rate must be in (0, 1], got {rate!r}")
    return -math.log(rate)
