"""Sphinx configuration of pgmdl's API reference (``make docs``).

The reference is generated from the docstrings. Before each build,
:func:`_write_pages` walks the ``pgmdl`` package (new modules and
subpackages get a page without editing this folder) and writes one page per
module into ``generated/``: :mod:`sphinx.ext.autodoc` documents each object
once, in the module that defines it, and :mod:`sphinx.ext.napoleon` reads the
Google-style sections. A package's page lists its public API (its
``__all__``, as an :mod:`sphinx.ext.autosummary` table) and its modules.
References to an object through a re-export
(``pgmdl.NaMIGuide``, ``pgmdl.graph.ModelGraph``) or through a name a module
imported resolve to that one description (:func:`_resolve_reexport`).

Building needs no network: no intersphinx; math is typeset by MathJax when a
page is viewed (a script tag pointing at its CDN).
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import sys
import types
import warnings
from pathlib import Path

from sphinx.domains.python import PythonDomain
from sphinx.ext.napoleon.docstring import GoogleDocstring

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PGMDL_FAST", "1")

import pgmdl  # noqa: E402

project = "pgmdl"
author = "the pgmdl authors"
copyright = "the pgmdl authors"  # noqa: A001 - Sphinx's name for it
release = version = pgmdl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build"]
PACKAGE = "pgmdl"
SKIP_MODULES = {"pgmdl.__main__"}  # importing it runs the command line
root_doc = "index"

# -- autodoc / autosummary ---------------------------------------------------
autosummary_generate = False  # tables only; the pages are _write_pages's
autodoc_default_options = {
    "members": True,
    "ignore-module-all": True,  # a module's own definitions, not what it re-exports
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = False  # reading defaults back from source breaks on files being edited
autodoc_inherit_docstrings = False  # torch/pyro base-class docstrings are not ours
autoclass_content = "both"  # class docstring, then __init__'s Args

# -- napoleon (Google style) ---------------------------------------------------
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = False  # "Attributes:" as targets of :attr: references
napoleon_use_rtype = False

# -- cross-references ------------------------------------------------------------
# Every reference to pgmdl must resolve. Other libraries are not linked
# (intersphinx would download their inventories at build time).
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(torch|pyro|zuko|numpy|np|networkx|nx|graphviz|lightning|sklearn)(\..*)?"),
    ("py:.*", r"(matplotlib|pandas|argparse|collections|typing|types|os|pathlib|abc)(\..*)?"),
    ("py:.*", r"(contextlib|dataclasses|enum|functools|io|numbers|re|warnings)(\..*)?"),
    ("py:.*", r"(nn|dist|inspect|optim|F|np|td)\..*"),  # torch.nn, pyro.distributions, ...
    ("py:.*", r"(Any|Callable|Iterable|Iterator|Mapping|MutableMapping|Sequence|Literal)"),
    ("py:.*", r"(Optional|Union|Generator|TypeVar|Self|Protocol|ClassVar|Hashable)"),
    ("py:.*", r"(Tensor|Distribution|Module|Parameter|Generator|PathLike|Path|Enum)"),
    ("py:.*", "|".join(name for name in dir(builtins) if not name.startswith("_"))),
    ("py:.*", r"(None|callable)"),
    ("py:class", r"(T|K|V|_[A-Za-z_]*)"),  # type variables, private helpers
]

# -- HTML ------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"pgmdl {release} API reference"
html_static_path: list[str] = []
html_show_sourcelink = False
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}


_FIELD_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Attributes|Keyword Args|Keyword Arguments"
    r"|Other Parameters):\s*$"
)
_MULTI_NAME = re.compile(r"^(\s*)(\**\w+(?:\s*,\s*\**\w+)+)(\s*\([^)]*\))?:(\s.*)?$")
_TYPE_LIKE = re.compile(r"^[A-Za-z_][\w.]*(\[.*\])?(\s*\|\s*[A-Za-z_][\w.]*(\[.*\])?)*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_multi_name_fields(lines: list[str]) -> list[str]:
    """``a, b: text`` in a Google-style Args or Attributes section, as one
    entry per name (napoleon escapes only the first of ``*args, **kwargs``,
    and reads ``a, b`` in Attributes as a type followed by a name)."""
    out: list[str] = []
    section_indent: int | None = None
    item_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _FIELD_SECTION.match(line)
        if header:
            section_indent, item_indent = _indent(line), None
            out.append(line)
            i += 1
            continue
        if section_indent is not None and line.strip():
            if _indent(line) <= section_indent:
                section_indent = None
            elif item_indent is None:
                item_indent = _indent(line)
        multi = _MULTI_NAME.match(line) if section_indent is not None else None
        if multi and _indent(line) == item_indent:
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > item_indent):
                body.append(lines[i])
                i += 1
            lead, names, kind, rest = multi.groups()
            for name in (n.strip() for n in names.split(",")):
                out.append(f"{lead}{name}{kind or ''}:{rest or ''}")
                out.extend(body)
            continue
        out.append(line)
        i += 1
    return out


def _prepare_docstring(app, what, name, obj, options, lines):  # noqa: ANN001
    """Before napoleon reads a docstring: split multi-name fields."""
    lines[:] = _split_multi_name_fields(lines)


_napoleon_attribute = GoogleDocstring._parse_attribute_docstring


def _parse_attribute_docstring(self: GoogleDocstring) -> list[str]:
    """Napoleon reads ``"Kinds of model edges: ..."``, the first line of a
    constant's or property's docstring, as ``type: description``; pgmdl's
    docstrings open with prose, so only a type-like head is a type."""
    lines = getattr(self, "_lines", None)  # napoleon's deque of lines (Sphinx >= 7)
    first = lines[0] if lines and isinstance(lines[0], str) else ""
    head, colon, _ = first.partition(":")
    if colon and not _TYPE_LIKE.match(head.strip()):
        text = self.__class__(self._consume_to_end(), self._config).lines()
        return self._format_field("", "", text)
    return _napoleon_attribute(self)


GoogleDocstring._parse_attribute_docstring = _parse_attribute_docstring


def _skip_member(app, what, name, obj, skip, options):  # noqa: ANN001
    """Never document a module attribute that is a module (``pgmdl.render``
    the function is documented in :mod:`pgmdl.render`, the module), nor a
    NamedTuple's fields (its docstring's Attributes section describes them)."""
    if isinstance(obj, types.ModuleType):
        return True
    if what == "class" and re.fullmatch(r"Alias for field number \d+", obj.__doc__ or ""):
        return True
    return skip


_QUOTED_ANNOTATION = re.compile(r"(:\s*|->\s*)'([A-Za-z_][\w.\[\], |]*)'")


def _unquote_annotations(app, what, name, obj, options, signature, return_annotation):  # noqa: ANN001
    """``x: 'dict[str, Site]'`` as ``x: dict[str, Site]`` (a dataclass's
    ``__init__`` keeps the annotations of a module using ``from __future__
    import annotations`` as strings, which Sphinx would read as one name), and
    a dataclass field's ``= <factory>`` as ``= list()`` (Sphinx cannot parse
    a signature holding ``<factory>``)."""
    if signature:
        signature = _QUOTED_ANNOTATION.sub(r"\1\2", signature)
        if "<factory>" in signature and dataclasses.is_dataclass(obj):
            for item in dataclasses.fields(obj):
                if item.default_factory is not dataclasses.MISSING:
                    factory = getattr(item.default_factory, "__name__", "<lambda>")
                    call = f"{factory}()" if factory.isidentifier() else "..."
                    signature = signature.replace("<factory>", call, 1)
    if return_annotation:
        return_annotation = _QUOTED_ANNOTATION.sub(r"\1\2", "->" + return_annotation)[2:]
    return signature, return_annotation


def _locate(path: str) -> object | None:
    """The object ``path`` names (``package.module.Class.attr``), or ``None``."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - a module failing to import is autodoc's to report
            return None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return None
            static = inspect.getattr_static(obj, attr, None)
            obj = getattr(obj, attr) if static is None else static
        return obj
    return None


