"""Multisets of parts (thesis ch. 9, CompVAE): a correlated Gaussian posterior
over the parts' latents and permutation-invariant aggregation."""

from pgmdl.multiset.aggregate import SaturatingSum, masked_sum
from pgmdl.multiset.correlated import CorrelatedMultisetNormal

__all__ = ["CorrelatedMultisetNormal", "SaturatingSum", "masked_sum"]
