r"""The guide-planning stage: from a model graph and its NaMI inverse to a guide's structure.

The pipeline of an amortized guide is

.. code-block:: text

    ModelGraph --invert--> InverseGraph --plan_guide--> GuidePlan --NaMIGuide--> modules

:func:`plan_guide` is pure graph code. It decides, for every latent site the
guide samples, in sampling order:

* its **parents** and how each is reached (:class:`~pgmdl.graph.plated.PlateLink`:
  on the same index, broadcast, or pooled over a plate);
* whether it is **free** (a global latent with free parameters, as with
  :class:`~pyro.infer.autoguide.AutoNormal`) or **amortized** (a network of
  its parents);
* whether its replicates are sampled **jointly** along a plate, by which
  plug-in (:mod:`pgmdl.plugins`);
* its **plate block** (the plate at each batch dimension);

and, for the whole guide, the given nodes it reads (observed sites and
inputs), the enumerated sites it leaves to the model, and the plates it
enters. The result, a frozen :class:`GuidePlan`, is printable
(:meth:`GuidePlan.summary`), serializable (:meth:`GuidePlan.to_dict`) and
testable without building a single module; :class:`pgmdl.NaMIGuide` builds
its modules from it.

Sampling order. The guide samples in the inverse's order (the reverse of
the elimination order), with four adjustments that the planner makes by
re-inverting with a modified elimination order (Webb et al. 2018 allow any
order; each stays faithful): enumerated sites are eliminated first (the
model sums them out, so no guide site may need them); free global sites
last (the guide samples them first and the rest may condition on them);
sites the model observes in some calls, and sites whose values mask other
latents (AIR's ``z_pres``), just before them (sampled early, so that a call
observing them, or a mask built from them, is available to the rest).

Structures. ``"nami"``: each site's parents are its parents in the inverse
(faithful, minimal). ``"mean-field"``: each site conditioned on the given
nodes it depends on in the inverse and on no other latent (not faithful in
general: a baseline), with no joint conditionals.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

from pgmdl.errors import GuideError, GuideWarning, ModelError
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.nami import InverseGraph, invert
from pgmdl.graph.plated import PlateLink, plate_link
from pgmdl.graph.time import TimeStructure, time_structure
from pgmdl.plugins import joint_conditionals

GUIDE_STRUCTURES = ("nami", "mean-field")
"""The structures :func:`plan_guide` builds (see the module docstring)."""

GLOBAL_LATENTS = ("auto", "free", "amortized")
"""How :func:`plan_guide` treats global latents (see :func:`free_sites`)."""


@dataclass(frozen=True)
class ParentRead:
    """How a guide site reads one parent.

    Attributes:
        name: the parent (a latent site, an observed site or a model input).
        kind: ``"latent"``, ``"observed"`` or ``"input"``.
        link: how the site reaches the parent's replicates.
    """

    name: str
    kind: str
    link: PlateLink

    def describe(self) -> str:
        """``"x (same data)"``."""
        return f"{self.name} ({self.link})"


@dataclass(frozen=True)
class JointPlan:
    """A site whose replicates are sampled jointly along ``plate`` by the
    registered joint conditional ``provider`` (:mod:`pgmdl.plugins`)."""

    plate: str
    provider: str


@dataclass(frozen=True)
class SitePlan:
    """The plan of one latent site of the guide.

    Attributes:
        name: the site.
        parents: the parents it reads, in the inverse's order.
        free: a global latent with free parameters (no parents).
        block: the plate at each batch dimension of the site's plate block,
            outermost first (``None`` where no plate is).
        joint: how its replicates are sampled jointly, or ``None``
            (independently given their parents).
    """

    name: str
    parents: tuple[ParentRead, ...]
    free: bool
    block: tuple[str | None, ...]
    joint: JointPlan | None = None

    @property
    def parent_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parents)

    def describe(self) -> str:
        """One line: ``q(z | x (same data)) amortized``."""
        parents = ", ".join(p.describe() for p in self.parents)
        head = f"q({self.name} | {parents})" if parents else f"q({self.name})"
        how = "free parameters" if self.free else "amortized"
        if self.joint is not None:
            how += f", joint over {self.joint.plate} ({self.joint.provider})"
        return f"{head}: {how}"


@dataclass(frozen=True)
class GuidePlan:
    """The structure of an amortized guide (:func:`plan_guide`).

    Attributes:
        structure: ``"nami"`` or ``"mean-field"``.
        sites: every latent site the guide samples, in sampling order.
        enumerated: latent sites left to the model's enumeration.
        given: the observed sites and inputs the conditionals read, in the
            order first read.
        plates: the vectorized plates the guide enters (a plate none of its
            sites lives in is left to the model).
        max_depth: the number of batch dimensions the model's plates use.
        inverse: the inverse the plan follows (its elimination order
            adjusted as in the module docstring).
        strategy: the elimination order asked for (the ``strategy`` of the
            inverse given to :func:`plan_guide`: ``"min-fill"``, ``"reverse"``,
            ``"topological"`` or ``"explicit"``).
        time: the repeated slice of the model's ``pyro.markov`` loop
            (:class:`~pgmdl.graph.time.TimeStructure`), or ``None``.
    """

    structure: str
    sites: tuple[SitePlan, ...]
    enumerated: tuple[str, ...]
    given: tuple[str, ...]
    plates: tuple[str, ...]
    max_depth: int
    inverse: InverseGraph = field(compare=False, repr=False)
    strategy: str = "min-fill"
    time: TimeStructure | None = field(default=None, compare=False, repr=False)

    @property
    def graph(self) -> ModelGraph:
        """The model graph."""
        return self.inverse.model

    @property
    def order(self) -> tuple[str, ...]:
        """The sites the guide samples, in sampling order."""
        return tuple(s.name for s in self.sites)

    @property
    def free(self) -> tuple[str, ...]:
        """The global latents with free parameters."""
        return tuple(s.name for s in self.sites if s.free)

    @property
    def joint(self) -> dict[str, JointPlan]:
        """``{site: JointPlan}`` for the sites sampled jointly along a plate."""
        return {s.name: s.joint for s in self.sites if s.joint is not None}

    @property
    def read(self) -> frozenset[str]:
        """Every name some conditional reads (latent parents and given nodes)."""
        return frozenset(p.name for s in self.sites for p in s.parents)

    def __contains__(self, site: object) -> bool:
        return any(s.name == site for s in self.sites)

    def __getitem__(self, site: str) -> SitePlan:
        for plan in self.sites:
            if plan.name == site:
                return plan
        from pgmdl.errors import SiteNotFoundError

        raise SiteNotFoundError(site, self.order, what="guide site")

    def parents(self, site: str) -> tuple[str, ...]:
        """The parents ``site`` reads."""
        return self[site].parent_names

    def structure_graph(self) -> nx.DiGraph:
        """The guide's DAG: given nodes and sites, edges parent -> site with their link."""
        out = nx.DiGraph()
        for name in self.given:
            out.add_node(name, kind=self.graph[name].kind if name in self.graph.sites else "input")
        for site in self.sites:
            out.add_node(site.name, kind="latent", free=site.free)
            for parent in site.parents:
                out.add_edge(parent.name, site.name, link=parent.link)
        return out

    def summary(self) -> str:
        """A readable account of the plan, one line per site."""
        lines = [
            f"GuidePlan ({self.structure}, {self.strategy}): {len(self.sites)} sampled site(s), "
            f"{len(self.free)} free, {len(self.joint)} joint"
        ]
        lines += [f"  {site.describe()}" for site in self.sites]
        if self.enumerated:
            lines.append(f"  enumerated by the model: {', '.join(self.enumerated)}")
        if self.given:
            lines.append(f"  reads: {', '.join(self.given)}")
        if self.plates:
            lines.append(f"  plates: {', '.join(self.plates)}")
        if self.time is not None:
            lines.append("  one step of the pyro.markov loop:")
            lines += [f"    {line}" for line in self.slice_conditionals()]
        return "\n".join(lines)

    def slice_conditionals(self) -> list[str]:
        """Each latent series' conditional at an interior step ``t`` of the
        ``pyro.markov`` loop (:attr:`time`), its parents relative to ``t``:
        ``"q(z_{t} | z_{t-1}, x_{t..t+3})"``. A parent series read over a run of
        steps that reaches the end (or the start) of the loop is the part of the
        sequence that grows with its length (the future, or the past, of
        ``t``)."""
        return [f"q({series} | {', '.join(parents)})" for series, parents in self.slice_reads()]

    def slice_reads(self) -> list[tuple[str, list[str]]]:
        """``(series template, what its step t reads)`` for each latent series of
        the loop, as :meth:`slice_conditionals` writes them (``"z_{t-1}"``,
        ``"x_{t..T}"``, a static site's name)."""
        if self.time is None:
            return []
        out = []
        for series in self.time.series:
            if series.kind != "latent" or len(series.steps) < 3:
                continue
            t = series.steps[len(series.steps) // 2]
            if series.site(t) not in self:
                continue
            reads: dict[str, list[int]] = {}
            static = []
            for parent in self[series.site(t)].parents:
                found = self.time.series_of(parent.name)
                if found is None:
                    static.append(parent.name)
                else:
                    reads.setdefault(found[0].template, []).append(found[1] - t)
            parts = []
            for template, offsets in reads.items():
                steps = self.time.series[
                    [s.template for s in self.time.series].index(template)
                ].steps
                parts.append(_describe_offsets(template, sorted(offsets), t, steps))
            out.append((series.template, parts + static))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "structure": self.structure,
            "strategy": self.strategy,
            "sites": [
                {
                    "name": s.name,
                    "free": s.free,
                    "parents": [
                        {
                            "name": p.name,
                            "kind": p.kind,
                            "same": list(p.link.same),
                            "broadcast": list(p.link.broadcast),
                            "pooled": list(p.link.pooled),
                        }
                        for p in s.parents
                    ],
                    "block": list(s.block),
                    "joint": None
                    if s.joint is None
                    else {"plate": s.joint.plate, "provider": s.joint.provider},
                }
                for s in self.sites
            ],
            "enumerated": list(self.enumerated),
            "given": list(self.given),
            "plates": list(self.plates),
            "max_depth": self.max_depth,
        }


