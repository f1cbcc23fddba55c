"""Audit a hand-written guide against its model's posterior dependencies.

:func:`audit_guide` compiles the guide with the same compiler as the model
(:func:`pgmdl.compile`): each guide sample site's parents are the guide
sites and model arguments its distribution was computed from. An argument
that the model observes (``obs=x``) stands for the observed site.

For each latent ``v`` the guide samples, let ``U`` be what the guide has at
hand when it samples ``v``: the observed sites, the model inputs and the
latents it sampled before. The smallest set of inputs ``q(v | ...)`` needs
to represent the true posterior conditional ``p(v | U)`` is the Markov
boundary of ``v`` within ``U``::

    B(v) = { u in U : v is d-connected to u given U - {u} in the model }

(unique, since d-separation satisfies the intersection property). The
guide is faithful exactly when every ``B(v)`` is among ``v``'s guide
parents; each ``u`` in ``B(v)`` that is not is a dependency the guide cannot
represent, reported with an active path of the model that explains it.

Guide sites that are not model sites are handled the way Pyro's ELBOs see
them: ``pyro.deterministic`` helpers are contracted, and auxiliary latents
(``AutoMultivariateNormal``'s joint latent, ``infer={"is_auxiliary": True}``)
are summed out, which couples everything they feed. Model latents marked for
enumeration are summed out by ``TraceEnum_ELBO`` and belong in no guide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from pgmdl.errors import ModelError
from pgmdl.graph.compile import compile_model
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.nami import PlateLink
from pgmdl.graph.plated import SAME, PlatedDAG, plated_dag, unroll, unroll_sizes


@dataclass(frozen=True)
class MissingDependency:
    """A posterior dependency the guide cannot represent.

    Attributes:
        site: the latent site whose guide conditional misses it.
        parent: the site it should condition on (observed, input or latent).
        link: how the missing parent's replicates are reached (plated models).
        path: an active path of the model between the two (replicate names),
            given what the guide had sampled, as ``("z1", "->", "x", "<-", "z2")``.
        given: what the guide had sampled or observed (for ``path``).
    """

    site: str
    parent: str
    link: PlateLink
    path: tuple[str, ...]
    given: tuple[str, ...]

    def __str__(self) -> str:
        text = f"{self.site} also needs {self.parent}"
        if self.link.pooled:
            text += f" (all of it over {', '.join(self.link.pooled)})"
        return text


@dataclass(frozen=True)
class SiteAudit:
    """The audit of one latent site the guide samples."""

    site: str
    guide_parents: tuple[str, ...]
    needed: tuple[str, ...]
    missing: tuple[MissingDependency, ...]
    unneeded: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class GuideAudit:
    """The result of :func:`audit_guide`: what a guide can and cannot represent.

    Attributes:
        model: the model's name.
        guide: the guide's name.
        sites: one :class:`SiteAudit` per model latent the guide samples, in
            the guide's order.
        missing_sites: model latents the guide never samples.
        unexpected_sites: guide sample sites the model observes.
        support_mismatches: ``(site, guide support, model support)`` where they differ.
        enumerated: model latents summed out by enumeration (left out of the guide).
        auxiliary: guide latents that are not model sites (summed out).
        ignored_arguments: guide arguments that are neither observed data nor
            model inputs.
    """

    model: str
    guide: str
    sites: tuple[SiteAudit, ...]
    missing_sites: tuple[str, ...] = ()
    unexpected_sites: tuple[str, ...] = ()
    support_mismatches: tuple[tuple[str, str, str], ...] = ()
    enumerated: tuple[str, ...] = ()
    auxiliary: tuple[str, ...] = ()
    ignored_arguments: tuple[str, ...] = ()
    _order: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """Whether the guide samples every latent, nothing else, with supports
        that match, and can represent the true posterior."""
        return not (
            self.missing_sites
            or self.unexpected_sites
            or self.support_mismatches
            or any(not s.ok for s in self.sites)
        )

    def __bool__(self) -> bool:
        return self.ok

    @property
    def missing(self) -> tuple[MissingDependency, ...]:
        """Every missing dependency, site by site."""
        return tuple(m for s in self.sites for m in s.missing)

    def site(self, name: str) -> SiteAudit:
        for audit in self.sites:
            if audit.site == name:
                return audit
        raise KeyError(f"the guide does not sample {name!r}")

    def report(self) -> str:
        """The audit in plain language."""
        verdict = "can represent the posterior" if self.ok else "CANNOT represent the posterior"
        lines = [f"guide {self.guide} for model {self.model}: {verdict}"]
        if self._order:
            lines.append(f"  the guide samples: {' -> '.join(self._order)}")
        for name in self.missing_sites:
            lines.append(
                f"  - {name}: the guide never samples this latent of the model; every latent "
                "the model samples must be sampled by the guide (or enumerated)."
            )
        for name in self.unexpected_sites:
            lines.append(
                f"  - {name}: the guide samples it but the model observes it; remove it from "
                "the guide."
            )
        for name, guide_support, model_support in self.support_mismatches:
            lines.append(
                f"  - {name}: the guide's distribution has support {guide_support!r} but the "
                f"model's has {model_support!r}; samples outside the model's support have "
                "zero density."
            )
        for audit in self.sites:
            given = _braces(audit.guide_parents)
            if audit.ok:
                lines.append(f"  ok {audit.site}: q({audit.site} | {given[1:-1] or '-'}) suffices")
                continue
            need = ", ".join(m.parent for m in audit.missing)
            lines.append(
                f"  - {audit.site}: sampled from {given} but the posterior also needs {need}."
            )
            for m in audit.missing:
                why = " ".join(m.path)
                lines.append(
                    f"      {m.parent}: in the model, {m.path[0]} and {m.path[-1]} are still "
                    f"dependent given {_braces(m.given)}; active path: {why}"
                )
                if m.link.pooled:
                    lines.append(
                        f"      {m.parent} is needed over all of {', '.join(m.link.pooled)}: "
                        "pool its replicates (a permutation-invariant set encoder)"
                    )
            lines.append(
                f"      fix: condition {audit.site} on {_braces(audit.needed)} "
                "(the smallest set that suffices in this sampling order)"
            )
        unneeded = [(a.site, a.unneeded) for a in self.sites if a.unneeded]
        for name, extra in unneeded:
            lines.append(
                f"  note: {name} reads {', '.join(extra)}, which the posterior does not need "
                "in this order (harmless, but costs network inputs)"
            )
        if self.enumerated:
            lines.append(
                f"  note: {', '.join(self.enumerated)} enumerated by the model "
                "(summed out by TraceEnum_ELBO), correctly left out of the guide"
            )
        if self.auxiliary:
            lines.append(
                f"  note: auxiliary guide latents {', '.join(self.auxiliary)} summed out "
                "(they couple the sites they feed)"
            )
        if self.ignored_arguments:
            lines.append(
                f"  note: the guide reads argument(s) {', '.join(self.ignored_arguments)}, "
                "which the model neither observes nor uses as input"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def audit_guide(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
) -> GuideAudit:
    """Report each posterior dependency a hand-written guide cannot represent.

    Both programs are compiled with ``(*args, **kwargs)`` (the guide takes
    the model's arguments, as Pyro's SVI calls it), then compared by
    :func:`audit`.

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     a = pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     b = pyro.sample("b", dist.Normal(a, 1.0))
        ...     pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)
        >>> def guide(x):  # forgets that b depends on a
        ...     pyro.sample("a", dist.Normal(x, 1.0))
        ...     pyro.sample("b", dist.Normal(x, 1.0))
        >>> result = pgmdl.audit_guide(model, guide, torch.tensor(0.0))
        >>> result.ok, [str(m) for m in result.missing]
        (False, ['b also needs a'])
    """
    model_graph = compile_model(model, args, kwargs)
    try:
        guide_graph = compile_model(guide, args, kwargs)
    except ModelError as err:
        raise ModelError(f"the guide could not be compiled: {err}") from err
    return audit(model_graph, guide_graph)


def audit(model: ModelGraph, guide: ModelGraph, *, max_replicates: int | None = 3) -> GuideAudit:
    """:func:`audit_guide` on compiled graphs (the guide compiled as a program).

    Plated models are checked on their unrolled graphs with at most
    ``max_replicates`` replicates per plate.
    """
    plated = plated_dag(model)
    structure = _guide_structure(model, guide, plated)
    sizes = unroll_sizes(plated, max_replicates)
    model_dag = unroll(plated, sizes)
    guide_dag = unroll(plated, sizes, edges=structure.edges)
    sampled = set(structure.order)
    position = {site: i for i, site in enumerate(structure.order)}
    replicate_order = [
        n
        for n in nx.lexicographical_topological_sort(
            guide_dag,
            key=lambda n: (
                position.get(guide_dag.nodes[n]["site"], -1),
                guide_dag.nodes[n]["index"],
            ),
        )
        if guide_dag.nodes[n]["site"] in sampled
    ]

    before = {n for n, kind in guide_dag.nodes(data="kind") if kind != "latent"}
    needed: dict[str, set[str]] = {s: set() for s in structure.order}
    missing: dict[str, dict[str, list[tuple[str, str]]]] = {s: {} for s in structure.order}
    examples: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for v in replicate_order:
        site = guide_dag.nodes[v]["site"]
        parents = set(guide_dag.predecessors(v))
        for u in before:
            rest = before - {u}
            if nx.is_d_separator(model_dag, {v}, {u}, rest):
                continue
            parent_site = model_dag.nodes[u]["site"]
            needed[site].add(parent_site)
            if u not in parents:
                missing[site].setdefault(parent_site, []).append((u, v))
                if (site, parent_site) not in examples:
                    path = _active_path(model_dag, v, u, rest)
                    examples[site, parent_site] = (path, tuple(_ordered(model_dag, rest)))
        before.add(v)

    sites = []
    for site in structure.order:
        guide_parents = tuple(_ordered_sites(plated, structure.parents(site)))
        lacks = tuple(
            MissingDependency(
                site=site,
                parent=parent,
                link=_link(plated, parent, site, pairs, guide_dag),
                path=examples[site, parent][0],
                given=examples[site, parent][1],
            )
            for parent, pairs in sorted(missing[site].items(), key=lambda kv: _rank(plated, kv[0]))
        )
        sites.append(
            SiteAudit(
                site=site,
                guide_parents=guide_parents,
                needed=tuple(_ordered_sites(plated, needed[site])),
                missing=lacks,
                unneeded=tuple(p for p in guide_parents if p not in needed[site]),
            )
        )
    return GuideAudit(
        model=model.model_name,
        guide=guide.model_name,
        sites=tuple(sites),
        missing_sites=structure.missing_sites,
        unexpected_sites=structure.unexpected_sites,
        support_mismatches=structure.support_mismatches,
        enumerated=structure.enumerated,
        auxiliary=structure.auxiliary,
        ignored_arguments=structure.ignored_arguments,
        _order=tuple(structure.order),
    )


# ---------------------------------------------------------------------- guide structure


@dataclass
class _GuideStructure:
    edges: dict[tuple[str, str], frozenset]
    order: list[str]
    missing_sites: tuple[str, ...]
    unexpected_sites: tuple[str, ...]
    support_mismatches: tuple[tuple[str, str, str], ...]
    enumerated: tuple[str, ...]
    auxiliary: tuple[str, ...]
    ignored_arguments: tuple[str, ...]

    def parents(self, site: str) -> list[str]:
        return [u for (u, v) in self.edges if v == site]


def _guide_structure(model: ModelGraph, guide: ModelGraph, plated: PlatedDAG) -> _GuideStructure:
    """The guide's dependencies among model sites, and what does not match."""
    model_latent = set(plated.latent)
    enumerated = tuple(n for n in model.latent_sites if model.sites[n].enumerate == "parallel")
    bound = {s.bound_argument: n for n, s in model.sites.items() if s.bound_argument}

    g = nx.DiGraph()
    names: dict[str, str] = {}  # guide node -> model node
    for path in guide.inputs:
        if path in bound:
            names[path] = bound[path]
        elif path in model.inputs:
            names[path] = path
    for node in guide.sites:
        names.setdefault(node, node)
    g.add_nodes_from(names.get(n, n) for n in [*guide.inputs, *guide.sites])
    for path, consumers in guide.inputs.items():
        for consumer in consumers:
            g.add_edge(names.get(path, path), consumer)
    g.add_edges_from(guide.dag.edges)

    sampled = [n for n in guide.sites if n in model_latent and n not in enumerated]
    unexpected = tuple(n for n in guide.sites if n in model.sites and model.sites[n].is_observed)
    auxiliary = tuple(
        n for n in guide.sites if n not in model.sites and not guide.sites[n].is_deterministic
    )
    ignored = tuple(p for p in guide.inputs if p not in names)
    keep = set(sampled) | set(plated.given)

    # Remove every node the model does not know, in guide order: helpers are
    # contracted; auxiliary latents are summed out, coupling their children.
    guide_order = {n: i for i, n in enumerate(guide.sites)}
    for node in [*guide.inputs, *guide.sites]:
        node = names.get(node, node)
        if node in keep or node not in g:
            continue
        parents, children = list(g.predecessors(node)), list(g.successors(node))
        g.remove_node(node)
        g.add_edges_from((p, c) for p in parents for c in children)
        if node in auxiliary:
            ranked = sorted(children, key=lambda c: guide_order.get(c, -1))
            g.add_edges_from((a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :])
    edges = {
        (u, v): SAME for u, v in g.edges if v in sampled and (u in sampled or u in plated.given)
    }
    mismatches = []
    for name in sampled:
        ours, theirs = guide.sites[name], model.sites[name]
        if ours.distribution == "Delta" or ours.support_name == theirs.support_name:
            continue
        mismatches.append((name, ours.support_name, theirs.support_name))
    return _GuideStructure(
        edges=edges,
        order=sampled,
        missing_sites=tuple(
            n for n in model.latent_sites if n not in sampled and n not in enumerated
        ),
        unexpected_sites=unexpected,
        support_mismatches=tuple(mismatches),
        enumerated=enumerated,
        auxiliary=auxiliary,
        ignored_arguments=ignored,
    )


