r"""Conditionals shared across the steps of a ``pyro.markov`` loop (issue 19).

For a state-space model the NaMI inverse in reverse order is Krishnan et
al.'s structured inference network (2017),

.. math::

    q(z_{1:T} \mid x_{1:T}) = \prod_t q(z_t \mid z_{t-1}, x_{t:T}),

and in min-fill order its mirror, :math:`\prod_t q(z_t \mid z_{t+1}, x_{1:t})`.
Built step by step, the guide holds one network per step, the one of step
:math:`t` reading :math:`O(T)` observations: :math:`O(T^2)` inputs in all,
and it serves one length only. :func:`time_shared_conditionals` replaces
them, for every latent series whose steps follow the slice
:attr:`pgmdl.guides.plan.GuidePlan.time` reports, by **one** conditional
per series (:class:`TimeSharedSeries`): the latents at fixed lags are read
directly (a learned stand-in where the lag falls before or after the loop),
the growing run of observations through a GRU run once per call over the
observed series (backward in time for :math:`x_{t:T}`, forward for
:math:`x_{1:t}`), and the sites outside the loop as they are. The guide's
structure (what each step conditions on) is the plan's: only the function
class changes, :math:`O(T)` work and parameters independent of :math:`T`.

Because nothing in it depends on :math:`T`, the same guide serves sequences
of any length: :class:`SequencePattern` is the slice of the guide (which
site each step reads, in which order the steps are sampled), read off the
plan at the length the guide was built for and unrolled to any other
(:meth:`SequencePattern.unroll`). The tests check the unrolled structure
against NaMI run on the unrolled model, length by length, in every order.

A model argument laid out like the observed data, with the loop's axis
(``mask`` of shape ``(N, T)`` in the deep Markov model, controls ``u`` of
shape ``(N, T, d_u)``), is a *time-indexed input*: its step ``t`` enters the
GRU with the observations of step ``t`` (:class:`TimeIndexedInput`), so a
padded step is seen as padded and the width does not depend on :math:`T`.

A series whose steps do not all fit that pattern keeps its per-step
conditionals (and the guide serves only its first length).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from pgmdl.graph.time import TimeStructure, split_step
from pgmdl.graph.tracing import model_signature
from pgmdl.guides.conditional import Conditional, ParentSpec
from pgmdl.guides.plan import GuidePlan

#: A latent series whose steps have 2 to this many real dimensions gets a
#: full-covariance Gaussian (family ``"mvn"``) by default: given its neighbours
#: and the data, a state's components are correlated, and a diagonal family
#: leaves a gap no training closes (Kalman test bed, reverse order, 3,000 steps
#: on batches of varying length: 0.07 nats per step with the diagonal family,
#: 0.01 with ``"mvn"``).
MVN_MAX_SIZE = 16

#: The length a time-shared guide is planned at, whatever the length of the
#: call that builds it: NaMI's elimination on the unrolled loop costs
#: :math:`O(T^3)` (15 s at :math:`T = 300`), its slice is the same at any
#: length past a few steps (checked by the tests, lengths 2 to 8).
PROTOTYPE_STEPS = 6


@dataclass(frozen=True)
class StepRoles:
    """How one step of a latent series reads its parents.

    Attributes:
        site: the step's site.
        position: its step's index in the loop (0 for the loop's first step,
            whatever its number: ``range(1, T + 1)`` as in Pyro's DMM).
        lagged: ``{role: parent site or None}`` for the latents at fixed
            offsets (``"z_{t}@-1"``); None where the offset falls outside
            the loop.
        static: parents outside the loop.
    """

    site: str
    position: int
    lagged: Mapping[str, str | None]
    static: tuple[str, ...]


class TimeIndexedInput(nn.Module):
    """A model argument with the loop's axis, as ``(..., T, features)``.

    ``replicate_shape`` is the argument's shape inside its plates at the
    length the guide was built for; ``axis`` the position of the loop's axis
    in it. No parameters: the GRU sees the raw values (a mask as 0/1)."""

    def __init__(self, replicate_shape: tuple[int, ...], axis: int) -> None:
        super().__init__()
        self.replicate_shape = tuple(replicate_shape)
        self.axis = axis
        width = 1
        for i, size in enumerate(self.replicate_shape):
            if i != axis:
                width *= size
        self.features = width

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        ndim = len(self.replicate_shape)
        batch = value.shape[: value.dim() - ndim]
        moved = value.movedim(value.dim() - ndim + self.axis, len(batch))
        return moved.reshape(batch + (moved.shape[len(batch)], self.features)).float()


class TimeSharedSeries(nn.Module):
    r"""What every step of one latent series shares: the recurrent summary of the
    observed series, stand-ins for absent lagged latents, the head.

    The summary is a GRU (Krishnan et al.'s combiner reads one) beside a
    *linear* recurrence :math:`s_t = W x_t + A s_{t \pm 1}` of the same width:
    for a linear-Gaussian model the backward information filter is such a
    recurrence, so the optimal guide is within reach of the linear path, and
    it learns much faster than the GRU alone (Kalman test bed, :math:`T = 10`,
    reverse order, 1,200 steps: gap to the exact evidence 0.25 nats per step
    with the GRU alone, 0.07 with both; a guide with one network per step:
    0.07 at 600 steps).

    Args:
        direction: ``"future"`` (step ``t`` summarizes steps ``t..T``: the GRU
            runs backwards) or ``"past"`` (steps ``1..t``: forwards).
        summary_features: the width of one step's GRU input.
        hidden: the GRU's width.
        lagged_features: ``{role: width}`` of the lagged latents.
        head: the conditional mapping ``{"summary", "now", roles..., statics...}``
            to the step's distribution.
    """

    def __init__(
        self,
        direction: str,
        summary_features: int,
        hidden: int,
        lagged_features: Mapping[str, int],
        head: Conditional,
    ) -> None:
        super().__init__()
        self.direction = direction
        self.rnn = nn.GRU(summary_features, hidden, batch_first=True)
        self.drive = nn.Linear(summary_features, hidden)
        self.recurrence = nn.Parameter(0.5 * torch.eye(hidden))
        self.stand_ins = nn.ParameterDict(
            {
                _key(role): nn.Parameter(torch.zeros(width))
                for role, width in lagged_features.items()
            }
        )
        self.head = head
        self._summary: torch.Tensor | None = None
        self._steps: tuple[torch.Tensor, ...] = ()

    def summarize(self, sequence: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Run the recurrences over this call's observed series ``(..., T, features)``;
        returns ``(..., T, 2 hidden)`` (kept for the other steps of the call).

        ``valid`` (``(..., T)`` bool, the model's padding mask) makes the summary
        of a padded batch exact: run backwards, each sequence starts at its own
        last real step, so the padding after it changes nothing at real steps."""
        batch = torch.broadcast_shapes(
            sequence.shape[:-2], () if valid is None else valid.shape[:-1]
        )
        sequence = sequence.expand(batch + sequence.shape[-2:])
        flat = sequence.reshape((-1,) + sequence.shape[-2:])
        order = None
        if self.direction == "future":
            order = _reversal(flat.shape[0], flat.shape[1], valid, batch, flat.device)
            flat = flat.gather(1, order[..., None].expand(flat.shape))
        out, _ = self.rnn(flat)
        # a stable linear recurrence: the matrix scaled to spectral norm < 1
        recurrence = self.recurrence
        norm = torch.linalg.matrix_norm(recurrence, ord=2)
        recurrence = recurrence * torch.clamp(0.99 / norm, max=1.0)
        drive = self.drive(flat)
        state = drive.new_zeros(drive.shape[0], drive.shape[-1])
        linear = []
        for step in drive.unbind(1):  # not drive[:, t]: see _steps below
            state = step + state @ recurrence
            linear.append(state)
        out = torch.cat([out, torch.stack(linear, 1)], -1)
        if order is not None:  # the reversal is its own inverse
            out = out.gather(1, order[..., None].expand(out.shape))
        self._summary = out.reshape(batch + out.shape[-2:])
        # one view per step, split once: indexing one step at a time would make the
        # backward pass add a full-size zero tensor per step (O(T^2) memory traffic)
        self._steps = self._summary.unbind(-2)
        return self._summary


def _reversal(
    rows: int, steps: int, valid: torch.Tensor | None, batch: torch.Size, device: torch.device
) -> torch.Tensor:
    """``(rows, steps)`` indices reversing each sequence: within its length where
    ``valid`` is a prefix mask (True on the first ``length`` steps), else whole."""
    position = torch.arange(steps, device=device)
    whole = (steps - 1 - position).expand(rows, steps)
    if valid is None:
        return whole
    valid = valid.expand(batch + valid.shape[-1:]).reshape(rows, steps)
    lengths = valid.sum(-1, keepdim=True)
    if not bool((valid == (position < lengths)).all()):
        return whole
    return torch.where(position < lengths, lengths - 1 - position, position)


class StepConditional(nn.Module):
    """One step's view of a :class:`TimeSharedSeries` (no parameters of its own).

    Args:
        shared: the series' shared modules.
        roles: how this step reads its parents.
        first: this step is sampled first in its series: it runs the GRU for
            the call.
        summary_sites: per step of the loop, the observed sites of that step
            (the GRU's input with ``time_inputs``).
        time_inputs: the time-indexed inputs (:class:`TimeIndexedInput`).
        step_mask: the time-indexed input that is the model's padding mask
            (boolean, one value per step), if any.
    """

    def __init__(
        self,
        shared: TimeSharedSeries,
        roles: StepRoles,
        first: bool,
        summary_sites: Sequence[Sequence[str]],
        time_inputs: Sequence[str] = (),
        step_mask: str | None = None,
    ) -> None:
        super().__init__()
        self.step_mask = step_mask
        self.shared = shared
        self.roles = roles
        self.first = first
        if not isinstance(summary_sites, tuple):  # every step shares one (T steps each)
            summary_sites = tuple(tuple(s) for s in summary_sites)
        self.summary_sites = summary_sites
        self.time_inputs = tuple(time_inputs)

    def _sequence(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        steps = [torch.cat([inputs[s] for s in sites], -1) for sites in self.summary_sites]
        observed = torch.stack(torch.broadcast_tensors(*steps), -2) if steps else None
        parts = [observed] + [inputs[name] for name in self.time_inputs]
        batch = torch.broadcast_shapes(*(p.shape[:-2] for p in parts))
        return torch.cat([p.expand(batch + p.shape[-2:]) for p in parts], -1)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        block: torch.Size,
        max_depth: int,
        masks: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.distributions.Distribution:
        shared = self.shared
        if self.first:
            valid = None if self.step_mask is None else inputs[self.step_mask][..., 0] > 0.5
            shared.summarize(self._sequence(inputs), valid)
        assert shared._steps, "the series' first step runs before the others"
        position = self.roles.position
        h = shared._steps[position]
        now = [inputs[s] for s in self.summary_sites[position]]
        now += [inputs[name][..., position, :] for name in self.time_inputs]
        batch = torch.broadcast_shapes(*(x.shape[:-1] for x in now))
        read = {"summary": h, "now": torch.cat([x.expand(batch + x.shape[-1:]) for x in now], -1)}
        for role, parent in self.roles.lagged.items():
            stand_in = shared.stand_ins[_key(role)]
            stand_in = stand_in.expand(h.shape[:-1] + stand_in.shape)
            if parent is None:
                read[role] = stand_in
                continue
            value = inputs[parent]
            if self.step_mask is not None:  # a lag on a padded step: as if outside the loop
                lag = position + int(role.rsplit("@", 1)[1])
                valid = inputs[self.step_mask][..., lag, :] > 0.5
                value = torch.where(valid, value, stand_in)
            read[role] = value
        for name in self.roles.static:
            read[name] = inputs[name]
        return shared.head(read, block, max_depth, masks)


@dataclass(frozen=True)
class SeriesPattern:
    """The slice of one time-shared latent series.

    Attributes:
        template: the series (``"z_{t}"``).
        lags: ``{role: (latent series template, offset)}``.
        observed: the observed series its steps summarize.
        static: its parents outside the loop.
        first, last: its steps are ``first .. T - 1 - last`` of a loop of ``T``.
    """

    template: str
    lags: Mapping[str, tuple[str, int]]
    observed: tuple[str, ...]
    static: tuple[str, ...]
    first: int
    last: int


@dataclass(frozen=True)
class SequencePattern:
    """The guide of a ``pyro.markov`` loop as one slice, for any length.

    Attributes:
        series: the time-shared latent series.
        before, after: the latent sites outside the loop the guide samples
            before and after the loop's.
        descending: the guide samples the steps from last to first.
        direction: ``"future"`` (each step reads the observations from its own
            to the last) or ``"past"`` (from the first to its own).
        within: the order of the series at one step.
        time_inputs: the time-indexed inputs.
        step_mask: the one of them that is the padding mask, if any.
        length: the loop length the guide was built for.
        start: the number of the loop's first step.
        problem: why the guide cannot serve another length (None: it can).
    """

    series: tuple[SeriesPattern, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]
    descending: bool
    direction: str
    within: tuple[str, ...]
    time_inputs: tuple[str, ...]
    step_mask: str | None
    length: int
    start: int = 0
    observed_series: tuple[str, ...] = field(default=())
    problem: str | None = None

    def order(self, length: int) -> list[str]:
        """The latent sites in the guide's sampling order at ``length`` steps."""
        by_template = {s.template: s for s in self.series}
        steps = range(length - 1, -1, -1) if self.descending else range(length)
        inside = [
            template.replace("{t}", str(self.start + t))
            for t in steps
            for template in self.within
            if by_template[template].first <= t <= length - 1 - by_template[template].last
        ]
        return list(self.before) + inside + list(self.after)

    def unroll(self, length: int) -> dict[str, tuple[StepRoles, tuple[str, ...]]]:
        """``{site: (roles, parents)}`` of every step of every series at ``length``
        steps, in sampling order; ``parents`` as NaMI's inverse names them."""
        return {
            site: (roles, tuple(name for name, _ in parents))
            for site, (roles, parents) in self.unroll_groups(length).items()
        }

    def unroll_groups(
        self, length: int
    ) -> dict[str, tuple[StepRoles, tuple[tuple[str, str], ...]]]:
        """As :meth:`unroll`, each parent with its group: its series' template, or
        its own name outside the loop."""
        by_template = {s.template: s for s in self.series}
        names = {
            o: [(o.replace("{t}", str(self.start + u)), o) for u in range(length)]
            for s in self.series
            for o in s.observed
        }
        out = {}
        for site in self.order(length):
            split = _split(site, by_template)
            if split is None:
                continue
            pattern, t = split[0], split[1] - self.start
            lagged: dict[str, str | None] = {}
            parents: list[tuple[str, str]] = [(name, name) for name in pattern.static]
            for role, (template, offset) in pattern.lags.items():
                other = by_template[template]
                u = t + offset
                inside = other.first <= u <= length - 1 - other.last
                lagged[role] = template.replace("{t}", str(self.start + u)) if inside else None
                if inside:
                    parents.append((lagged[role], template))  # type: ignore[arg-type]
            run = range(t, length) if self.direction == "future" else range(t + 1)
            runs = [(names[o], run.start, run.stop) for o in pattern.observed]
            out[site] = (StepRoles(site, t, lagged, pattern.static), Parents(parents, runs))
        return out

    def summary_sites(self, length: int) -> tuple[tuple[str, ...], ...]:
        """Per step, the observed sites the GRU reads at that step."""
        return tuple(
            tuple(template.replace("{t}", str(self.start + t)) for template in self.observed_series)
            for t in range(length)
        )


class Parents(Sequence):
    """A step's parents: a few named ones, then runs of observations, each a slice
    of one list the steps share, read without copying.

    Step :math:`t` of a reverse-order guide reads :math:`x_{t:T}`: materialized,
    the parents of all :math:`T` steps hold :math:`O(T^2)` names (0.8 s at
    :math:`T = 1000`). Here a step holds its slice bounds only; iterating it
    yields the same items a tuple would, and ``parents + more`` appends named
    ones without copying the runs.

    Args:
        head: the parents before the runs (statics, lagged latents).
        runs: ``(shared list, start, stop)`` per run.
        tail: parents after the runs.
        link: applied to every item when read (``(name, group) -> (name, link)``).
    """

    __slots__ = ("head", "runs", "tail", "link", "_len")

    def __init__(
        self,
        head: Sequence[Any],
        runs: Sequence[tuple[Sequence[Any], int, int]] = (),
        tail: Sequence[Any] = (),
        link: Callable[[Any], Any] | None = None,
    ) -> None:
        self.head, self.runs, self.tail, self.link = tuple(head), tuple(runs), tuple(tail), link
        self._len = len(self.head) + sum(stop - start for _, start, stop in runs) + len(self.tail)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Any:
        link = self.link
        for item in self._raw():
            yield item if link is None else link(item)

    def _raw(self) -> Any:
        yield from self.head
        for items, start, stop in self.runs:
            for i in range(start, stop):
                yield items[i]
        yield from self.tail

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        for i, item in enumerate(self._raw()):
            if i == index:
                return item if self.link is None else self.link(item)
        raise IndexError(index)  # pragma: no cover

    def __add__(self, more: Sequence[Any]) -> Parents:
        if self.link is not None:
            return Parents(tuple(self), (), tuple(more))
        return Parents(self.head, self.runs, self.tail + tuple(more))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def mapped(self, link: Callable[[Any], Any]) -> Parents:
        """The same parents, each read through ``link`` (no copy)."""
        if self.link is not None:
            return Parents(tuple(self), (), (), link)
        return Parents(self.head, self.runs, self.tail, link)

    def __repr__(self) -> str:
        return f"Parents({tuple(self)!r})"


def read_once(all_parents: Iterable[Sequence[Any]]) -> Iterator[Any]:
    """The items of several steps' parents, each run of a shared list read once
    over the hull of its slices (the runs of a loop nest: :math:`x_{t:T}`), so
    :math:`O(T)` for a whole loop; other items as often as they occur."""
    spans: dict[int, tuple[Sequence[Any], int, int]] = {}
    for parents in all_parents:
        if not isinstance(parents, Parents) or parents.link is not None:
            yield from parents
            continue
        yield from parents.head
        yield from parents.tail
        for items, start, stop in parents.runs:
            _, low, high = spans.get(id(items), (items, start, stop))
            spans[id(items)] = (items, min(low, start), max(high, stop))
    for items, low, high in spans.values():
        yield from items[low:high]


def prototype_call(
    model: Callable[..., Any],
    time: TimeStructure,
    loop_axes: Mapping[str, tuple[int, int, str]],
    args: tuple,
    kwargs: dict,
    steps: int = PROTOTYPE_STEPS,
) -> tuple[tuple, dict] | None:
    """The model's arguments cut to the first ``steps`` steps of its loop, to plan a
    time-shared guide on (:data:`PROTOTYPE_STEPS`), or None when they cannot be
    cut: the loop is short already, or the arguments it reads step by step are not
    the model's own top-level tensors.

    Cut are the arguments the loop observes step by step (``x`` of
    ``obs=x[:, t]``, along that axis) and every other top-level tensor argument
    with the same size along the same axis (a mask, controls).
    """
    length = len(time.steps)
    if length <= steps or not loop_axes:
        return None
    axes = {(dim, size) for dim, size, _ in loop_axes.values()}
    if len(axes) != 1:
        return None
    dim, size = next(iter(axes))
    if size != length:
        return None  # the loop does not run over the whole axis: its length is elsewhere
    try:
        bound = model_signature(model).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    if any(path not in bound.arguments for path in loop_axes):
        return None
    for name, value in list(bound.arguments.items()):
        if isinstance(value, torch.Tensor) and value.dim() > dim and value.shape[dim] == size:
            bound.arguments[name] = value.narrow(dim, 0, steps)
    return tuple(bound.args), dict(bound.kwargs)


def same_slice(a: TimeStructure, b: TimeStructure) -> bool:
    """Whether two lengths of a loop repeat the same slice (series, links, statics)."""
    return _slice_key(a) == _slice_key(b)


def _slice_key(time: TimeStructure) -> tuple:
    return (
        frozenset((s.template, s.kind) for s in time.series),
        frozenset((link.parent, link.child, link.lag, link.initial) for link in time.links),
        frozenset(time.static),
    )


def _split(site: str, by_template: Mapping[str, SeriesPattern]) -> tuple[SeriesPattern, int] | None:
    split = split_step(site)
    if split is None or split[0] not in by_template:
        return None
    return by_template[split[0]], split[1]


def time_shared_conditionals(
    plan: GuidePlan,
    widths: Mapping[str, int],
    make_head: Callable[[str, list[ParentSpec]], Conditional],
    hidden: int = 64,
    time_inputs: Mapping[str, int] | None = None,
    step_mask: str | None = None,
) -> tuple[dict[str, StepConditional], SequencePattern | None]:
    """``{site: StepConditional}`` for the latent series whose every step fits
    the shared pattern (see the module docstring; other sites are left out),
    and the guide's :class:`SequencePattern` (None without a loop).

    Args:
        plan: the guide's plan, with its :attr:`~pgmdl.guides.plan.GuidePlan.time`.
        widths: the feature width of every name a conditional reads.
        make_head: builds the series' head from its first step's site and
            the head's parent specs (``"summary"``, ``"now"``, the lagged
            roles, the statics).
        hidden: the GRU's width.
        time_inputs: ``{input: width of one step}`` of the time-indexed inputs.
        step_mask: the one that is the model's padding mask, if any.
    """
    time = plan.time
    if time is None:
        return {}, None
    time_inputs = dict(time_inputs or {})
    start, length = time.steps[0], len(time.steps)
    out: dict[str, StepConditional] = {}
    patterns: list[SeriesPattern] = []
    problems: list[str] = []
    directions: set[str] = set()
    observed_all: set[tuple[str, ...]] = set()
    for series in time.series:
        if series.kind != "latent":
            continue
        if any(site not in plan for site in series.sites):
            problems.append(f"the guide does not sample every step of {series.template}")
            continue
        fitted = _fit_series(plan, series, time_inputs)
        if fitted is None:
            problems.append(
                f"the steps of {series.template} do not read their parents alike (fixed lags "
                "of latents, the run of observations from or to their own step, the same "
                "sites outside the loop)"
            )
            continue
        steps, direction, observed, lags = fitted
        directions.add(direction)
        observed_all.add(tuple(o.template for o in observed))
        lagged = {role: widths[p] for s in steps for role, p in s.lagged.items() if p}
        if any(role not in lagged for s in steps for role in s.lagged):
            problems.append(f"a lag of {series.template} falls outside the loop at every step")
            continue
        first = steps[0]
        summary_sites = tuple(tuple(s.site(t) for s in observed) for t in time.steps)
        step_width = sum(widths[s] for s in summary_sites[0])
        step_width += sum(time_inputs.values())
        # the step's own observations also enter directly: a linear path to the head
        specs = [ParentSpec("summary", 2 * hidden), ParentSpec("now", step_width)]
        specs += [ParentSpec(role, width) for role, width in lagged.items()]
        for name in first.static:
            link = next(p.link for p in plan[first.site].parents if p.name == name)
            dims = tuple(plan.graph.plates[p].dim for p in link.pooled)
            specs.append(ParentSpec(name, widths[name], pooled_dims=dims))  # type: ignore[arg-type]
        shared = TimeSharedSeries(
            direction, step_width, hidden, lagged, make_head(first.site, specs)
        )
        order = [s for s in plan.order if s in set(series.sites)]
        for roles in steps:
            out[roles.site] = StepConditional(
                shared, roles, roles.site == order[0], summary_sites, tuple(time_inputs), step_mask
            )
        patterns.append(
            SeriesPattern(
                series.template,
                lags,
                tuple(o.template for o in observed),
                first.static,
                series.steps[0] - start,
                time.steps[-1] - series.steps[-1],
            )
        )
    pattern = _sequence_pattern(
        plan, patterns, directions, observed_all, time_inputs, step_mask, length
    )
    if problems:  # the series' own reasons come first
        pattern = replace(pattern, problem="; ".join(problems))
    return out, pattern


def _sequence_pattern(
    plan: GuidePlan,
    patterns: list[SeriesPattern],
    directions: set[str],
    observed: set[tuple[str, ...]],
    time_inputs: Mapping[str, int],
    step_mask: str | None,
    length: int,
) -> SequencePattern:
    """The guide's slice, checked to unroll to the plan's own order and parents
    at the built length (a problem is recorded otherwise)."""
    time = plan.time
    assert time is not None
    shared = {p.template for p in patterns}
    in_loop = [s for s in plan.order if time.series_of(s) is not None]
    outside = [s for s in plan.order if time.series_of(s) is None]
    loop_positions = [plan.order.index(s) for s in in_loop]
    before = tuple(s for s in outside if loop_positions and plan.order.index(s) < loop_positions[0])
    after = tuple(s for s in outside if s not in before)
    steps = [time.series_of(s)[1] for s in in_loop]  # type: ignore[index]
    descending = len(steps) > 1 and steps[0] > steps[-1]
    first_step = steps[0] if steps else 0
    within = tuple(
        time.series_of(s)[0].template  # type: ignore[index]
        for s in in_loop
        if time.series_of(s)[1] == first_step  # type: ignore[index]
    )
    pattern = SequencePattern(
        series=tuple(patterns),
        before=before,
        after=after,
        descending=descending,
        direction=next(iter(directions)) if len(directions) == 1 else "future",
        within=within,
        time_inputs=tuple(time_inputs),
        step_mask=step_mask,
        length=length,
        start=time.steps[0],
        observed_series=next(iter(observed)) if len(observed) == 1 else (),
    )
    problem = None
    if len(directions) > 1 or len(observed) > 1:
        problem = "the latent series summarize different runs of observations"
    elif set(within) != shared:
        problem = "some latent series of the loop are not shared across steps"
    elif pattern.order(length) != list(plan.order):
        problem = "the guide's order is not the same at every step"
    else:
        for site, (_, parents) in pattern.unroll(length).items():
            expected = {p.name for p in plan[site].parents if p.name not in time_inputs}
            if set(parents) != expected:
                problem = f"the parents of {site!r} are not those of the slice"
                break
    for site in outside:
        reads = [p.name for p in plan[site].parents if time.series_of(p.name) is not None]
        if reads and problem is None:
            problem = (
                f"latent site {site!r}, outside the loop, reads sites of the loop "
                f"({', '.join(reads[:3])}{', ...' if len(reads) > 3 else ''})"
            )
    return _with_problem(pattern, problem) if problem else pattern


def _with_problem(pattern: SequencePattern, problem: str) -> SequencePattern:
    return replace(pattern, problem=pattern.problem or problem)


def _fit_series(plan: GuidePlan, series, time_inputs: Mapping[str, int]):  # noqa: ANN001, ANN202
    """Each step's roles, the summary's direction, the observed series it reads
    and the lags, or None when some step does not fit the shared pattern."""
    time = plan.time
    assert time is not None
    by_template = {s.template: s for s in time.series}
    directions, observed_templates, statics = set(), None, None
    steps = []
    lags: dict[str, tuple[str, int]] = {}
    for t in series.steps:
        site = series.site(t)
        lagged: dict[str, str | None] = {}
        runs: dict[str, list[int]] = {}
        static = []
        for parent in plan[site].parents:
            if parent.name in time_inputs:
                continue
            found = time.series_of(parent.name)
            if found is None:
                static.append(parent.name)
                continue
            other, u = found
            if other.kind == "latent":
                role = f"{other.template}@{u - t:+d}"
                lagged[role] = parent.name
                lags[role] = (other.template, u - t)
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
        steps.append(StepRoles(site, t - time.steps[0], lagged, tuple(static)))
    if len(directions) != 1 or not observed_templates:
        return None
    loop = time.steps
    if any(by_template[o].steps != loop for o in observed_templates):
        return None
    roles = sorted(lags)
    steps = [
        StepRoles(s.site, s.position, {r: s.lagged.get(r) for r in roles}, s.static) for s in steps
    ]
    return steps, directions.pop(), [by_template[o] for o in observed_templates], lags


def _key(role: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in role)
