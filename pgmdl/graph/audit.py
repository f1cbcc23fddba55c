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

Free parameters. A *global* latent (one that shares no data plate with an
observed site: a mixture's weights, a regression's coefficients) whose guide
conditional reads no data and no local latent, at most other global latents
(``AutoNormal``, ``AutoDelta``, ``AutoMultivariateNormal``, a ``pyro.param``
loc), has free parameters fitted to the whole data set, which
is right: its posterior depends on all of the data, not on one minibatch.
Such sites are listed in :attr:`GuideAudit.free`, and the dependencies the
fitted parameters stand for (the data, and other global latents: the free
sites are then mean-field among themselves) are noted, not failed. A *local*
latent (in a data plate) whose guide ignores the data is still reported:
each data point has its own posterior. In a model whose observations live in
no plate, every latent belongs to the one data point (as in
:class:`~pgmdl.NaMIGuide`'s ``global_latents="auto"``).

Supports are compared by the values they admit, not by name: a guide
passes when every value it can sample is one the model's site can take, up
to a boundary of measure zero (``positive`` within ``nonnegative``, a
LogNormal or ``exp``-transformed Normal for a HalfCauchy or Gamma site,
``independent(real, 1)`` as ``real_vector``, a sigmoid-affine Normal within
``interval(a, b)``). A guide that can sample values the model cannot take (a
Normal for a Gamma site) is a mismatch.

What a guide reads. The two programs get the same arguments from SVI, so a
guide argument is the model argument in the same call slot, whatever each
signature names it (``guide(*args)`` for ``model(x)``). Reading an argument
reads every observation that is a view of it (``obs=data[:, 0]``), the
observations computed from it when the guide reads all they were computed
from (``pad_packed_sequence(seqs)``), and the model input it is. Provenance
names arguments, not rows, so a guide site is taken to read the replicate of
its own index on the plates it shares with an observation; a site that reads
all of them (a set encoder) is found by :func:`audit_guide` by running the
guide again with the other replicates changed, or declared by the guide's
``inverse`` (:class:`~pgmdl.NaMIGuide`). A site whose replicates are sampled
jointly (a correlated multiset Gaussian) is found by probing its density:
one replicate's log-density then depends on another's value.
"""

from __future__ import annotations

import ast
import copy
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import (
    AbsTransform,
    AffineTransform,
    ComposeTransform,
    ELUTransform,
    ExpTransform,
    IndependentTransform,
    LeakyReLUTransform,
    PowerTransform,
    SigmoidTransform,
    SoftplusTransform,
    TanhTransform,
)
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions.transforms import _InverseTransform

from pgmdl.errors import ModelError
from pgmdl.graph.compile import compile_model, isolated_run
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.nami import InverseGraph
from pgmdl.graph.plated import (
    SAME,
    Patterns,
    PlatedDAG,
    PlateLink,
    merge_patterns,
    plate_link,
    plated_dag,
    unroll,
    unroll_sizes,
)
from pgmdl.graph.sites import support_name
from pgmdl.graph.tracing import ALIGNED, unwrap_distribution
from pgmdl.graph.views import ArgumentRef


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
        parent_kind: the parent's kind (``"latent"``, ``"observed"``, ``"input"``).
    """

    site: str
    parent: str
    link: PlateLink
    path: tuple[str, ...]
    given: tuple[str, ...]
    parent_kind: str = "latent"

    def __str__(self) -> str:
        text = f"{self.site} also needs {self.parent}"
        if self.link.pooled:
            text += f" (all of it over {', '.join(self.link.pooled)})"
        return text


@dataclass(frozen=True)
class SiteAudit:
    """The audit of one latent site the guide samples.

    Attributes:
        site: the latent's name.
        guide_parents: the model sites and inputs its guide conditional reads.
        needed: the smallest set of them the posterior conditional needs in
            the guide's sampling order (its Markov boundary).
        missing: needed dependencies the guide cannot represent.
        unneeded: guide parents the posterior does not need (harmless).
        is_global: the latent shares no data plate with an observed site.
        free: the guide's conditional reads no observed value, no model
            input and no local latent (at most other global latents): free
            parameters fitted to the data set (or a fixed distribution).
        absorbed: for a free global latent, the dependencies its free
            parameters stand for (observed data, inputs, other global
            latents); not failures.
    """

    site: str
    guide_parents: tuple[str, ...]
    needed: tuple[str, ...]
    missing: tuple[MissingDependency, ...]
    unneeded: tuple[str, ...]
    is_global: bool = False
    free: bool = False
    absorbed: tuple[MissingDependency, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the guide conditional can represent the posterior conditional."""
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

    :attr:`free` lists the global latents the guide gives free parameters
    (fitted to the whole data set, which is right for them); they do not
    make the audit fail.
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

    @property
    def free(self) -> tuple[str, ...]:
        """Global latents whose guide has free parameters (right for globals:
        their posterior depends on the whole data set), in the guide's order."""
        return tuple(s.site for s in self.sites if s.free and s.is_global)

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
                f"model's has {model_support!r}: it can sample values the model cannot take "
                f"(zero density there). fix: sample it from a distribution whose values lie in "
                f"{model_support!r} (for a continuous site, e.g. a Normal pushed through "
                "torch.distributions.biject_to(<the model's distribution>.support))."
            )
        for audit in self.sites:
            given = _braces(audit.guide_parents)
            if audit.free and audit.is_global:
                lines.append(_free_line(audit))
                if audit.ok:
                    continue
            elif audit.ok:
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
            if audit.free and not audit.is_global:
                lines.append(
                    f"      {audit.site} is a local latent (one per data point) and its guide "
                    "reads no data: free parameters cannot follow each data point's posterior; "
                    "amortize it (an encoder of the data)"
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
    :func:`audit`. To see which replicates of an observation a guide site
    reads, the guide also runs once more, plus once per observation and
    plate, seeded, in eval mode and without leaving parameters behind
    (skipped for a guide that declares its structure, as NaMIGuide does).

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
    with _SiteRecorder() as model_run:
        model_graph = compile_model(model, model_args=args, model_kwargs=kwargs)
    try:
        with _SiteRecorder() as guide_run:
            guide_graph = compile_model(guide, model_args=args, model_kwargs=kwargs)
    except ModelError as err:
        raise ModelError(f"the guide could not be compiled: {err}") from err
    return audit(
        model_graph,
        guide_graph,
        guide_arguments=_argument_renames(guide, model, args, kwargs),
        model_sites=model_run.sites,
        guide_sites=guide_run.sites,
        pooled_reads=_declared_pooled_reads(guide)
        or _pooled_reads(model, guide, args, kwargs, model_graph, model_run.sites),
    )


def audit(
    model: ModelGraph,
    guide: ModelGraph,
    *,
    max_replicates: int | None = 3,
    guide_arguments: Mapping[str, str] | None = None,
    model_sites: Mapping[str, Mapping[str, Any]] | None = None,
    guide_sites: Mapping[str, Mapping[str, Any]] | None = None,
    pooled_reads: Mapping[tuple[str, str], frozenset[str]] | None = None,
) -> GuideAudit:
    """:func:`audit_guide` on compiled graphs (the guide compiled as a program).

    Plated models are checked on their unrolled graphs with at most
    ``max_replicates`` replicates per plate.

    Args:
        model, guide: the compiled model and guide.
        max_replicates: replicates per plate in the unrolled check.
        guide_arguments: the model's name of each guide argument that the
            two programs name differently (``{"args[0]": "c"}`` for a guide
            ``guide(*args)`` of ``model(c)``); paths inside an argument
            (``"args[0][1]"``) follow their argument. :func:`audit_guide`
            derives it from the two signatures.
        model_sites, guide_sites: the sample sites of one run of each
            program, as Pyro's trace messages (``poutine.Trace.nodes``: each
            with ``"fn"``, ``"value"`` and ``"cond_indep_stack"``).
            Their distributions give the supports through transforms (a
            ``TransformedDistribution`` declares only its last transform's
            codomain), and show which guide sites sample the replicates of a
            plate jointly (the log-density of one replicate depends on
            another's value, as in a joint multiset conditional). Without
            them the recorded supports are compared and every guide site is
            taken to sample its replicates independently.
        pooled_reads: ``(observed site, guide site) -> plates`` along which
            the guide site's replicate reads every replicate of the
            observation, not only its own (a set encoder): provenance names
            the arguments a value reads, not which of their rows.
            :func:`audit_guide` finds them by running the guide again with
            the other replicates of each observation changed. Without it,
            a guide site reads the observation's replicate of its own index
            on the plates they share.
    """
    plated = plated_dag(model)
    structure = _guide_structure(
        model,
        guide,
        plated,
        renames=dict(guide_arguments or {}),
        model_sites=model_sites or {},
        guide_sites=guide_sites or {},
        pooled_reads=pooled_reads or {},
    )
    sizes = unroll_sizes(plated, max_replicates)
    model_dag = unroll(plated, sizes)
    guide_dag = unroll(plated, sizes, edges=structure.edges, coupled=structure.coupled)
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

    global_latents = _global_latents(plated)
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
                parent_kind=plated.kinds[parent],
            )
            for parent, pairs in sorted(missing[site].items(), key=lambda kv: _rank(plated, kv[0]))
        )
        is_global = site in global_latents
        free = all(p in global_latents for p in guide_parents)
        absorbed: tuple[MissingDependency, ...] = ()
        if free and is_global:
            # Free parameters fitted to the data set stand for the data and the other
            # global latents; a local latent sampled before it is still needed.
            absorbed = tuple(
                m for m in lacks if m.parent_kind != "latent" or m.parent in global_latents
            )
            lacks = tuple(m for m in lacks if m not in absorbed)
        sites.append(
            SiteAudit(
                site=site,
                guide_parents=guide_parents,
                needed=tuple(_ordered_sites(plated, needed[site])),
                missing=lacks,
                unneeded=tuple(p for p in guide_parents if p not in needed[site]),
                is_global=is_global,
                free=free,
                absorbed=absorbed,
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


def _global_latents(plated: PlatedDAG) -> set[str]:
    """Latents that share no vectorized plate with an observed site, when the
    observations live in one (without data plates, every latent belongs to the
    one data point: :class:`~pgmdl.NaMIGuide`'s ``global_latents="auto"`` rule)."""
    data_plates = set().union(
        *(plated.plates[n] for n, kind in plated.kinds.items() if kind == "observed")
    )
    if not data_plates:
        return set()
    return {
        n
        for n, kind in plated.kinds.items()
        if kind == "latent" and not set(plated.plates[n]) & data_plates
    }


# ---------------------------------------------------------------------- guide structure


@dataclass
class _GuideStructure:
    edges: dict[tuple[str, str], Patterns]
    coupled: dict[str, frozenset[str]]
    order: list[str]
    missing_sites: tuple[str, ...]
    unexpected_sites: tuple[str, ...]
    support_mismatches: tuple[tuple[str, str, str], ...]
    enumerated: tuple[str, ...]
    auxiliary: tuple[str, ...]
    ignored_arguments: tuple[str, ...]

    def parents(self, site: str) -> list[str]:
        return [u for (u, v) in self.edges if v == site]


def _guide_structure(
    model: ModelGraph,
    guide: ModelGraph,
    plated: PlatedDAG,
    *,
    renames: Mapping[str, str],
    model_sites: Mapping[str, Mapping[str, Any]],
    guide_sites: Mapping[str, Mapping[str, Any]],
    pooled_reads: Mapping[tuple[str, str], frozenset[str]],
) -> _GuideStructure:
    """The guide's dependencies among model sites (with the replicates each edge
    joins), and what does not match."""
    model_latent = set(plated.latent)
    enumerated = tuple(n for n in model.latent_sites if model.sites[n].enumerate == "parallel")
    bound: dict[str, tuple[str, ...]] = {}  # argument -> the observed sites it holds
    derived: dict[str, list[str]] = {}  # observed site -> the arguments it is computed from
    for name, info in model.sites.items():
        if info.bound_argument:
            bound[info.bound_argument] = (*bound.get(info.bound_argument, ()), name)
        elif info.is_observed and _value_arguments(model_sites.get(name)):
            derived[name] = _value_arguments(model_sites.get(name))

    g = nx.DiGraph()
    # Each guide input stands for model nodes (an observed site, a model input);
    # an input the model does not know is a helper node, contracted below.
    targets = {path: _input_targets(_rename(path, renames), model, bound) for path in guide.inputs}
    helpers = {path: f"input {path}" for path, known in targets.items() if not known}
    g.add_nodes_from(guide.sites)
    g.add_nodes_from(helpers.values())

    def join(parent: str, child: str, patterns: Patterns) -> None:
        if g.has_edge(parent, child):
            patterns = merge_patterns(g.edges[parent, child]["patterns"], patterns)
        g.add_edge(parent, child, patterns=patterns)

    for path, consumers in guide.inputs.items():
        for consumer in consumers:
            for node, star in targets[path] or ((helpers[path], frozenset()),):
                join(node, consumer, frozenset({star}))
    for parent, child in guide.dag.edges:
        join(parent, child, SAME)
    # An observation computed from arguments (pad_packed_sequence(seqs), x.float() / 255)
    # is read by a guide node that reads all of them.
    readers: dict[str, set[str]] = {}
    for path, consumers in guide.inputs.items():
        readers.setdefault(_rename(path, renames), set()).update(consumers)
    for name, sources in derived.items():
        for consumer in set.intersection(*(readers.get(p, set()) for p in sources)):
            join(name, consumer, SAME)

    sampled = [n for n in guide.sites if n in model_latent and n not in enumerated]
    unexpected = tuple(n for n in guide.sites if n in model.sites and model.sites[n].is_observed)
    auxiliary = tuple(
        n for n in guide.sites if n not in model.sites and not guide.sites[n].is_deterministic
    )
    masks = {plate.mask_argument for plate in model.plates.values() if plate.mask_argument}
    sources = {p for paths in derived.values() for p in paths}
    ignored = tuple(p for p in helpers if _rename(p, renames) not in masks | sources)
    keep = set(sampled) | set(plated.given)

    # Remove every node the model does not know, in guide order: helpers are
    # contracted; auxiliary latents are summed out, coupling their children.
    guide_order = {n: i for i, n in enumerate(guide.sites)}
    for node in [*helpers.values(), *guide.sites]:
        if node in keep or node not in g:
            continue
        into = {p: g.edges[p, node]["patterns"] for p in g.predecessors(node)}
        out = {c: g.edges[node, c]["patterns"] for c in g.successors(node)}
        g.remove_node(node)
        for p, first in into.items():
            for c, second in out.items():  # pooled through the helper if either link pools
                join(p, c, frozenset(a | b for a in first for b in second))
        if node in auxiliary:
            ranked = sorted(out, key=lambda c: guide_order.get(c, -1))
            for i, a in enumerate(ranked):
                for b in ranked[i + 1 :]:
                    join(a, b, SAME)
    edges = {
        (u, v): patterns
        for u, v, patterns in g.edges(data="patterns")
        if v in sampled and (u in sampled or u in plated.given)
    }
    for (u, v), plates in pooled_reads.items():
        if (u, v) in edges and plates:
            edges[u, v] = merge_patterns(edges[u, v], frozenset({frozenset(plates)}))
    coupled = {}
    for name in sampled:
        plates = _coupled_plates(guide_sites.get(name), plated.plates[name])
        if plates:
            coupled[name] = plates
    mismatches = []
    for name in sampled:
        ours, theirs = guide.sites[name], model.sites[name]
        if ours.distribution == "Delta":
            continue
        admitted = _admitted_values(guide_sites.get(name, {}).get("fn"), ours.support)
        allowed = _admitted_values(model_sites.get(name, {}).get("fn"), theirs.support)
        if not _within(admitted, allowed):
            mismatches.append((name, admitted.name, allowed.name))
    return _GuideStructure(
        edges=edges,
        coupled=coupled,
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


# ---------------------------------------------------------------------- arguments


def _input_targets(
    path: str, model: ModelGraph, bound: Mapping[str, tuple[str, ...]]
) -> tuple[tuple[str, frozenset[str]], ...]:
    """The model nodes a guide input (named as the model names its arguments)
    stands for, each with the plates along which the input reads all of the
    node's replicates: the observed sites whose values are (views of) it,
    and the model input it is (the elements no observed site holds). The
    guide's graph names arguments, not the part of one it reads, so a guide
    that reads one column of ``data`` is taken to read every observed site
    ``data`` holds. An argument the model reads aligned to a multiset plate
    (``labels@parts``) is that input; a guide that reads it whole, not
    aligned, reads every replicate along that plate."""
    for name in (path, path.rpartition(ALIGNED)[0]):
        nodes = [*bound.get(name, ()), *([name] if name in model.inputs else [])]
        if nodes:
            return tuple((node, frozenset()) for node in nodes)
    return tuple(
        (node, frozenset({plate}))
        for node in model.inputs
        for whole, _, plate in [node.rpartition(ALIGNED)]
        if whole == path
    )


def _argument_renames(
    guide: Callable[..., Any], model: Callable[..., Any], args: tuple, kwargs: dict
) -> dict[str, str]:
    """The model's name of each guide argument the two programs name differently.

    SVI calls the model and the guide with the same arguments, so the
    argument in the same call slot (position ``i`` or keyword ``k``) is the
    same value, whatever each signature calls it.
    """
    guide_slots = _argument_slots(guide, args, kwargs)
    model_slots = _argument_slots(model, args, kwargs)
    return {
        path: model_slots[slot]
        for slot, path in guide_slots.items()
        if slot in model_slots and model_slots[slot] != path
    }


def _argument_slots(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[Any, str]:
    """The argument path (as the compiler names it) of each call slot:
    ``("position", i)`` or ``("keyword", k)``."""
    slots: dict[Any, str] = {("keyword", k): k for k in kwargs}
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature: the compiler's fallback names
        slots.update({("position", i): f"args[{i}]" for i in range(len(args))})
        return slots
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    rest = next((p for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    for i in range(len(args)):
        if i < len(positional):
            slots["position", i] = positional[i].name
        elif rest is not None:
            slots["position", i] = f"{rest.name}[{i - len(positional)}]"
    return slots


def _rename(path: str, renames: Mapping[str, str]) -> str:
    """``path`` with its argument renamed (``"args[0][1]"`` -> ``"batch[1]"``)."""
    for old in sorted(renames, key=len, reverse=True):
        if path == old or (
            path.startswith(old) and not (path[len(old)].isalnum() or path[len(old)] == "_")
        ):
            return renames[old] + path[len(old) :]
    return path


# ---------------------------------------------------------------------- supports


class _SiteRecorder(Messenger):
    """Keep each sample site's distribution, value and plates (the last run's)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[str, dict[str, Any]] = {}

    def _pyro_post_sample(self, msg: dict) -> None:
        if not site_is_subsample(msg):
            self.sites[msg["name"]] = {
                "fn": msg["fn"],
                "value": msg["value"],
                "cond_indep_stack": msg["cond_indep_stack"],
            }


def _coupled_plates(site: Mapping[str, Any] | None, plates: tuple[str, ...]) -> frozenset[str]:
    """The plates (among ``plates``) along which a guide site samples its
    replicates jointly: changing the value of one replicate changes the
    log-density of another (a joint conditional seen per replicate, such as
    a multiset's correlated Gaussian). Independent replicates, the usual
    case, give the empty set."""
    if not site or not plates:
        return frozenset()
    fn = site["fn"]
    dims = {f.name: f.dim for f in site.get("cond_indep_stack", ()) if f.vectorized}
    coupled = set()
    try:
        with torch.no_grad():
            value = _plain(site["value"])
            other = _plain(fn.sample())
            density = _plain(fn.log_prob(value))
            event = len(fn.event_shape)
            for plate in plates:
                dim = dims.get(plate)
                if dim is None or value.dim() < event - dim or value.shape[dim - event] < 2:
                    continue
                changed = value.clone()
                first = [slice(None)] * value.dim()
                first[dim - event] = 0
                changed[tuple(first)] = other.expand_as(value)[tuple(first)]
                moved = _plain(fn.log_prob(changed))
                moved, before = torch.broadcast_tensors(moved, density)
                same = (moved == before) | (moved.isnan() & before.isnan())
                rest = [slice(None)] * same.dim()
                rest[dim] = slice(1, None)
                if not bool(same[tuple(rest)].all()):
                    coupled.add(plate)
    except (RuntimeError, ValueError, TypeError, NotImplementedError, IndexError):
        return frozenset()  # no sampler or density to probe: taken as independent
    return frozenset(coupled)


def _declared_pooled_reads(guide: Any) -> dict[tuple[str, str], frozenset[str]]:
    """The pooled reads a guide declares through its structure: a guide with
    an ``inverse`` :class:`~pgmdl.graph.InverseGraph` (:class:`~pgmdl.NaMIGuide`)
    reads a parent's replicates over the plates its links pool. (Its fresh
    networks may not yet depend on their inputs, so no experiment could
    show it.) Only edges that provenance shows the guide has are used."""
    inverse = getattr(guide, "inverse", None)
    if not isinstance(inverse, InverseGraph):
        return {}
    return {
        (parent, site): frozenset(inverse.link(parent, site).pooled)
        for parent, site in inverse.edges()
        if inverse.link(parent, site).pooled
    }


def _pooled_reads(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    graph: ModelGraph,
    model_sites: Mapping[str, Mapping[str, Any]],
) -> dict[tuple[str, str], frozenset[str]]:
    """Which observed replicates each guide site reads, found by experiment.

    For each observation that is a view of an argument and each plate ``p``
    it lives in, the guide runs twice (same seed, eval mode, latents
    replayed): once as given, once with the observation's replicates of
    index ``> 0`` along ``p`` changed in the argument. A guide site whose
    replicate ``0`` along ``p`` gets another density reads other replicates
    than its own: it pools the observation over ``p``. Returns
    ``(observed site, guide site) -> plates``; a probe that cannot be run
    (an argument it cannot rebuild, a guide that fails) finds nothing.
    """
    slots = _argument_slots(model, args, kwargs)
    found: dict[tuple[str, str], set[str]] = {}
    baseline = None
    for name, info in graph.sites.items():
        view = info.bound_view
        site = model_sites.get(name)
        if not info.is_observed or view is None or not view.exact or site is None:
            continue
        dims = {f.name: f.dim for f in site["cond_indep_stack"] if f.vectorized}
        event = len(site["fn"].event_shape)
        for plate in info.plates:
            if dims.get(plate) is None:
                continue
            changed = _perturbed_arguments(args, kwargs, slots, view, dims[plate] - event)
            if changed is None:
                continue
            if baseline is None:
                baseline = _guide_run(guide, args, kwargs)
                if baseline is None:
                    return {}
            other = _guide_run(guide, *changed, replay=baseline)
            if other is None:
                continue
            for reader in _changed_at_first(baseline, other, plate):
                found.setdefault((name, reader), set()).add(plate)
    return {key: frozenset(plates) for key, plates in found.items()}


def _perturbed_arguments(
    args: tuple, kwargs: dict, slots: Mapping[Any, str], view: ArgumentRef, axis: int
) -> tuple[tuple, dict] | None:
    """``(args, kwargs)`` with the elements of ``view``'s argument that the
    observed value holds at index ``> 0`` along ``axis`` changed."""
    try:
        slot, top = next(
            (slot, top)
            for slot, top in slots.items()
            if view.path == top or (view.path.startswith(top) and view.path[len(top)] in "[.")
        )
        steps = _path_steps(view.path[len(top) :])
        container = args[slot[1]] if slot[0] == "position" else kwargs[slot[1]]
        value = _read_steps(container, steps)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return None
        value = detach_provenance(value)
        index = torch.arange(value.numel()).reshape(value.shape)
        for op in view.derivation:
            if op.changes_region:
                index = op.apply(index, for_region=True)
        if index.dim() < -axis or index.shape[axis] < 2:
            return None
        others = index.narrow(axis, 1, index.shape[axis] - 1).reshape(-1).long()
        new = value.detach().clone().contiguous()
        flat = new.view(-1)
        if new.dtype == torch.bool:
            flat[others] = ~flat[others]
        elif new.is_floating_point() or new.is_complex():
            flat[others] = flat[others] + 1.0 + flat[others].abs()
        else:
            flat[others] = flat[others].flip(0)
        rebuilt = _replace_steps(container, steps, new)
    except Exception:  # noqa: BLE001 - any failure means: no probe, no pooling found
        return None
    if slot[0] == "position":
        return (*args[: slot[1]], rebuilt, *args[slot[1] + 1 :]), kwargs
    return args, {**kwargs, slot[1]: rebuilt}


def _path_steps(rest: str) -> list[Any]:
    """``"[0]['x'].y"`` as ``[0, "x", ("attr", "y")]``."""
    steps: list[Any] = []
    for item, attribute in re.findall(r"\[([^\[\]]+)\]|\.([A-Za-z_][A-Za-z_0-9]*)", rest):
        steps.append(("attr", attribute) if attribute else ast.literal_eval(item))
    return steps


def _read_steps(value: Any, steps: list[Any]) -> Any:
    for step in steps:
        value = getattr(value, step[1]) if isinstance(step, tuple) else value[step]
    return value


def _replace_steps(container: Any, steps: list[Any], new: Any) -> Any:
    """A copy of ``container`` with the value at ``steps`` replaced by ``new``."""
    if not steps:
        return new
    step, rest = steps[0], steps[1:]
    if isinstance(step, tuple):
        result = copy.copy(container)
        setattr(result, step[1], _replace_steps(getattr(container, step[1]), rest, new))
        return result
    inner = _replace_steps(container[step], rest, new)
    if isinstance(container, dict):
        return {**container, step: inner}
    if isinstance(container, list):
        return [inner if i == step else v for i, v in enumerate(container)]
    if hasattr(container, "_replace"):  # a namedtuple
        return container._replace(**{container._fields[step]: inner})
    return type(container)(inner if i == step else v for i, v in enumerate(container))


def _guide_run(guide: Callable[..., Any], args: tuple, kwargs: dict, replay: Any = None) -> Any:
    """A trace of the guide (seeded, in eval mode, no parameter left behind),
    replaying the latents of ``replay``; None if the guide fails."""
    modules = [m for m in [guide, getattr(guide, "__self__", None)] if isinstance(m, nn.Module)]
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        with isolated_run(), torch.no_grad():
            for module in modules:
                module.eval()
            torch.manual_seed(0)
            program = guide if replay is None else poutine.replay(guide, trace=replay)
            return poutine.trace(program).get_trace(*args, **kwargs)
    except Exception:  # noqa: BLE001 - a guide that cannot run this probe
        return None
    finally:
        for module, training in modes:
            module.training = training


def _changed_at_first(before: Any, after: Any, plate: str) -> list[str]:
    """Latent sites whose replicate 0 along ``plate`` has another density in
    ``after`` (same values, replayed)."""
    changed = []
    for name, node in before.nodes.items():
        if node["type"] != "sample" or node["is_observed"] or site_is_subsample(node):
            continue
        other = after.nodes.get(name)
        dims = {f.name: f.dim for f in node["cond_indep_stack"] if f.vectorized}
        if other is None or dims.get(plate) is None:
            continue
        try:
            first = node["fn"].log_prob(node["value"])
            second = other["fn"].log_prob(node["value"])
            first, second = torch.broadcast_tensors(first, second)
            dim = dims[plate]
            if first.dim() < -dim or first.shape[dim] < 2:
                continue
            a, b = first.select(dim, 0), second.select(dim, 0)
        except (RuntimeError, ValueError, IndexError, TypeError):
            continue
        if not torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True):
            changed.append(name)
    return changed


def _value_arguments(site: Mapping[str, Any] | None) -> list[str]:
    """The arguments an observed value was computed from (``pad_packed_sequence``
    of a packed argument, ``x.float() / 255``): a guide that reads all of them
    reads the observation. Empty when the run was not recorded."""
    if not site:
        return []
    refs = get_provenance(site["value"])
    return sorted({ref.path for ref in refs if isinstance(ref, ArgumentRef)})


def _plain(value: Any) -> torch.Tensor:
    """A tensor without provenance or autograd history."""
    return detach_provenance(value).detach()


@dataclass(frozen=True)
class _Values:
    """The set of values a support admits, to compare supports by meaning.

    Each element lies in ``[lower, upper]`` (floats or tensors, closedness
    ignored for continuous sets: a boundary has measure zero); ``structure``
    names a set that is not a box (``"simplex"``, ``"lower_cholesky"``...),
    with ``[lower, upper]`` bounding its elements. ``unknown`` sets are only
    equal to sets of the same name.
    """

    name: str
    discrete: bool
    lower: Any = -math.inf
    upper: Any = math.inf
    structure: str | None = None
    unknown: bool = False


_INF = math.inf

# Structured sets: (constraint class, name, element bounds), most specific first.
_STRUCTURES: tuple[tuple[type, str, float, float], ...] = (
    (type(constraints.unit_lower_cholesky), "unit_lower_cholesky", -_INF, _INF),
    (type(constraints.corr_cholesky), "corr_cholesky", -1.0, 1.0),
    (type(constraints.lower_cholesky), "lower_cholesky", -_INF, _INF),
    (type(constraints.lower_triangular), "lower_triangular", -_INF, _INF),
    (type(constraints.corr_matrix), "corr_matrix", -1.0, 1.0),
    (type(constraints.positive_definite), "positive_definite", -_INF, _INF),
    (type(constraints.positive_semidefinite), "positive_semidefinite", -_INF, _INF),
    (type(constraints.symmetric), "symmetric", -_INF, _INF),
    (type(constraints.positive_ordered_vector), "positive_ordered_vector", 0.0, _INF),
    (type(constraints.ordered_vector), "ordered_vector", -_INF, _INF),
    (type(constraints.simplex), "simplex", 0.0, 1.0),
    (type(constraints.sphere), "sphere", -1.0, 1.0),
)

# Each structured set's proper supersets among the structured sets.
_SUPERSETS: dict[str, frozenset[str]] = {
    "unit_lower_cholesky": frozenset({"lower_cholesky", "lower_triangular"}),
    "corr_cholesky": frozenset({"lower_cholesky", "lower_triangular"}),
    "lower_cholesky": frozenset({"lower_triangular"}),
    "corr_matrix": frozenset({"positive_definite", "positive_semidefinite", "symmetric"}),
    "positive_definite": frozenset({"positive_semidefinite", "symmetric"}),
    "positive_semidefinite": frozenset({"symmetric"}),
    "positive_ordered_vector": frozenset({"ordered_vector"}),
}


def _constraint_values(support: Any) -> _Values:
    """The values a ``torch`` constraint admits."""
    name = support_name(support)
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    c = constraints
    if isinstance(support, type(c.real)) or type(support) is type(c.square):
        return _Values(name, False)
    if isinstance(support, c.greater_than | c.greater_than_eq):
        return _Values(name, False, _bound(support.lower_bound), _INF)
    if isinstance(support, c.less_than):
        return _Values(name, False, -_INF, _bound(support.upper_bound))
    if isinstance(support, c.interval | c.half_open_interval):
        return _Values(name, False, _bound(support.lower_bound), _bound(support.upper_bound))
    if isinstance(support, c.integer_interval):
        return _Values(name, True, _bound(support.lower_bound), _bound(support.upper_bound))
    if isinstance(support, type(c.nonnegative_integer)):
        return _Values(name, True, _bound(support.lower_bound), _INF)
    if isinstance(support, type(c.boolean)):
        return _Values(name, True, 0.0, 1.0)
    if isinstance(support, type(c.integer)):
        return _Values(name, True)
    if isinstance(support, type(c.one_hot)):
        return _Values(name, True, 0.0, 1.0, structure="one_hot")
    if isinstance(support, c.multinomial):
        return _Values(name, True, 0.0, _bound(support.upper_bound), structure="multinomial")
    for kind, structure, lower, upper in _STRUCTURES:
        if isinstance(support, kind):
            return _Values(name, False, lower, upper, structure=structure)
    return _Values(name, bool(getattr(support, "is_discrete", False)), None, None, unknown=True)


def _admitted_values(fn: Any, support: Any) -> _Values:
    """The values a site's distribution ``fn`` can take: its support, narrowed
    through a ``TransformedDistribution``'s transforms (whose declared support
    is only the last transform's codomain). ``support`` is the recorded
    support, used when ``fn`` is not known."""
    declared = _constraint_values(support)
    if fn is None:
        return declared
    base = unwrap_distribution(fn)
    if not isinstance(base, torch.distributions.TransformedDistribution):
        return declared
    values = _admitted_values(base.base_dist, base.base_dist.support)
    for transform in base.transforms:
        values = _image(transform, values)
    return _narrowest(values, declared)


def _image(transform: Any, values: _Values) -> _Values:
    """The image of ``values`` under ``transform`` (or a superset of it)."""
    if isinstance(transform, ComposeTransform):
        for part in transform.parts:
            values = _image(part, values)
        return values
    if isinstance(transform, IndependentTransform):
        return _image(transform.base_transform, values)
    codomain = _constraint_values(transform.codomain)
    if values.unknown or values.structure is not None or values.discrete:
        return codomain
    if isinstance(transform, AbsTransform):
        lower, upper = _tensor(values.lower), _tensor(values.upper)
        low = torch.where(lower >= 0, lower, torch.where(upper <= 0, -upper, torch.zeros(())))
        high = torch.maximum(lower.abs(), upper.abs())
        return _box(low, high)
    inner = transform._inv if isinstance(transform, _InverseTransform) else transform
    monotone = (
        AffineTransform,
        ELUTransform,
        ExpTransform,
        LeakyReLUTransform,
        PowerTransform,
        SigmoidTransform,
        SoftplusTransform,
        TanhTransform,
        torch.distributions.transforms.SoftplusTransform,
    )
    if not isinstance(inner, monotone) or not _within(values, _constraint_values(transform.domain)):
        return codomain
    try:
        with torch.no_grad():
            ends = (
                _tensor(detach_provenance(transform(_tensor(values.lower)))),
                _tensor(detach_provenance(transform(_tensor(values.upper)))),
            )
            low, high = torch.minimum(*ends), torch.maximum(*ends)
    except (RuntimeError, ValueError, TypeError):
        return codomain
    if torch.isnan(low).any() or torch.isnan(high).any():
        return codomain
    return _narrowest(_box(low, high), codomain)


def _narrowest(computed: _Values, declared: _Values) -> _Values:
    """The smaller of two descriptions of one set (both contain it)."""
    if computed.unknown or computed.discrete != declared.discrete:
        return declared
    if declared.unknown:
        return computed
    if computed.structure is None and declared.structure is None:
        return _box(
            torch.maximum(*_broadcast(computed.lower, declared.lower)),
            torch.minimum(*_broadcast(computed.upper, declared.upper)),
            discrete=computed.discrete,
        )
    if _within(computed, declared):
        return computed
    return declared


def _box(lower: Any, upper: Any, *, discrete: bool = False) -> _Values:
    """An elementwise box ``[lower, upper]``, named like a constraint."""
    low, high = _scalar(lower), _scalar(upper)
    name = "integer_interval" if discrete else "interval"
    if low is not None and high is not None:
        if discrete:
            name = {
                (0.0, 1.0): "boolean",
                (0.0, _INF): "nonnegative_integer",
                (1.0, _INF): "positive_integer",
                (-_INF, _INF): "integer",
            }.get((low, high), f"integer_interval[{_number(low)}, {_number(high)}]")
        elif (low, high) == (-_INF, _INF):
            name = "real"
        elif (low, high) == (0.0, _INF):
            name = "positive"
        elif high == _INF:
            name = f"greater_than({_number(low)})"
        elif low == -_INF:
            name = f"less_than({_number(high)})"
        else:
            name = f"interval[{_number(low)}, {_number(high)}]"
    return _Values(name, discrete, lower, upper)


def _within(inner: _Values, outer: _Values) -> bool:
    """Whether every value ``inner`` admits is admitted by ``outer`` (up to a
    boundary of measure zero for continuous sets)."""
    if inner.unknown or outer.unknown:
        return inner.unknown and outer.unknown and inner.name == outer.name
    if inner.discrete != outer.discrete:
        return False
    if outer.structure is not None and not (
        inner.structure == outer.structure
        or outer.structure in _SUPERSETS.get(inner.structure or "", ())
    ):
        return False
    return _at_most(outer.lower, inner.lower) and _at_most(inner.upper, outer.upper)


def _at_most(a: Any, b: Any) -> bool:
    """``a <= b`` everywhere (with a relative tolerance for rounding)."""
    a, b = _tensor(a), _tensor(b)
    slack = torch.where(torch.isfinite(b), 1e-6 * (1.0 + b.abs()), torch.zeros(()))
    try:
        a, b, slack = torch.broadcast_tensors(a, b, slack)
    except RuntimeError:  # bounds of unrelated shapes: compare the extremes
        return bool(a.max() <= (b - slack.max()).min() + 2 * slack.max())
    return bool((a <= b + slack).all())


def _broadcast(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _tensor(a), _tensor(b)
    try:
        return torch.broadcast_tensors(a, b)
    except RuntimeError:  # unrelated shapes: keep the extremes
        return (a.min(), b.min()) if a.max() <= b.min() else (a.max(), b.max())


def _tensor(value: Any) -> torch.Tensor:
    value = detach_provenance(value)
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def _bound(value: Any) -> Any:
    value = detach_provenance(value)
    return _tensor(value) if isinstance(value, torch.Tensor) else float(value)


def _scalar(value: Any) -> float | None:
    """``value`` as one number, or None if its elements differ."""
    t = _tensor(value)
    if t.numel() == 0:
        return None
    first = t.reshape(-1)[0]
    return float(first) if bool((t == first).all()) else None


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


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
    return plate_link(pa, ps, across, plated.plate_order)


def _rank(plated: PlatedDAG, node: str) -> int:
    return list(plated.kinds).index(node)


def _ordered_sites(plated: PlatedDAG, names) -> list[str]:
    return sorted(set(names), key=lambda n: _rank(plated, n))


def _ordered(dag: nx.DiGraph, names) -> list[str]:
    position = {n: i for i, n in enumerate(dag.nodes)}
    return sorted(names, key=position.__getitem__)


def _free_line(audit: SiteAudit) -> str:
    """The report line of a global latent with free parameters."""
    line = (
        f"  free {audit.site}: global latent with free parameters, fitted to the whole "
        "data set (right for a global latent)"
    )
    data = [m.parent for m in audit.absorbed if m.parent not in _latent_parents(audit)]
    latents = _latent_parents(audit)
    if data:
        line += f"; they stand for its dependence on {', '.join(data)}"
    if latents:
        line += (
            f"; q({audit.site}) ignores {', '.join(latents)} (mean-field: a joint guide "
            "over them, or conditioning on them, would represent that dependence)"
        )
    return line


def _latent_parents(audit: SiteAudit) -> list[str]:
    return [m.parent for m in audit.absorbed if m.parent_kind == "latent"]


def _braces(names) -> str:
    return "{" + ", ".join(names) + "}"
