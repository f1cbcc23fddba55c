"""One run of a Pyro program under provenance tracking.

This is the measuring instrument of the graph compiler. It reuses Pyro's
provenance tracking (:mod:`pyro.ops.provenance`, the technique behind
:func:`pyro.infer.inspect.get_dependencies`, after Wingate et al. 2011
"Nonstandard interpretations of probabilistic programs"): every value a site
returns is wrapped in a :class:`~pyro.ops.provenance.ProvenanceTensor` tagged
with the site's name, PyTorch propagates the tags through every operation,
and the tags found on a site's distribution are its parents.

It goes further than ``get_dependencies`` in three ways:

* **every** site's value is tagged, observed and deterministic ones included,
  so an observed ``y`` that feeds ``x`` is a parent of ``x``, and ``z -> h ->
  x`` through ``h = pyro.deterministic("h", f(z))`` keeps both edges;
* the model's tensor **arguments** are tagged too, so when the value of an
  observed site is an argument (``obs=x``) pgmdl knows which argument carries
  it (``bound_argument``), and a later site that reads the raw argument
  instead of the site's return value still gets the edge;
* a :class:`~torch.overrides.TorchFunctionMode` watches for tagged values
  that *leave* PyTorch (``.item()``, ``bool()``, ``int()``, ``.tolist()``,
  NumPy): after that, provenance is blind, so the compiler is told where it
  happened and by which sites.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import inspect
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy
import pyro
import torch
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.ops.provenance import (
    ProvenanceTensor,
    detach_provenance,
    extract_provenance,
    get_provenance,
    track_provenance,
)
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent
from torch.overrides import TorchFunctionMode

from pgmdl.errors import ModelError
from pgmdl.graph.sites import PLATE_MASKS_KEY, SiteMask
from pgmdl.graph.views import VIEW_FUNCS, ArgumentRef, PlateIndex, record_view
from pgmdl.plugins import describe_metadata, metadata_keys


@dataclass(frozen=True)
class PlateFrame:
    """The part of a ``CondIndepStackFrame`` the graph keeps."""

    name: str
    size: int
    subsample_size: int
    dim: int | None
    multiset: bool = False
    mask_argument: str | None = None
    implicit: bool = False  # ``pyro.plate(name)`` without a size: read from the batch shape


@dataclass
class SiteRecord:
    """A site as seen in one run, before parents are resolved."""

    name: str
    kind: str
    distribution: str
    support: Any
    batch_shape: tuple[int, ...]
    event_shape: tuple[int, ...]
    is_discrete: bool
    plates: tuple[PlateFrame, ...]
    enumerate: str | None
    order: int
    parent_sites: frozenset[str]
    parent_args: frozenset[str]
    value_args: frozenset[str]
    observation: str | None = None
    derived_from: tuple[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    markov: bool = False  # inside a pyro.markov context (a step of a time loop)
    parent_refs: frozenset[ArgumentRef] = frozenset()
    value_ref: ArgumentRef | None = None
    masks: tuple[SiteMask, ...] = ()
    computed_from: tuple[str, ...] = ()  # arguments of an observed value that is no view


@dataclass(frozen=True)
class Escape:
    """A tagged value converted to a Python or NumPy object by user code."""

    sites: frozenset[str]
    args: frozenset[str]
    operation: str
    location: str
    position: int  # how many sites had been recorded when it happened


@dataclass(frozen=True)
class ArgumentWrite:
    """An in-place write into a model argument's memory (``x[:, 0] = z``)."""

    path: str
    operation: str
    location: str
    sites: frozenset[str]


@dataclass
class TraceRecord:
    sites: dict[str, SiteRecord] = field(default_factory=dict)
    escapes: list[Escape] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    argument_writes: list[ArgumentWrite] = field(default_factory=list)