def plan_guide(
    graph: ModelGraph,
    inverse: InverseGraph | None = None,
    *,
    structure: Literal["nami", "mean-field"] = "nami",
    global_latents: Literal["auto", "free", "amortized"] = "auto",
    joint_sites: str | Sequence[str] = "auto",
    sometimes_observed: Collection[str] = (),
) -> GuidePlan:
    """Plan the guide of ``graph`` (see the module docstring).

    Args:
        graph: the compiled model.
        inverse: its NaMI inverse (default: ``invert(graph)``, min-fill); the
            planner keeps its order and augmentation, adjusted as described.
        structure: ``"nami"`` or ``"mean-field"``.
        global_latents: ``"auto"``, ``"free"`` or ``"amortized"`` (:func:`free_sites`).
        joint_sites: ``"auto"`` (a joint conditional for every site the
            inversion joins along one plate, from the first registered
            provider that takes it), a list of sites to give one, or ``()``.
        sometimes_observed: sites the model observes in some calls (sampled
            before the sites that may depend on them).

    Returns:
        the :class:`GuidePlan`.

    Raises:
        GuideError: an unknown option, or a named joint site no provider takes.

    Example:
        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(mu, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> plan = plan_guide(pgmdl.compile(model, torch.zeros(5)))
        >>> print(plan.summary())
        GuidePlan (nami, min-fill): 2 sampled site(s), 1 free, 0 joint
          q(mu): free parameters
          q(z | x (same data), mu (broadcast over data)): amortized
          reads: x
          plates: data
    """
    if structure not in GUIDE_STRUCTURES:
        raise GuideError(f"structure={structure!r}: use one of {GUIDE_STRUCTURES}")
    if global_latents not in GLOBAL_LATENTS:
        raise GuideError(f"global_latents={global_latents!r}: use one of {GLOBAL_LATENTS}")
    if isinstance(joint_sites, str) and joint_sites != "auto":
        raise GuideError(f"joint_sites={joint_sites!r}: use 'auto', a list of latent sites, or ()")
    if inverse is None:
        inverse = invert(graph)
    free = free_sites(graph, global_latents)
    order_name = inverse.strategy
    inverse = guide_inverse(graph, inverse, free, sometimes_observed)
    parents: dict[str, tuple[ParentRead, ...]] = {}
    for site in inverse.order:
        if graph[site].enumerate:
            continue
        if site in free:
            links: tuple[tuple[str, PlateLink], ...] = ()
        elif structure == "mean-field":
            links = mean_field_parents(inverse, site)
        else:
            links = tuple((p, inverse.link(p, site)) for p in inverse.parents(site))
        parents[site] = tuple(ParentRead(p, _kind(graph, p), link) for p, link in links)
    joint = (
        {}
        if structure == "mean-field"
        else _joint_plans(graph, inverse, parents, free, joint_sites, order_name)
    )
    sites = tuple(
        SitePlan(site, reads, site in free, _block_plates(graph, site), joint.get(site))
        for site, reads in parents.items()
    )
    given: list[str] = []
    for site in sites:
        for parent in site.parents:
            if parent.name not in parents and parent.name not in given:
                given.append(parent.name)
    plates = tuple(
        p
        for p, info in graph.plates.items()
        if info.dim is not None and any(p in graph[s].plates for s in parents)
    )
    depth = max((-p.dim for p in graph.plates.values() if p.dim is not None), default=0)
    enumerated = tuple(s for s in inverse.order if graph[s].enumerate)
    return GuidePlan(
        structure,
        sites,
        enumerated,
        tuple(given),
        plates,
        depth,
        inverse,
        str(order_name),
        _time_structure(graph),
    )


