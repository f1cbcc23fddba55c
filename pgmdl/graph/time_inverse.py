r"""NaMI on a ``pyro.markov`` loop at the level of its slice (issue 19).

NaMI's elimination on the unrolled loop of a state-space model costs
:math:`O(T^3)`: eliminating :math:`z_t` in reverse order joins its
:math:`O(T)` neighbours pairwise (15 s at :math:`T = 300`, hours at
:math:`T = 1000`). Its result is regular, though: in reverse order
:math:`z_t` gets :math:`z_{t-1}` and :math:`x_{t..T}` at every step, and
the fill-in of every step follows the same rule.

:func:`eliminate_by_slices` runs the elimination on the loop's first
:math:`K` steps and on its first :math:`K + 1` (:data:`SLICE_STEPS`: a few
ms), reads off the rules of the first (which steps of which series each
step's parents are, in which order the steps go, which kind and plate
patterns each edge has), checks that they rebuild the second exactly, and
unrolls them to the loop's length. A parent set is an interval of a series'
steps whose ends are each fixed relative to the child's step, the loop's
start or its end (:math:`x_{t..T}`: from ``t + 0`` to ``end``); a site
outside the loop is a parent at the steps of an interval anchored at the
start or the end (every step; the first only). Whatever the rules do not
rebuild, or a loop whose steps are read by a site after it, is left to the
unrolled elimination: the result is the same, only slower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pgmdl.errors import ModelError
from pgmdl.graph.plated import PlatedDAG
from pgmdl.graph.time import TimeStructure, split_step, time_structure

#: The loop length the rules are read at (and checked at one step more).
SLICE_STEPS = 6

Anchor = tuple[str, int]  # ("start" | "t" | "end", offset)


@dataclass(frozen=True)
class _Interval:
    """Steps ``lo .. hi`` of a series, each end an anchor plus an offset."""

    lo: Anchor
    hi: Anchor

    def steps(self, t: int | None, length: int) -> range:
        return range(_at(self.lo, t, length), _at(self.hi, t, length) + 1)


def _at(anchor: Anchor, t: int | None, length: int) -> int:
    base = {"start": 0, "t": t, "end": length - 1}[anchor[0]]
    assert base is not None
    return base + anchor[1]


def eliminate_by_slices(
    dag: PlatedDAG,
    time: TimeStructure,
    eliminate: Callable[[PlatedDAG], object],
) -> object | None:
    """NaMI's :class:`~pgmdl.graph.nami.Elimination` of ``dag`` built from its
    slice, or None when the rules do not rebuild a longer prototype exactly (the
    caller eliminates the unrolled loop then).

    Args:
        dag: the model's plate-level DAG (a loop of ``T`` steps).
        time: the loop's structure (:func:`~pgmdl.graph.time.time_structure`).
        eliminate: runs NaMI's elimination on a plate-level DAG, in the order
            the caller asked for.
    """
    # steps are numbered as the model numbers them (range(1, T + 1) in Pyro's DMM);
    # "length" below is one past the last step's number
    start, length = time.steps[0], time.steps[-1] + 1
    if length - start <= SLICE_STEPS + 1:
        return None
    found = {site: time.series_of(site) for site in dag.kinds}
    in_loop = {site: (f[0].template, f[1]) for site, f in found.items() if f is not None}
    if any(u in in_loop and v not in in_loop for u, v in dag.edges):
        return None  # a site after the loop reads its steps: no slice
    k1, k2 = start + SLICE_STEPS, start + SLICE_STEPS + 1
    short, longer = (eliminate(_truncated(dag, in_loop, k)) for k in (k1, k2))
    rules = _Rules.read(
        [
            (short, k1, _series_steps(time, k1)),
            (longer, k2, _series_steps(time, k2)),
        ]
    )
    if rules is None:
        return None
    rebuilt = rules.unroll(k2, _series_steps(time, k2))
    if rebuilt is None or not _same(rebuilt, longer):
        return None
    return rules.unroll(length, _series_steps(time, length))


def _truncated(dag: PlatedDAG, in_loop: Mapping[str, tuple], steps: int) -> PlatedDAG:
    from pgmdl.graph.nami import _without

    return _without(dag, {site for site, (_, t) in in_loop.items() if t >= steps})


def _series_steps(time: TimeStructure, length: int) -> dict[str, range]:
    """Each series' steps in a loop whose last step is ``length - 1``: as many
    fewer than the loop's as at the built length."""
    end = time.steps[-1]
    return {s.template: range(s.steps[0], length - (end - s.steps[-1])) for s in time.series}


