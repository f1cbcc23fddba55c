"""Data sets for examples and tests: small real ones, SYNTHETIC linear-Gaussian
networks whose evidence and posteriors are known exactly, a SYNTHETIC 2-D
manifold with heteroscedastic noise (:mod:`pgmdl.datasets.manifolds`), and the
multiset data sets of the CompVAE (thesis ch. 9), padded batches of parts and
their wholes (:class:`MultisetSample`): SYNTHETIC saturated sums of sine curves
(:mod:`pgmdl.datasets.sines`), SYNTHETIC images of colour anchors
(:mod:`pgmdl.datasets.colour_anchors`) and SYNTHETIC weekly electricity
consumption of sets of households, calibrated on one real household's
measurements (:mod:`pgmdl.datasets.households`).

The functions ``sines``, ``colour_anchors`` and ``households`` share their
modules' names, so ``pgmdl.datasets.sines`` is the function; reach the modules'
other names with ``from pgmdl.datasets.households import ...`` (or
``importlib.import_module("pgmdl.datasets.households")``)."""

from pgmdl.datasets.colour_anchors import COLOUR_NAMES, COLOURS, anchor_image, colour_anchors
from pgmdl.datasets.digits import load_digits
from pgmdl.datasets.households import (
    DEFAULT_CALIBRATION,
    HouseholdCalibration,
    calibrate_households,
    flexibility,
    households,
    load_household_power,
    top_hours,
    weekly_peak,
)
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
from pgmdl.datasets.multisets import MultisetSample, pad_multisets
from pgmdl.datasets.sines import sines, sines_sum_of_tanh, sines_whole

__all__ = [
    "COLOURS",
    "COLOUR_NAMES",
    "DEFAULT_CALIBRATION",
    "HouseholdCalibration",
    "LinearGaussianBN",
    "ManifoldSample",
    "MultisetSample",
    "anchor_image",
    "binary_tree",
    "calibrate_households",
    "chain",
    "colour_anchors",
    "coverage_gap",
    "distance_to_manifold",
    "flexibility",
    "households",
    "load_digits",
    "load_household_power",
    "log_density",
    "manifold_curve",
    "mean_noise_variance",
    "noise_std",
    "pad_multisets",
    "random_sparse",
    "sines",
    "sines_sum_of_tanh",
    "sines_whole",
    "sinusoid_manifold",
    "top_hours",
    "weekly_peak",
]
