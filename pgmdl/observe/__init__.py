"""Structured observation models (thesis ch. 6–7).

* :class:`QuasiDeterministic`: a Gaussian observation ``x = f(z) + ε`` whose
  noise scale is fixed, learned (global, per dimension, or as a function
  ``σ(h)``) or set to its analytic optimum, always above a floor ``σ_min``;
  with normalized observation tempering or the β-VAE weighting, and noise
  augmentation of training batches.
* :class:`MultiscaleObservation`: a Laplacian pyramid of quasi-deterministic
  observations, coarse to fine, with the downscaled targets made inside the
  model.
* :func:`tempered`, :func:`beta_vae_weight`: tempering any observation
  distribution (normalized) versus weighting its log-density (β-VAE).
* :mod:`pgmdl.observe.theory`: Theorem 6.1's collapse threshold and the
  unbounded Gaussian likelihood of Mattei & Frellsen (2018), numerically.
"""

from pgmdl.observe.multiscale import MultiscaleObservation, downscale, upscale
from pgmdl.observe.noise import SIGMA_MODES, NoiseScale
from pgmdl.observe.quasi_deterministic import QuasiDeterministic
from pgmdl.observe.tempering import TEMPERABLE, beta_vae_weight, tempered

__all__ = [
    "SIGMA_MODES",
    "TEMPERABLE",
    "MultiscaleObservation",
    "NoiseScale",
    "QuasiDeterministic",
    "beta_vae_weight",
    "downscale",
    "tempered",
    "upscale",
]
