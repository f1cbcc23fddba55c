r"""Time as structure: the repeated slice of a ``pyro.markov`` loop.

Sequence models are written, as in Pyro's deep Markov model example, as a
Python loop over ``pyro.markov(range(T))`` with one site per step and kind::

    for t in pyro.markov(range(T)):
        z = pyro.sample(f"z_{t}", dist.Normal(transition(z), scale).to_event(1))
        pyro.sample(f"x_{t}", dist.Normal(emit(z), 1.0).to_event(1), obs=x[:, t])

The compiled :class:`~pgmdl.graph.ModelGraph` has :math:`2T` sites. This
module finds the structure they repeat: the *series* (``z_{t}``, ``x_{t}``:
sites of one kind, one per step, named by a template with the step number)
and the *links* between series, each with a *lag* (``z_{t-1} -> z_{t}``: lag
1; ``z_{t} -> x_{t}``: lag 0), plus the static sites outside the loop that
feed every step. A structure is *regular* when every step has the same
links: then one slice describes the program for any :math:`T`, as a
dynamic Bayesian network does (Murphy 2002, §2.2, the "2-TBN").

A step's sites are recognized by ``pyro.markov`` (Pyro marks every site
sampled inside it, :attr:`~pgmdl.graph.SiteInfo.markov`) and by their names:
the last run of digits in a name is its step (``z_12``, ``obs_x_3``,
``h3_enc``); the rest is the template (``z_{t}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pgmdl.errors import ModelError
from pgmdl.graph.model_graph import ModelGraph

_STEP = re.compile(r"^(?P<head>.*?)(?P<step>\d+)(?P<tail>\D*)$")


def split_step(name: str) -> tuple[str, int] | None:
    """``("z_{t}", 12)`` for ``"z_12"``: the template and the step of a site name
    (None when the name holds no number)."""
    match = _STEP.match(name)
    if match is None:
        return None
    return match["head"] + "{t}" + match["tail"], int(match["step"])


@dataclass(frozen=True)
class SiteSeries:
    """The sites of one kind, one per step.

    Attributes:
        template: the name with ``{t}`` for the step (``"z_{t}"``).
        kind: ``"latent"``, ``"observed"`` or ``"deterministic"``.
        steps: the steps present, increasing and contiguous.
    """

    template: str
    kind: str
    steps: tuple[int, ...]

    def site(self, step: int) -> str:
        """The site of ``step`` (``"z_3"``)."""
        return self.template.replace("{t}", str(step))

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(self.site(t) for t in self.steps)


@dataclass(frozen=True)
class TimeLink:
    """``parent`` at step :math:`t - \\text{lag}` is a parent of ``child`` at step
    :math:`t`, at every step where both exist. ``parent`` is a series template,
    or a static site (then ``lag`` is ``None``: the same site feeds every step,
    or, with ``initial``, the child's first step only: an initial condition,
    as ``z_1 = f(w)``)."""

    parent: str
    child: str
    lag: int | None
    initial: bool = False

    @property
    def source(self) -> str:
        """The parent as the child at step ``t`` reads it (``"z_{t-1}"``)."""
        if self.initial:
            return f"{self.parent} (first step only)"
        if not self.lag:
            return self.parent
        return self.parent.replace("{t}", "{t-" + str(self.lag) + "}")

    def __str__(self) -> str:
        return f"{self.source} -> {self.child}"


@dataclass(frozen=True)
class TimeStructure:
    """The repeated slice of a model's ``pyro.markov`` loop (:func:`time_structure`).

    Attributes:
        series: the series, in the order of their first site.
        links: every link into a series (from a series or a static site).
        static: the sites outside the loop.
    """

    series: tuple[SiteSeries, ...]
    links: tuple[TimeLink, ...]
    static: tuple[str, ...]

    @property
    def steps(self) -> tuple[int, ...]:
        """Every step some series has."""
        return tuple(sorted({t for s in self.series for t in s.steps}))

    @property
    def max_lag(self) -> int:
        """The order of the Markov structure (1: each step reads the previous one)."""
        return max((link.lag for link in self.links if link.lag is not None), default=0)

    def series_of(self, site: str) -> tuple[SiteSeries, int] | None:
        """The series ``site`` belongs to and its step (None for a static site)."""
        split = split_step(site)
        if split is None:
            return None
        for series in self.series:
            if series.template == split[0] and split[1] in series.steps:
                return series, split[1]
        return None

    def edges(self, steps: Iterable[int] | None = None) -> set[tuple[str, str]]:
        """The site-level edges the structure predicts into the series' sites
        (at ``steps``, default all): the slice unrolled, for checking."""
        wanted = set(self.steps if steps is None else steps)
        by_template = {s.template: s for s in self.series}
        out = set()
        for link in self.links:
            child = by_template[link.child]
            for t in child.steps:
                if t not in wanted:
                    continue
                if link.lag is None:
                    if not link.initial or t == child.steps[0]:
                        out.add((link.parent, child.site(t)))
                    continue
                parent = by_template[link.parent]
                if t - link.lag in parent.steps:
                    out.add((parent.site(t - link.lag), child.site(t)))
        return out

    def summary(self) -> str:
        """The slice, one line per series with its parents."""
        lines = [
            f"TimeStructure: {len(self.series)} series over steps "
            f"{self.steps[0]}..{self.steps[-1]}, Markov order {self.max_lag}"
        ]
        for series in self.series:
            into = [link.source for link in self.links if link.child == series.template]
            parents = f" <- {', '.join(into)}" if into else ""
            lines.append(f"  {series.template} ({series.kind}){parents}")
        if self.static:
            lines.append(f"  static: {', '.join(self.static)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": [
                {"template": s.template, "kind": s.kind, "steps": list(s.steps)}
                for s in self.series
            ],
            "links": [
                {"parent": link.parent, "child": link.child, "lag": link.lag} for link in self.links
            ],
            "static": list(self.static),
        }


def time_structure(graph: ModelGraph) -> TimeStructure | None:
    """The repeated slice of ``graph``'s ``pyro.markov`` loop, or None without one.

    Raises:
        ModelError: the loop's steps differ in structure: a kind of site
            present at some steps only (steps not contiguous), a site inside
            ``pyro.markov`` without a step number in its name, or a link
            present at some steps and missing at others; the message names
            the steps and sites.

    Example:
        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     z = torch.zeros(x.shape[0])
        ...     with pyro.plate("sequences", x.shape[0]):
        ...         for t in pyro.markov(range(x.shape[1])):
        ...             z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, 1.0))
        ...             pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])
        >>> print(time_structure(pgmdl.compile(model, torch.zeros(2, 5))).summary())
        TimeStructure: 2 series over steps 0..4, Markov order 1
          z_{t} (latent) <- z_{t-1}
          x_{t} (observed) <- z_{t}
    """
    markov = [name for name, info in graph.sites.items() if info.markov]
    if not markov:
        return None
    members: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for name in markov:
        split = split_step(name)
        if split is None:
            raise ModelError(
                f"site {name!r} is sampled inside pyro.markov but its name holds no step "
                "number, so pgmdl cannot tell which step it belongs to; name the sites of a "
                "time loop by their step (f'z_{t}')"
            )
        template, step = split
        members.setdefault(template, []).append(step)
        kind = graph[name].kind
        if kinds.setdefault(template, kind) != kind:
            raise ModelError(
                f"the sites {template.replace('{t}', '<t>')} are of different kinds at different "
                f"steps ({kinds[template]} and {kind}, e.g. {name!r}); a time loop repeats one "
                "structure"
            )
    series = []
    for template, steps in members.items():
        steps = sorted(steps)
        expected = list(range(steps[0], steps[-1] + 1))
        if steps != expected:
            missing = sorted(set(expected) - set(steps))
            raise ModelError(
                f"site {template.replace('{t}', '<t>')} exists at steps {steps} of the "
                f"pyro.markov loop but not at steps {missing}: its steps differ in structure. "
                "Sample it at every step (mask the steps it does not observe with "
                "poutine.mask), or keep it out of the loop"
            )
        series.append(SiteSeries(template, kinds[template], tuple(steps)))
    structure = _links(graph, series)
    _check_regular(graph, structure)
    return structure


def _links(graph: ModelGraph, series: list[SiteSeries]) -> TimeStructure:
    in_series = {
        site: (s.template, t) for s in series for t, site in zip(s.steps, s.sites, strict=True)
    }
    first = {s.template: s.steps[0] for s in series}
    links: dict[tuple[str, str, int | None], set[int]] = {}
    for parent, child in graph.dag.edges:
        if child not in in_series:
            continue
        child_template, t = in_series[child]
        if parent in in_series:
            parent_template, u = in_series[parent]
            links.setdefault((parent_template, child_template, t - u), set()).add(t)
        else:
            links.setdefault((parent, child_template, None), set()).add(t)
    out = []
    for (parent, child, lag), steps in links.items():
        initial = lag is None and steps == {first[child]}
        out.append(TimeLink(parent, child, lag, initial))
    static = tuple(n for n in graph.sites if n not in in_series)
    return TimeStructure(tuple(series), tuple(out), static)


def _check_regular(graph: ModelGraph, structure: TimeStructure) -> None:
    """Every link holds at every step where its two ends exist."""
    into_series = {(u, v) for u, v in graph.dag.edges if structure.series_of(v) is not None}
    missing = structure.edges() - into_series
    if missing:
        parent, child = sorted(missing, key=lambda e: split_step(e[1])[1])[0]  # type: ignore[index]
        step = split_step(child)[1]  # type: ignore[index]
        raise ModelError(
            f"the steps of the pyro.markov loop differ in structure: {parent!r} is not a "
            f"parent of {child!r} (step {step}) though the same link exists at other steps "
            f"({len(missing)} link(s) missing in all, e.g. {sorted(missing)[:3]}). Write each "
            "step with the same dependencies"
        )
