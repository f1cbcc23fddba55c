r"""The effect handler that runs a model with some latent sites tuned.

:class:`TunedSites` intercepts the chosen ``pyro.sample`` sites and
replaces their distribution :math:`p(x \mid \pi(x))` by its pushforward
through the site's flow (:class:`~pgmdl.boltzmann.flows.SiteFlow`); every
other site, and the frozen rest of the model, runs unchanged
(thesis eq. 10.13). While it runs it records every site's value (the
criterion reads them, and conditional flows read their parents) and, for
each tuned site, the per-sample log-density ratio

.. math:: r(x) = \log \hat p(\hat x \mid \pi) - \log p(\hat x \mid \pi),

whose expectation is the site's share of :math:`D_{KL}(\hat p \| p)`
(eq. 10.17: the divergence of the joint is the sum over tuned sites of
their conditional divergences, averaged over their parents).

:func:`run_particles` runs the model once with ``S`` independent executions
side by side, under an outer ``pyro.plate`` left of the model's own plates
(the vectorized-particles idiom of ``Trace_ELBO(vectorize_particles=True)``),
or along one of the model's own plates when its items are independent
executions (``particle_plate="data"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.contrib.zuko import ZukoToPyro
from pyro.poutine.messenger import Messenger
from torch import Tensor

from pgmdl.boltzmann.flows import SiteFlow
from pgmdl.errors import TuningError

PARTICLE_PLATE = "_boltzmann_particles"


class TunedDistribution(ZukoToPyro):
    """A tuned site's distribution: ``base`` pushed through the site's flow.

    A :class:`~pyro.contrib.zuko.ZukoToPyro` (the sample's log-density is
    cached with it) that also keeps the site's original distribution and
    reports its support, so that validation, :func:`pgmdl.compile` and
    :func:`pgmdl.render` see the same site as in the original model.
    """

    def __init__(
        self, flow: SiteFlow, base: torch.distributions.Distribution, context: Tensor | None
    ) -> None:
        super().__init__(flow.pushforward(base, context))
        self.base = base

    def expand(self, batch_shape, _instance=None) -> TunedDistribution:
        new = TunedDistribution.__new__(TunedDistribution)
        new.dist = self.dist.expand(torch.Size(batch_shape))
        new.cache = {}
        new.base = self.base.expand(torch.Size(batch_shape))
        return new

    @property
    def support(self):
        return self.base.support

    @property
    def event_shape(self) -> torch.Size:
        return self.base.event_shape  # g maps the site's event space to itself

    @property
    def batch_shape(self) -> torch.Size:
        return self.base.batch_shape

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        # ZukoToPyro only samples through __call__; initializers call .sample()
        return self.dist.rsample(sample_shape)

    def __repr__(self) -> str:
        return f"TunedDistribution(base={self.base!r})"


@dataclass
class SiteRecord:
    """What one run recorded about a site: its value and event dimension."""

    value: Tensor
    event_dim: int


class TunedSites(Messenger):
    """Run a model with the sites in ``flows`` pushed through their flows.

    Args:
        flows: the tuned sites' flows, by site name.
        contexts: for each conditional flow, the parent sites it reads, in
            order (their values are flattened and concatenated).

    After a run, ``records`` holds every sample site's value and
    ``log_ratios`` each tuned site's :math:`r(\\hat x)` (batch-shaped,
    zero where the site is masked).
    """

    def __init__(
        self, flows: Mapping[str, SiteFlow], contexts: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        super().__init__()
        self.flows = flows
        self.contexts = dict(contexts or {})
        self.records: dict[str, SiteRecord] = {}
        self.log_ratios: dict[str, Tensor] = {}
        self.bases: dict[str, torch.distributions.Distribution] = {}

    def __enter__(self):
        self.records = {}
        self.log_ratios = {}
        self.bases = {}
        return super().__enter__()

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        name = msg["name"]
        if name not in self.flows or msg["is_observed"]:
            return
        base = msg["fn"]
        context = self._context(name, base)
        msg["fn"] = TunedDistribution(self.flows[name], base, context)
        self.bases[name] = base

    def _postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample" or type(msg["fn"]).__name__ == "_Subsample":
            return  # plates' subsample messages
        name = msg["name"]
        self.records[name] = SiteRecord(msg["value"], len(msg["fn"].event_shape))
        if name in self.bases and isinstance(msg["fn"], TunedDistribution):
            value = msg["value"]
            ratio = msg["fn"].log_prob(value) - self.bases[name].log_prob(value)
            mask = msg.get("mask")
            if mask is not None and not isinstance(mask, bool):
                ratio = torch.where(mask, ratio, ratio.new_zeros(()))
            elif mask is False:
                ratio = torch.zeros_like(ratio)
            self.log_ratios[name] = ratio

    def _context(self, name: str, base) -> Tensor | None:
        parents = self.contexts.get(name, ())
        if not parents:
            return None
        batch = base.batch_shape
        pieces = []
        for parent in parents:
            record = self.records.get(parent)
            if record is None:
                raise TuningError(
                    f"the conditional flow of site {name!r} reads parent {parent!r}, which has "
                    "not run before it in this execution; pass context={"
                    f"{name!r}: [...]}} with sites that run earlier, or () for an "
                    "unconditional flow."
                )
            v = record.value
            flat = v.reshape(v.shape[: v.dim() - record.event_dim] + (-1,)).to(base.mean.dtype)
            try:
                pieces.append(flat.expand(batch + flat.shape[-1:]))
            except RuntimeError as err:
                raise TuningError(
                    f"the conditional flow of site {name!r} cannot read parent {parent!r}: its "
                    f"batch shape {tuple(flat.shape[:-1])} does not broadcast to the site's "
                    f"{tuple(batch)} (the parent lives in a plate the site is not in). Pass "
                    f"context={{{name!r}: [...]}} naming parents in the site's plates, or () "
                    "for an unconditional flow."
                ) from err
        return torch.cat(pieces, dim=-1)


@dataclass
class ParticleRun:
    """One vectorized run of ``S`` executions.

    Attributes:
        values: every sample site's value, by name (what the criterion reads).
        log_ratio: :math:`\\sum_{\\text{tuned}} r`, per execution, shape ``(S,)``.
        site_log_ratios: each tuned site's share, per execution.
    """

    values: dict[str, Tensor]
    log_ratio: Tensor
    site_log_ratios: dict[str, Tensor]
    event_dims: dict[str, int]

    @property
    def size(self) -> int:
        """The number of executions ``S``."""
        return self.log_ratio.shape[0]


def run_particles(
    model: Callable[..., Any],
    handler: TunedSites,
    num_particles: int,
    particle_dim: int,
    particle_plate: str | None,
    args: tuple,
    kwargs: Mapping[str, Any],
) -> ParticleRun:
    """Run ``model`` for ``num_particles`` independent executions under
    ``handler``; see the module docstring for the two particle layouts (with
    ``particle_plate``, the plate's size, set by the model's arguments, is
    the number of executions and ``num_particles`` is ignored)."""
    with handler:
        if particle_plate is None:
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
                model(*args, **kwargs)
        else:
            model(*args, **kwargs)
    values = {name: record.value for name, record in handler.records.items()}
    event_dims = {name: record.event_dim for name, record in handler.records.items()}
    if not handler.log_ratios:
        if handler.flows or particle_plate is not None:
            raise TuningError("no tuned site ran in this execution of the model.")
        zero = next(iter(values.values())).new_zeros(num_particles)  # the original model
        return ParticleRun(values, zero, {}, event_dims)
    if particle_plate is not None:
        first = next(iter(handler.log_ratios.values()))
        num_particles = first.shape[particle_dim] if first.dim() >= -particle_dim else 1
    site_log_ratios = {
        name: per_particle(ratio, particle_dim, num_particles, f"site {name!r}")
        for name, ratio in handler.log_ratios.items()
    }
    total = sum(site_log_ratios.values())
    return ParticleRun(values, total, site_log_ratios, event_dims)


def per_particle(value: Tensor, particle_dim: int, num_particles: int, what: str) -> Tensor:
    """Sum a batch-shaped tensor over every dimension but the particle one."""
    if value.dim() < -particle_dim:
        raise TuningError(
            f"{what} has batch shape {tuple(value.shape)}, without the particle dimension "
            f"{particle_dim}: it is outside the plate that holds independent executions."
        )
    moved = value.movedim(particle_dim, 0)
    out = moved.reshape(moved.shape[0], -1).sum(-1)
    return out.expand(num_particles)


def particles_first(value: Tensor, event_dim: int, particle_dim: int, num: int) -> Tensor:
    """A site value with its particle dimension moved to the front (shape
    ``(S, ...)``); a value outside the particle plate is repeated."""
    axis = value.dim() - event_dim + particle_dim
    if axis >= 0 and value.shape[axis] == num:
        return value.movedim(axis, 0)
    return value.expand((num,) + value.shape)


def criterion_per_particle(f: Any, num_particles: int, hint: str) -> Tensor:
    """The criterion's output as one value per execution, shape ``(S,)``."""
    if not isinstance(f, Tensor):
        raise TuningError(
            f"the criterion must return a tensor (one value per execution), got {type(f).__name__}."
        )
    if f.numel() != num_particles:
        raise TuningError(
            f"the criterion returned shape {tuple(f.shape)} for {num_particles} executions of the "
            f"model: it must return one value per execution. {hint}"
        )
    return f.reshape(num_particles)