def _group(site: str, series: Iterable[str]) -> tuple[str, int | None]:
    """``(template, step)`` of a site of the loop, ``(name, None)`` otherwise."""
    split = split_step(site)
    if split is not None and split[0] in series:
        return split
    return site, None


class _Rules:
    """The slice of an elimination (see the module docstring)."""

    def __init__(self) -> None:
        self.before: list[str] = []  # latents outside the loop eliminated before it
        self.after: list[str] = []
        self.descending = False
        self.within: list[str] = []  # the series' order at one step
        self.parents: dict[tuple[str, str], _Interval | None] = {}  # (child group, parent group)
        self.statics: dict[tuple[str, str], tuple[str, ...]] = {}
        self.edge: dict[tuple[str, str, Offset], tuple] = {}  # -> (patterns, kind)
        self.coupled: dict[str, object] = {}
        self.prior: list[str] = []  # groups
        self.series: set[str] = set()

    @classmethod
    def read(cls, results: list[tuple[object, int, Mapping[str, range]]]) -> _Rules | None:
        """The rules of the first elimination of ``results`` (``(elimination, loop
        length, series' steps)``); each parent interval must give the parents in
        every one."""
        result, length, first_steps = results[0]
        rules = cls()
        rules.series = set(first_steps)
        group = {site: _group(site, rules.series) for site in result.order}  # type: ignore[attr-defined]
        order = result.order  # type: ignore[attr-defined]
        loop = [s for s in order if group[s][1] is not None]
        if loop:
            first = order.index(loop[0])
            last = order.index(loop[-1])
            rules.before = [s for s in order[:first] if group[s][1] is None]
            rules.after = [s for s in order[last + 1 :] if group[s][1] is None]
            if len(rules.before) + len(rules.after) + len(loop) != len(order):
                return None  # a site outside the loop is eliminated inside it
            steps = [group[s][1] for s in loop]
            rules.descending = len(steps) > 1 and steps[0] > steps[-1]
            first_step = steps[0]
            rules.within = [group[s][0] for s in loop if group[s][1] == first_step]
        else:
            rules.before = list(order)
        rules.prior = sorted({group[s][0] for s in result.prior})  # type: ignore[attr-defined]
        for site in result.order:
            template = group[site][0]
            coupled = result.coupled[site]
            if rules.coupled.setdefault(template, coupled) != coupled:
                return None
        for (parent, site), patterns in result.parents.items():  # type: ignore[attr-defined]
            child, t = group[site]
            other, u = _group(parent, rules.series)
            offset = _offset(u, t, length)
            value = (patterns, result.kinds[parent, site])  # type: ignore[attr-defined]
            if rules.edge.setdefault((other, child, offset), value) != value:
                return None
        cases = [_parent_sets(r, rules.series, n, steps) for r, n, steps in results]
        if any(set(sets) != set(cases[0][0]) for sets, _ in cases[1:]):
            return None
        for pair in cases[0][0]:
            interval = _fit(pair, cases, pair[0] in rules.series)
            if interval is None:
                return None
            rules.parents[pair] = interval
        return rules

    def unroll(self, length: int, series_steps: Mapping[str, range]):  # noqa: ANN201
        from pgmdl.graph.nami import Elimination

        steps = range(length - 1, -1, -1) if self.descending else range(length)
        loop = [
            (template, t) for t in steps for template in self.within if t in series_steps[template]
        ]
        order = list(self.before) + [f"{_name(tm, t)}" for tm, t in loop] + list(self.after)
        sites = [(s, None) for s in self.before] + loop + [(s, None) for s in self.after]
        parents, kinds, coupled = {}, {}, {}
        for (template, t), name in zip(sites, order, strict=True):
            coupled[name] = self.coupled[template]
            for (child, other), interval in self.parents.items():
                if child != template:
                    continue
                if other in self.series:
                    span = interval.steps(t, length)
                    for u in span:
                        if u not in series_steps[other]:
                            continue
                        found = self._edge(other, child, u - (0 if t is None else t))
                        if found is None:
                            return None
                        parent = _name(other, u)
                        parents[parent, name], kinds[parent, name] = found
                elif t is None or t in interval.steps(t, length):
                    found = self._edge(other, child, _offset(None, t, length))
                    if found is None:
                        return None
                    parents[other, name], kinds[other, name] = found
        prior = [name for name, (tm, _) in zip(order, sites, strict=True) if tm in self.prior]
        return Elimination(order=order, parents=parents, kinds=kinds, coupled=coupled, prior=prior)

    def _edge(self, other: str, child: str, offset: Offset) -> tuple | None:
        """Patterns and kind of an edge; an offset beyond those seen takes the
        farthest seen on its side (a run's interior repeats)."""
        if (other, child, offset) in self.edge:
            return self.edge[other, child, offset]
        if not isinstance(offset, int):
            return None
        seen = [o for (a, c, o) in self.edge if a == other and c == child and isinstance(o, int)]
        side = [o for o in seen if (o > 0) == (offset > 0) and o != 0]
        if not side:
            return None
        return self.edge[other, child, max(side, key=abs)]