def _time_structure(graph: ModelGraph) -> TimeStructure | None:
    """The model's ``pyro.markov`` slice, or None (warned when the loop's steps
    differ: the guide is then planned on the unrolled graph alone)."""
    try:
        return time_structure(graph)
    except ModelError as err:
        warnings.warn(
            f"{err} The guide is planned on the unrolled graph, step by step.",
            GuideWarning,
            stacklevel=_stacklevel(),
        )
        return None


def _describe_offsets(template: str, offsets: list[int], t: int, steps: tuple[int, ...]) -> str:
    """``z_{t-1}``, ``x_{t}``, or a run ``x_{t..T}`` / ``x_{0..t}`` reaching the loop's end."""

    def at(offset: int) -> str:
        if offset == 0:
            return template
        return template.replace("{t}", "{t" + f"{offset:+d}" + "}")

    run = offsets == list(range(offsets[0], offsets[-1] + 1)) and len(offsets) > 1
    if run and t + offsets[-1] == steps[-1]:
        low = "t" if offsets[0] == 0 else f"t{offsets[0]:+d}"
        return template.replace("{t}", "{" + low + "..T}")
    if run and t + offsets[0] == steps[0]:
        high = "t" if offsets[-1] == 0 else f"t{offsets[-1]:+d}"
        return template.replace("{t}", "{" + str(steps[0]) + ".." + high + "}")
    return ", ".join(at(o) for o in offsets)


