r"""Choosing a criterion, and the rejection-sampling baseline.

**Gradient norms** (§10.2.3, eq. 10.20). At the optimum, the flow's
log-Jacobian varies like the criterion:
:math:`\nabla_x \log |J_g|^{-1} = \lambda \nabla_x f(x)`. How hard
:math:`\hat p_\lambda` is to learn for a criterion is read a priori from the
distribution, under :math:`p`, of the normalized gradient norm
:math:`\|\nabla_x f\| / \sqrt{\operatorname{Var}_p f}` with respect to the
tuned sites: plateaus (norms near 0) separated by cliffs (very large norms)
make a hard landscape (Fig. 10.1, 10.7: :math:`c(y \mid x)` versus
:math:`\log c(y \mid x)`).

**Rejection sampling at the same rate.** Restricting :math:`p` to a set of
mass :math:`\rho` costs :math:`-\log \rho` nats (§10.3.3, footnote 8): the
top 0.1% of the criterion is the KL budget 6.91. :func:`rejection_sample`
keeps the top ``rate`` of base samples, the baseline BTGM is compared with
(§10.3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pgmdl.boltzmann.handler import (
    TunedSites,
    criterion_per_particle,
    particles_first,
    run_particles,
)
from pgmdl.boltzmann.preparation import particle_dim, prepare
from pgmdl.boltzmann.tuned_model import Criterion
from pgmdl.errors import ArgumentError, TuningError
from pgmdl.graph.compile import compile_model


def criterion_gradient_norms(
    model: Callable[..., Any],
    criterion: Criterion,
    sites: str | Sequence[str],
    *,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    num_samples: int = 10_000,
    chunk: int = 2048,
    normalize: bool = True,
) -> Tensor:
    r"""The norms :math:`\|\nabla_x f\|` over the tuned sites, at
    ``num_samples`` samples of the original model (eq. 10.20).

    The gradient is taken with respect to the concatenated values of
    ``sites`` (through everything downstream of them: decoder, observation
    mean), one norm per execution. With ``normalize`` the norms are divided
    by :math:`\sqrt{\operatorname{Var}_p f}` (the affine normalization of
    §10.2.3), so that criteria on different scales compare.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> norms = criterion_gradient_norms(model, lambda v: 3 * v["z"][..., 0], "z",
        ...                                  num_samples=1000)
        >>> round(float(norms.mean()), 1)  # |∇f| / sd f = 3 / 3
        1.0
    """
    tuned = prepare(
        model, criterion, sites, model_args=model_args, model_kwargs=model_kwargs, context=None
    )
    if tuned.particle_plate is not None:  # pragma: no cover - prepare sets None here
        raise TuningError("gradient norms need pgmdl's own particle plate.")
    norms, values = [], []
    done = 0
    while done < num_samples:
        run = tuned.run(min(chunk, num_samples - done))
        f = tuned.f(run.values, run.size)
        xs = [run.values[s] for s in tuned.sites]
        if not f.requires_grad:
            raise TuningError(
                f"the criterion is not differentiable with respect to {list(tuned.sites)}."
            )
        grads = torch.autograd.grad(f.sum(), xs, allow_unused=True)
        sq = f.new_zeros(run.size)
        for s, g in zip(tuned.sites, grads, strict=True):
            if g is None:
                continue
            g = particles_first(g, run.event_dims[s], tuned.particle_dim, run.size)
            sq = sq + (g * g).reshape(run.size, -1).sum(-1)
        norms.append(sq.sqrt().detach())
        values.append(f.detach())
        done += run.size
    out = torch.cat(norms)
    if normalize:
        sd = torch.cat(values).double().std()
        if not sd > 0:
            raise TuningError("the criterion is constant over the model's samples.")
        out = out / sd.to(out.dtype)
    return out


def rejection_sample(
    model: Callable[..., Any],
    criterion: Criterion,
    rate: float,
    *,
    num_samples: int = 100_000,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    chunk: int = 8192,
    keep: Sequence[str] | None = None,
) -> tuple[dict[str, Tensor], Tensor, float]:
    """Keep the top ``rate`` of ``num_samples`` executions of the original
    model by the criterion: the rejection-sampling counterpart of a BTGM
    target KL of :math:`-\\log(\\text{rate})`.

    Args:
        model, criterion, model_args, model_kwargs: as in
            :func:`~pgmdl.boltzmann.boltzmann_tune`.
        rate: the accepted fraction (0.001: the top 0.1%).
        num_samples: base executions drawn (about ``rate * num_samples`` are kept).
        chunk: executions per vectorized run.
        keep: the sites whose accepted values are returned (default: all).

    Returns:
        ``(values, f, threshold)``: the accepted executions' site values
        (particle dimension first), their criterion values, and the
        acceptance threshold (the ``1 - rate`` quantile).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> values, f, threshold = rejection_sample(model, lambda v: v["z"], 0.01,
        ...                                         num_samples=20_000)
        >>> len(f), round(threshold, 1)  # the 99% quantile of N(0, 1) is 2.33
        (200, 2.3)
    """
    if not 0.0 < rate < 1.0:
        raise ArgumentError(f"rate must be in (0, 1), got {rate!r}")
    model_kwargs = dict(model_kwargs or {})
    graph = compile_model(model, model_args=model_args, model_kwargs=model_kwargs, num_traces=1)
    dim = particle_dim(graph, [], None)
    fs: list[Tensor] = []
    stash: list[dict[str, Tensor]] = []
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(chunk, num_samples - done)
            run = run_particles(model, TunedSites({}), n, dim, None, model_args, model_kwargs)
            f = criterion_per_particle(criterion(run.values), n, "")
            fs.append(f)
            names = keep if keep is not None else list(run.values)
            stash.append(
                {k: particles_first(run.values[k], run.event_dims[k], dim, n) for k in names}
            )
            done += n
    f = torch.cat(fs)
    order = torch.sort(f).values
    threshold = float(order[min(int((1.0 - rate) * f.numel()), f.numel() - 1)])
    accepted = f >= threshold
    values = {k: torch.cat([s[k] for s in stash])[accepted] for k in stash[0]}
    return values, f[accepted], float(threshold)
