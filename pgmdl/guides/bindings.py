"""Reading observed values and inputs from a model's arguments at call time.

An amortized guide conditions on the data the model is called with. pgmdl's
graph compiler records, for every observed site whose ``obs=`` value *is* a
model argument, the argument's path (``SiteInfo.bound_argument``), and for
every other argument that feeds a distribution, its path in
``SiteInfo.inputs``. Paths are spelled the way the compiler tags arguments:

* ``"x"``: the argument named ``x`` (positional or keyword);
* ``"batch[0]"``: an element of a tuple or list argument (or of ``*args``);
* ``"data['x0']"``: an entry of a dict argument;
* ``"cfg.x"``: a field of a dataclass or namespace argument;
* ``"x0"``: an entry of ``**kwargs``; ``"args[0]"``: a positional argument of a
  callable without a signature.

An observed value that is a *view* of an argument (``obs=x.reshape(-1, 784)``,
``obs=data[:, 0]``, ``obs=mini_batch[:, t - 1, :]``) is read by replaying the
recorded view on this call's argument (:func:`view_binding`, from
``SiteInfo.bound_view``), so the batch size may change between calls.

:class:`ArgumentReader` binds the model's arguments with one
``inspect.Signature.bind`` per call and reads paths from them.
"""

from __future__ import annotations

import ast
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from pgmdl.errors import GuideError
from pgmdl.graph.compile import compile_model, isolated_run
from pgmdl.graph.masked_plate import align_to_plate
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.sites import PLATE_MASKS_KEY
from pgmdl.graph.tracing import ALIGNED, model_signature
from pgmdl.graph.views import ArgumentRef

_STEP = re.compile(r"\[([^\[\]]+)\]|\.([A-Za-z_][A-Za-z_0-9]*)")
_HEAD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*")


class Attribute(str):
    """A path step that reads an attribute (``cfg.x``) rather than an item."""


def parse_path(path: str) -> tuple[str, tuple[int | str, ...]]:
    """Split ``"data['x0'][1].y"`` into ``("data", ("x0", 1, Attribute("y")))``."""
    head = _HEAD.match(path)
    if head is None:
        raise GuideError(f"cannot read argument path {path!r}")
    rest = path[head.end() :]
    steps: list[int | str] = []
    for match in _STEP.finditer(rest):
        if match.group(2) is not None:
            steps.append(Attribute(match.group(2)))
        else:
            steps.append(ast.literal_eval(match.group(1)))
    return head.group(0), tuple(steps)


def view_binding(
    read: Callable[[dict[str, Any], str], Any], site: str, view: ArgumentRef
) -> Callable[[dict[str, Any]], Any]:
    """A binding reading observed site ``site`` as ``view`` of this call's
    argument: ``read(arguments, view.path)`` then the recorded views replayed.

    Example::

        >>> import torch, pyro, pyro.distributions as dist, pgmdl
        >>> def model(data):
        ...     pyro.sample("y", dist.Normal(0.0, data[:, 1]), obs=data[:, 0])
        >>> view = pgmdl.compile(model, torch.ones(4, 2))["y"].bound_view
        >>> bind = view_binding(lambda arguments, path: arguments[path], "y", view)
        >>> bind({"data": torch.arange(6.0).reshape(3, 2)})
        tensor([0., 2., 4.])
    """

    def read_view(arguments: dict[str, Any]) -> Any:
        value = read(arguments, view.path)
        if value is None:
            return None
        value = torch.as_tensor(value)
        try:
            return view.replay(value)
        except (RuntimeError, IndexError, TypeError, ValueError) as err:
            raise GuideError(
                f"observed site {site!r} is {view.describe()} in the model; replaying that on "
                f"this call's argument {view.path!r} of shape {tuple(value.shape)} failed "
                f"({err}). It worked on shape {view.shape}: keep the dimensions the view "
                f"selects, or give NaMIGuide(model, bindings={{{site!r}: lambda arguments: "
                "...}) computing the value."
            ) from err

    read_view.pgmdl_view = view  # type: ignore[attr-defined]
    return read_view