def free_sites(graph: ModelGraph, global_latents: str = "auto") -> frozenset[str]:
    """The latents given free parameters.

    A *global* latent shares no vectorized plate with an observed site (a
    mixture's weights, a regression's coefficients). ``"auto"``: global
    latents are free whenever observed sites live in a plate (their posterior
    depends on the whole data set, which a minibatch cannot show an encoder);
    in a model without plates everything is amortized. ``"free"``: global
    latents are free. ``"amortized"``: none is. Enumerated sites never are.
    """
    if global_latents == "amortized":
        return frozenset()

    def plates(name: str) -> set[str]:
        return {p for p in graph[name].plates if graph.plates[p].is_vectorized}

    data_plates = set().union(*(plates(s) for s in graph.observed_sites))
    if global_latents == "auto" and not data_plates:
        return frozenset()
    return frozenset(
        s for s in graph.latent_sites if not graph[s].enumerate and not plates(s) & data_plates
    )


def guide_inverse(
    graph: ModelGraph,
    inverse: InverseGraph,
    free: Collection[str],
    sometimes_observed: Collection[str] = (),
) -> InverseGraph:
    """``inverse`` re-inverted so that enumerated sites are eliminated first,
    free sites last, and sites observed in some calls or masking other
    latents just before them (see the module docstring); ``inverse`` itself
    when its order already does."""
    order = inverse.elimination_order
    enumerated = [s for s in graph.latent_sites if graph[s].enumerate]
    sometimes = [s for s in order if s in sometimes_observed]
    sources = {
        m.source
        for s in graph.latent_sites
        for m in graph[s].masks
        if m.kind == "site" and m.source in graph.sites and graph[m.source].is_latent
    }
    masking = [s for s in order if s in sources and s not in free and s not in sometimes]
    if not (enumerated or free or sometimes or masking):
        return inverse
    first = set(free) | set(enumerated) | set(sometimes) | set(masking)
    rest = [s for s in order if s not in first]
    last = [s for s in order if s in free]
    adjusted = enumerated + rest + masking + sometimes + last
    if tuple(adjusted) == tuple(order):
        return inverse
    return invert(graph, order=adjusted, augment=inverse.augmented)


