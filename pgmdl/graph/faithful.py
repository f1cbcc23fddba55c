"""Faithfulness and minimality certificates for guide structures.

A guide ``q(z | x) = prod_v q(z_v | pa(v))`` over a DAG ``H`` whose roots are
the observed sites (and model inputs) can represent the true posterior
``p(z | x)`` of a model ``G`` exactly when, for every latent ``v`` (in any
topological order of ``H``, the observed sites first)::

    v  _||_  (U_v - pa(v))  |  pa(v)        in G (d-separation),

where ``U_v`` holds the observed sites and the latents sampled before ``v``.
This is the ordered Markov property of ``H`` (with its roots completed into
a clique, as they are always given); since the local and global directed
Markov properties are equivalent (Lauritzen et al. 1990), it holds exactly
when every d-separation of ``H`` is one of ``G``: ``H`` is *faithful* to
``G`` in the sense of Webb et al. (2018). One topological order suffices,
and one d-separation query per latent decides it.

``H`` is *minimally* faithful when it is faithful and deleting any one of
its edges breaks faithfulness (thesis §4.1). Deleting ``u -> v`` only
changes ``v``'s statement, so that is one query per edge.

Plated models are checked on their unrolled graphs, each plate cut to
``max_replicates`` replicates (3 by default): replicate patterns treat all
indices alike, so a few replicates show every kind of link (same instance,
other instance, pooled). Deterministic sites are contracted first (a
deterministic value is a function of its parents).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from pgmdl.errors import InversionError, SiteNotFoundError
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.nami import InverseGraph
from pgmdl.graph.plated import SAME, Patterns, PlatedDAG, StarSet, plated_dag, unroll, unroll_sizes

GuideStructure = InverseGraph | nx.DiGraph | Mapping[str, Iterable[str]]
"""What the certificates accept as a guide structure: an :class:`InverseGraph`,
a networkx DiGraph over site names, or a mapping ``{latent: parents}``
(latents left out have no parents)."""


@dataclass(frozen=True)
class Violation:
    """An independence the guide asserts and the model does not have.

    ``site`` depends on ``others`` given ``given`` in the model, but the guide
    samples ``site`` from ``given`` alone. Names are sites, or replicates
    such as ``"z[1]"`` in plated models.
    """

    site: str
    others: tuple[str, ...]
    given: tuple[str, ...]

    def __str__(self) -> str:
        given = "{" + ", ".join(self.given) + "}" if self.given else "nothing"
        return (
            f"{self.site} still depends on {{{', '.join(self.others)}}} given {given} in the "
            f"model, but the guide samples {self.site} from {given} alone"
        )


@dataclass(frozen=True)
class FaithfulnessReport:
    """The result of :func:`check_faithful`.

    Attributes:
        violations: one per latent (replicate) whose guide conditional misses
            a dependency.
        statements: how many conditional-independence statements were checked.
        replicates: the plate sizes the check unrolled to.
    """

    violations: tuple[Violation, ...]
    statements: int
    replicates: Mapping[str, int]

    @property
    def ok(self) -> bool:
        """Whether the guide structure is faithful."""
        return not self.violations

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        unrolled = ", ".join(f"{p}={n}" for p, n in self.replicates.items())
        where = f" (plates unrolled to {unrolled})" if unrolled else ""
        if self.ok:
            return f"faithful: all {self.statements} guide conditionals hold in the model{where}"
        lines = [
            f"NOT faithful: {len(self.violations)} of {self.statements} conditionals fail{where}"
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def check_faithful(
    graph: ModelGraph, inverse: GuideStructure, *, max_replicates: int | None = 3
) -> FaithfulnessReport:
    """Certify that a guide structure is faithful to a model (by d-separation).

    Args:
        graph: the compiled model.
        inverse: the guide structure (see :data:`GuideStructure`).
        max_replicates: plates are unrolled to at most this many replicates
            (``None``: their full size).

    Returns:
        a :class:`FaithfulnessReport`; ``.ok`` is the certificate and
        ``.violations`` lists ``(site, others, given)`` triples.

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     a = pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     b = pyro.sample("b", dist.Normal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)
        >>> graph = pgmdl.compile(model, torch.tensor(0.0))
        >>> pgmdl.check_faithful(graph, pgmdl.invert(graph)).ok
        True
        >>> report = pgmdl.check_faithful(graph, {"a": ["x"], "b": ["x"]})  # mean field
        >>> print(report.violations[0])
        b still depends on {a} given {x} in the model, but the guide samples b from {x} alone
    """
    structure = _Structure.of(graph, inverse)
    sizes = unroll_sizes(structure.plated, max_replicates)
    model = unroll(structure.plated, sizes)
    guide = structure.unrolled(sizes)
    violations, count = _violations(model, guide)
    return FaithfulnessReport(tuple(violations), count, sizes)


def redundant_edges(
    graph: ModelGraph, inverse: GuideStructure, *, max_replicates: int | None = 3
) -> tuple[tuple[str, str], ...]:
    """The guide edges ``(parent, site)`` whose deletion keeps it faithful.

    A pair ``(site, site)`` stands for a joint conditional over plates
    (:attr:`InverseGraph.joint_plates`) that could be replaced by
    independent replicates.
    """
    structure = _Structure.of(graph, inverse)
    sizes = unroll_sizes(structure.plated, max_replicates)
    model = unroll(structure.plated, sizes)
    guide = structure.unrolled(sizes)
    templates: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for u, v, template in guide.edges(data="template"):
        templates.setdefault(template, []).append((u, v))
    order = list(nx.topological_sort(guide))  # still valid once edges are deleted
    redundant = []
    for (parent, site), replicate_edges in templates.items():
        pruned = guide.copy()
        pruned.remove_edges_from(replicate_edges)
        targets = {v for _, v in replicate_edges}
        violations, _ = _violations(model, pruned, only=targets, order=order)
        if not violations:
            redundant.append((parent, site))
    return tuple(redundant)


def is_minimal(
    graph: ModelGraph, inverse: GuideStructure, *, max_replicates: int | None = 3
) -> bool:
    """Whether the guide structure is faithful and no edge can be deleted.

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> graph = pgmdl.compile(model, torch.tensor(0.0))
        >>> pgmdl.is_minimal(graph, pgmdl.invert(graph))
        True
    """
    if not check_faithful(graph, inverse, max_replicates=max_replicates).ok:
        return False
    return not redundant_edges(graph, inverse, max_replicates=max_replicates)


# ---------------------------------------------------------------------- internals


@dataclass
class _Structure:
    """A guide structure on the model's plate-level graph."""

    plated: PlatedDAG
    edges: dict[tuple[str, str], Patterns]
    coupled: dict[str, StarSet]

    @classmethod
    def of(cls, graph: ModelGraph, inverse: Any) -> _Structure:
        if not isinstance(graph, ModelGraph):
            raise InversionError(
                f"expected a compiled ModelGraph as the model, got {type(graph).__name__}"
            )
        if isinstance(inverse, InverseGraph):
            if not inverse.belongs_to(graph):
                raise InversionError("the inverse graph was built from a different model graph")
            plated = inverse._plated
            edges = {(u, v): p for u, v, p in inverse.dag.edges(data="patterns")}
            coupled = {s: frozenset(plates) for s, plates in inverse.joint_plates.items()}
            return cls(plated, edges, coupled)
        plated = plated_dag(graph)
        if isinstance(inverse, nx.DiGraph):
            pairs = list(inverse.edges)
        elif isinstance(inverse, Mapping):
            pairs = [(p, s) for s, parents in inverse.items() for p in _names(parents, s)]
        else:
            raise InversionError(
                "a guide structure is an InverseGraph, a networkx DiGraph or a mapping "
                f"{{latent: parents}}, got {type(inverse).__name__}"
            )
        for parent, site in pairs:
            for name in (parent, site):
                if name not in plated.kinds:
                    if name in graph.sites:  # deterministic
                        raise InversionError(
                            f"the guide structure uses {name!r}, a deterministic site: guides "
                            "sample latents only; use the deterministic site's parents"
                        )
                    raise SiteNotFoundError(name, plated.kinds)
            if plated.kinds[site] != "latent":
                raise InversionError(
                    f"the guide structure gives {plated.kinds[site]} site {site!r} the parent "
                    f"{parent!r}: observed sites and inputs are given, never sampled by a guide"
                )
        check = nx.DiGraph(pairs)
        if not nx.is_directed_acyclic_graph(check):
            cycle = " -> ".join(u for u, _ in nx.find_cycle(check))
            raise InversionError(f"the guide structure has a cycle ({cycle}); a guide is a DAG")
        return cls(plated, dict.fromkeys(pairs, SAME), {})

    def unrolled(self, sizes: Mapping[str, int]) -> nx.DiGraph:
        return unroll(self.plated, sizes, edges=self.edges, coupled=self.coupled)