class ArgumentReader:
    """Bind a model's ``*args, **kwargs`` and read argument paths from them.

    Args:
        model: the model (its signature decides how arguments bind).
        overrides: ``{name: fn}`` where ``fn(arguments)`` computes a value
            from the dict of the model's bound arguments (used for observed
            sites whose value is computed from the arguments).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        overrides: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        try:
            self.signature: inspect.Signature | None = model_signature(model)
        except (TypeError, ValueError):
            self.signature = None
        self.overrides = dict(overrides or {})
        self.var_keyword = None
        if self.signature is not None:
            for name, p in self.signature.parameters.items():
                if p.kind is inspect.Parameter.VAR_KEYWORD:
                    self.var_keyword = name

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """The model's arguments by name, defaults included."""
        if self.signature is None:
            arguments = {f"args[{i}]": a for i, a in enumerate(args)}
            arguments.update(kwargs)
            return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as err:
            raise GuideError(
                f"the guide was called with arguments the model does not accept "
                f"(signature {self.signature}): {err}. Call the guide with the model's arguments."
            ) from err
        bound.apply_defaults()
        return dict(bound.arguments)

    def read(self, arguments: dict[str, Any], path: str) -> Any:
        """The value at ``path`` (``None`` when an argument along it is ``None``)."""
        if path in self.overrides:
            return self.overrides[path](arguments)
        return self.read_argument(arguments, path)

    def read_argument(self, arguments: dict[str, Any], path: str) -> Any:
        """The argument at ``path`` itself, ignoring the bindings (a site may be
        named like the argument it views: ``obs=x.reshape(-1, 784)`` for site ``x``)."""
        if path in arguments:
            return arguments[path]
        if self.var_keyword is not None and path in arguments.get(self.var_keyword, {}):
            return arguments[self.var_keyword][path]
        head, steps = parse_path(path)
        if head not in arguments:
            raise KeyError(path)
        value = arguments[head]
        for step in steps:
            if value is None:
                return None
            value = getattr(value, step) if isinstance(step, Attribute) else value[step]
        return value