def trace_structure(
    model: Callable[..., Any], args: tuple, kwargs: dict, model_name: str
) -> TraceRecord:
    """Run ``model(*args, **kwargs)`` once and record its sites and their parents.

    Raises:
        ModelError: the model raised (the original exception is chained), or
            used one site name twice.
    """
    record = TraceRecord()
    tagged_args, tagged_kwargs = tag_arguments(model, args, kwargs, model_name)
    refinement = _ProvenanceRefinement(record)
    try:
        with torch.no_grad(), refinement, _SiteRecorder(record, model_name, refinement):
            model(*tagged_args, **tagged_kwargs)
    except ModelError:
        raise
    except Exception as err:
        where = (
            f" after site {next(reversed(record.sites))!r}"
            if record.sites
            else " before its first sample site"
        )
        raise ModelError(
            f"model {model_name!r} raised {type(err).__name__}{where} while pgmdl traced it: {err}"
        ) from err
    return record


# --------------------------------------------------------------------------- arguments


def tag_arguments(
    model: Callable[..., Any], args: tuple, kwargs: dict, model_name: str
) -> tuple[tuple, dict]:
    """Tag every tensor among the model's arguments with an :class:`ArgumentRef`.

    Tensors nested in tuples, lists and dicts are tagged with their path
    (``"batch[0]"``, ``"inputs['x']"``).
    """
    try:
        signature = model_signature(model)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return (
            tuple(_tag(a, f"args[{i}]") for i, a in enumerate(args)),
            {k: _tag(v, k) for k, v in kwargs.items()},
        )
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        raise ModelError(
            f"model {model_name!r} has signature {signature} but was given "
            f"{len(args)} positional argument(s) and keywords {sorted(kwargs)}: {err}. "
            "Pass the model's arguments after it: pgmdl.compile(model, *args, **kwargs)."
        ) from err
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            bound.arguments[name] = tuple(_tag(v, f"{name}[{i}]") for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: _tag(v, k) for k, v in value.items()}
        else:
            bound.arguments[name] = _tag(value, name)
    return bound.args, bound.kwargs


def model_signature(model: Callable[..., Any]) -> inspect.Signature:
    """The signature the model's arguments bind to: ``forward``'s for a
    module (a ``PyroModule`` is called as ``model(x, y)`` but its
    ``__call__`` takes ``*args, **kwargs``)."""
    if isinstance(model, torch.nn.Module):
        return inspect.signature(model.forward)
    return inspect.signature(model)


