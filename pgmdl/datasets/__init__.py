"""Data sets for examples and tests: small real ones, SYNTHETIC linear-Gaussian
networks whose evidence and posteriors are known exactly, a SYNTHETIC 2-D
manifold with heteroscedastic noise (:mod:`pgmdl.datasets.manifolds`), and the
multiset data sets of the CompVAE (thesis ch. 9), padded batches of parts and
their wholes (:class:`MultisetSample`, :mod:`pgmdl.datasets.multisets`):
SYNTHETIC saturated sums of sine curves (:func:`sines`, in
:mod:`pgmdl.datasets.sine_sums`), SYNTHETIC images of colour anchors
(:func:`colour_anchors`, in :mod:`pgmdl.datasets.anchor_images`) and SYNTHETIC
weekly electricity consumption of sets of households, calibrated on one real
household's measurements (:func:`households`, in
:mod:`pgmdl.datasets.household_power`); and sequences with known dynamics:
a SYNTHETIC linear-Gaussian state-space model whose exact log-evidence a
Kalman filter gives (:class:`LinearGaussianSSM`, in
:mod:`pgmdl.datasets.state_space`) and a SYNTHETIC damped pendulum with
controls seen through a ring of noisy pixels (:func:`pendulum`, in
:mod:`pgmdl.datasets.controlled_pendulum`).

Each module is named for what it holds and no function shares a module's
name, so ``pgmdl.datasets.sines`` is the generator and
``import pgmdl.datasets.sine_sums`` the module.
"""

import sys as _sys

from pgmdl.datasets import anchor_images, household_power, sine_sums
from pgmdl.datasets.anchor_images import COLOUR_NAMES, COLOURS, anchor_image, colour_anchors
from pgmdl.datasets.controlled_pendulum import PendulumDynamics, PendulumSample, pendulum
from pgmdl.datasets.digits import load_digits
from pgmdl.datasets.household_power import (
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
from pgmdl.datasets.sine_sums import sines, sines_sum_of_tanh, sines_whole
from pgmdl.datasets.state_space import (
    GaussianMarginals,
    LinearGaussianSSM,
    SequenceSample,
    sequence_mask,
)

# Deprecated module paths, kept for one release: ``from pgmdl.datasets.households
# import weekly_peak`` still finds the renamed module (registered here, so
# importing it does not rebind the function ``pgmdl.datasets.households``).
for _old, _module in (
    ("sines", sine_sums),
    ("colour_anchors", anchor_images),
    ("households", household_power),
):
    _sys.modules.setdefault(f"{__name__}.{_old}", _module)
del _old, _module

__all__ = [
    "COLOURS",
    "COLOUR_NAMES",
    "DEFAULT_CALIBRATION",
    "GaussianMarginals",
    "HouseholdCalibration",
    "LinearGaussianBN",
    "LinearGaussianSSM",
    "ManifoldSample",
    "MultisetSample",
    "PendulumDynamics",
    "PendulumSample",
    "SequenceSample",
    "anchor_image",
    "anchor_images",
    "binary_tree",
    "calibrate_households",
    "chain",
    "colour_anchors",
    "coverage_gap",
    "distance_to_manifold",
    "flexibility",
    "household_power",
    "households",
    "load_digits",
    "load_household_power",
    "log_density",
    "manifold_curve",
    "mean_noise_variance",
    "noise_std",
    "pad_multisets",
    "pendulum",
    "random_sparse",
    "sequence_mask",
    "sine_sums",
    "sines",
    "sines_sum_of_tanh",
    "sines_whole",
    "sinusoid_manifold",
    "top_hours",
    "weekly_peak",
]