def _names(parents: Iterable[str] | str, site: str) -> list[str]:
    if isinstance(parents, str):
        raise InversionError(
            f"the parents of {site!r} must be a list of site names, got the string {parents!r}"
        )
    return list(parents)


def _violations(
    model: nx.DiGraph,
    guide: nx.DiGraph,
    only: set[str] | None = None,
    order: list[str] | None = None,
) -> tuple[list[Violation], int]:
    """Check the ordered Markov statements of ``guide`` against ``model``,
    along ``order`` (a topological order of ``guide``; one is computed when
    not given)."""
    before = {n for n, kind in guide.nodes(data="kind") if kind != "latent"}
    violations = []
    count = 0
    for v in nx.topological_sort(guide) if order is None else order:
        if guide.nodes[v]["kind"] != "latent":
            continue
        if only is None or v in only:
            parents = set(guide.predecessors(v))
            rest = before - parents
            count += 1
            if rest and not nx.is_d_separator(model, {v}, rest, parents):
                others = [u for u in rest if not nx.is_d_separator(model, {v}, {u}, parents)]
                violations.append(
                    Violation(v, tuple(_sorted(model, others)), tuple(_sorted(model, parents)))
                )
        before.add(v)
    return violations, count


def _sorted(model: nx.DiGraph, names: Iterable[str]) -> list[str]:
    position = {n: i for i, n in enumerate(model.nodes)}
    return sorted(names, key=position.__getitem__)
