r"""Conditionals shared across the steps of a ``pyro.markov`` loop (issue 19).

For a state-space model the NaMI inverse in reverse order is Krishnan et
al.'s structured inference network (2017),

.. math::

    q(z_{1:T} \mid x_{1:T}) = \prod_t q(z_t \mid z_{t-1}, x_{t:T}),

and in min-fill order its mirror, :math:`\prod_t q(z_t \mid z_{t+1}, x_{1:t})`.
Built step by step, the guide holds one network per step, the one of step
:math:`t` reading :math:`O(T)` observations: :math:`O(T^2)` inputs in all.
:func:`time_shared_conditionals` replaces them, for every latent series whose
steps follow the slice :attr:`pgmdl.guides.plan.GuidePlan.time` reports, by
**one** conditional per series (:class:`TimeSharedSeries`): the latents at
fixed lags are read directly (a learned stand-in where the lag falls before
the loop), the growing run of observations through a GRU run once per call
over the observed series (backward in time for :math:`x_{t:T}`, forward for
:math:`x_{1:t}`), and the sites outside the loop as they are. The guide's
structure (what each step conditions on) is the plan's: only the function
class changes, :math:`O(T)` work and parameters independent of :math:`T`.

A series whose steps do not all fit that pattern keeps its per-step
conditionals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pgmdl.guides.conditional import Conditional, ParentSpec
from pgmdl.guides.plan import GuidePlan


@dataclass(frozen=True)
class StepRoles:
    """How one step of a latent series reads its parents.

    Attributes:
        site: the step's site.
        position: its step's index among the series' steps.
        lagged: ``{role: parent site or None}`` for the latents at fixed
            offsets (``"z_{t}@-1"``); None where the offset falls outside
            the loop.
        static: parents outside the loop.
    """

    site: str
    position: int
    lagged: Mapping[str, str | None]
    static: tuple[str, ...]


class TimeSharedSeries(nn.Module):
    """What every step of one latent series shares: the GRU summarizing the
    observed series, stand-ins for absent lagged latents, the head.

    Args:
        summary_sites: per step of the series, the observed sites whose
            features enter the GRU at that step (the observed series at
            that step).
        direction: ``"future"`` (step ``t`` summarizes steps ``t..T``: the GRU
            runs backwards) or ``"past"`` (steps ``1..t``: forwards).
        summary_features: the width of one step's GRU input.
        hidden: the GRU's width.
        lagged_features: ``{role: width}`` of the lagged latents.
        head: the conditional mapping ``{"summary", roles..., statics...}`` to
            the step's distribution.
    """

    def __init__(
        self,
        summary_sites: Sequence[Sequence[str]],
        direction: str,
        summary_features: int,
        hidden: int,
        lagged_features: Mapping[str, int],
        head: Conditional,
    ) -> None:
        super().__init__()
        self.summary_sites = [tuple(s) for s in summary_sites]
        self.direction = direction
        self.rnn = nn.GRU(summary_features, hidden, batch_first=True)
        self.stand_ins = nn.ParameterDict(
            {
                _key(role): nn.Parameter(torch.zeros(width))
                for role, width in lagged_features.items()
            }
        )
        self.head = head
        self._summary: torch.Tensor | None = None

    def summarize(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Run the GRU over this call's observed series; returns ``(..., T, hidden)``
        (kept for the other steps of the call)."""
        steps = [torch.cat([features[s] for s in sites], -1) for sites in self.summary_sites]
        batch = torch.broadcast_shapes(*(x.shape[:-1] for x in steps))
        sequence = torch.stack([x.expand(batch + x.shape[-1:]) for x in steps], -2)
        flat = sequence.reshape((-1,) + sequence.shape[-2:])
        if self.direction == "future":
            flat = flat.flip(-2)
        out, _ = self.rnn(flat)
        if self.direction == "future":
            out = out.flip(-2)
        self._summary = out.reshape(batch + out.shape[-2:])
        return self._summary


class StepConditional(nn.Module):
    """One step's view of a :class:`TimeSharedSeries` (no parameters of its own)."""

    def __init__(self, shared: TimeSharedSeries, roles: StepRoles, first: bool) -> None:
        super().__init__()
        self.shared = shared
        self.roles = roles
        self.first = first  # sampled first in the series: runs the GRU for this call

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        block: torch.Size,
        max_depth: int,
        masks: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.distributions.Distribution:
        shared = self.shared
        summary = shared.summarize(inputs) if self.first else shared._summary
        assert summary is not None, "the series' first step runs before the others"
        h = summary[..., self.roles.position, :]
        now = [inputs[s] for s in shared.summary_sites[self.roles.position]]
        read = {"summary": h, "now": torch.cat(now, -1) if len(now) > 1 else now[0]}
        for role, parent in self.roles.lagged.items():
            if parent is None:
                stand_in = shared.stand_ins[_key(role)]
                read[role] = stand_in.expand(h.shape[:-1] + stand_in.shape)
            else:
                read[role] = inputs[parent]
        for name in self.roles.static:
            read[name] = inputs[name]
        return shared.head(read, block, max_depth, masks)