class GuideBinder:
    """What an amortized guide reads from the model's arguments at every call.

    It completes the user's ``bindings`` with the ones the compiled graph
    implies (the binding rule of :class:`pgmdl.NaMIGuide`):

    * an observed site whose value is a *view* of an argument
      (``obs=data[:, 0]``): that view of this call's argument (:func:`view_binding`);
    * a coarse level of a multiscale observation (``SiteInfo.derived_from``):
      its function of the source site's argument;
    * an input a masked plate moved to its layout (``"labels@parts"``,
      :meth:`~pgmdl.graph.masked_plate.MaskedPlate.align`): the same move of
      the argument;

    and reads values (:meth:`read`) and masked plates' masks
    (:meth:`plate_mask`) with errors that name the site and the fix.

    Args:
        model: the model (its signature binds the arguments).
        graph: the compiled model.
        bindings: the user's ``{site or input: fn(arguments)}``.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        graph: ModelGraph,
        bindings: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        self.graph = graph
        self.bindings: dict[str, Callable[[dict[str, Any]], Any]] = dict(bindings or {})
        self.user_bindings = frozenset(self.bindings)
        self._bind_derived_sites()  # their read functions use self.reader, made next
        self._bind_views()
        self._bind_aligned_inputs()
        self.reader = ArgumentReader(model, self.bindings)
        self.loop_axes = loop_axes(graph)

    def check_loop_length(self, arguments: dict[str, Any], reason: str | None = None) -> None:
        """Refuse a call whose sequences are longer than those the guide was built
        for: the model would sample the extra steps' latents, the guide would
        not, and they would silently come from the prior (a shorter call fails
        on its own, reading a step the argument does not have). ``reason``: why
        the guide is not shared across steps, if known."""
        for path, (dim, size, site) in self.loop_axes.items():
            value = self.reader.read_argument(arguments, path)
            shape = getattr(value, "shape", None)
            if shape is None or len(shape) <= dim or shape[dim] <= size:
                continue
            raise GuideError(
                f"argument {path!r} has {shape[dim]} steps along dim {dim} in this call; the "
                f"guide was built for {size} (the pyro.markov loop observes it step by step, "
                f"as site {site!r}), so the model would sample latent sites of the extra "
                "steps that the guide does not, and they would come from the prior. Build the "
                "guide on sequences as long as the longest, or pad them to that length and "
                "pass a mask. "
                + (
                    f"The guide keeps one network per step because {reason}."
                    if reason
                    else "NaMIGuide(model, time_shared=True) serves sequences of any length."
                )
            )

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """The model's arguments by name (:meth:`ArgumentReader.bind`)."""
        return self.reader.bind(args, kwargs)

    def check_plate_masks(self, arguments: dict[str, Any], model_trace: Any) -> None:
        """The mask a masked plate reads from the arguments is the mask the model
        used in the prototype run (``model_trace``)."""
        graph = self.graph
        for plate, info in graph.plates.items():
            if not info.multiset:
                continue
            if plate in self.bindings or info.mask_argument is None:
                mask = self.plate_mask(arguments, plate)  # a binding, or a clear error
            else:
                mask = self.read(arguments, f"mask of plate {plate!r}", info.mask_argument)
            site = next(s for s in info.sites if s in model_trace.nodes)
            used = model_trace.nodes[site]["infer"][PLATE_MASKS_KEY][plate]
            same = mask.shape == used.shape and mask.dtype == used.dtype
            if not same or not bool(torch.equal(mask, used.to(mask.device))):
                source = "given binding" if plate in self.bindings else "argument"
                raise GuideError(
                    f"the mask of masked plate {plate!r} is computed inside the model, not "
                    f"the {source} {info.mask_argument!r} it comes from: the guide cannot read it "
                    "at call time. Pass the mask itself as a model argument, or give "
                    f"NaMIGuide(model, bindings={{{plate!r}: lambda arguments: ...}}) computing it"
                )

    def plate_mask(self, arguments: dict[str, Any], plate: str) -> torch.Tensor:
        """This call's mask of masked plate ``plate``, read from its argument."""
        info = self.graph.plates[plate]
        path = plate if plate in self.bindings else info.mask_argument
        if path is None:
            raise GuideError(
                f"the mask of masked plate {plate!r} is computed inside the model, so the guide "
                "cannot read it at call time. Pass the mask as a model argument "
                f"(multiset_plate({plate!r}, mask) with mask an argument), or give "
                f"NaMIGuide(model, bindings={{{plate!r}: lambda arguments: ...}}) computing it"
            )
        mask = self.read(arguments, f"mask of masked plate {plate!r}", path)
        if mask.dtype != torch.bool:
            raise GuideError(
                f"the mask of masked plate {plate!r} (argument {path!r}) has dtype "
                f"{mask.dtype}; it must be boolean, as in the model"
            )
        return mask

    def _bind_derived_sites(self) -> None:
        """Bind observed sites whose value is a function of another observed site's
        value (``SiteInfo.derived_from``: the coarse levels of a multiscale
        observation) to that function of the source's argument."""
        graph = self.graph
        for name, info in graph.sites.items():
            if name in self.bindings or not info.derived_from or not info.is_observed:
                continue
            source, fn = info.derived_from
            if source in self.bindings:
                path = source
            elif source in graph.sites and graph[source].bound_argument is not None:
                path = graph[source].bound_argument
            else:
                continue  # reported by _read_given_shapes if the guide needs the site

            def read(arguments: dict[str, Any], path: str = path, fn: Callable = fn) -> Any:
                value = self.reader.read(arguments, path)
                return None if value is None else fn(value)

            self.bindings[name] = read

    def _bind_views(self) -> None:
        """Bind observed sites whose value is a view of an argument
        (``obs=data[:, 0]``, ``obs=x.reshape(-1, 784)``) to that view of this
        call's argument (:func:`~pgmdl.guides.bindings.view_binding`)."""
        graph = self.graph
        for name, info in graph.sites.items():
            view = info.bound_view
            if name in self.bindings or view is None or not info.is_observed:
                continue
            if not view.derivation:
                continue  # the argument itself: read by its path

            def read(arguments: dict[str, Any], path: str) -> Any:
                return self.reader.read_argument(arguments, path)

            self.bindings[name] = view_binding(read, name, view)

    def _bind_aligned_inputs(self) -> None:
        """Bind inputs a masked plate moved to its layout (``"labels@parts"``,
        :meth:`~pgmdl.graph.masked_plate.MaskedPlate.align`) to the same move of
        the argument."""
        graph = self.graph
        for name in graph.inputs:
            path, sep, plate = name.rpartition(ALIGNED)
            if not sep or name in self.bindings or plate not in graph.plates:
                continue
            dim = graph.plates[plate].dim

            def read(
                arguments: dict[str, Any], path: str = path, plate: str = plate, dim: int = dim
            ) -> Any:
                value = self.reader.read(arguments, path)
                if value is None:
                    return None
                mask = self.plate_mask(arguments, plate)
                return align_to_plate(torch.as_tensor(value), mask.dim() - 1, dim)

            self.bindings[name] = read

    def path(self, name: str) -> str:
        """Where ``name`` (an observed site or an input) is read from: a binding of
        that name, else the argument the site's value is."""
        graph = self.graph
        if name in self.bindings or name not in graph.sites:
            return name
        return graph[name].bound_argument  # type: ignore[return-value]

    def read(self, arguments: dict[str, Any], name: str, path: str | None = None) -> torch.Tensor:
        """The value of ``name`` in this call (from ``path``, default :meth:`path`),
        as a tensor; a clear error when the call lacks it or it is ``None``."""
        if path is None:
            path = self.path(name)
        try:
            value = self.reader.read(arguments, path)
        except (KeyError, IndexError, TypeError) as err:
            raise GuideError(
                f"the guide reads {describe_given(self.graph, name)} from argument {path!r}, "
                f"which this call does not have ({err!r})"
            ) from err
        if value is None:
            raise GuideError(
                f"the guide conditions on {describe_given(self.graph, name)}, read from argument "
                f"{path!r}, which is None in this call. Call the guide with the observed data; "
                "to generate from the model, run the model alone."
            )
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        return value


