"""Boltzmann tuning of trained generative models (BTGM, thesis chapter 10).

:func:`boltzmann_tune` turns a trained Pyro model :math:`p` and a
differentiable criterion :math:`f` into the tuned model
:math:`\\hat p_\\lambda \\propto p\\, e^{\\lambda f}`, closest to :math:`p` in
KL among those that raise :math:`\\mathbb{E} f`, by pushing chosen latent
sites through zuko flows while the rest of the model stays frozen.

- :mod:`~pgmdl.boltzmann.tune`: :func:`boltzmann_tune`, the entry point.
- :mod:`~pgmdl.boltzmann.tuned_model`: :class:`TunedModel` and
  :class:`TuningStep`, the tuned model and the points of its family.
- :mod:`~pgmdl.boltzmann.preparation`: :func:`prepare`, the checks and the
  flows at the identity.
- :mod:`~pgmdl.boltzmann.loops`: the inner loop (eq. 10.19) and the outer
  loops (Algorithms 10.1-10.2).
- :mod:`~pgmdl.boltzmann.flows`: :class:`SiteFlow`, the per-site flows (eq. 10.18).
- :mod:`~pgmdl.boltzmann.handler`: :class:`TunedSites`, the effect handler.
- :mod:`~pgmdl.boltzmann.theory`: the family in numbers (eq. 10.5-10.9,
  10.22-10.23).
- :mod:`~pgmdl.boltzmann.diagnostics`: gradient norms for comparing criteria
  (§10.2.3, eq. 10.20) and rejection sampling at the same rate.
"""

from pgmdl.boltzmann.diagnostics import criterion_gradient_norms, rejection_sample
from pgmdl.boltzmann.flows import SiteFlow, affine_flow, spline_flow
from pgmdl.boltzmann.handler import TunedDistribution, TunedSites
from pgmdl.boltzmann.preparation import prepare
from pgmdl.boltzmann.theory import (
    Moments,
    TheoryPoint,
    pareto_front,
    reweighted,
    second_order_step,
    tail_kl,
)
from pgmdl.boltzmann.tune import boltzmann_tune
from pgmdl.boltzmann.tuned_model import TunedModel, TuningStep

__all__ = [
    "Moments",
    "SiteFlow",
    "TheoryPoint",
    "TunedDistribution",
    "TunedModel",
    "TunedSites",
    "TuningStep",
    "affine_flow",
    "boltzmann_tune",
    "criterion_gradient_norms",
    "prepare",
    "rejection_sample",
    "pareto_front",
    "reweighted",
    "second_order_step",
    "spline_flow",
    "tail_kl",
]