def _tag(value: Any, path: str) -> Any:
    """``value`` with every tensor in it tagged; containers keep their type.

    Tuples and lists (namedtuples such as ``PackedSequence`` included), dicts,
    dataclasses and namespaces (``argparse.Namespace``) are rebuilt around
    their tagged tensors, so the model receives the same kind of object;
    anything else (a config object, a module, a number) passes untouched.
    """
    if isinstance(value, ProvenanceTensor):
        return value
    if isinstance(value, torch.Tensor):
        return TaggedTensor(value, frozenset({ArgumentRef(path, tuple(value.shape))}))
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return value._make(_tag(v, f"{path}[{i}]") for i, v in enumerate(value))
    if type(value) in (tuple, list):
        return type(value)(_tag(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        out = copy.copy(value)
        for key, item in value.items():
            out[key] = _tag(item, f"{path}[{key!r}]")
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = copy.copy(value)
        for f in dataclasses.fields(value):
            item = getattr(value, f.name, None)
            tagged = _tag(item, f"{path}.{f.name}")
            if tagged is not item:
                object.__setattr__(out, f.name, tagged)
        return out
    if isinstance(value, argparse.Namespace | types.SimpleNamespace):
        out = copy.copy(value)
        for key, item in vars(value).items():
            tagged = _tag(item, f"{path}.{key}")
            if tagged is not item:
                setattr(out, key, tagged)
        return out
    return value


class TaggedTensor(ProvenanceTensor):
    """A :class:`~pyro.ops.provenance.ProvenanceTensor` with a flat fast path.

    Pyro's implementation flattens ``[args, kwargs]`` into a pytree twice for
    every torch operation; almost all operations take tensors, numbers and
    flat lists or tuples of them, which this class scans directly (about 2.5
    times faster compiles). Anything else falls back to Pyro's code, and
    Pyro's ``get_provenance`` / ``detach_provenance`` read this class as they
    read their own.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in VIEW_FUNCS and args and isinstance(args[0], ProvenanceTensor):
            viewed = _exact_view(func, args, kwargs)
            if viewed is not None:
                return viewed
        provenance: frozenset = frozenset()
        try:
            plain_args, provenance = _strip_flat(args, provenance)
            plain_kwargs = {}
            for key, value in kwargs.items():
                plain_kwargs[key], provenance = _strip_flat_value(value, provenance)
        except _NotFlat:
            return _mark_inexact(super().__torch_function__(func, types, args, kwargs))
        result = func(*plain_args, **plain_kwargs)
        if not provenance:
            return result
        provenance = inexact(provenance)
        if isinstance(result, torch.Tensor):
            return TaggedTensor(result, provenance)
        if type(result) in (tuple, list):
            return type(result)(
                TaggedTensor(r, provenance) if isinstance(r, torch.Tensor) else r for r in result
            )
        return track_provenance(result, provenance)


def inexact(provenance: frozenset) -> frozenset:
    """``provenance`` after an operation that is not a view: argument refs
    keep their region but can no longer be replayed."""
    for p in provenance:
        if type(p) is ArgumentRef and p.exact:
            return frozenset(p.inexact() if type(p) is ArgumentRef else p for p in provenance)
    return provenance


def _mark_inexact(result: Any) -> Any:
    if isinstance(result, ProvenanceTensor):
        return TaggedTensor(result._t, inexact(result._provenance))
    if type(result) in (tuple, list):
        return type(result)(_mark_inexact(r) for r in result)
    return result


_REJECT = object()


def _exact_view(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)`` tagged as one more view of an argument, when
    ``args[0]`` is an exact view of one argument and nothing else carries
    provenance (except plate subsample indices); else None."""
    source = args[0]
    if len(source._provenance) != 1:
        return None
    (ref,) = source._provenance
    if not isinstance(ref, ArgumentRef) or not ref.exact:
        return None
    slots: list[tuple[tuple[int, ...], str]] = []
    plain = [source._t]
    for i, arg in enumerate(args[1:], 1):
        arg = _plain_view_arg(arg, (i,), slots)
        if arg is _REJECT:
            return None
        plain.append(arg)
    if kwargs and get_provenance(kwargs):
        return None
    result = func(*plain, **kwargs)
    ops = record_view(func, tuple(plain), kwargs, result, plate_slots=tuple(slots))
    if isinstance(result, tuple | list):
        return type(result)(
            TaggedTensor(r, frozenset({ref.then(op)})) if isinstance(r, torch.Tensor) else r
            for r, op in zip(result, ops, strict=True)
        )
    if not isinstance(result, torch.Tensor):
        return result
    return TaggedTensor(result, frozenset({ref.then(ops)}))


def _plain_view_arg(arg: Any, slot: tuple[int, ...], slots: list) -> Any:
    """A view's other argument without provenance; plate subsample indices
    are noted in ``slots``; any other provenance rejects the view."""
    if isinstance(arg, ProvenanceTensor):
        plates = [p for p in arg._provenance if isinstance(p, PlateIndex)]
        if len(plates) != 1 or len(arg._provenance) != 1:
            return _REJECT
        slots.append((slot, plates[0].plate))
        return arg._t
    if type(arg) is tuple and len(slot) == 1:  # an indexing key
        items = []
        for k, item in enumerate(arg):
            item = _plain_view_arg(item, (slot[0], k), slots)
            if item is _REJECT:
                return _REJECT
            items.append(item)
        return tuple(items)
    if isinstance(arg, list | dict | set) and get_provenance(arg):
        return _REJECT
    return arg


class _NotFlat(Exception):
    pass


def _args_provenance(args: tuple) -> frozenset:
    """The provenance of ``args``: scanned directly when flat, else Pyro's
    ``get_provenance`` (which flattens a pytree: 0.2 s of a T = 1000 compile,
    run on every argument check a distribution makes)."""
    try:
        return _strip_flat(args, frozenset())[1]
    except _NotFlat:
        return get_provenance(args)


def _strip_flat(values: tuple | list, provenance: frozenset) -> tuple[list, frozenset]:
    plain = []
    for value in values:
        value, provenance = _strip_flat_value(value, provenance)
        plain.append(value)
    return plain, provenance


def _strip_flat_value(value: Any, provenance: frozenset) -> tuple[Any, frozenset]:
    if isinstance(value, ProvenanceTensor):
        return value._t, provenance | value._provenance
    if isinstance(value, torch.Tensor | torch.Size) or not isinstance(
        value, tuple | list | dict | set
    ):
        return value, provenance
    if type(value) not in (tuple, list):  # namedtuples, dicts, sets: Pyro's pytree path
        raise _NotFlat
    plain = []
    for item in value:
        if isinstance(item, ProvenanceTensor):
            provenance |= item._provenance
            item = item._t
        elif isinstance(item, tuple | list | dict | set):
            raise _NotFlat
        plain.append(item)
    return type(value)(plain), provenance


def split_provenance(provenance: frozenset) -> tuple[frozenset[str], frozenset[str]]:
    """Split a provenance set into (site names, argument paths)."""
    sites = frozenset(p for p in provenance if isinstance(p, str))
    args = frozenset(p.path for p in provenance if isinstance(p, ArgumentRef))
    return sites, args


# --------------------------------------------------------------------------- sites


_WRAPPERS = (Independent, ExpandedDistribution, MaskedDistribution)


def unwrap_distribution(fn: Any) -> Any:
    """The distribution under ``Independent``/``Expanded``/``Masked`` wrappers."""
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    return fn


class _SiteRecorder(Messenger):
    """Record every sample and deterministic site and retag its value with its name."""

    def __init__(
        self, record: TraceRecord, model_name: str, refinement: _ProvenanceRefinement
    ) -> None:
        super().__init__()
        self.record = record
        self.model_name = model_name
        self.refinement = refinement
        self.values: dict[str, torch.Tensor] = {}

    def _pyro_post_sample(self, msg: dict) -> None:
        if site_is_subsample(msg):
            # ``with pyro.plate(...) as ind``: views indexed by ``ind`` replay
            # with the guide's own plate (see pgmdl.graph.views)
            if isinstance(msg["value"], torch.Tensor) and not isinstance(
                msg["value"], ProvenanceTensor
            ):
                msg["value"] = TaggedTensor(msg["value"], frozenset({PlateIndex(msg["name"])}))
            return
        name = msg["name"]
        if name in self.record.sites:
            raise ModelError(
                f"model {self.model_name!r} has two sites named {name!r}; Pyro site names "
                f"must be unique: vectorize with pyro.plate, or name them {name + '_{i}'!r}."
            )
        fn = msg["fn"]
        value, value_provenance = extract_provenance(msg["value"])
        base = unwrap_distribution(fn)
        is_deterministic = bool(msg["infer"].get("_deterministic")) or (
            isinstance(base, Delta) and not msg["is_observed"]
        )
        if is_deterministic:
            kind = "deterministic"
        elif msg["is_observed"]:
            kind = "observed"
        else:
            kind = "latent"

        lookup = self.refinement.written
        parent_provenance = _distribution_provenance(fn, value, lookup)
        for key in ("mask", "scale"):
            if isinstance(msg[key], torch.Tensor):
                parent_provenance |= get_provenance(msg[key]) | lookup(msg[key])
        parent_sites, parent_args = split_provenance(parent_provenance)
        value_ref = _exact_ref(value_provenance) if kind == "observed" else None
        if lookup(msg["value"]):  # written in place: not a view of the argument
            value_ref = None
        computed_from: tuple[str, ...] = ()
        if kind == "observed" and value_ref is None:
            computed_from = tuple(sorted(split_provenance(value_provenance)[1]))
        multiset_masks = msg["infer"].get(PLATE_MASKS_KEY, {})
        masks = self._masks(msg, lookup) if kind == "latent" else ()
        metadata = {k: msg["infer"][k] for k in metadata_keys() if k in msg["infer"]}

        self.record.sites[name] = SiteRecord(
            name=name,
            kind=kind,
            distribution=type(base).__name__,
            support=fn.support,
            batch_shape=tuple(fn.batch_shape),
            event_shape=tuple(fn.event_shape),
            is_discrete=bool(getattr(fn.support, "is_discrete", False)),
            plates=tuple(
                _plate_frame(f, tuple(fn.batch_shape), multiset_masks)
                for f in msg["cond_indep_stack"]  # Pyro keeps it outermost first
            ),
            enumerate=msg["infer"].get("enumerate"),
            markov=bool(msg["infer"].get("_markov_depth")),
            order=len(self.record.sites),
            parent_sites=parent_sites - {name},
            parent_args=parent_args,
            # only an observed value that is (a view of) one argument binds it to the site
            value_args=frozenset({value_ref.path}) if value_ref is not None else frozenset(),
            observation=describe_metadata(metadata),
            metadata=metadata,
            derived_from=msg["infer"].get("derived_from"),
            parent_refs=frozenset(p for p in parent_provenance if isinstance(p, ArgumentRef)),
            value_ref=value_ref,
            computed_from=computed_from,
            masks=masks,
        )
        self.values[name] = value
        # Downstream code sees only this site's name: direct dependencies only.
        msg["value"] = TaggedTensor(value, frozenset({name}))

    def _masks(self, msg: dict, lookup: Callable[[Any], frozenset]) -> tuple[SiteMask, ...]:
        """How the model masks a latent site (``poutine.mask``, ``.mask(m)``), in
        a form a guide can reproduce: a view of an argument, the value of an
        earlier site, a constant, or ``"unknown"`` (see :class:`SiteMask`)."""
        found = []
        # inside a multiset plate the handler mask includes the plate's own mask,
        # which a guide's multiset plate applies itself
        if msg["mask"] is not None and not msg["infer"].get(PLATE_MASKS_KEY):
            found.append((msg["mask"], 0))
        fn, event_dims = msg["fn"], 0
        while isinstance(fn, _WRAPPERS):
            if isinstance(fn, MaskedDistribution):
                found.append((fn._mask, event_dims))
            if isinstance(fn, Independent):
                event_dims += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        return tuple(self._site_mask(m, lookup, dims) for m, dims in found)

    def _site_mask(
        self, mask: Any, lookup: Callable[[Any], frozenset], event_dims: int
    ) -> SiteMask:
        mask = self._site_mask_kind(mask, lookup)
        return dataclasses.replace(mask, event_dims=event_dims)

    def _site_mask_kind(self, mask: Any, lookup: Callable[[Any], frozenset]) -> SiteMask:
        if not isinstance(mask, torch.Tensor):
            return SiteMask("constant", bool(mask))
        provenance = get_provenance(mask) | lookup(mask)
        plain = detach_provenance(mask)
        if not provenance:
            return SiteMask("constant", plain.clone())
        ref = _exact_ref(provenance)
        if ref is not None:
            return SiteMask("argument", ref)
        sites = [p for p in provenance if isinstance(p, str)]
        if len(sites) == 1 and len(provenance) == 1 and sites[0] in self.values:
            source = self.values[sites[0]]
            try:
                same = torch.equal(
                    plain.bool(), torch.broadcast_to(source != 0, plain.shape).to(plain.device)
                )
            except RuntimeError:  # shapes that do not broadcast
                same = False
            if same:
                return SiteMask("site", sites[0])
        described = ", ".join(sorted(map(str, sites))) or "arguments"
        return SiteMask("unknown", f"a mask computed from {described}")

    def _pyro_post_param(self, msg: dict) -> None:
        self.record.params.append(msg["name"])


def _plate_frame(frame: Any, batch_shape: tuple[int, ...], multiset_masks: dict) -> PlateFrame:
    """A plate as one site sees it. ``pyro.plate("data")`` without a size has
    size -1 in Pyro: its size is the site's batch size at the plate's dim
    (1 where the site broadcasts along it; the compiler takes the largest)."""
    size = int(frame.full_size if frame.full_size is not None else frame.size)
    subsample = int(frame.size)
    implicit = size < 0
    if implicit:
        known = frame.dim is not None and -frame.dim <= len(batch_shape)
        size = subsample = batch_shape[frame.dim] if known else 1
    return PlateFrame(
        name=frame.name,
        size=size,
        subsample_size=subsample,
        dim=frame.dim,
        multiset=frame.name in multiset_masks,
        mask_argument=_mask_argument(multiset_masks.get(frame.name)),
        implicit=implicit,
    )


ALIGNED = "@"
"""Separator of an aligned input's name: ``"labels@parts"`` is argument ``labels``
moved to the plates' layout of multiset plate ``parts`` (see
:meth:`pgmdl.multiset.MultisetPlate.align`)."""


def retag_aligned(source: Any, result: torch.Tensor, plate: str) -> torch.Tensor:
    """Tag ``result`` (a layout change of ``source``) as the aligned input
    ``"<argument>@<plate>"`` when ``source`` is exactly one model argument, so an
    amortized guide knows to read that argument and align it the same way.
    Outside a compile trace (no provenance) ``result`` is returned as is."""
    sites, args = split_provenance(get_provenance(source))
    if sites or len(args) != 1:
        return result
    (path,) = args
    return TaggedTensor(detach_provenance(result), frozenset({ArgumentRef(path + ALIGNED + plate)}))


def _mask_argument(mask: Any) -> str | None:
    """The model argument a multiset plate's mask is, if it is one argument's value."""
    if mask is None:
        return None
    sites, args = split_provenance(get_provenance(mask))
    return next(iter(args)) if len(args) == 1 and not sites else None


def _exact_ref(provenance: frozenset) -> ArgumentRef | None:
    """The argument view a value is, when its provenance is one exact ref."""
    if len(provenance) == 1:
        (ref,) = provenance
        if isinstance(ref, ArgumentRef) and ref.exact:
            return ref
    return None


def _distribution_provenance(
    fn: Any, value: torch.Tensor, lookup: Callable[[Any], frozenset]
) -> frozenset:
    """Provenance of a distribution's parameters and masks.

    The masks of ``Distribution.mask(m)`` wrappers are parameters (an
    AIR-style ``Normal(...).mask(z_pres)`` depends on ``z_pres``). Under the
    wrappers, the parameters of a plain parametric distribution are its
    tensor attributes; any other distribution (transformed, mixtures,
    classes pgmdl does not know) gives the provenance of its density, as in
    Pyro's ``get_dependencies``, together with that of every tensor it holds,
    however deep (transforms, component distributions, cached values).
    ``lookup`` adds what in-place writes put into a tensor.
    """
    provenance: frozenset = frozenset()
    base = fn
    while isinstance(base, _WRAPPERS):
        if isinstance(base, MaskedDistribution) and isinstance(base._mask, torch.Tensor):
            provenance |= get_provenance(base._mask) | lookup(base._mask)
        base = base.base_dist
    provenance |= _held_provenance(base, lookup)
    if type(base) in _PLAIN_PARAMETRIC:
        return provenance
    # the density of the unwrapped distribution (a mask(False) would zero it);
    # none is usable for a value outside a validated support
    with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
        provenance |= get_provenance(base.log_prob(value))
    return provenance


def _held_provenance(
    obj: Any, lookup: Callable[[Any], frozenset], seen: set | None = None, depth: int = 0
) -> frozenset:
    """Provenance of every tensor ``obj`` holds: attributes, nested
    distributions and transforms, lists, tuples and dicts of them."""
    if isinstance(obj, torch.Tensor):
        return get_provenance(obj) | lookup(obj)
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return frozenset()
    seen.add(id(obj))
    if isinstance(obj, _HOLDERS):
        items: Any = vars(obj).values()
    elif isinstance(obj, dict):
        items = obj.values()
    else:  # a list or tuple
        items = obj
    provenance: frozenset = frozenset()
    for item in items:
        if isinstance(item, torch.Tensor):
            if isinstance(item, ProvenanceTensor):
                provenance |= item._provenance
            provenance |= lookup(item)
        elif isinstance(item, _CONTAINERS) or (
            type(item) is tuple and item and not isinstance(item[0], int)
        ):
            provenance |= _held_provenance(item, lookup, seen, depth + 1)
    return provenance


_HOLDERS = (torch.distributions.Distribution, torch.distributions.Transform)
_CONTAINERS = (*_HOLDERS, list, dict)


# Distributions whose parameters are exactly their tensor attributes (lazy
# alternatives such as Bernoulli's probs/logits derive from the same tensors).
_PLAIN_PARAMETRIC = frozenset(
    getattr(pyro.distributions, name)
    for name in (
        "Normal",
        "Bernoulli",
        "Categorical",
        "Dirichlet",
        "Gamma",
        "Poisson",
        "Exponential",
        "Laplace",
        "Cauchy",
        "StudentT",
        "Uniform",
        "Delta",
    )
)


# --------------------------------------------------------------------------- escapes

_ESCAPES: dict[Any, str] = {
    torch.Tensor.item: ".item()",
    torch.Tensor.__bool__: "bool() (an if/while on a tensor)",
    torch.Tensor.__int__: "int()",
    torch.Tensor.__float__: "float()",
    torch.Tensor.__index__: "an index/range",
    torch.Tensor.tolist: ".tolist()",
    torch.Tensor.numpy: ".numpy()",
    torch.Tensor.__array__: "a NumPy conversion",
}

# Frames that only forward an escape to us (torch's dispatch wrappers).
_FORWARDING_FILES = (
    os.path.join("torch", "overrides.py"),
    os.path.join("torch", "_tensor.py"),
    os.path.join("torch", "utils", "_device.py"),
)
_LIBRARY_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (torch, pyro, numpy, sys.modules["pgmdl"])
    if getattr(module, "__file__", None)
)


# Operations that read only the dtype, device or shape of one argument
# (``x.new_zeros(...)``, ``torch.zeros_like(x)``, ``z.to(x)``): that argument
# gives the result no provenance. Value: the position of that argument.
_REFERENCE_ONLY: dict[Any, int] = {
    **dict.fromkeys(
        (
            torch.Tensor.new_zeros,
            torch.Tensor.new_ones,
            torch.Tensor.new_full,
            torch.Tensor.new_empty,
            torch.Tensor.new_tensor,
            torch.zeros_like,
            torch.ones_like,
            torch.empty_like,
            torch.full_like,
            torch.rand_like,
            torch.randn_like,
            torch.randint_like,
        ),
        0,
    ),
    **dict.fromkeys(
        (torch.Tensor.to, torch.Tensor.type_as, torch.Tensor.expand_as, torch.Tensor.view_as),
        1,
    ),
}


class _ProvenanceRefinement(TorchFunctionMode):
    """Refine provenance tracking where it is blind or too coarse.

    * Escapes: report tagged values that user code turns into Python or NumPy
      objects (``if z > 0``, ``int(n)``, ``z.item()``). Conversions made inside
      PyTorch, Pyro or NumPy (argument validation, printing) are not the
      model's control flow and are ignored.
    * Reference-only operations (``x.new_zeros(k)``, ``torch.zeros_like(x)``,
      ``z.to(x)``): the argument that only lends its dtype, device or shape
      does not make the result depend on its values, so its provenance is
      dropped. Without this, the common ``x.new_zeros(...)`` idiom would make
      every prior depend on the data.
    * In-place writes (``loc[:, 0] = a``, ``copy_``, ``index_put_``,
      ``masked_fill_``, ``scatter_``, ``out=``): the written tensor's Python
      object cannot carry the new tags, so they are kept per storage
      (:meth:`written`) and added to every later read of any tensor sharing
      that memory (views included). This is conservative: a read of an
      unwritten part of the buffer also gets the tags.
    """

    def __init__(self, record: TraceRecord) -> None:
        super().__init__()
        self.record = record
        # storage pointer -> (a tensor keeping the storage alive, provenance written)
        self._writes: dict[int, tuple[torch.Tensor, frozenset]] = {}

    def written(self, value: Any) -> frozenset:
        """What in-place writes put into the memory of tensor ``value``."""
        if not self._writes or not isinstance(value, torch.Tensor):
            return frozenset()
        entry = self._writes.get(_storage_key(value))
        return entry[1] if entry is not None else frozenset()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if self._writes:
            args, kwargs = self._with_writes(args, kwargs)
        position = _REFERENCE_ONLY.get(func)
        if position is not None and len(args) > position:
            args = list(args)
            args[position] = detach_provenance(args[position])
            return func(*args, **kwargs)
        operation = _ESCAPES.get(func)
        if operation is not None:
            provenance = _args_provenance(args)
            if provenance:
                location = _user_location()
                if location is not None:
                    sites, arg_paths = split_provenance(provenance)
                    self.record.escapes.append(
                        Escape(sites, arg_paths, operation, location, len(self.record.sites))
                    )
        elif _is_inplace(func, kwargs) and args:
            self._record_write(func, args, kwargs)
        return func(*args, **kwargs)

    def _record_write(self, func: Any, args: tuple, kwargs: dict) -> None:
        out = kwargs.get("out")
        target = out if isinstance(out, torch.Tensor) else args[0]
        if not isinstance(target, torch.Tensor):
            return
        sources = [a for a in args if a is not target] + [
            v for k, v in kwargs.items() if k != "out"
        ]
        provenance = get_provenance(sources)
        target_ref = (
            _exact_ref(target._provenance) if isinstance(target, ProvenanceTensor) else None
        )
        if target_ref is not None:  # the model writes into its own argument
            location = _user_location()
            if location is not None:
                self.record.argument_writes.append(
                    ArgumentWrite(
                        target_ref.path,
                        getattr(func, "__name__", str(func)),
                        location,
                        split_provenance(provenance)[0],
                    )
                )
        if not provenance:
            return
        key = _storage_key(target)
        if key is None:
            return
        previous = self._writes.get(key, (target, frozenset()))[1]
        self._writes[key] = (target, previous | inexact(provenance))

    def _with_writes(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``args`` and ``kwargs`` with written tensors tagged with what was written."""
        return (
            tuple(self._tag_written(a) for a in args),
            {k: self._tag_written(v) for k, v in kwargs.items()},
        )

    def _tag_written(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            extra = self.written(value)
            if not extra:
                return value
            if isinstance(value, ProvenanceTensor):
                return TaggedTensor(value._t, value._provenance | extra)
            return TaggedTensor(value, extra)
        if type(value) in (tuple, list):
            return type(value)(self._tag_written(v) for v in value)
        return value


def _storage_key(value: torch.Tensor) -> int | None:
    plain = value._t if isinstance(value, ProvenanceTensor) else value
    try:
        if plain.numel() == 0:
            return None
        return plain.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # sparse, meta or other storage-less tensors
        return None


_INPLACE_DUNDERS = frozenset(
    f"__i{op}__"
    for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor")
) | {"__setitem__", "__ilshift__", "__irshift__", "__imatmul__"}


def _is_inplace(func: Any, kwargs: dict) -> bool:
    """``x.add_(...)``, ``x[...] = ...``, ``x += ...`` or ``torch.f(..., out=x)``."""
    if kwargs and isinstance(kwargs.get("out"), torch.Tensor):
        return True
    known = _INPLACE_BY_FUNC.get(func)
    if known is None:
        name = getattr(func, "__name__", "")
        known = name in _INPLACE_DUNDERS or (
            name.endswith("_") and not name.startswith("_") and name != "requires_grad_"
        )
        _INPLACE_BY_FUNC[func] = known
    return known


_INPLACE_BY_FUNC: dict[Any, bool] = {}


def _user_location() -> str | None:
    """``file:line`` of the code that triggered an escape, or None if it is library code."""
    frame = sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename == __file__ or frame.f_code.co_filename.endswith(_FORWARDING_FILES)
    ):
        frame = frame.f_back
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    if filename.startswith(_LIBRARY_DIRS) or filename.startswith("<frozen"):
        return None
    return f"{filename}:{frame.f_lineno}"
