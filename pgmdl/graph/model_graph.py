"""The Bayesian network of a Pyro program, as compiled by :func:`pgmdl.compile`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import networkx as nx

from pgmdl.errors import SiteNotFoundError
from pgmdl.graph.sites import PlateInfo, SiteInfo

EDGE_KINDS = ("data", "control")
"""Kinds of model edges: ``"data"`` (the child's distribution is computed from
the parent's value) and ``"control"`` (the parent's value left PyTorch through
Python control flow before the child was created; a conservative edge)."""


class ModelGraph:
    """A Pyro program's Bayesian network: sites, directed dependencies, plates.

    Nodes are site names. Each node carries its :class:`~pgmdl.graph.sites.SiteInfo`
    under the ``"info"`` attribute; each edge carries its ``"kind"`` (see
    :data:`EDGE_KINDS`). Instances are immutable: :attr:`dag` is a frozen
    :class:`networkx.DiGraph` (copy it with ``nx.DiGraph(graph.dag)`` to edit).

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> graph = pgmdl.compile(model, torch.zeros(3))
        >>> graph.latent_sites, graph.observed_sites, graph.parents("x")
        (('z',), ('x',), ('z',))
        >>> graph.plates["data"].size
        3
    """

    def __init__(
        self,
        sites: Iterable[SiteInfo],
        edges: Iterable[tuple[str, str, str]],
        plates: Iterable[PlateInfo],
        *,
        inputs: Mapping[str, Iterable[str]] | None = None,
        params: Iterable[str] = (),
        model_name: str = "model",
        dynamic_sites: Iterable[str] = (),
    ) -> None:
        dag = nx.DiGraph(name=model_name)
        self._sites = {site.name: site for site in sorted(sites, key=lambda s: s.order)}
        for name, info in self._sites.items():
            dag.add_node(name, info=info)
        for parent, child, kind in edges:
            if kind not in EDGE_KINDS:
                raise ValueError(f"edge kind must be one of {EDGE_KINDS}, got {kind!r}")
            dag.add_edge(parent, child, kind=kind)
        self._dag = nx.freeze(dag)
        self._plates = {plate.name: plate for plate in plates}
        self._inputs = {path: tuple(consumers) for path, consumers in (inputs or {}).items()}
        self._params = tuple(params)
        self.model_name = model_name
        self.dynamic_sites = tuple(dynamic_sites)

    # ------------------------------------------------------------------ sites

    @property
    def dag(self) -> nx.DiGraph:
        """The frozen networkx DiGraph of sites (node attr ``info``, edge attr ``kind``)."""
        return self._dag

    @property
    def sites(self) -> Mapping[str, SiteInfo]:
        """Every site's metadata, in execution order."""
        return MappingProxyType(self._sites)

    def __getitem__(self, name: str) -> SiteInfo:
        return self.site(name)

    def __contains__(self, name: object) -> bool:
        return name in self._sites

    def __iter__(self):
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def site(self, name: str) -> SiteInfo:
        """The metadata of site ``name``."""
        try:
            return self._sites[name]
        except KeyError:
            raise SiteNotFoundError(name, self._sites) from None

    @property
    def latent_sites(self) -> tuple[str, ...]:
        """Latent (unobserved, non-deterministic) sites, in execution order."""
        return tuple(n for n, s in self._sites.items() if s.is_latent)

    @property
    def observed_sites(self) -> tuple[str, ...]:
        """Observed sites (``obs=`` given), in execution order."""
        return tuple(n for n, s in self._sites.items() if s.is_observed)

    @property
    def deterministic_sites(self) -> tuple[str, ...]:
        """``pyro.deterministic`` sites (and latent ``Delta`` sites), in execution order."""
        return tuple(n for n, s in self._sites.items() if s.is_deterministic)

    def parents(self, site: str) -> tuple[str, ...]:
        """The parents of ``site``, in execution order."""
        self.site(site)
        return tuple(sorted(self._dag.predecessors(site), key=self._order))

    def children(self, site: str) -> tuple[str, ...]:
        """The children of ``site``, in execution order."""
        self.site(site)
        return tuple(sorted(self._dag.successors(site), key=self._order))

    def edge_kind(self, parent: str, child: str) -> str:
        """``"data"`` or ``"control"`` for the edge ``parent -> child``."""
        return self._dag.edges[parent, child]["kind"]

    @property
    def topological_order(self) -> tuple[str, ...]:
        """A topological order of the sites, breaking ties by execution order.

        It differs from execution order only when a site reads a model argument
        that a *later* observed site declares.
        """
        return tuple(nx.lexicographical_topological_sort(self._dag, key=self._order))

    def _order(self, name: str) -> int:
        return self._sites[name].order

    # ------------------------------------------------------------------ plates and inputs

    @property
    def plates(self) -> Mapping[str, PlateInfo]:
        """Every plate by name, in order of first use."""
        return MappingProxyType(self._plates)

    @property
    def inputs(self) -> Mapping[str, tuple[str, ...]]:
        """Model arguments that feed sites without being any site's value, with
        the sites they feed (a conditional model's context)."""
        return MappingProxyType(self._inputs)

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the ``pyro.param`` / ``pyro.module`` parameters the model used."""
        return self._params

    # ------------------------------------------------------------------ export

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description of the graph."""
        return {
            "model": self.model_name,
            "sites": [site.to_dict() for site in self._sites.values()],
            "edges": [
                {"parent": u, "child": v, "kind": kind}
                for u, v, kind in sorted(
                    self._dag.edges(data="kind"),
                    key=lambda e: (self._order(e[1]), self._order(e[0])),
                )
            ],
            "plates": [plate.to_dict() for plate in self._plates.values()],
            "inputs": {path: list(sites) for path, sites in self._inputs.items()},
            "params": list(self._params),
            "dynamic_sites": list(self.dynamic_sites),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """A plain-text table of sites (kind, distribution, support, shapes,
        plates, parents), then plates and inputs: what ``pgmdl inspect`` prints."""
        header = ("site", "kind", "distribution", "support", "batch", "event", "plates", "parents")
        rows = [header]
        for name, site in self._sites.items():
            rows.append(
                (
                    name,
                    site.kind,
                    site.distribution,
                    site.support_name,
                    _shape(site.batch_shape),
                    _shape(site.event_shape),
                    ",".join(site.plates) or "-",
                    ", ".join(
                        p + (" (control)" if self.edge_kind(p, name) == "control" else "")
                        for p in self.parents(name)
                    )
                    or "-",
                )
            )
        lines = [f"model {self.model_name}: {len(self)} sites, {self._dag.number_of_edges()} edges"]
        lines += table(rows)
        if self._plates:
            lines += ["", "plates:"]
            prow = [("plate", "size", "subsample", "dim", "sites")]
            for plate in self._plates.values():
                prow.append(
                    (
                        plate.name,
                        str(plate.size),
                        str(plate.subsample_size),
                        "-" if plate.dim is None else str(plate.dim),
                        ", ".join(plate.sites),
                    )
                )
            lines += table(prow)
        if self._inputs:
            lines += ["", "inputs (model arguments that are not site values):"]
            lines += [f"  {path} -> {', '.join(sites)}" for path, sites in self._inputs.items()]
        bound = {
            n: s.bound_view.describe() if s.bound_view is not None else s.bound_argument
            for n, s in self._sites.items()
            if s.bound_argument
        }
        if bound:
            lines += ["", "observed values come from arguments:"]
            lines += [f"  {n} <- {arg}" for n, arg in bound.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        plates = {name: plate.size for name, plate in self._plates.items()}
        return (
            f"ModelGraph(model={self.model_name!r}, latent={list(self.latent_sites)}, "
            f"observed={list(self.observed_sites)}, "
            f"deterministic={list(self.deterministic_sites)}, plates={plates})"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as aligned text lines (two-space indent), the first row a
    header underlined with dashes; the summaries of graphs and inverses use it."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        out.append(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
        if k == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out