def sometimes_observed(
    model: Callable[..., Any], graph: ModelGraph, args: tuple, kwargs: dict
) -> tuple[dict[str, ArgumentRef], tuple, dict]:
    """Sites the model observes in some calls and samples in others, and the
    call with all of them latent.

    A semi-supervised model takes ``ys=None`` and writes
    ``pyro.sample("y", ..., obs=ys)``: labelled batches observe ``y``,
    unlabelled ones sample it. Such a site is found from either kind of call:

    * observed here, bound to a parameter whose default is ``None``: the
      model is traced once more with that argument ``None``, and the site
      must turn latent;
    * latent here while a parameter with default ``None`` is ``None``: the
      model is traced with that argument set to the site's own sampled
      value, and the site must turn observed with that argument as its value.

    Only a site with observed descendants when latent counts: ``model(x=None)``
    that *generates* ``x`` leaves nothing to infer ``x`` from.

    Returns ``({site: view of its argument}, args, kwargs)`` where the
    arguments of the sites found are set to ``None``.
    """
    try:
        signature = model_signature(model)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {}, args, kwargs
    optional = {
        name
        for name, p in signature.parameters.items()
        if p.default is None
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    if not optional:
        return {}, args, kwargs

    def call_with(name: str, value: Any) -> tuple[tuple, dict]:
        changed = signature.bind(*args, **kwargs)
        changed.arguments[name] = value
        return changed.args, changed.kwargs

    def probe(name: str, value: Any) -> ModelGraph | None:
        probe_args, probe_kwargs = call_with(name, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return compile_model(
                    model, model_args=probe_args, model_kwargs=probe_kwargs, num_traces=1
                )
            except Exception:  # noqa: BLE001 - a probe the model does not accept
                return None

    found: dict[str, ArgumentRef] = {}
    for site, info in graph.sites.items():
        view = info.bound_view
        if info.is_observed and view is not None and view.path in optional:
            latent = probe(view.path, None)
            if latent is not None and inferred_when_latent(latent, site):
                found[site] = view
    unset = [n for n in optional if bound.arguments.get(n) is None and n not in found]
    if unset:
        with isolated_run():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        for name in unset:
            # which sites take the argument as obs= (cheap: one run with a marker);
            # if the model transforms it first, every latent site is a candidate
            candidates = _sites_observing(model, call_with(name, _PROBE))
            if candidates is None:
                candidates = list(graph.latent_sites)[:_MAX_PROBES]
            for site in candidates:
                value = trace.nodes[site]["value"] if site in trace.nodes else None
                if graph[site].enumerate or not isinstance(value, torch.Tensor):
                    continue
                observed = probe(name, value.detach())
                view = observed[site].bound_view if observed and site in observed.sites else None
                if (
                    view is not None
                    and view.path == name
                    and observed[site].is_observed
                    and inferred_when_latent(graph, site)
                ):
                    found[site] = view
                    break
    if not found:
        return {}, args, kwargs
    latent_args = signature.bind(*args, **kwargs)
    for view in found.values():
        latent_args.arguments[view.path] = None
    return found, latent_args.args, latent_args.kwargs


_PROBE = object()  # stands for an optional argument while looking for its obs= site
_MAX_PROBES = 16


class _ProbeCatcher(Messenger):
    """Turn ``obs=_PROBE`` into a latent site, noting the site's name."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is _PROBE:
            self.sites.append(msg["name"])
            msg["value"] = None
            msg["is_observed"] = False


def _sites_observing(model: Callable[..., Any], call: tuple[tuple, dict]) -> list[str] | None:
    """The sites that take the probe marker as ``obs=`` (None: the model could
    not run with it, e.g. it computes with the argument first)."""
    catcher = _ProbeCatcher()
    try:
        with isolated_run(), poutine.block(), catcher, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            poutine.trace(model).get_trace(*call[0], **call[1])
    except Exception:  # noqa: BLE001 - the model does not accept the marker
        return None
    return catcher.sites


def inferred_when_latent(graph: ModelGraph, site: str) -> bool:
    """``site`` is latent in ``graph`` and some observed site depends on it."""
    if site not in graph.sites or not graph[site].is_latent:
        return False
    return any(graph[d].is_observed for d in nx.descendants(graph.dag, site))


def describe_given(graph: ModelGraph | None, name: str) -> str:
    """``"observed site 'x'"`` or ``"model input 'c'"``, for messages."""
    if graph is not None and name in graph.sites:
        return f"observed site {name!r}"
    return f"model input {name!r}"


def loop_axes(graph: ModelGraph) -> dict[str, tuple[int, int, str]]:
    """``{argument path: (dim, size, site)}`` for the arguments a ``pyro.markov``
    loop observes one step at a time (``obs=x[:, t]``): the dimension indexed
    by an integer, and its size when the guide was built."""
    axes: dict[str, tuple[int, int, str]] = {}
    for name, info in graph.sites.items():
        view = info.bound_view
        if not (info.markov and info.is_observed and view is not None and view.derivation):
            continue
        op = view.derivation[0]
        if getattr(op.func, "__name__", "") != "__getitem__" or len(op.args) < 2:
            continue
        index = op.args[1] if isinstance(op.args[1], tuple) else (op.args[1],)
        if any(item is Ellipsis or item is None for item in index):
            continue
        for dim, item in enumerate(index):
            if isinstance(item, int) and dim < len(view.shape):
                axes.setdefault(view.path, (dim, view.shape[dim], name))
    return axes
