"""Plate-level (template) graphs and the replicate patterns of their edges.

A vectorized ``pyro.plate`` stands for many *replicates* of the sites inside
it. pgmdl reasons about the plate-level graph (one node per site) without
unrolling it, so each edge ``u -- v`` carries a *replicate pattern* saying
which replicates of ``u`` are joined to which replicates of ``v``. For each
plate ``p`` the two sites share, the replicates are joined either

* on the *same* index (``u[i] -- v[i]``: Pyro's plate semantics for a model
  edge), or
* on *all* pairs of indices (``u[i] -- v[j]`` for every ``i, j``): the
  dependency is pooled over ``p``.

A pattern is the set of shared plates joined on all pairs, the *star set*
(the empty set means "same instance on every shared plate"). Plates that
only one endpoint lives in carry no index on the other side: the one outside
the plate is joined to every replicate inside it (broadcast one way,
pooling the other). Since two eliminations can join the same pair of sites
with different patterns, an edge carries an *antichain* of star sets (a
union of patterns), kept to its maximal elements.

Composition through a middle site ``w`` is what moralization and variable
elimination need: ``a[i] -- w[j] -- b[k]`` joins ``a[i]`` and ``b[k]``, and
for each plate ``p`` shared by ``a`` and ``b`` the result is *same* exactly
when ``w`` lives in ``p`` and both links (and ``w``'s own coupling along
``p``) are *same* (:func:`compose`).

:func:`plated_dag` builds the plate-level DAG of a
:class:`~pgmdl.graph.ModelGraph` (deterministic sites contracted, model
inputs added as given nodes); :func:`unroll` expands a plate-level DAG into
replicates, for d-separation and for checking the plate-level algorithms
against their unrolled counterparts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from pgmdl.errors import ModelError

StarSet = frozenset[str]
"""The shared plates along which an edge joins all pairs of replicates."""

Patterns = frozenset[StarSet]
"""An antichain of star sets: the union of the patterns of one edge."""

SAME: Patterns = frozenset({frozenset()})
"""The pattern of a model edge: same instance on every shared plate."""

NodeKind = Literal["latent", "observed", "input"]


def add_pattern(patterns: Patterns, star: StarSet) -> Patterns:
    """``patterns`` with ``star`` added, kept to maximal star sets.

    A larger star set joins a superset of replicate pairs, so a star set
    contained in another adds nothing.
    """
    if any(star <= other for other in patterns):
        return patterns
    return frozenset({other for other in patterns if not other <= star} | {star})


def merge_patterns(first: Patterns, second: Patterns) -> Patterns:
    """The union of two edges' patterns."""
    for star in second:
        first = add_pattern(first, star)
    return first


def compose(
    star_a: StarSet,
    star_b: StarSet,
    *,
    plates_a: frozenset[str],
    plates_mid: frozenset[str],
    plates_b: frozenset[str],
    coupled: StarSet = frozenset(),
) -> StarSet:
    """The star set joining ``a`` and ``b`` through a middle site ``w``.

    ``a[i] -- w[j]`` (star set ``star_a``) and ``w[j'] -- b[k]`` (star set
    ``star_b``), where ``w[j]`` and ``w[j']`` are connected through ``w``'s
    own replicates along the plates in ``coupled`` (``j = j'`` elsewhere).
    For a plate ``p`` shared by ``a`` and ``b``, ``a[i]`` and ``b[k]`` need
    ``i_p = k_p`` exactly when ``w`` lives in ``p`` and neither link nor the
    coupling pools over ``p``::

        star = (P_a & P_b) - (P_w - (star_a | star_b | coupled))
    """
    same_through_mid = plates_mid - (star_a | star_b | coupled)
    return frozenset((plates_a & plates_b) - same_through_mid)


@dataclass(frozen=True)
class PlateLink:
    """How a guide site reaches the replicates of one of its parents.

    Attributes:
        same: plates both sites live in, joined on the same index (the
            parent's replicate ``i`` feeds the site's replicate ``i``).
        broadcast: plates only the site lives in: one parent value is used
            by every replicate.
        pooled: plates along which the site needs *all* of the parent's
            replicates: plates only the parent lives in, and shared plates
            the dependency runs across. The guide needs a
            permutation-invariant set encoder over them.
    """

    same: tuple[str, ...] = ()
    broadcast: tuple[str, ...] = ()
    pooled: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        """``"pooled"``, ``"broadcast"`` or ``"same"`` (the strongest that applies)."""
        if self.pooled:
            return "pooled"
        return "broadcast" if self.broadcast else "same"

    def __str__(self) -> str:
        parts = []
        if self.same:
            parts.append(f"same {', '.join(self.same)}")
        if self.broadcast:
            parts.append(f"broadcast over {', '.join(self.broadcast)}")
        if self.pooled:
            parts.append(f"pooled over {', '.join(self.pooled)}")
        return "; ".join(parts) or "global"


