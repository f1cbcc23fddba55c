"""Training: a thin, optional loop over :class:`pyro.infer.SVI`.

* :func:`fit` (:mod:`pgmdl.infer.training`) trains any model and guide on
  minibatches, on the data's device, with checkpoints, a progress bar,
  per-site KL in bits and errors that name what turned NaN; it returns a
  :class:`FitResult`. Its pieces: :mod:`pgmdl.infer.data` (checking the
  data, minibatches, each epoch's order), :mod:`pgmdl.infer.checkpoint` (the
  checkpoint file), :mod:`pgmdl.infer.guard` (steps that never apply a
  non-finite gradient);
* :class:`FastSVI` (:mod:`pgmdl.infer.fast_svi`) is a drop-in for
  :class:`pyro.infer.SVI` whose step replays one traced, handler-free graph
  (same loss and gradients, a fraction of Pyro's per-step cost);
  ``fit(..., fast=True)`` uses it;
* :class:`PartitionedOptim` (:mod:`pgmdl.infer.optim`) gives the model and
  the guide their own optimizers (slow for p_theta, fast for q_phi);
* :class:`KLWarmup` (:mod:`pgmdl.infer.annealing`) weights the latent
  terms of the ELBO by a factor growing linearly to 1 (KL warm-up);
* :func:`site_kl_bits` and :func:`nonfinite_report`
  (:mod:`pgmdl.infer.diagnostics`) are the diagnostics ``fit`` uses, for
  any hand-written loop too.

* :func:`log_likelihood` (:mod:`pgmdl.infer.likelihood`) estimates
  :math:`\\log p(x)` by importance sampling with the guide (IWAE, with its
  standard error), and :func:`impute` (:mod:`pgmdl.infer.imputation`) samples
  missing values (Metropolis-within-Gibbs, pseudo-Gibbs, importance
  resampling); :mod:`pgmdl.infer.missing` trains with missing values (MIWAE).

Modules are named for what they hold and no function shares a module's name:
``pgmdl.infer.fit`` is the function, ``pgmdl.infer.training`` its module.
Everything else is Pyro's: ELBOs, optimizers and the param store.
"""

import sys as _sys

from pgmdl.infer import imputation, training
from pgmdl.infer.annealing import KLWarmup
from pgmdl.infer.diagnostics import nonfinite_report, site_kl_bits
from pgmdl.infer.fast_svi import FastSVI, FastSVIWarning
from pgmdl.infer.imputation import Imputation, impute
from pgmdl.infer.likelihood import LogLikelihood, log_likelihood
from pgmdl.infer.optim import PartitionedOptim
from pgmdl.infer.training import FitResult, fit

# Deprecated module paths, kept for one release: ``from pgmdl.infer.fit import
# FitResult`` still finds the renamed module (registered here, so importing it
# does not rebind the function ``pgmdl.infer.fit``).
_sys.modules.setdefault(f"{__name__}.fit", training)
_sys.modules.setdefault(f"{__name__}.impute", imputation)

__all__ = [
    "FastSVI",
    "KLWarmup",
    "FastSVIWarning",
    "FitResult",
    "Imputation",
    "LogLikelihood",
    "PartitionedOptim",
    "fit",
    "impute",
    "log_likelihood",
    "nonfinite_report",
    "site_kl_bits",
]
