"""Diagnostics for variational training: per-site KL in bits, and what turned NaN.

Per-site KL in bits
-------------------
The ELBO of one data point splits into a reconstruction term and, for each
latent site ``z`` the guide samples, a KL term::

    ELBO = E_q[log p(x | z)] - sum_z E_q[ log q(z | .) - log p(z | pa(z)) ]

The term of site ``z`` is the information (in nats) the guide puts into
``z`` beyond what the prior already says; divided by ``ln 2`` it is in bits,
the unit the thesis reports latent information in. :func:`site_kl_bits`
estimates it by Monte Carlo: it draws ``num_particles`` traces of the guide,
replays the model on each (:func:`pyro.poutine.replay`), and averages::

    KL_bits(z) = mean over particles of [log q(z | .) - log p(z | pa)] / ln 2 / num_data

where each log-density is the site's ``log_prob_sum`` as Pyro computes it
(:meth:`pyro.poutine.Trace.compute_log_prob`): summed over the site's batch
and multiplied by its scale (``pyro.plate`` subsampling, ``poutine.scale``),
exactly as in the ELBO. ``num_data`` defaults to the length of the batch
(the first dimension of the first tensor argument), so the result is per
data point.

* Model latents that ``TraceEnum_ELBO`` enumerates (``infer={"enumerate":
  ...}``) and the guide does not sample are summed out, not inferred: they
  have no KL term here.
* An auxiliary guide site ``name + "_unconstrained"`` (how
  :class:`~pyro.infer.autoguide.AutoNormal` samples ``name`` in unconstrained
  space) is counted with ``name``. Other auxiliary sites (the joint latent of
  :class:`~pyro.infer.autoguide.AutoMultivariateNormal`) have their own
  entry, with the log-Jacobians on the sites they feed: the sum of all
  entries is the total KL, but the split is meaningful only for guides with
  one factor per site.
* With a point-mass guide (:class:`~pyro.infer.autoguide.AutoDelta`)
  ``log q = 0`` and the entry is ``-log p(z)`` in bits, not a KL.

Non-finite losses
-----------------
:func:`nonfinite_report` re-runs the guide and the replayed model on a batch
with validation off and lists what is not finite: sites whose log-prob sum
is NaN or infinite (``model site 'x'``, ``guide site 'z'``) and parameters
(by param-store name) whose value or gradient is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from pgmdl.arguments import model_arguments
from pgmdl.errors import ArgumentError

_LN2 = math.log(2.0)
_AUX_SUFFIX = "_unconstrained"


def site_kl_bits(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    num_particles: int = 8,
    num_data: int | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Monte Carlo estimate of each latent site's KL term, in bits per data point.

    For each latent site the guide samples, ``E_q[log q(z|.) - log p(z|pa)]``
    (log-probs summed over the site's batch with Pyro's scale applied),
    divided by ``ln 2`` and by ``num_data``. See the module docstring for
    enumerated and auxiliary sites.

    Args:
        model: the Pyro model.
        guide: any Pyro guide of it.
        model_args, model_kwargs: the arguments of ``model`` and ``guide``
            (one batch). The old spelling ``site_kl_bits(model, guide, *args,
            **kwargs)`` still works for one release, with a ``FutureWarning``.
        num_particles: how many guide traces to average over.
        num_data: the number of data points to divide by; by default the
            length of the first tensor argument (positional first, then
            keyword).

    Returns:
        site name to KL in bits per data point, in the guide's order.

    Raises:
        ArgumentError: ``num_particles`` or ``num_data`` is not positive, or
            ``num_data`` is not given and no argument is a tensor with a
            batch dimension.
    """
    args, kwargs = model_arguments(
        "site_kl_bits",
        model_args,
        model_kwargs,
        legacy=(args, kwargs) if args or kwargs else None,
        old_spelling="site_kl_bits(model, guide, *args, **kwargs)",
        new_spelling="site_kl_bits(model, guide, model_args=args, model_kwargs=kwargs)",
    )
    if num_data is None:
        num_data = default_num_data(args, kwargs)
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ArgumentError(f"num_particles must be a positive integer, got {num_particles!r}")
    if not isinstance(num_data, int) or num_data < 1:
        raise ArgumentError(f"num_data must be a positive integer, got {num_data!r}")
    totals: dict[str, torch.Tensor | float] = {}
    with torch.no_grad():
        for _ in range(num_particles):
            guide_trace, model_trace = _traces(model, guide, args, kwargs)
            latents = [
                name
                for name, site in guide_trace.nodes.items()
                if site["type"] == "sample"
                and not site["is_observed"]
                and not site_is_subsample(site)
            ]
            wanted = set(latents)
            guide_trace.compute_log_prob(lambda name, _site, wanted=wanted: name in wanted)
            model_trace.compute_log_prob(lambda name, _site, wanted=wanted: name in wanted)
            for name in latents:
                site = guide_trace.nodes[name]
                term = site["log_prob_sum"]
                model_site = model_trace.nodes.get(name)
                if model_site is not None and model_site["type"] == "sample":
                    if model_site["is_observed"]:
                        continue  # the model observes it: not a latent
                    term = term - model_site["log_prob_sum"]
                key = _owner(name, site, wanted)
                totals[key] = totals.get(key, 0.0) + term
    scale = 1.0 / (num_particles * num_data * _LN2)
    return {name: float(total) * scale for name, total in totals.items()}