def plate_link(
    parent_plates: Iterable[str],
    site_plates: Iterable[str],
    across: Iterable[str],
    plate_order: Sequence[str],
) -> PlateLink:
    """The :class:`PlateLink` of an edge ``parent -> site``: the one builder
    used by the inversion, the guide audit and the guide planner.

    Plates both live in are *same* unless the dependency runs ``across``
    them (then pooled); plates only the parent lives in are pooled; plates
    only the site lives in are broadcast. Each tuple follows ``plate_order``.
    """
    pa, ps = frozenset(parent_plates), frozenset(site_plates)
    across = frozenset(across) & pa & ps
    pooled = (pa - ps) | across
    return PlateLink(
        same=tuple(p for p in plate_order if p in (pa & ps) - across),
        broadcast=tuple(p for p in plate_order if p in ps - pa),
        pooled=tuple(p for p in plate_order if p in pooled),
    )


@dataclass
class PlatedDAG:
    """A plate-level DAG: nodes with a kind and plates, edges with patterns.

    Attributes:
        kinds: each node's kind (``"latent"``, ``"observed"``, ``"input"``),
            in the model's execution order (inputs first).
        plates: each node's vectorized plates, outermost first.
        edges: ``(parent, child) -> patterns``.
        plate_sizes: every plate's full size.
        plate_order: the plates in order of first use (indices of a replicate
            follow it).
    """

    kinds: dict[str, NodeKind]
    plates: dict[str, tuple[str, ...]]
    edges: dict[tuple[str, str], Patterns] = field(default_factory=dict)
    plate_sizes: dict[str, int] = field(default_factory=dict)
    plate_order: tuple[str, ...] = ()

    def plate_set(self, node: str) -> frozenset[str]:
        return frozenset(self.plates[node])

    def add_edge(self, parent: str, child: str, patterns: Patterns) -> None:
        key = (parent, child)
        self.edges[key] = merge_patterns(self.edges.get(key, frozenset()), patterns)

    def to_networkx(self) -> nx.DiGraph:
        dag = nx.DiGraph()
        for node, kind in self.kinds.items():
            dag.add_node(node, kind=kind, plates=self.plates[node])
        for (u, v), patterns in self.edges.items():
            dag.add_edge(u, v, patterns=patterns)
        return dag

    @property
    def latent(self) -> list[str]:
        return [n for n, k in self.kinds.items() if k == "latent"]

    @property
    def given(self) -> list[str]:
        """Observed sites and inputs: what a guide conditions on."""
        return [n for n, k in self.kinds.items() if k != "latent"]


def plated_dag(graph) -> PlatedDAG:  # graph: ModelGraph (import cycle otherwise)
    """The plate-level DAG of a compiled model, ready for inversion.

    * Deterministic sites are contracted: a ``pyro.deterministic`` value is
      a function of its parents, so each of its parents becomes a parent of
      each of its children (patterns composed through it).
    * Model inputs (arguments feeding sites without being any site's value,
      :attr:`ModelGraph.inputs`) become given nodes, like observed sites;
      an input's plates are the vectorized plates all its consumers share.
    * Only vectorized plates count: a sequential plate's iterations are
      already separate sites.
    """
    kinds: dict[str, NodeKind] = {}
    plates: dict[str, tuple[str, ...]] = {}
    vectorized = [name for name, plate in graph.plates.items() if plate.is_vectorized]

    def site_plates(name: str) -> tuple[str, ...]:
        return tuple(p for p in graph.sites[name].plates if p in vectorized)

    for path, consumers in graph.inputs.items():
        if path in graph.sites:
            raise ModelError(
                f"model input {path!r} has the name of a site; rename the argument or the site"
            )
        shared = set.intersection(*(set(site_plates(c)) for c in consumers)) if consumers else set()
        kinds[path] = "input"
        plates[path] = tuple(p for p in vectorized if p in shared)
    for name, site in graph.sites.items():
        kinds[name] = "deterministic" if site.is_deterministic else site.kind  # type: ignore[assignment]
        plates[name] = site_plates(name)

    dag = PlatedDAG(
        kinds=kinds,
        plates=plates,
        plate_sizes={name: graph.plates[name].size for name in vectorized},
        plate_order=tuple(vectorized),
    )
    for u, v in graph.dag.edges:
        dag.add_edge(u, v, SAME)
    for path, consumers in graph.inputs.items():
        for consumer in consumers:
            dag.add_edge(path, consumer, SAME)

    for det in [n for n in graph.topological_order if graph.sites[n].is_deterministic]:
        _contract(dag, det)
    return dag


