"""Multisets of parts (thesis ch. 9, CompVAE): a correlated Gaussian posterior
over the parts' latents, permutation-invariant aggregation and a GraphNN
encoder linear in the number of parts."""

from pgmdl.multiset.aggregate import SaturatingSum, masked_sum
from pgmdl.multiset.correlated import CorrelatedMultisetNormal
from pgmdl.multiset.graphnn import GraphSetEncoder

__all__ = ["CorrelatedMultisetNormal", "GraphSetEncoder", "SaturatingSum", "masked_sum"]
