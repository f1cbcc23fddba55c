"""Training: a thin, optional loop over :class:`pyro.infer.SVI`.

* :func:`fit` (:mod:`pgmdl.infer.fit`) trains any model and guide on
  minibatches, on the data's device, with checkpoints, a progress bar,
  per-site KL in bits and errors that name what turned NaN; it returns a
  :class:`FitResult`;
* :class:`PartitionedOptim` (:mod:`pgmdl.infer.optim`) gives the model and
  the guide their own optimizers (slow for p_theta, fast for q_phi);
* :func:`site_kl_bits` and :func:`nonfinite_report`
  (:mod:`pgmdl.infer.diagnostics`) are the diagnostics ``fit`` uses, for
  any hand-written loop too.

* :func:`log_likelihood` (:mod:`pgmdl.infer.likelihood`) estimates
  :math:`\\log p(x)` by importance sampling with the guide (IWAE, with its
  standard error), and :func:`impute` (:mod:`pgmdl.infer.impute`) samples
  missing values (Metropolis-within-Gibbs, pseudo-Gibbs, importance
  resampling); :mod:`pgmdl.infer.missing` trains with missing values (MIWAE).

Everything else is Pyro's: ELBOs, optimizers and the param store.
"""

from pgmdl.infer.diagnostics import nonfinite_report, site_kl_bits
from pgmdl.infer.fit import FitResult, fit
from pgmdl.infer.impute import Imputation, impute
from pgmdl.infer.likelihood import LogLikelihood, log_likelihood
from pgmdl.infer.optim import PartitionedOptim

__all__ = [
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