def mean_field_parents(inverse: InverseGraph, site: str) -> tuple[tuple[str, PlateLink], ...]:
    """The given ancestors of ``site`` in the inverse, with their plate links:
    the parents of ``site`` in the mean-field structure."""
    dag = inverse.dag
    ancestors = nx.ancestors(dag, site)
    plates_s = set(dag.nodes[site]["plates"])
    out = []
    for given in inverse.given:
        if given not in ancestors:
            continue
        plates_g = set(dag.nodes[given]["plates"])
        between = (nx.descendants(dag, given) & ancestors) | {given, site}
        across = set()
        for u, v in dag.subgraph(between).edges:
            across |= set(dag.edges[u, v]["link"].pooled)
        out.append((given, plate_link(plates_g, plates_s, across, tuple(inverse.model.plates))))
    return tuple(out)


def _joint_plans(
    graph: ModelGraph,
    inverse: InverseGraph,
    parents: Mapping[str, tuple[ParentRead, ...]],
    free: Collection[str],
    joint_sites: str | Sequence[str],
    order_name: Any,
) -> dict[str, JointPlan]:
    """``{site: JointPlan}``; warns about joined sites left with independent replicates."""
    providers = joint_conditionals()
    plans: dict[str, JointPlan] = {}
    joined = {s: p for s, p in inverse.joint_plates.items() if parents.get(s)}
    if joint_sites == "auto":
        for site, plates in joined.items():
            if len(plates) != 1:
                continue
            for provider in providers:
                if provider.unfit(graph, site) is None:
                    plans[site] = JointPlan(plates[0], provider.name)
                    break
    else:
        for site in joint_sites:
            if site in free or site not in parents:
                raise GuideError(
                    f"joint_sites: site {site!r} is a global latent with free parameters "
                    "(or not sampled by the guide); a joint conditional over a plate is for "
                    "amortized sites inside a plate"
                )
            reasons = []
            for provider in providers:
                problem = provider.unfit(graph, site)
                if problem is None:
                    plate = joined.get(site, (None,))[0] or provider.plate(graph, site)
                    plans[site] = JointPlan(plate, provider.name)  # type: ignore[arg-type]
                    break
                reasons.append(f"{provider.name}: {problem}")
            else:
                why = "; ".join(reasons) or "no plug-in offering joint conditionals is loaded"
                raise GuideError(f"joint_sites: site {site!r} cannot be joined ({why})")
    rest = {s: p for s, p in joined.items() if s not in plans}
    if rest:
        warnings.warn(
            f"NaMI order {order_name!r} couples the replicates of "
            + ", ".join(f"{s!r} along plate(s) {list(p)}" for s, p in rest.items())
            + "; the guide samples them independently given pooled summaries of their "
            "parents (a joint multiset conditional needs a real-valued site joined along "
            "one plate). order='reverse' usually avoids joint plates.",
            GuideWarning,
            stacklevel=_stacklevel(),
        )
    return plans


def _stacklevel() -> int:
    """Point a warning at the first frame outside pgmdl, Pyro and PyTorch (the
    user's call, through ``svi.step`` or ``guide(...)``)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_LIBRARIES):
        frame, level = frame.f_back, level + 1
    return level


_LIBRARIES = ("pgmdl", "pyro", "torch")


def _kind(graph: ModelGraph, name: str) -> str:
    if name in graph.sites:
        return graph[name].kind
    return "input"


def _block_plates(graph: ModelGraph, site: str) -> tuple[str | None, ...]:
    """The plate at each batch dim of a site's plate block (``None``: no plate)."""
    at = {graph.plates[p].dim: p for p in graph[site].plates if graph.plates[p].dim is not None}
    depth = max((-d for d in at), default=0)
    return tuple(at.get(d) for d in range(-depth, 0))


__all__ = [
    "GLOBAL_LATENTS",
    "GUIDE_STRUCTURES",
    "GuidePlan",
    "JointPlan",
    "ParentRead",
    "SitePlan",
    "free_sites",
    "guide_inverse",
    "mean_field_parents",
    "plan_guide",
]
