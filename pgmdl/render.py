"""Drawing compiled graphs with Graphviz.

:func:`render` returns a :class:`graphviz.Digraph`. The drawing conventions
follow the graphical-models literature (Bishop 2006, ch. 8):

* plates are boxes (Graphviz clusters) labelled with their name and size;
  a multiset plate (sets of varying size, :func:`pgmdl.multiset.multiset_plate`)
  is a dashed, rounded box labelled ``parts (multiset, K ≤ K_max)``;
* observed sites are shaded, latent sites are white ellipses;
* deterministic sites are dashed ellipses;
* model inputs (a conditional model's context argument) are dashed boxes;
* a structured observation (:mod:`pgmdl.observe`: ``x = f(·) + ε`` and its
  noise scale) has its description under the site's name;
* edges are styled by kind (:data:`EDGE_STYLES`): a ``"control"`` edge
  (a dependency through Python control flow) is dotted, an input's edges
  are dashed;
* in a guide panel (``render(..., guide="nami")``), fill-in edges are dashed
  red, pooled edges thick with a double arrowhead, and a site needing a
  joint conditional over a plate has a double border;
* a drawing with a guide panel has a legend (:func:`add_legend`) explaining
  the node, plate and edge styles it uses, and only those.

Names are those the user wrote: sites by their names, model inputs by the
argument's path (``x``, ``batch['x']``). An argument a multiset plate moved
to its layout (:meth:`pgmdl.multiset.MultisetPlate.align`; named
``"labels@parts"`` inside the graph) is drawn as the argument, ``labels``,
inside the plate's box.

A drawing is made of *panels*, one per graph; node identifiers are prefixed
with the panel's name so several graphs (a model and, later, its inference
network) can be drawn side by side in one figure.

When Graphviz's ``dot`` program is missing, :func:`render` still returns the
graph and writes its DOT source (``.gv``) instead of an image, with a
:class:`~pgmdl.errors.RenderWarning` saying how to install Graphviz. Writing
never creates, overwrites or removes any file but the one requested (and
that fallback source, which never replaces a file pgmdl did not write).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import graphviz

from pgmdl.arguments import model_arguments
from pgmdl.errors import ModelError, RenderWarning
from pgmdl.graph import InverseGraph, ModelGraph, compile_model, invert
from pgmdl.graph.time import time_structure
from pgmdl.graph.tracing import ALIGNED
from pgmdl.guides.plan import GuidePlan, plan_guide

EDGE_STYLES: dict[str, dict[str, str]] = {
    "data": {},
    "control": {"style": "dotted", "color": "gray40"},
    "input": {"style": "dashed", "color": "gray40"},
    # inverse (guide) edges, by origin (pgmdl.graph.nami.INVERSE_EDGE_KINDS)
    "inverse": {},
    "moral": {"color": "gray35"},
    "fill-in": {"style": "dashed", "color": "firebrick"},
    "prior": {"color": "gray55"},
    "augment": {"style": "dotted", "color": "steelblue"},
    "mean-field": {"style": "dashed", "color": "steelblue"},
}
"""Graphviz attributes of each edge kind: model edges (``data``,
``control``, ``input``) and inverse edges (``inverse``, ``moral``,
``fill-in``, ``prior``, ``augment``; ``mean-field``: a given node a
mean-field plan conditions a site on, not an edge of the inverse)."""

POOLED_EDGE_STYLE: dict[str, str] = {"penwidth": "2.5", "arrowhead": "veevee"}
"""Added to an inverse edge along which the site pools all replicates of its
parent over some plate (a set encoder in the guide)."""

JOINT_NODE_STYLE: dict[str, str] = {"peripheries": "2"}
"""Added to a guide site whose replicates need a joint conditional over a plate."""

NODE_STYLES: dict[str, dict[str, str]] = {
    "latent": {"shape": "ellipse", "style": "solid"},
    "observed": {"shape": "ellipse", "style": "filled", "fillcolor": "gray80"},
    "deterministic": {"shape": "ellipse", "style": "dashed"},
    "input": {"shape": "box", "style": "dashed", "fontcolor": "gray30"},
}
"""Graphviz attributes of each site kind, and of model inputs (arguments
that feed sites without being any site's value)."""

LEGEND: dict[str, str] = {
    "node:latent": "latent site (sampled)",
    "node:observed": "observed site (data)",
    "node:deterministic": "deterministic site (pyro.deterministic)",
    "node:input": "model input: an argument that is not a site",
    "joint": "guide: one joint conditional for all replicates of a plate",
    "plate": "plate: replicates (name, size N);\nan edge entering it is shared by every replicate",
    "multiset": "multiset plate: sets of varying size K \u2264 K_max",
    "edge:data": "model: the child is computed from the parent's value",
    "edge:control": "model: dependency through Python control flow",
    "edge:input": "model: reads a model input",
    "edge:inverse": "guide: a model edge, in the guide's direction",
    "edge:moral": "guide: joins two parents of a common child (moral edge)",
    "edge:fill-in": "guide: fill-in, added when a latent between the two was eliminated",
    "edge:prior": "guide: model edge into a latent no observation informs (prior)",
    "edge:augment": "guide: extra edge (augment=True)",
    "edge:mean-field": "guide: mean field, a given node the site depends on",
    "pooled": "guide: pools all replicates of the parent over a plate (set encoder)",
    "free": "guide: global latent with free parameters (no parents)",
    "slice:previous": "time slice: a site of another step (t-1, t+1)",
    "slice:run": "time slice: a run of steps the guide reads through a recurrent summary",
}
"""What each style means, by legend key: ``"node:<kind>"`` (:data:`NODE_STYLES`),
``"edge:<kind>"`` (:data:`EDGE_STYLES`), ``"joint"``
(:data:`JOINT_NODE_STYLE`), ``"pooled"`` (:data:`POOLED_EDGE_STYLE`),
``"plate"`` and ``"multiset"`` (plate boxes). A legend lists the entries a
drawing uses, in this order."""

INSTALL_GRAPHVIZ = (
    "Install Graphviz to get images: `apt-get install graphviz` (Debian/Ubuntu), "
    "`brew install graphviz` (macOS) or `conda install graphviz`; then "
    "`dot -T{fmt} {source} -o {target}` converts the source written here."
)

_IMAGE_FORMATS = {"svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps"}
_SOURCE_FORMATS = {"gv", "dot"}


def render(
    model_or_graph: Callable[..., Any] | ModelGraph,
    *args: Any,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    filename: str | PathLike[str] | None = None,
    format: str | None = None,  # noqa: A002 - graphviz's own name for it
    show_distributions: bool = False,
    show_shapes: bool = False,
    show_inputs: bool = True,
    rankdir: str = "TB",
    guide: str | InverseGraph | GuidePlan | None = None,
    order: str | Sequence[str] = "min-fill",
    augment: bool = False,
    legend: bool | None = None,
    time_slice: bool = False,
) -> graphviz.Digraph:
    """Draw a model's Bayesian network, and its NaMI guide beside it.

    Args:
        model_or_graph: a Pyro program (compiled with ``model_args`` and
            ``model_kwargs``) or a :class:`~pgmdl.graph.ModelGraph`.
        *args: deprecated spelling of ``model_args`` (a :class:`FutureWarning`;
            it stops working in the next release).
        model_args: the model's positional arguments, a tuple.
        model_kwargs: the model's keyword arguments (keywords of ``render``
            itself are its drawing options); both as :func:`pyro.render_model`
            takes them (:mod:`pgmdl.arguments`).
        filename: where to write the drawing; the format is taken from
            ``format`` or else the file's suffix (``.svg``, ``.png``, ``.pdf``;
            ``.gv``/``.dot`` write the DOT source).
        format: the output format, overriding the suffix.
        show_distributions: add each site's distribution to its label.
        show_shapes: add each site's batch and event shapes to its label.
        show_inputs: draw model inputs (arguments feeding sites that are not
            site values, e.g. a conditional VAE's context) as dashed boxes.
        rankdir: Graphviz's layout direction (``"TB"`` or ``"LR"``).
        guide: ``"nami"`` to draw the model's NaMI inverse (the structure of
            its amortized guide) beside it, an
            :class:`~pgmdl.graph.InverseGraph` of this model to draw, or a
            :class:`~pgmdl.guides.plan.GuidePlan` (``NaMIGuide(...).plan``:
            the guide as built, free sites and joint conditionals marked).
        order, augment: passed to :func:`pgmdl.invert` when ``guide="nami"``.
        legend: add a box explaining the styles the drawing uses
            (:data:`LEGEND`); by default only beside a guide.
        time_slice: draw one step ``t`` of the model's ``pyro.markov`` loop
            instead of every step: the sites of step ``t``, those of earlier
            steps it reads (dashed), the sites outside the loop; beside it (with
            ``guide``) each latent series' conditional at step ``t``, the runs
            of steps it summarizes (``x_{t..T}``) as one node.

    In the guide panel observed sites are the roots; fill-in edges are
    dashed red, edges that pool a parent's replicates over a plate are thick
    with a double arrowhead, and a site that needs a joint conditional over
    a plate has a double border.

    Returns:
        the :class:`graphviz.Digraph`; in a notebook it displays itself.

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> dot = pgmdl.render(model, model_args=(torch.zeros(3),), guide="nami")
        >>> "data (N=3)" in dot.source and "cluster_legend" in dot.source
        True
    """
    model_args, model_kwargs = model_arguments(
        "render",
        model_args,
        None if args else model_kwargs,
        legacy=(args, model_kwargs) if args else None,
        old_spelling="render(model, *args, ...)",
        new_spelling="render(model, model_args=args, ...)",
    )
    if isinstance(model_or_graph, ModelGraph):
        if model_args or model_kwargs:
            raise ModelError(
                "render() got a compiled ModelGraph and model arguments; arguments are only "
                "used to compile a model function."
            )
        graph = model_or_graph
    else:
        graph = compile_model(model_or_graph, model_args=model_args, model_kwargs=model_kwargs)
    dot = graphviz.Digraph(name=graph.model_name, graph_attr={"rankdir": rankdir})
    options = {
        "show_distributions": show_distributions,
        "show_shapes": show_shapes,
        "show_inputs": show_inputs,
    }
    if time_slice:
        used = _add_slice_panels(dot, graph, guide, order, augment)
    elif guide is None:
        used = add_panel(dot, graph, **options)
    else:
        title = "model" if graph.model_name == "model" else f"model {graph.model_name}"
        if isinstance(guide, GuidePlan):
            if not guide.inverse.belongs_to(graph):
                raise ModelError("render(guide=...) got the plan of a different model's guide")
            used = add_panel(dot, graph, panel="model", label=title, **options)
            used |= add_plan_panel(dot, guide, **options)
        else:
            inverse = _inverse(graph, guide, order, augment)
            used = add_panel(dot, graph, panel="model", label=title, **options)
            used |= add_inverse_panel(dot, inverse, **options)
    if legend or (legend is None and guide is not None):
        add_legend(dot, used)
    if filename is not None:
        write(dot, filename, format=format)
    return dot


def _add_slice_panels(
    dot: graphviz.Digraph,
    graph: ModelGraph,
    guide: str | InverseGraph | GuidePlan | None,
    order: str | Sequence[str],
    augment: bool,
) -> set[str]:
    """The model's loop as one slice, and the guide's conditionals at step ``t``."""
    time = time_structure(graph)
    if time is None:
        raise ModelError(
            "render(time_slice=True): the model has no pyro.markov loop (no site is sampled "
            "inside pyro.markov); draw it without time_slice"
        )
    used = {"node:latent", "node:observed", "edge:data"}
    kinds = {s.template: s.kind for s in time.series}
    model = graphviz.Digraph(name="cluster_model_slice")
    model.attr(label="model, one step t of the loop", style="rounded")
    drawn: set[str] = set()

    def node(box: graphviz.Digraph, panel: str, name: str, kind: str, extra: dict) -> None:
        key = node_id(panel, name)
        if key not in drawn:
            drawn.add(key)
            box.node(key, label=name, **{**NODE_STYLES[kind], **extra})

    for template, kind in kinds.items():
        node(model, "slice", template, kind, {})
    for link in time.links:
        if link.lag is None:  # a site outside the loop
            info = graph.sites.get(link.parent)
            kind = info.kind if info is not None else "input"
            name = link.source
            node(model, "slice", name, kind, {})
            used.add(f"node:{kind}")
        elif link.lag:
            name = link.source
            node(model, "slice", name, kinds[link.parent], {"style": "dashed"})
            used.add("slice:previous")
        else:
            name = link.parent
        model.edge(node_id("slice", name), node_id("slice", link.child))
    dot.subgraph(model)
    if guide is None:
        return used
    if isinstance(guide, GuidePlan):
        plan = guide
    else:
        plan = plan_guide(graph, _inverse(graph, guide, order, augment))
    panel = graphviz.Digraph(name="cluster_guide_slice")
    panel.attr(label="guide, one step t", style="rounded")
    for series, parents in plan.slice_reads():
        node(panel, "guide slice", series, "latent", {})
        for parent in parents:
            template = parent.split("_{", 1)[0] + "_{t}" if "_{" in parent else parent
            kind = kinds.get(template) or (
                graph.sites[parent].kind if parent in graph.sites else "input"
            )
            extra = {}
            if ".." in parent:
                extra = {"shape": "box3d"}
                used.add("slice:run")
            elif parent != template and template in kinds:
                extra = {"style": "dashed"}
                used.add("slice:previous")
            node(panel, "guide slice", parent, kind, extra)
            panel.edge(node_id("guide slice", parent), node_id("guide slice", series))
    dot.subgraph(panel)
    return used


def _inverse(
    graph: ModelGraph, guide: str | InverseGraph, order: str | Sequence[str], augment: bool
) -> InverseGraph:
    if isinstance(guide, InverseGraph):
        if not guide.belongs_to(graph):
            raise ModelError("render(guide=...) got the inverse of a different model")
        return guide
    if guide != "nami":
        raise ModelError(
            f"render(guide={guide!r}): use guide='nami' (NaMI's inverse) or an InverseGraph "
            "from pgmdl.invert"
        )
    return invert(graph, order=order, augment=augment)


def add_inverse_panel(
    dot: graphviz.Digraph,
    inverse: InverseGraph,
    *,
    panel: str = "guide",
    label: str | None = None,
    show_distributions: bool = False,
    show_shapes: bool = False,
    show_inputs: bool = True,
) -> set[str]:
    """Add an inverse graph (a guide's structure) to ``dot`` as its own panel.

    Returns:
        the :data:`LEGEND` keys of the styles the panel uses.
    """
    graph = inverse.model
    kinds = dict(inverse.dag.nodes(data="kind"))
    edges = []
    edge_attrs = {}
    used = set()
    for parent, site in inverse.edges():
        source = f"input {parent}" if kinds[parent] == "input" else parent
        edges.append((source, site, inverse.edge_kind(parent, site)))
        if inverse.link(parent, site).pooled:
            edge_attrs[source, site] = POOLED_EDGE_STYLE
            used.add("pooled")
    node_attrs = {}
    for site, plates in inverse.joint_plates.items():
        node_attrs[site] = {**JOINT_NODE_STYLE, "note": f"joint over {', '.join(plates)}"}
        used.add("joint")
    strategy = inverse.strategy + (", augmented" if inverse.augmented else "")
    return used | add_panel(
        dot,
        graph,
        panel=panel,
        label=label or f"guide (NaMI, {strategy})",
        show_distributions=show_distributions,
        show_shapes=show_shapes,
        show_inputs=show_inputs,
        edges=edges,
        sites=[n for n in graph.sites if n in kinds],
        edge_attrs=edge_attrs,
        node_attrs=node_attrs,
    )


def add_plan_panel(
    dot: graphviz.Digraph,
    plan: GuidePlan,
    *,
    panel: str = "guide",
    label: str | None = None,
    show_distributions: bool = False,
    show_shapes: bool = False,
    show_inputs: bool = True,
) -> set[str]:
    """Add a guide plan (:class:`~pgmdl.guides.plan.GuidePlan`) to ``dot`` as its own
    panel: each sampled site with the parents it reads (edges styled by their
    kind in the inverse, pooled reads thick), free sites and joint
    conditionals marked, enumerated sites noted.

    Returns:
        the :data:`LEGEND` keys of the styles the panel uses.
    """
    graph, inverse = plan.graph, plan.inverse
    edges, edge_attrs, node_attrs, used = [], {}, {}, set()
    for site in plan.sites:
        for parent in site.parents:
            source = f"input {parent.name}" if parent.kind == "input" else parent.name
            if inverse.dag.has_edge(parent.name, site.name):
                kind = inverse.edge_kind(parent.name, site.name)
            else:
                kind = "mean-field"
            edges.append((source, site.name, kind))
            if parent.link.pooled:
                edge_attrs[source, site.name] = POOLED_EDGE_STYLE
                used.add("pooled")
        if site.free:
            node_attrs[site.name] = {"note": "free parameters"}
            used.add("free")
        if site.joint is not None:
            note = f"joint over {site.joint.plate}, {site.joint.provider}"
            node_attrs[site.name] = {**JOINT_NODE_STYLE, "note": note}
            used.add("joint")
    for site in plan.enumerated:
        node_attrs[site] = {"note": "enumerated by the model"}
    drawn = set(plan.order) | set(plan.enumerated) | set(graph.observed_sites)
    return used | add_panel(
        dot,
        graph,
        panel=panel,
        label=label or f"guide plan ({plan.structure}, {plan.strategy})",
        show_distributions=show_distributions,
        show_shapes=show_shapes,
        show_inputs=show_inputs,
        edges=edges,
        sites=[n for n in graph.sites if n in drawn],
        edge_attrs=edge_attrs,
        node_attrs=node_attrs,
    )


def node_id(panel: str, site: str) -> str:
    """The Graphviz identifier of ``site`` in ``panel`` (unique across panels).

    Characters other than letters, digits, ``_`` and ``.`` are escaped as
    ``_<hex>_``: Graphviz reads ``a:b`` in an edge as node ``a``, port ``b``.
    """
    name = f"{panel}/{site}" if panel else site
    return re.sub(r"[^A-Za-z0-9_.]", lambda m: f"_{ord(m.group()):x}_", name)


def input_view(graph: ModelGraph, path: str) -> tuple[str, tuple[str, ...], str]:
    """How model input ``path`` is drawn: its label, the plates whose box
    holds it (outermost first) and a tooltip (``""``: none).

    An ordinary input is its argument's path, outside every plate. An input
    a multiset plate moved to its layout (``"labels@parts"``, see
    :meth:`pgmdl.multiset.MultisetPlate.align`) is the argument the user
    wrote, ``labels``, inside the box of plate ``parts`` (and of the plates
    around it that its readers share).

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> from pgmdl.multiset import multiset_plate
        >>> def model(labels, mask):
        ...     with pyro.plate("data", len(labels)):
        ...         with multiset_plate("parts", mask, dim=-2) as parts:
        ...             pyro.sample("w", dist.Normal(parts.align(labels), 1.0))
        >>> graph = pgmdl.compile(model, torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
        >>> list(graph.inputs)
        ['labels@parts']
        >>> input_view(graph, "labels@parts")[:2]
        ('labels', ('data', 'parts'))
    """
    argument, sep, plate = path.rpartition(ALIGNED)
    if not sep or not argument or plate not in graph.plates:
        return path, (), ""
    stacks = [graph.sites[c].plates for c in graph.inputs.get(path, ()) if c in graph.sites]
    shared: tuple[str, ...] = ()
    if stacks:
        for level in zip(*stacks, strict=False):
            if len(set(level)) > 1:
                break
            shared += (level[0],)
    tooltip = f"model argument {argument}, aligned to multiset plate {plate}"
    if plate not in shared:  # drawn outside the plate: say which
        return f"{argument}\n(aligned to {plate})", (), tooltip
    return argument, shared[: shared.index(plate) + 1], tooltip


def add_panel(
    dot: graphviz.Digraph,
    graph: ModelGraph,
    *,
    panel: str = "",
    label: str | None = None,
    show_distributions: bool = False,
    show_shapes: bool = False,
    show_inputs: bool = True,
    edges: list[tuple[str, str, str]] | None = None,
    sites: Iterable[str] | None = None,
    edge_attrs: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    node_attrs: Mapping[str, Mapping[str, str]] | None = None,
) -> set[str]:
    """Add ``graph``'s sites, plates and edges to ``dot``.

    Args:
        dot: the drawing to add to.
        graph: the graph whose sites and plates are drawn.
        panel: a name prefixed to node identifiers; when not empty the panel
            is drawn inside its own labelled box so it can sit beside others.
        label: the panel box's label (defaults to ``panel``).
        show_distributions, show_shapes, show_inputs: see :func:`render`.
        edges: ``(parent, child, kind)`` triples to draw instead of the
            graph's own edges (an inverse graph draws its edges over the same
            sites); each kind is styled by :data:`EDGE_STYLES`.
        sites: the sites to draw (default: all of the graph's).
        edge_attrs: extra Graphviz attributes per ``(parent, child)`` edge.
        node_attrs: extra Graphviz attributes per site; the key ``"note"``
            adds a line to the site's label instead.

    Returns:
        the :data:`LEGEND` keys of the node, plate and edge styles drawn
        (extra ``edge_attrs`` and ``node_attrs`` are the caller's to report).
    """
    drawn_sites = set(graph.sites if sites is None else sites)
    edge_attrs = edge_attrs or {}
    node_attrs = node_attrs or {}
    used: set[str] = set()
    target = dot
    if panel:
        target = graphviz.Digraph(name=f"cluster_panel_{panel}")
        target.attr(label=label or panel, style="rounded", color="gray60")

    # Plates as nested clusters: each site goes into the cluster of its plate
    # stack (outermost first); clusters are shared by sites with a common prefix.
    clusters: dict[tuple[str, ...], graphviz.Digraph] = {}

    def cluster(stack: tuple[str, ...]) -> graphviz.Digraph:
        if stack not in clusters:
            sub = graphviz.Digraph(name=f"cluster_{panel}_{'__'.join(stack)}")
            plate = graph.plates[stack[-1]]
            sub.attr(label=plate.label(), labeljust="r", labelloc="b")
            if plate.multiset:  # sets of varying size: a dashed, rounded box
                sub.attr(style="dashed,rounded")
            used.add("multiset" if plate.multiset else "plate")
            clusters[stack] = sub
        return clusters[stack]

    for name, site in graph.sites.items():
        if name not in drawn_sites:
            continue
        text = name
        if show_distributions:
            text += f"\n{site.distribution}"
        if show_shapes:
            text += f"\n{_shapes(site.batch_shape, site.event_shape)}"
        if site.observation:
            text += f"\n{site.observation}"
        holder = cluster(site.plates) if site.plates else target
        style = {**NODE_STYLES[site.kind], **node_attrs.get(name, {})}
        note = style.pop("note", None)
        if note:
            text += f"\n({note})"
        holder.node(node_id(panel, name), label=text, **style)
        used.add(f"node:{site.kind}")

    drawn = list(edges) if edges is not None else list(graph.dag.edges(data="kind"))
    if show_inputs:
        for path, consumers in graph.inputs.items():
            text, stack, tooltip = input_view(graph, path)
            holder = cluster(stack) if stack else target
            extra = {"tooltip": tooltip} if tooltip else {}
            holder.node(
                node_id(panel, f"input {path}"), label=text, **NODE_STYLES["input"], **extra
            )
            used.add("node:input")
            if edges is None:
                drawn += [(f"input {path}", site, "input") for site in consumers]

    # Attach inner clusters to outer ones, innermost first (graphviz copies a
    # subgraph's body when it is attached, so children must be complete).
    for stack in list(clusters):
        for depth in range(1, len(stack)):
            cluster(stack[:depth])
    for stack in sorted(clusters, key=len, reverse=True):
        parent = stack[:-1]
        (cluster(parent) if parent else target).subgraph(clusters[stack])

    for parent, child, kind in drawn:
        style = {**EDGE_STYLES.get(kind, {}), **edge_attrs.get((parent, child), {})}
        target.edge(node_id(panel, parent), node_id(panel, child), **style)
        used.add(f"edge:{kind}")
    if panel:
        dot.subgraph(target)
    return used


def add_legend(dot: graphviz.Digraph, used: Iterable[str]) -> list[str]:
    """Add a box labelled "legend" to ``dot`` that shows and explains each
    style in ``used`` (:data:`LEGEND` keys, as :func:`add_panel` and
    :func:`add_inverse_panel` return them); unknown keys are ignored.

    Node and plate styles are drawn as a sample node carrying the
    explanation; edge styles as a short arrow in that style pointing at it.
    Entries are stacked in :data:`LEGEND`'s order.

    Returns:
        the keys drawn, in order (none: no box is added).
    """
    keys = [key for key in LEGEND if key in set(used)]
    if not keys:
        return keys
    # Entries stack across ranks (TB, BT) or within one rank (LR, RL), so the
    # box is a column whichever way the drawing is laid out.
    across = dot.graph_attr.get("rankdir", "TB").upper() in ("TB", "BT")
    box = graphviz.Digraph(name="cluster_legend")
    box.attr(label="legend", style="rounded", color="gray60", fontcolor="gray30")
    box.attr("node", fontsize="10")
    column = graphviz.Digraph(graph_attr={"rank": "same"})
    previous = None
    for key in keys:
        text = LEGEND[key]
        entry = node_id("legend", key)
        if key.startswith("edge:") or key == "pooled":
            style = dict(POOLED_EDGE_STYLE) if key == "pooled" else EDGE_STYLES[key[5:]]
            tail = node_id("legend", key + " from")
            row = graphviz.Digraph(graph_attr={"rank": "same"}) if across else box
            row.node(tail, label="", shape="point", width="0.02", style="invis")
            row.node(entry, label=text, shape="plaintext")
            row.edge(tail, entry, minlen="2" if across else "1", **style)
            if across:
                box.subgraph(row)
            first = tail
        else:
            if key.startswith("node:"):
                style = dict(NODE_STYLES[key[5:]])
            elif key == "joint":
                style = {**NODE_STYLES["latent"], **JOINT_NODE_STYLE}
            elif key == "free":
                style = dict(NODE_STYLES["latent"])
            elif key == "multiset":
                style = {"shape": "box", "style": "dashed,rounded"}
            elif key == "slice:previous":
                style = {**NODE_STYLES["latent"], "style": "dashed"}
            elif key == "slice:run":
                style = {**NODE_STYLES["observed"], "shape": "box3d"}
            else:  # a plate
                style = {"shape": "box", "style": "solid"}
            box.node(entry, label=text, **style)
            first = entry
        if across and previous is not None:  # one entry under the other
            box.edge(previous, first, style="invis")
        elif not across:  # samples and explanations in one rank, arrows before it
            column.node(entry)
        previous = entry
    if not across:
        box.subgraph(column)
    dot.subgraph(box)
    return keys


def write(
    dot: graphviz.Digraph, filename: str | PathLike[str], *, format: str | None = None
) -> Path:  # noqa: A002
    """Write ``dot`` to ``filename``; returns the path actually written.

    Only the requested file is written: the image is piped out of Graphviz's
    ``dot`` (:meth:`graphviz.Digraph.pipe`) and its bytes written to
    ``filename``, so no DOT source is created or removed beside it (an
    existing ``X.gv`` next to ``X.svg`` is left untouched). If ``dot`` fails,
    nothing is written and an existing ``filename`` keeps its contents.

    Without Graphviz's ``dot`` program, an image format falls back to the DOT
    source next to the requested file (same name, ``.gv`` suffix) with a
    :class:`~pgmdl.errors.RenderWarning` saying how to install Graphviz. The
    fallback never overwrites a file it did not write: when ``X.gv`` exists
    and is not a fallback source (its first line is pgmdl's marker), the
    source goes to ``X.svg.gv`` (then ``X.svg.1.gv``, ...) instead.
    """
    path = Path(filename)
    fmt = (format or path.suffix.lstrip(".") or "svg").lower()
    if fmt not in _IMAGE_FORMATS | _SOURCE_FORMATS:
        raise ValueError(
            f"cannot write format {fmt!r} (from {str(path)!r}); use one of "
            f"{sorted(_IMAGE_FORMATS | _SOURCE_FORMATS)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in _SOURCE_FORMATS:
        path.write_text(dot.source)
        return path
    if shutil.which("dot") is not None:
        try:
            image = dot.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            pass
        except (graphviz.CalledProcessError, subprocess.CalledProcessError) as err:
            raise RuntimeError(f"Graphviz's dot failed to draw {path}: {err}") from err
        else:
            path.write_bytes(image)
            return path
    source = _fallback_source_path(path, fmt)
    source.write_text(f"{_FALLBACK_MARKER} {path.name}\n{dot.source}")
    warnings.warn(
        f"Graphviz's `dot` program was not found, so {path} was not drawn; its DOT source is in "
        f"{source}. " + INSTALL_GRAPHVIZ.format(fmt=fmt, source=source, target=path),
        RenderWarning,
        stacklevel=3,
    )
    return source


_FALLBACK_MARKER = "// pgmdl.render: Graphviz's dot was not found; DOT source of"
"""First line of a DOT source written in place of an image (a DOT comment)."""


def _fallback_source_path(path: Path, fmt: str) -> Path:
    """Where the DOT source goes in place of ``path``: ``X.gv`` unless a file
    pgmdl did not write is there, then ``X.<fmt>.gv``, ``X.<fmt>.1.gv``, ..."""
    candidates = [path.with_suffix(".gv"), path.with_suffix(f".{fmt}.gv")]
    index = 1
    while True:
        for candidate in candidates:
            if not candidate.exists() or _is_fallback_source(candidate):
                return candidate
        candidates = [path.with_suffix(f".{fmt}.{index}.gv")]
        index += 1


def _is_fallback_source(path: Path) -> bool:
    """Whether ``path`` is a DOT source pgmdl wrote in place of an image."""
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline().startswith(_FALLBACK_MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on the PATH."""
    return shutil.which("dot") is not None


def _shapes(batch: tuple[int, ...], event: tuple[int, ...]) -> str:
    def fmt(shape: tuple[int, ...]) -> str:
        return "(" + ",".join(map(str, shape)) + ")"

    return f"{fmt(batch)}|{fmt(event)}"