def time_shared_conditionals(
    plan: GuidePlan,
    widths: Mapping[str, int],
    make_head: Callable[[str, list[ParentSpec]], Conditional],
    hidden: int = 64,
) -> dict[str, StepConditional]:
    """``{site: StepConditional}`` for the latent series whose every step fits
    the shared pattern (see the module docstring); other sites are left out.

    Args:
        plan: the guide's plan, with its :attr:`~pgmdl.guides.plan.GuidePlan.time`.
        widths: the feature width of every name a conditional reads.
        make_head: builds the series' head from its first step's site and
            the head's parent specs (``"summary"``, the lagged roles, the statics).
        hidden: the GRU's width.
    """
    time = plan.time
    if time is None:
        return {}
    out: dict[str, StepConditional] = {}
    for series in time.series:
        if series.kind != "latent" or any(site not in plan for site in series.sites):
            continue
        fitted = _fit_series(plan, series)
        if fitted is None:
            continue
        steps, direction, observed = fitted
        lagged = {role: widths[p] for s in steps for role, p in s.lagged.items() if p}
        if any(role not in lagged for s in steps for role in s.lagged):
            continue  # a lag no step reads: nothing to learn its width from
        first = steps[0]
        summary_sites = [tuple(s.site(t) for s in observed) for t in series.steps]
        summary_width = sum(widths[s] for s in summary_sites[0])
        # the step's own observations also enter directly: a linear path to the head
        specs = [ParentSpec("summary", hidden), ParentSpec("now", summary_width)]
        specs += [ParentSpec(role, width) for role, width in lagged.items()]
        for name in first.static:
            link = next(p.link for p in plan[first.site].parents if p.name == name)
            dims = tuple(plan.graph.plates[p].dim for p in link.pooled)
            specs.append(ParentSpec(name, widths[name], pooled_dims=dims))  # type: ignore[arg-type]
        shared = TimeSharedSeries(
            summary_sites, direction, summary_width, hidden, lagged, make_head(first.site, specs)
        )
        order = [s for s in plan.order if s in set(series.sites)]
        for roles in steps:
            out[roles.site] = StepConditional(shared, roles, first=roles.site == order[0])
    return out


def _fit_series(plan: GuidePlan, series) -> tuple[list[StepRoles], str, list] | None:  # noqa: ANN001
    """Each step's roles, the summary's direction and the observed series it
    reads, or None when some step does not fit the shared pattern."""
    time = plan.time
    assert time is not None
    by_template = {s.template: s for s in time.series}
    directions, observed_templates, statics = set(), None, None
    steps = []
    for position, t in enumerate(series.steps):
        site = series.site(t)
        lagged: dict[str, str | None] = {}
        runs: dict[str, list[int]] = {}
        static = []
        for parent in plan[site].parents:
            found = time.series_of(parent.name)
            if found is None:
                static.append(parent.name)
                continue
            other, u = found
            if other.kind == "latent":
                lagged[f"{other.template}@{u - t:+d}"] = parent.name
            else:
                runs.setdefault(other.template, []).append(u)
        for template, us in runs.items():
            other = by_template[template]
            if sorted(us) == [u for u in other.steps if u >= t]:
                directions.add("future")
            elif sorted(us) == [u for u in other.steps if u <= t]:
                directions.add("past")
            else:
                return None
        if observed_templates is None:
            observed_templates = tuple(sorted(runs))
        if tuple(sorted(runs)) != observed_templates or (statics is not None and statics != static):
            return None
        statics = static
        steps.append(StepRoles(site, position, lagged, tuple(static)))
    if len(directions) != 1 or not observed_templates:
        return None
    if any(by_template[o].steps != series.steps for o in observed_templates):
        return None
    roles = {role for s in steps for role in s.lagged}
    steps = [
        StepRoles(s.site, s.position, {r: s.lagged.get(r) for r in sorted(roles)}, s.static)
        for s in steps
    ]
    return steps, directions.pop(), [by_template[o] for o in observed_templates]


def _key(role: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in role)
