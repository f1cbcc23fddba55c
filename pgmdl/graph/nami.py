"""NaMI: the natural minimally faithful inverse of a model graph.

An amortized guide ``q(z | x)`` factorizes over a DAG whose roots are the
observed sites. It must not assert an independence the true posterior
``p(z | x)`` lacks (it must be *faithful*), and each edge costs a network
input, so it should be as sparse as that allows (*minimally* faithful).
The Natural Minimal I-map generator (NaMI; Webb et al. 2018, "Faithful
Inversion of Generative Models for Effective Amortized Inference",
Algorithm 1; Berger 2021, thesis §4.1) builds such an inverse by variable
elimination on the moral graph:

1. drop edge directions and *moralize* (join every two parents of a child);
2. eliminate the latent sites one at a time; the eliminated site's
   not-yet-eliminated neighbours become its parents in the inverse, and are
   joined to each other (*fill-in* edges);
3. observed sites (and model inputs) are never eliminated: they are the
   inverse's roots; the guide samples the latents in the *reverse* of the
   elimination order.

Every elimination order gives a faithful inverse. The *natural* orders
eliminate a latent only after its latent parents (``"min-fill"``: NaMI's
own choice among that frontier, the site adding the fewest fill-in edges;
``"topological"``: forward-NaMI, whose guide tends to reverse the model);
``"reverse"`` (reverse-NaMI) eliminates children first, so its guide tends to
follow the model. Once every latent has an observed descendant, each
elimination order gives a *minimally* faithful inverse: the moral graph then
shows every dependency given the data, and an eliminated site's neighbours
are joined to it by a path of not-yet-sampled sites.

A latent with *no* observed descendant is barren for the posterior
(Shachter 1986): its posterior conditional is its prior conditional, and
eliminating it like the others would marry its parents and leave edges the
posterior does not need (even in the natural orders). pgmdl sets such sites
aside before moralizing and samples them last, each from its model parents
(edge kind ``"prior"``); with this, every order is minimally faithful, which
the test suite checks on random DAGs with :func:`pgmdl.is_minimal`.

Plates are not unrolled: the algorithm runs on the plate-level graph with
replicate patterns on its edges (:mod:`pgmdl.graph.plated`), and each edge
of the result says how a parent is reached (:class:`PlateLink`). When
eliminating a site couples its own replicates (``locs[k]`` and ``locs[l]``
both explain every data point), the site needs a joint conditional over the
whole plate: :attr:`InverseGraph.joint_plates` says so.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import networkx as nx

from pgmdl.errors import InversionError, SiteNotFoundError
from pgmdl.graph.model_graph import ModelGraph, table
from pgmdl.graph.plated import (
    SAME,
    Patterns,
    PlatedDAG,
    PlateLink,
    StarSet,
    add_pattern,
    compose,
    plate_link,
    plated_dag,
)
from pgmdl.graph.time_inverse import eliminate_by_slices, loop_structure

ORDERS = ("min-fill", "topological", "reverse")
"""Named elimination orders accepted by :func:`invert`."""

INVERSE_EDGE_KINDS = ("inverse", "moral", "fill-in", "prior", "augment")
"""Kinds of inverse edges, by where the adjacency comes from: a model edge
(``"inverse"``, whichever its direction in the guide), the moralization of
two co-parents (``"moral"``), elimination (``"fill-in"``: the edge, or its
pooling over some plate, was added when a latent between the two sites was
eliminated), a model edge into a latent with no observed descendant, kept as
it is (``"prior"``), or ``augment=True`` (``"augment"``)."""


class InverseGraph:
    """The inverse of a model graph: the structure of an amortized guide.

    Nodes are the model's latent sites, observed sites and inputs (the
    latter two are roots); deterministic sites are not in it (they are
    computed, never sampled). Edge attributes: ``kind`` (see
    :data:`INVERSE_EDGE_KINDS`), ``patterns`` (replicate patterns, see
    :mod:`pgmdl.graph.plated`) and ``link`` (:class:`PlateLink`).
    ``by_slices``: a ``pyro.markov`` loop was eliminated by its slice
    (:mod:`pgmdl.graph.time_inverse`), with the same result.

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
        ...     z1 = pyro.sample("z1", dist.Normal(z2, 1.0))
        ...     pyro.sample("x", dist.Normal(z1, 1.0), obs=x)
        >>> graph = pgmdl.compile(model, torch.tensor(0.0))
        >>> inverse = pgmdl.invert(graph)  # min-fill: z2 first, z1 follows it
        >>> inverse.order, inverse.parents("z1"), inverse.parents("z2")
        (('z1', 'z2'), ('x',), ('z1',))
        >>> reverse = pgmdl.invert(graph, order="reverse")  # the guide follows the model
        >>> reverse.order, reverse.parents("z1"), reverse.fill_in_edges
        (('z2', 'z1'), ('x', 'z2'), (('x', 'z2'),))
    """

    def __init__(
        self,
        model: ModelGraph,
        dag: nx.DiGraph,
        elimination_order: Sequence[str],
        *,
        strategy: str,
        joint_plates: Mapping[str, tuple[str, ...]],
        augmented: bool,
        plated: PlatedDAG,
        prior_sites: Sequence[str] = (),
        by_slices: bool = False,
    ) -> None:
        self._model = model
        self.by_slices = by_slices
        self._dag = nx.freeze(dag)
        self._elimination = tuple(elimination_order)
        self._position = {site: i for i, site in enumerate(reversed(self._elimination))}
        self._given = tuple(n for n, kind in dag.nodes(data="kind") if kind != "latent")
        self._joint = {s: tuple(p) for s, p in joint_plates.items() if p}
        self.strategy = strategy
        self.augmented = augmented
        self._plated = plated
        self._prior = tuple(prior_sites)

    # ------------------------------------------------------------------ structure

    @property
    def model(self) -> ModelGraph:
        """The model graph this is the inverse of."""
        return self._model

    @property
    def dag(self) -> nx.DiGraph:
        """The frozen networkx DiGraph (node attrs ``kind``, ``plates``; edge
        attrs ``kind``, ``patterns``, ``link``)."""
        return self._dag

    @property
    def order(self) -> tuple[str, ...]:
        """The guide's sampling order of the latent sites (reverse elimination)."""
        return tuple(reversed(self._elimination))

    @property
    def elimination_order(self) -> tuple[str, ...]:
        """The order in which the latent sites were eliminated."""
        return self._elimination

    @property
    def latent_sites(self) -> tuple[str, ...]:
        """The latent sites, in the guide's sampling order."""
        return self.order

    @property
    def given(self) -> tuple[str, ...]:
        """The roots: observed sites and model inputs, in model order."""
        return self._given

    def parents(self, site: str) -> tuple[str, ...]:
        """The guide's parents of ``site``: given sites first (model order),
        then latents in sampling order."""
        if site not in self._dag:
            raise SiteNotFoundError(site, self._dag.nodes)
        return tuple(sorted(self._dag.predecessors(site), key=self._sort_key))

    def _sort_key(self, node: str) -> tuple[int, int]:
        if node in self._position:
            return (1, self._position[node])
        return (0, self._given.index(node))

    def edge_kind(self, parent: str, site: str) -> str:
        """Where the edge ``parent -> site`` comes from (:data:`INVERSE_EDGE_KINDS`)."""
        return self._edge(parent, site)["kind"]

    def link(self, parent: str, site: str) -> PlateLink:
        """How ``site`` reaches ``parent``'s replicates (:class:`PlateLink`)."""
        return self._edge(parent, site)["link"]

    def _edge(self, parent: str, site: str) -> dict[str, Any]:
        if not self._dag.has_edge(parent, site):
            raise KeyError(f"the inverse has no edge {parent!r} -> {site!r}")
        return self._dag.edges[parent, site]

    def edges(self, kind: str | None = None) -> tuple[tuple[str, str], ...]:
        """The inverse's edges ``(parent, site)``, by site in sampling order;
        only those of ``kind`` when given."""
        out = []
        for site in self.order:
            for parent in self.parents(site):
                if kind is None or self.edge_kind(parent, site) == kind:
                    out.append((parent, site))
        return tuple(out)

    @property
    def fill_in_edges(self) -> tuple[tuple[str, str], ...]:
        """Edges added by elimination (absent from the moral graph)."""
        return self.edges("fill-in")

    @property
    def pooled_edges(self) -> tuple[tuple[str, str], ...]:
        """Edges along which the site needs all replicates of its parent over
        some plate (a set encoder in the guide)."""
        return tuple(e for e in self.edges() if self.link(*e).pooled)

    @property
    def num_edges(self) -> int:
        return self._dag.number_of_edges()

    @property
    def joint_plates(self) -> Mapping[str, tuple[str, ...]]:
        """Latent sites whose replicates the posterior couples, with the plates
        they are coupled along: such a site needs a joint conditional over the
        whole plate (a multiset; see CompVAE), not one per replicate."""
        return MappingProxyType(self._joint)

    @property
    def prior_sites(self) -> tuple[str, ...]:
        """Latents with no observed descendant: the data say nothing about
        them beyond their parents, so the guide samples them last, each from
        its model parents (edges of kind ``"prior"``)."""
        return self._prior

    def belongs_to(self, graph: ModelGraph) -> bool:
        """Whether this is an inverse of ``graph`` (the same object or an equal graph)."""
        return self._model is graph or self._model.to_dict() == graph.to_dict()

    # ------------------------------------------------------------------ export

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description of the inverse."""
        return {
            "model": self._model.model_name,
            "strategy": self.strategy,
            "augmented": self.augmented,
            "order": list(self.order),
            "elimination_order": list(self._elimination),
            "given": list(self._given),
            "edges": [
                {
                    "parent": u,
                    "site": v,
                    "kind": self.edge_kind(u, v),
                    "same": list(self.link(u, v).same),
                    "broadcast": list(self.link(u, v).broadcast),
                    "pooled": list(self.link(u, v).pooled),
                }
                for u, v in self.edges()
            ],
            "joint_plates": {s: list(p) for s, p in self._joint.items()},
            "prior_sites": list(self._prior),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """A plain-text table: each latent in sampling order with its parents."""
        rows = [("site", "parents", "plates")]
        for site in self.order:
            parents = []
            for parent in self.parents(site):
                text = parent
                if self.edge_kind(parent, site) == "fill-in":
                    text += " (fill-in)"
                elif self.edge_kind(parent, site) == "augment":
                    text += " (augment)"
                if self.link(parent, site).pooled:
                    text += f" [pooled over {','.join(self.link(parent, site).pooled)}]"
                parents.append(text)
            plates = ",".join(self._dag.nodes[site]["plates"]) or "-"
            if site in self._joint:
                plates += f" (joint over {','.join(self._joint[site])})"
            rows.append((site, ", ".join(parents) or "-", plates))
        fill = len(self.fill_in_edges)
        lines = [
            f"NaMI inverse of {self._model.model_name} ({self.strategy}"
            + (", augmented" if self.augmented else "")
            + f"): {len(self.order)} latent sites, {self.num_edges} edges, {fill} fill-in",
            f"guide samples: {' -> '.join(self.order) or '(nothing)'}",
        ]
        lines += table(rows)
        if self._prior:
            lines.append(
                f"note: {', '.join(self._prior)} ha{'s' if len(self._prior) == 1 else 've'} no "
                "observed descendant: sampled last, from the model parents."
            )
        for site, plates in self._joint.items():
            lines.append(
                f"note: the posterior couples the replicates of {site!r} along "
                f"{', '.join(plates)}: the guide needs a joint conditional over the whole plate."
            )
        if self.by_slices:
            lines.append(
                "note: the pyro.markov loop was inverted by its slice (its first steps "
                "eliminated and the rules unrolled: pgmdl.graph.time_inverse)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"InverseGraph(model={self._model.model_name!r}, strategy={self.strategy!r}, "
            f"order={list(self.order)}, edges={self.num_edges}, fill_in={len(self.fill_in_edges)})"
        )


# ---------------------------------------------------------------------- inversion


def invert(
    graph: ModelGraph,
    order: str | Sequence[str] = "min-fill",
    augment: bool = False,
) -> InverseGraph:
    """Invert a model graph with NaMI (Webb et al. 2018, Algorithm 1).

    Args:
        graph: a compiled model (:func:`pgmdl.compile`).
        order: the elimination order of the latent sites: ``"min-fill"``
            (NaMI's natural order: among the latents whose latent parents are
            all eliminated, the one adding the fewest fill-in edges, ties
            broken by execution order), ``"topological"`` (forward-NaMI: the
            guide tends to reverse the model), ``"reverse"`` (reverse-NaMI:
            the guide tends to follow the model), or an explicit list of every
            latent site, each once.
        augment: add an edge from every observed site to every latent site
            (thesis §4.2.4: LadderVAE-style information flow to deep latents).
            The result is still faithful but no longer minimal.

    Returns:
        the :class:`InverseGraph`.

    Raises:
        InversionError: ``order`` is neither a known name nor a list of the
            latent sites (names which site is unknown, observed, repeated or
            missing, and why).
    """
    if not isinstance(graph, ModelGraph):
        raise InversionError(
            f"invert() takes a compiled ModelGraph, got {type(graph).__name__}; "
            "compile the model first: pgmdl.invert(pgmdl.compile(model, *args))"
        )
    plated = plated_dag(graph)
    strategy = order if isinstance(order, str) else "explicit"
    checked = _check_order(order, plated, graph)
    result = None
    time = loop_structure(graph) if isinstance(checked, str) else None
    if time is not None:  # a pyro.markov loop: its slice, unrolled (O(T^3) otherwise)
        result = eliminate_by_slices(plated, time, lambda dag: eliminate(dag, checked))
    by_slices = result is not None
    if result is None:
        result = eliminate(plated, checked)
    edges = dict(result.parents)
    kinds = dict(result.kinds)
    if augment:
        for site in result.order:
            for given in [n for n, k in plated.kinds.items() if k == "observed"]:
                if (given, site) not in edges:
                    edges[given, site] = _close(SAME, result.coupled[site], plated, given, site)
                    kinds[given, site] = "augment"
    return InverseGraph(
        graph,
        _to_networkx(plated, result.order, edges, kinds),
        result.order,
        strategy=strategy,
        joint_plates={
            s: tuple(p for p in plated.plate_order if p in star)
            for s, star in result.coupled.items()
        },
        augmented=augment,
        plated=plated,
        prior_sites=result.prior,
        by_slices=by_slices,
    )


@dataclass
class Elimination:
    """The raw result of :func:`eliminate` on a plate-level DAG.

    Attributes:
        order: the elimination order.
        parents: ``(parent, site) -> patterns`` of the inverse (patterns
            closed under the site's own coupling).
        kinds: ``(parent, site) -> kind`` (:data:`INVERSE_EDGE_KINDS`).
        coupled: each latent's coupled plates (empty when none).
        prior: latents with no observed descendant, in topological order:
            they are eliminated first (sampled last) from their model parents.
    """

    order: list[str]
    parents: dict[tuple[str, str], Patterns]
    kinds: dict[tuple[str, str], str]
    coupled: dict[str, StarSet]
    prior: list[str]


class _MoralGraph:
    """The moral graph of a plate-level DAG, edited by elimination."""

    def __init__(self, dag: PlatedDAG) -> None:
        self.dag = dag
        self.plates = {n: dag.plate_set(n) for n in dag.kinds}
        # Without plates every edge has the one pattern SAME: fill-in is then
        # plain graph elimination, done with set operations.
        self.flat = not any(self.plates.values())
        self.adj: dict[str, dict[str, Patterns]] = {n: {} for n in dag.kinds}
        self.origin: dict[frozenset[str], str] = {}
        parents: dict[str, list[tuple[str, Patterns]]] = {n: [] for n in dag.kinds}
        for (u, v), patterns in dag.edges.items():
            parents[v].append((u, patterns))
            for star in patterns:
                self.join(u, v, star, "inverse")
        for child, items in parents.items():
            for a, b, star in self._through(child, items):
                self.join(a, b, star, "moral")

    def _through(
        self, mid: str, items: list[tuple[str, Patterns]], coupled: StarSet = frozenset()
    ) -> list[tuple[str, str, StarSet]]:
        """The ``(a, b, star)`` joins between every two (not necessarily
        distinct) sites linked to ``mid`` by the given patterns: co-parents of
        a child (moralization) or neighbours of an eliminated site (fill-in)."""
        out = []
        for (a, pa), (b, pb) in itertools.combinations_with_replacement(items, 2):
            for sa, sb in itertools.product(pa, pb):
                star = compose(
                    sa,
                    sb,
                    plates_a=self.plates[a],
                    plates_mid=self.plates[mid],
                    plates_b=self.plates[b],
                    coupled=coupled,
                )
                out.append((a, b, star))
        return out

    def join(self, a: str, b: str, star: StarSet, kind: str) -> bool:
        """Add pattern ``star`` to the edge ``a -- b``; whether it was new."""
        if a == b and not star:
            return False  # a replicate joined to itself
        old = self.adj[a].get(b, frozenset())
        new = add_pattern(old, star)
        if new is old:
            return False
        self.adj[a][b] = new
        self.adj[b][a] = new
        key = frozenset((a, b))
        if key not in self.origin or kind == "fill-in":
            self.origin[key] = kind
        return True

    def coupling(self, w: str) -> StarSet:
        """The plates along which ``w``'s replicates are connected to each other."""
        return frozenset().union(*self.adj[w].get(w, ()))

    def fill_ins(self, w: str) -> list[tuple[str, str, StarSet]]:
        """The ``(a, b, star)`` joins eliminating ``w`` makes (new or not)."""
        items = [(a, patterns) for a, patterns in self.adj[w].items() if a != w]
        return self._through(w, items, self.coupling(w))

    def fill_in_count(self, w: str) -> int:
        """How many new patterns eliminating ``w`` would add (min-fill score)."""
        if self.flat:
            neighbours = self.adj[w].keys()
            missing = sum(len(neighbours - self.adj[a].keys()) - 1 for a in neighbours)
            return missing // 2
        pending: dict[tuple[str, str], Patterns] = {}
        count = 0
        for a, b, star in self.fill_ins(w):
            if a == b and not star:
                continue
            old = pending.get((a, b), self.adj[a].get(b, frozenset()))
            new = add_pattern(old, star)
            if new is not old:
                count += 1
                pending[a, b] = new
        return count

    def eliminate(self, w: str) -> tuple[dict[str, Patterns], StarSet, set[str]]:
        """Eliminate ``w``: its neighbours (with closed patterns), its coupled
        plates, and the nodes whose fill-in count may have changed (the
        neighbours, and the common neighbours of each new edge; with plates,
        conservatively, everything within two steps)."""
        coupled = self.coupling(w)
        neighbours = {
            a: frozenset(star | (coupled & self.plates[a]) for star in self.adj[w][a])
            for a in self.adj[w]
            if a != w
        }
        touched = set(neighbours)
        if self.flat:
            ranked = list(neighbours)
            for i, a in enumerate(ranked):
                missing = [b for b in ranked[i + 1 :] if b not in self.adj[a]]
                for b in missing:
                    self.join(a, b, frozenset(), "fill-in")
                    touched |= self.adj[a].keys() & self.adj[b].keys()
        else:
            for a, b, star in self.fill_ins(w):
                self.join(a, b, star, "fill-in")
            for a in neighbours:
                touched.update(self.adj[a])
        for a in neighbours:
            del self.adj[a][w]
        del self.adj[w]
        touched.discard(w)
        return neighbours, coupled, touched


def eliminate(dag: PlatedDAG, order: str | Sequence[str]) -> Elimination:
    """Run NaMI's elimination on a plate-level DAG.

    ``order`` is a name from :data:`ORDERS` or a checked list of latents.
    This is the algorithm behind :func:`invert`, exposed for checks against
    the unrolled graph.
    """
    prior = _prior_sites(dag)
    position = {n: i for i, n in enumerate(dag.kinds)}
    result = Elimination(order=[], parents={}, kinds={}, coupled={}, prior=prior)
    # Latents with no observed descendant go first in elimination (last in the
    # guide), each from its model parents; the rest is inverted without them.
    for site in reversed(prior):
        result.order.append(site)
        result.coupled[site] = frozenset()
        for (parent, child), patterns in dag.edges.items():
            if child == site:
                result.parents[parent, site] = patterns
                result.kinds[parent, site] = "prior"
    dag = _without(dag, set(prior))
    moral = _MoralGraph(dag)

    def record(w: str) -> set[str]:
        neighbours, coupled, touched = moral.eliminate(w)
        result.order.append(w)
        result.coupled[w] = coupled
        for a, patterns in neighbours.items():
            result.parents[a, w] = patterns
            result.kinds[a, w] = moral.origin[frozenset((a, w))]
        return touched

    if order == "min-fill":
        _min_fill(dag, moral, record, position)
    else:
        if order == "topological":
            sequence = _latent_topological(dag, position)
        elif order == "reverse":
            sequence = _latent_topological(dag, position)[::-1]
        else:
            sequence = list(order)
        for w in sequence:
            if w in dag.kinds:
                record(w)
    return result


def _prior_sites(dag: PlatedDAG) -> list[str]:
    """Latents with no observed descendant, in topological order.

    Such a site is *barren* for the posterior (Shachter 1986): summing it out
    leaves the rest of the model unchanged, so ``p(z_rest | x)`` does not
    involve it and ``p(site | everything else) = p(site | its parents)``.
    """
    g = dag.to_networkx()
    observed = [n for n, k in dag.kinds.items() if k == "observed"]
    informed = set(observed)
    for node in observed:
        informed |= nx.ancestors(g, node)
    position = {n: i for i, n in enumerate(dag.kinds)}
    return [
        n
        for n in nx.lexicographical_topological_sort(g, key=position.get)
        if dag.kinds[n] == "latent" and n not in informed
    ]


def _without(dag: PlatedDAG, drop: set[str]) -> PlatedDAG:
    if not drop:
        return dag
    return PlatedDAG(
        kinds={n: k for n, k in dag.kinds.items() if n not in drop},
        plates={n: p for n, p in dag.plates.items() if n not in drop},
        edges={e: p for e, p in dag.edges.items() if not drop & set(e)},
        plate_sizes=dag.plate_sizes,
        plate_order=dag.plate_order,
    )


def _latent_topological(dag: PlatedDAG, position: Mapping[str, int]) -> list[str]:
    g = dag.to_networkx()
    return [
        n
        for n in nx.lexicographical_topological_sort(g, key=position.get)
        if dag.kinds[n] == "latent"
    ]


def _min_fill(dag: PlatedDAG, moral: _MoralGraph, record, position: Mapping[str, int]) -> None:
    """NaMI's natural order: eliminate, among the latents whose latent parents
    are all eliminated (the frontier), one adding the fewest fill-in patterns;
    ties go to the earliest site. Scores are cached and recomputed only for
    the sites whose count the last elimination can have changed."""
    waiting = {n: 0 for n in dag.kinds if dag.kinds[n] == "latent"}
    children: dict[str, list[str]] = {n: [] for n in dag.kinds}
    for u, v in dag.edges:
        if dag.kinds[u] == "latent" and dag.kinds[v] == "latent":
            waiting[v] += 1
            children[u].append(v)
    version = dict.fromkeys(waiting, 0)
    frontier = {n for n, k in waiting.items() if k == 0}
    heap: list[tuple[int, int, str, int]] = []

    def push(n: str) -> None:
        version[n] += 1
        heapq.heappush(heap, (moral.fill_in_count(n), position[n], n, version[n]))

    for n in frontier:
        push(n)
    while heap:
        _, _, w, v = heapq.heappop(heap)
        if w not in frontier or v != version[w]:
            continue
        frontier.discard(w)
        stale = record(w)
        for child in children[w]:
            waiting[child] -= 1
            if waiting[child] == 0:
                frontier.add(child)
                stale.add(child)
        for n in stale & frontier:
            push(n)


def _close(
    patterns: Patterns, coupled: StarSet, dag: PlatedDAG, parent: str, site: str
) -> Patterns:
    shared = dag.plate_set(parent) & dag.plate_set(site)
    return frozenset(star | (coupled & shared) for star in patterns)


def _check_order(order: str | Sequence[str], dag: PlatedDAG, graph: ModelGraph) -> str | list[str]:
    if isinstance(order, str):
        if order not in ORDERS:
            raise InversionError(
                f"unknown order {order!r}: use one of {list(ORDERS)} or a list of the latent "
                f"sites {dag.latent} in elimination order"
            )
        return order
    try:
        names = list(order)
    except TypeError:
        raise InversionError(
            f"order must be one of {list(ORDERS)} or a list of latent site names, "
            f"got {type(order).__name__}"
        ) from None
    latent = dag.latent
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise InversionError(f"order[{i}] is {name!r}: the order lists site names (strings)")
        if name in seen:
            raise InversionError(
                f"order names site {name!r} twice (positions {seen[name]} and {i}); "
                "each latent site is eliminated exactly once"
            )
        seen[name] = i
        if name not in graph.sites and name not in graph.inputs:
            raise InversionError(str(SiteNotFoundError(name, latent, what="latent site")))
        kind = dag.kinds.get(name, "deterministic")
        if kind == "observed":
            raise InversionError(
                f"order names {name!r}, an observed site: observed sites are never eliminated; "
                "they are the guide's inputs (roots of the inverse). Leave it out."
            )
        if kind == "input":
            raise InversionError(
                f"order names {name!r}, a model input: inputs are given, never eliminated. "
                "Leave it out."
            )
        if kind == "deterministic":
            raise InversionError(
                f"order names {name!r}, a deterministic site: it is computed from its parents, "
                "never sampled by a guide, so it is not eliminated. Leave it out."
            )
    missing = [n for n in latent if n not in seen]
    if missing:
        raise InversionError(
            f"order misses the latent site(s) {missing}: an explicit order lists every latent "
            f"site of the model ({latent}) exactly once"
        )
    return names


def _link(dag: PlatedDAG, parent: str, site: str, patterns: Patterns) -> PlateLink:
    across = frozenset().union(*patterns)
    return plate_link(dag.plates[parent], dag.plates[site], across, dag.plate_order)


def _to_networkx(
    dag: PlatedDAG,
    order: Sequence[str],
    edges: Mapping[tuple[str, str], Patterns],
    kinds: Mapping[tuple[str, str], str],
) -> nx.DiGraph:
    out = nx.DiGraph()
    for node, kind in dag.kinds.items():
        if kind != "latent":
            out.add_node(node, kind=kind, plates=dag.plates[node])
    for node in reversed(order):
        out.add_node(node, kind="latent", plates=dag.plates[node])
    for (u, v), patterns in edges.items():
        out.add_edge(u, v, kind=kinds[u, v], patterns=patterns, link=_link(dag, u, v, patterns))
    return out