def nonfinite_report(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> list[str]:
    """What is NaN or infinite when the guide and the replayed model run on a batch.

    The guide is traced, the model replayed on its samples, both with Pyro's
    and PyTorch's argument validation off (validation would raise on the
    first NaN instead of showing where it is), and every site's
    ``log_prob_sum`` is checked, as is every parameter either of them uses
    (its value, and its gradient when it has one).

    Args:
        model: the Pyro model.
        guide: any Pyro guide of it.
        model_args, model_kwargs: the arguments of ``model`` and ``guide``
            (one batch). The old spelling ``nonfinite_report(model, guide,
            *args, **kwargs)`` still works for one release, with a
            ``FutureWarning``.

    Returns:
        one line per culprit, such as ``"model site 'x': log-prob sum is nan
        (its observed value has 3 non-finite entries)"`` or
        ``"parameter 'scale': value has 1 non-finite entry"``; empty when everything is finite.
    """
    args, kwargs = model_arguments(
        "nonfinite_report",
        model_args,
        model_kwargs,
        legacy=(args, kwargs) if args or kwargs else None,
        old_spelling="nonfinite_report(model, guide, *args, **kwargs)",
        new_spelling="nonfinite_report(model, guide, model_args=args, model_kwargs=kwargs)",
    )
    lines: list[str] = []
    with pyro.validation_enabled(False), torch.no_grad():
        guide_trace, model_trace = _traces(model, guide, args, kwargs)
        params: dict[str, torch.Tensor] = {}
        for role, trace in (("guide", guide_trace), ("model", model_trace)):
            trace.compute_log_prob(lambda _name, site: not site_is_subsample(site))
            for name, site in trace.nodes.items():
                if site["type"] == "param":
                    params.setdefault(name, site["value"])
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                total = site["log_prob_sum"]
                if bool(torch.isfinite(total)):
                    continue
                line = f"{role} site {name!r}: log-prob sum is {_describe(total)}"
                value = site["value"]
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    bad = _count_nonfinite(value)
                    if bad:
                        what = "observed value" if site["is_observed"] else "value"
                        line += f" (its {what} has {_entries(bad)})"
                lines.append(line)
    store = pyro.get_param_store()
    unconstrained = dict(store.named_parameters())
    for name, value in params.items():
        bad = _count_nonfinite(value)
        if bad:
            lines.append(f"parameter {name!r}: value has {_entries(bad)}")
        raw = unconstrained.get(name)
        grad = None if raw is None else raw.grad
        if grad is not None:
            bad = _count_nonfinite(grad)
            if bad:
                lines.append(f"parameter {name!r}: gradient has {_entries(bad)}")
    return lines


def default_num_data(args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """The length (first dimension) of the first tensor argument with one.

    Raises:
        ArgumentError: no argument is a tensor with a batch dimension.
    """
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ArgumentError(
        "cannot tell the number of data points: no argument is a tensor with a batch "
        "dimension; pass num_data="
    )


def _owner(name: str, site: dict[str, Any], latents: set[str]) -> str:
    """The site an auxiliary ``z_unconstrained`` site's log-density belongs to."""
    if site["infer"].get("is_auxiliary") and name.endswith(_AUX_SUFFIX):
        base = name[: -len(_AUX_SUFFIX)]
        if base in latents:
            return base
    return name


def _traces(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> tuple[Trace, Trace]:
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return guide_trace, model_trace


def _count_nonfinite(value: torch.Tensor) -> int:
    if not value.is_floating_point() and not value.is_complex():
        return 0
    return int((~torch.isfinite(value.detach())).sum())


def _entries(count: int) -> str:
    return f"{count} non-finite entry" if count == 1 else f"{count} non-finite entries"


def _describe(value: torch.Tensor) -> str:
    number = float(value)
    return "nan" if math.isnan(number) else ("+inf" if number > 0 else "-inf")
