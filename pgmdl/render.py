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
  joint conditional over a plate has a double border.

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

from pgmdl.errors import ModelError, RenderWarning
from pgmdl.graph import InverseGraph, ModelGraph, compile_model, invert

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
}
"""Graphviz attributes of each edge kind: model edges (``data``,
``control``, ``input``) and inverse edges (``inverse``, ``moral``,
``fill-in``, ``prior``, ``augment``)."""

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
    model_kwargs: Mapping[str, Any] | None = None,
    filename: str | PathLike[str] | None = None,
    format: str | None = None,  # noqa: A002 - graphviz's own name for it
    show_distributions: bool = False,
    show_shapes: bool = False,
    show_inputs: bool = True,
    rankdir: str = "TB",
    guide: str | InverseGraph | None = None,
    order: str | Sequence[str] = "min-fill",
    augment: bool = False,
) -> graphviz.Digraph:
    """Draw a model's Bayesian network, and its NaMI guide beside it.

    Args:
        model_or_graph: a Pyro program (compiled with ``*args`` and
            ``model_kwargs``) or a :class:`~pgmdl.graph.ModelGraph`.
        *args: the model's positional arguments.
        model_kwargs: the model's keyword arguments (keywords of ``render``
            itself are its drawing options).
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
            its amortized guide) beside it, or an
            :class:`~pgmdl.graph.InverseGraph` of this model to draw.
        order, augment: passed to :func:`pgmdl.invert` when ``guide="nami"``.

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
        >>> dot = pgmdl.render(model, torch.zeros(3))
        >>> "data (N=3)" in dot.source
        True
    """
    if isinstance(model_or_graph, ModelGraph):
        if args or model_kwargs:
            raise ModelError(
                "render() got a compiled ModelGraph and model arguments; arguments are only "
                "used to compile a model function."
            )
        graph = model_or_graph
    else:
        graph = compile_model(model_or_graph, args, dict(model_kwargs or {}))
    dot = graphviz.Digraph(name=graph.model_name, graph_attr={"rankdir": rankdir})
    options = {
        "show_distributions": show_distributions,
        "show_shapes": show_shapes,
        "show_inputs": show_inputs,
    }
    if guide is None:
        add_panel(dot, graph, **options)
    else:
        inverse = _inverse(graph, guide, order, augment)
        title = "model" if graph.model_name == "model" else f"model {graph.model_name}"
        add_panel(dot, graph, panel="model", label=title, **options)
        add_inverse_panel(dot, inverse, **options)
    if filename is not None:
        write(dot, filename, format=format)
    return dot


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
) -> None:
    """Add an inverse graph (a guide's structure) to ``dot`` as its own panel."""
    graph = inverse.model
    kinds = dict(inverse.dag.nodes(data="kind"))
    edges = []
    edge_attrs = {}
    for parent, site in inverse.edges():
        source = f"input {parent}" if kinds[parent] == "input" else parent
        edges.append((source, site, inverse.edge_kind(parent, site)))
        if inverse.link(parent, site).pooled:
            edge_attrs[source, site] = POOLED_EDGE_STYLE
    node_attrs = {}
    for site, plates in inverse.joint_plates.items():
        node_attrs[site] = {**JOINT_NODE_STYLE, "note": f"joint over {', '.join(plates)}"}
    strategy = inverse.strategy + (", augmented" if inverse.augmented else "")
    add_panel(
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


def node_id(panel: str, site: str) -> str:
    """The Graphviz identifier of ``site`` in ``panel`` (unique across panels).

    Characters other than letters, digits, ``_`` and ``.`` are escaped as
    ``_<hex>_``: Graphviz reads ``a:b`` in an edge as node ``a``, port ``b``.
    """
    name = f"{panel}/{site}" if panel else site
    return re.sub(r"[^A-Za-z0-9_.]", lambda m: f"_{ord(m.group()):x}_", name)


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
) -> None:
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
    """
    drawn_sites = set(graph.sites if sites is None else sites)
    edge_attrs = edge_attrs or {}
    node_attrs = node_attrs or {}
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

    # Attach inner clusters to outer ones, innermost first (graphviz copies a
    # subgraph's body when it is attached, so children must be complete).
    for stack in list(clusters):
        for depth in range(1, len(stack)):
            cluster(stack[:depth])
    for stack in sorted(clusters, key=len, reverse=True):
        parent = stack[:-1]
        (cluster(parent) if parent else target).subgraph(clusters[stack])

    drawn = list(edges) if edges is not None else list(graph.dag.edges(data="kind"))
    if show_inputs:
        for path, consumers in graph.inputs.items():
            target.node(node_id(panel, f"input {path}"), label=path, **NODE_STYLES["input"])
            if edges is None:
                drawn += [(f"input {path}", site, "input") for site in consumers]
    for parent, child, kind in drawn:
        style = {**EDGE_STYLES.get(kind, {}), **edge_attrs.get((parent, child), {})}
        target.edge(node_id(panel, parent), node_id(panel, child), **style)
    if panel:
        dot.subgraph(target)


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