# ---------------------------------------------------------------------- explanations


def _active_path(dag: nx.DiGraph, source: str, target: str, given: set[str]) -> tuple[str, ...]:
    """An active (d-connecting) path from ``source`` to ``target`` given ``given``,
    as ``(node, arrow, node, ...)`` with arrows ``"->"`` / ``"<-"`` (Bayes ball,
    Koller & Friedman 2009, Algorithm 3.1, with back-pointers)."""
    opened = set(given)
    for node in given:
        opened |= nx.ancestors(dag, node)
    start = (source, "up")
    previous: dict[tuple[str, str], tuple[str, str] | None] = {start: None}
    queue = [start]
    found = None
    while queue and found is None:
        state = queue.pop(0)
        node, direction = state
        moves = []
        if direction == "up" and node not in given:
            moves += [(p, "up") for p in dag.predecessors(node)]
            moves += [(c, "down") for c in dag.successors(node)]
        elif direction == "down":
            if node not in given:
                moves += [(c, "down") for c in dag.successors(node)]
            if node in opened:
                moves += [(p, "up") for p in dag.predecessors(node)]
        for move in moves:
            if move not in previous:
                previous[move] = state
                if move[0] == target:
                    found = move
                    break
                queue.append(move)
    if found is None:
        return (source, "...", target)
    states = []
    cursor: tuple[str, str] | None = found
    while cursor is not None:
        states.append(cursor)
        cursor = previous[cursor]
    states.reverse()
    path = [states[0][0]]
    for (_, _), (node, direction) in zip(states, states[1:], strict=False):
        path += ["<-" if direction == "up" else "->", node]
    return tuple(path)