def _canonical(path: str) -> str | None:
    """Where ``path``'s object is described: the module and qualified name
    that define it, then any attribute path below it."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        obj = _locate(".".join(parts[:cut]))
        if obj is None:
            continue
        if isinstance(obj, types.ModuleType):
            if cut == len(parts):
                return obj.__name__
            continue
        obj = getattr(obj, "__func__", obj)
        obj = getattr(obj, "fget", obj)  # properties: their getter's name
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if not (isinstance(module, str) and isinstance(qualname, str)) or "<" in qualname:
            return None
        return ".".join([module, qualname, *parts[cut:]])
    return None


def _resolve_reexport(app, env, node, contnode):  # noqa: ANN001
    """Resolve a Python reference to a pgmdl object named other than where it
    is described: through a re-export (``pgmdl.fit``, ``pgmdl.graph.ORDERS``),
    by a name the current module imported (``:func:`invert``` inside
    :mod:`pgmdl.render`), or by a name that ends only one description's
    name (``ModelGraph.inputs``)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module")
    klass = node.get("py:class")
    candidates = [target]
    if module and klass:
        candidates.append(f"{module}.{klass}.{target}")
    if module:
        candidates.append(f"{module}.{target}")
    domain = env.get_domain("py")
    names = []
    located = False
    for candidate in candidates:
        try:
            located = located or _locate(candidate) is not None
            names.append(_canonical(candidate))
            names += _same_object(candidate, domain)
        except Exception:  # noqa: BLE001 - an odd attribute: leave it unresolved
            continue
    if not located:  # the one description whose name ends with the target: a name
        # the module could not import (``:func:`boltzmann_tune``` below pgmdl.boltzmann)
        ending = [name for name in domain.objects if name.endswith("." + target)]
        names += ending if len(ending) == 1 else []
    for name in names:
        if not name or not name.startswith(PACKAGE + ".") or name == target:
            continue
        found = domain.resolve_any_xref(env, node["refdoc"], app.builder, name, node, contnode)
        if found:
            return found[0][1]
    return None


