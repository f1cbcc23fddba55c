"""Data sets for examples and tests: small real ones, SYNTHETIC linear-Gaussian
networks whose evidence and posteriors are known exactly, and a SYNTHETIC 2-D
manifold with heteroscedastic noise (:mod:`pgmdl.datasets.manifolds`)."""

from pgmdl.datasets.digits import load_digits
from pgmdl.datasets.linear_gaussian import LinearGaussianBN, binary_tree, chain, random_sparse
from pgmdl.datasets.manifolds import (
    ManifoldSample,
    coverage_gap,
    distance_to_manifold,
    log_density,
    manifold_curve,
    mean_noise_variance,
    noise_std,
    sinusoid_manifold,
)

__all__ = [
    "LinearGaussianBN",
    "ManifoldSample",
    "binary_tree",
    "chain",
    "coverage_gap",
    "distance_to_manifold",
    "load_digits",
    "log_density",
    "manifold_curve",
    "mean_noise_variance",
    "noise_std",
    "random_sparse",
    "sinusoid_manifold",
]
