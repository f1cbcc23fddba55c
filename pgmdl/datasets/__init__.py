"""Data sets for examples and tests: small real ones, and SYNTHETIC linear-Gaussian
networks whose evidence and posteriors are known exactly."""

from pgmdl.datasets.digits import load_digits
from pgmdl.datasets.linear_gaussian import LinearGaussianBN, binary_tree, chain, random_sparse

__all__ = ["LinearGaussianBN", "binary_tree", "chain", "load_digits", "random_sparse"]