def _link(
    plated: PlatedDAG, parent: str, site: str, pairs: list[tuple[str, str]], dag: nx.DiGraph
) -> PlateLink:
    pa, ps = plated.plates[parent], plated.plates[site]
    across = set()
    for u, v in pairs:
        where_u = dict(zip(pa, dag.nodes[u]["index"], strict=True))
        where_v = dict(zip(ps, dag.nodes[v]["index"], strict=True))
        across |= {p for p in where_u if p in where_v and where_u[p] != where_v[p]}
    pooled = (set(pa) - set(ps)) | across
    return PlateLink(
        same=tuple(p for p in pa if p in ps and p not in pooled),
        broadcast=tuple(p for p in ps if p not in pa),
        pooled=tuple(p for p in plated.plate_order if p in pooled),
    )


def _rank(plated: PlatedDAG, node: str) -> int:
    return list(plated.kinds).index(node)


def _ordered_sites(plated: PlatedDAG, names) -> list[str]:
    return sorted(set(names), key=lambda n: _rank(plated, n))


def _ordered(dag: nx.DiGraph, names) -> list[str]:
    position = {n: i for i, n in enumerate(dag.nodes)}
    return sorted(names, key=position.__getitem__)


def _braces(names) -> str:
    return "{" + ", ".join(names) + "}"
