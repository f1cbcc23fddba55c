"""Multisets of parts (thesis ch. 9, CompVAE): multiset plates over sets of varying
size, a correlated Gaussian posterior over the parts' latents, permutation-invariant
aggregation and a GraphNN encoder linear in the number of parts.

Importing the package registers its joint conditional with the guide planner
(:class:`~pgmdl.multiset.conditional.MultisetJointConditional`, :mod:`pgmdl.plugins`)."""

from pgmdl.multiset.aggregate import SaturatingSum, masked_sum
from pgmdl.multiset.conditional import MultisetConditional, MultisetJointConditional
from pgmdl.multiset.correlated import CorrelatedMultisetNormal
from pgmdl.multiset.graphnn import GraphSetEncoder
from pgmdl.multiset.plate import MultisetPlate, multiset_plate

__all__ = [
    "CorrelatedMultisetNormal",
    "GraphSetEncoder",
    "MultisetConditional",
    "MultisetJointConditional",
    "MultisetPlate",
    "SaturatingSum",
    "masked_sum",
    "multiset_plate",
]
