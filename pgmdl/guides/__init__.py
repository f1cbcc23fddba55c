"""Amortized guides built from the model's structure.

* :class:`NaMIGuide`: a Pyro AutoGuide with the structure of the NaMI inverse.
* :mod:`pgmdl.guides.families`: variational families chosen from a site's support.
* :mod:`pgmdl.guides.plan`: the guide-planning stage (:func:`~pgmdl.guides.plan.plan_guide`).
* :mod:`pgmdl.nn`: residual networks, per-parent normalization, set encoders (shared).
* :mod:`pgmdl.guides.conditional`: one conditional q(site | parents).
"""

from pgmdl.guides.conditional import Conditional, ParentFeatures, ParentSpec, PathDerivative
from pgmdl.guides.families import FAMILY_NAMES, Family, default_family, make_family
from pgmdl.guides.nami_guide import GUIDE_ORDERS, NaMIGuide
from pgmdl.nn import ParentNorm, ResidualMLP, SetEncoder

__all__ = [
    "FAMILY_NAMES",
    "GUIDE_ORDERS",
    "Conditional",
    "ParentFeatures",
    "Family",
    "NaMIGuide",
    "ParentNorm",
    "ParentSpec",
    "PathDerivative",
    "ResidualMLP",
    "SetEncoder",
    "default_family",
    "make_family",
]