def _contract(dag: PlatedDAG, node: str) -> None:
    """Remove ``node``, joining each of its parents to each of its children."""
    incoming = {u: p for (u, v), p in dag.edges.items() if v == node}
    outgoing = {v: p for (u, v), p in dag.edges.items() if u == node}
    for key in [k for k in dag.edges if node in k]:
        del dag.edges[key]
    mid = dag.plate_set(node)
    for parent, child in itertools.product(incoming, outgoing):
        stars: Patterns = frozenset()
        for star_a, star_b in itertools.product(incoming[parent], outgoing[child]):
            stars = add_pattern(
                stars,
                compose(
                    star_a,
                    star_b,
                    plates_a=dag.plate_set(parent),
                    plates_mid=mid,
                    plates_b=dag.plate_set(child),
                ),
            )
        dag.add_edge(parent, child, stars)
    del dag.kinds[node]
    del dag.plates[node]


# ---------------------------------------------------------------------- unrolling


def replicates(
    node: str, dag: PlatedDAG, sizes: Mapping[str, int]
) -> list[tuple[str, tuple[int, ...]]]:
    """``(node, index)`` for each replicate of ``node``, index over its plates."""
    ranges = [range(sizes[p]) for p in dag.plates[node]]
    return [(node, index) for index in itertools.product(*ranges)]


def replicate_name(node: str, plates: tuple[str, ...], index: tuple[int, ...]) -> str:
    """``"z"`` outside plates, ``"z[2]"`` in one plate, ``"z[0,1]"`` in two."""
    if not plates:
        return node
    return f"{node}[{','.join(map(str, index))}]"


def joined(
    star: StarSet,
    plates_u: tuple[str, ...],
    index_u: tuple[int, ...],
    plates_v: tuple[str, ...],
    index_v: tuple[int, ...],
) -> bool:
    """Whether replicate ``index_u`` of ``u`` is joined to ``index_v`` of ``v``."""
    where_v = dict(zip(plates_v, index_v, strict=True))
    return all(
        i == where_v[p]
        for p, i in zip(plates_u, index_u, strict=True)
        if p in where_v and p not in star
    )


def flatten(dag: PlatedDAG, sizes: Mapping[str, int]) -> PlatedDAG:
    """The unrolled DAG as a plate-free :class:`PlatedDAG` (replicates as
    nodes, in site order then index order)."""
    unrolled = unroll(dag, sizes)
    return PlatedDAG(
        kinds={n: unrolled.nodes[n]["kind"] for n in unrolled.nodes},
        plates=dict.fromkeys(unrolled.nodes, ()),
        edges={(u, v): SAME for u, v in unrolled.edges},
    )


def unroll_sizes(dag: PlatedDAG, max_replicates: int | None) -> dict[str, int]:
    """Each plate's size, capped at ``max_replicates``."""
    if max_replicates is not None and max_replicates < 1:
        raise ValueError(f"max_replicates must be at least 1, got {max_replicates}")
    return {
        p: size if max_replicates is None else min(size, max_replicates)
        for p, size in dag.plate_sizes.items()
    }


def unroll(
    dag: PlatedDAG,
    sizes: Mapping[str, int],
    edges: Mapping[tuple[str, str], Patterns] | None = None,
    coupled: Mapping[str, StarSet] | None = None,
) -> nx.DiGraph:
    """The replicate-level DAG of ``dag`` for the given plate sizes.

    Nodes are replicate names (:func:`replicate_name`) with attributes
    ``site``, ``index`` and ``kind``; each edge's ``template`` attribute is
    the plate-level edge it comes from. ``edges`` replaces ``dag.edges`` (an
    inverse graph's edges over the same nodes). ``coupled[site]`` is a star
    set of plates along which the replicates of ``site`` are sampled jointly:
    each replicate then gets every later replicate (in index order) that
    agrees with it off those plates as a parent, the autoregressive
    expansion of a joint conditional.
    """
    out = nx.DiGraph()
    reps = {node: replicates(node, dag, sizes) for node in dag.kinds}
    for node, items in reps.items():
        for _, index in items:
            out.add_node(
                replicate_name(node, dag.plates[node], index),
                site=node,
                index=index,
                kind=dag.kinds[node],
            )
    for (u, v), patterns in (dag.edges if edges is None else edges).items():
        pu, pv = dag.plates[u], dag.plates[v]
        for (_, iu), (_, iv) in itertools.product(reps[u], reps[v]):
            if any(joined(star, pu, iu, pv, iv) for star in patterns):
                out.add_edge(replicate_name(u, pu, iu), replicate_name(v, pv, iv), template=(u, v))
    for node, star in (coupled or {}).items():
        if not star:
            continue
        plates = dag.plates[node]
        items = sorted(index for _, index in reps[node])
        for a, b in itertools.combinations(items, 2):  # a < b: b is sampled first
            if joined(star, plates, a, plates, b):
                out.add_edge(
                    replicate_name(node, plates, b),
                    replicate_name(node, plates, a),
                    template=(node, node),
                )
    return out