#: An edge's position: the parent's step minus the child's (both in the loop),
#: or, for a parent outside the loop, where the child's step is: among the first
#: or last ``BOUNDARY`` steps (the fill-in at a boundary differs), or inside.
Offset = int | tuple[int | None, int | None] | None
BOUNDARY = 2


def _offset(u: int | None, t: int | None, length: int) -> Offset:
    if u is not None:
        return u - (0 if t is None else t)
    if t is None:
        return None
    end = length - 1 - t
    return (t if t < BOUNDARY else None, end if end < BOUNDARY else None)


def _name(template: str, t: int | None) -> str:
    return template if t is None else template.replace("{t}", str(t))


Case = tuple[dict[tuple[str, str], dict[int | None, set[int]]], dict[str, Any]]


def _parent_sets(
    result: Any, series: set[str], length: int, series_steps: Mapping[str, range]
) -> Case:
    """Per (child group, parent group), each child step's parent steps (a parent
    outside the loop: the child's own step where it is a parent)."""
    sets: dict[tuple[str, str], dict[int | None, set[int]]] = {}
    children: dict[str, list[int | None]] = {}
    for site in result.order:
        child, t = _group(site, series)
        children.setdefault(child, []).append(t)
    for parent, site in result.parents:
        child, t = _group(site, series)
        other, u = _group(parent, series)
        step = u if u is not None else (t if t is not None else 0)
        sets.setdefault((child, other), {}).setdefault(t, set()).add(step)
    return sets, {"children": children, "length": length, "steps": series_steps}


def _fit(pair: tuple[str, str], cases: list[Case], series: bool) -> _Interval | None:
    """The anchored interval that gives every child step its parent steps, in
    every case (prototypes of different lengths)."""
    child, _ = pair
    anchors = ("start", "t", "end") if series else ("start", "end")
    sets0, info0 = cases[0]
    nonempty = [t for t in info0["children"][child] if sets0[pair].get(t)]
    if not nonempty:
        return None
    t0, length0 = nonempty[0], info0["length"]
    lo0, hi0 = min(sets0[pair][t0]), max(sets0[pair][t0])
    for a in anchors:
        for b in anchors:
            interval = _Interval(
                (a, lo0 - _at((a, 0), t0, length0)), (b, hi0 - _at((b, 0), t0, length0))
            )
            if all(_gives(interval, pair, sets, info) for sets, info in cases):
                return interval
    return None


def _gives(interval: _Interval, pair: tuple[str, str], sets: Any, info: dict[str, Any]) -> bool:
    child, other = pair
    children = info["children"][child]
    if other in info["steps"]:
        universe = set(info["steps"][other])
    else:  # a parent outside the loop: the child's steps where it is one
        universe = {t if t is not None else 0 for t in children}
    found = sets.get(pair, {})
    length = info["length"]
    return all(set(interval.steps(t, length)) & universe == found.get(t, set()) for t in children)


def _same(a, b) -> bool:  # noqa: ANN001
    return (
        list(a.order) == list(b.order)
        and a.parents == b.parents
        and a.kinds == b.kinds
        and dict(a.coupled) == dict(b.coupled)
        and sorted(a.prior) == sorted(b.prior)
    )


def loop_structure(graph) -> TimeStructure | None:  # noqa: ANN001 - ModelGraph
    """The graph's regular loop, or None (none, or irregular)."""
    try:
        return time_structure(graph)
    except ModelError:
        return None