def _same_object(path: str, domain) -> list[str]:  # noqa: ANN001
    """Descriptions of the very object ``path`` names (a constant re-exported
    by a package: ``pgmdl.graph.ORDERS`` is ``pgmdl.graph.nami.ORDERS``)."""
    obj = _locate(path)
    if obj is None or isinstance(obj, types.ModuleType):
        return []
    last = path.rpartition(".")[2]
    return [
        name
        for name in domain.objects
        if name.rpartition(".")[2] == last and name != path and _locate(name) is obj
    ]


class _PythonDomain(PythonDomain):
    """A ``:func:``, ``:class:`` or ``:obj:`` reference to a module that
    defines a namesake (``pgmdl.render``, module and function) goes to the
    namesake; ``:mod:`` references still go to the module."""

    def resolve_xref(self, env, fromdocname, builder, typ, target, node, contnode):  # noqa: ANN001
        if typ in {"func", "class", "meth", "obj", "data"}:
            entry = self.objects.get(target)
            namesake = f"{target}.{target.rpartition('.')[2]}"
            if entry and entry.objtype == "module" and namesake in self.objects:
                target = namesake
        return super().resolve_xref(env, fromdocname, builder, typ, target, node, contnode)


def _deprecated(name: str) -> bool:
    """Whether importing module ``name`` warns that it moved or goes away (a
    shim kept for one release: not documented; its new home is)."""
    if name in sys.modules:
        return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.import_module(name)
    return any(
        issubclass(w.category, (FutureWarning, DeprecationWarning)) and name in str(w.message)
        for w in caught
    )


def _page(name: str, children: list[str]) -> str:
    """The reST of module ``name``'s page; a package lists its public API
    (``__all__``, modules excepted) and links its ``children`` modules."""
    module = importlib.import_module(name)
    lines = [f".. automodule:: {name}", ""]
    package = hasattr(module, "__path__")
    public = [
        item
        for item in (getattr(module, "__all__", ()) if package else ())
        if not isinstance(getattr(module, item, None), types.ModuleType) and item != "__version__"
    ]
    if public:
        lines += ["Public API", "-" * 10, "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {item}" for item in public] + [""]
    if children:
        lines += ["Modules", "-" * 7, "", ".. toctree::", "   :maxdepth: 1", ""]
        lines += [f"   {child}" for child in children] + [""]
    title = f"``{name}``"
    return "\n".join([title, "=" * len(title), "", *lines])


def _write_pages(app) -> None:  # noqa: ANN001
    """Write ``generated/<module>.rst`` for every module of :data:`PACKAGE`
    (stale pages of moved or removed modules are deleted first)."""
    out = Path(app.srcdir) / "generated"
    if out.exists():
        for old in out.glob("*.rst"):
            old.unlink()
    out.mkdir(exist_ok=True)
    root = importlib.import_module(PACKAGE)
    names = [PACKAGE] + sorted(
        info.name
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{PACKAGE}.")
        if info.name not in SKIP_MODULES and not info.name.rpartition(".")[2].startswith("_")
    )
    names = [name for name in names if not _deprecated(name)]
    for name in names:
        children = [n for n in names if n.rpartition(".")[0] == name]
        packages = [n for n in children if any(m.startswith(n + ".") for m in names)]
        ordered = packages + [n for n in children if n not in packages]
        text = _page(name, ordered)
        (out / f"{name}.rst").write_text(text + "\n", encoding="utf-8")


def setup(app):  # noqa: ANN001
    app.add_domain(_PythonDomain, override=True)
    app.connect("builder-inited", _write_pages)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-signature", _unquote_annotations)
    app.connect("autodoc-process-docstring", _prepare_docstring, priority=100)
    app.connect("missing-reference", _resolve_reexport)
