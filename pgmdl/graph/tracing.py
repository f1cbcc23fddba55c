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

import inspect
import os
import sys
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
from pgmdl.graph.sites import MULTISET_MASKS_KEY


@dataclass(frozen=True)
class ArgumentRef:
    """Provenance tag of a model argument (``path`` is ``"x"`` or ``"data[0]"``)."""

    path: str


@dataclass(frozen=True)
class PlateFrame:
    """The part of a ``CondIndepStackFrame`` the graph keeps."""

    name: str
    size: int
    subsample_size: int
    dim: int | None
    multiset: bool = False
    mask_argument: str | None = None


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


@dataclass(frozen=True)
class Escape:
    """A tagged value converted to a Python or NumPy object by user code."""

    sites: frozenset[str]
    args: frozenset[str]
    operation: str
    location: str
    position: int  # how many sites had been recorded when it happened


@dataclass
class TraceRecord:
    sites: dict[str, SiteRecord] = field(default_factory=dict)
    escapes: list[Escape] = field(default_factory=list)
    params: list[str] = field(default_factory=list)


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
    try:
        with torch.no_grad(), _ProvenanceRefinement(record), _SiteRecorder(record, model_name):
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
        signature = inspect.signature(model)
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


def _tag(value: Any, path: str) -> Any:
    if isinstance(value, ProvenanceTensor):
        return value
    if isinstance(value, torch.Tensor):
        return TaggedTensor(value, frozenset({ArgumentRef(path)}))
    if isinstance(value, tuple | list):
        tagged = [_tag(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(tagged) if isinstance(value, tuple) else tagged
    if isinstance(value, dict):
        return {k: _tag(v, f"{path}[{k!r}]") for k, v in value.items()}
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
        provenance: frozenset = frozenset()
        try:
            plain_args, provenance = _strip_flat(args, provenance)
            plain_kwargs = {}
            for key, value in kwargs.items():
                plain_kwargs[key], provenance = _strip_flat_value(value, provenance)
        except _NotFlat:
            return super().__torch_function__(func, types, args, kwargs)
        result = func(*plain_args, **plain_kwargs)
        if not provenance:
            return result
        if isinstance(result, torch.Tensor):
            return TaggedTensor(result, provenance)
        if type(result) in (tuple, list):
            return type(result)(
                TaggedTensor(r, provenance) if isinstance(r, torch.Tensor) else r for r in result
            )
        return track_provenance(result, provenance)


class _NotFlat(Exception):
    pass


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

    def __init__(self, record: TraceRecord, model_name: str) -> None:
        super().__init__()
        self.record = record
        self.model_name = model_name

    def _pyro_post_sample(self, msg: dict) -> None:
        if site_is_subsample(msg):
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

        parent_provenance = _distribution_provenance(fn, value)
        if isinstance(msg["mask"], torch.Tensor):
            parent_provenance |= get_provenance(msg["mask"])
        if isinstance(msg["scale"], torch.Tensor):
            parent_provenance |= get_provenance(msg["scale"])
        parent_sites, parent_args = split_provenance(parent_provenance)
        value_sites, value_args = split_provenance(value_provenance)
        multiset_masks = msg["infer"].get(MULTISET_MASKS_KEY, {})

        self.record.sites[name] = SiteRecord(
            name=name,
            kind=kind,
            distribution=type(base).__name__,
            support=fn.support,
            batch_shape=tuple(fn.batch_shape),
            event_shape=tuple(fn.event_shape),
            is_discrete=bool(getattr(fn.support, "is_discrete", False)),
            plates=tuple(
                PlateFrame(
                    name=f.name,
                    size=int(f.full_size if f.full_size is not None else f.size),
                    subsample_size=int(f.size),
                    dim=f.dim,
                    multiset=f.name in multiset_masks,
                    mask_argument=_mask_argument(multiset_masks.get(f.name)),
                )
                for f in msg["cond_indep_stack"]  # Pyro keeps it outermost first
            ),
            enumerate=msg["infer"].get("enumerate"),
            order=len(self.record.sites),
            parent_sites=parent_sites - {name},
            parent_args=parent_args,
            # only an observed value that is a pure argument binds it to the site
            value_args=value_args if kind == "observed" and not value_sites else frozenset(),
            observation=msg["infer"].get("observation"),
            derived_from=msg["infer"].get("derived_from"),
        )
        # Downstream code sees only this site's name: direct dependencies only.
        msg["value"] = TaggedTensor(value, frozenset({name}))

    def _pyro_post_param(self, msg: dict) -> None:
        self.record.params.append(msg["name"])


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


def _distribution_provenance(fn: Any, value: torch.Tensor) -> frozenset:
    """Provenance of a distribution's parameters, read through its density.

    As in Pyro's ``get_dependencies``, the density of a provenance-free value
    carries exactly the tags of the parameters it was computed from, however
    the distribution stores them (lazily, inside transforms...). Mask
    wrappers are removed first: ``mask(False)`` would zero the density and
    its provenance with it.
    """
    base = unwrap_distribution(fn)
    if type(base) in _PLAIN_PARAMETRIC:
        # Parameters are plain tensor attributes: read them without a density.
        return _attribute_provenance(base)
    while isinstance(fn, MaskedDistribution):
        fn = fn.base_dist
    try:
        return get_provenance(fn.log_prob(value))
    except (NotImplementedError, ValueError, RuntimeError):
        # No usable density (e.g. a value outside a validated support):
        # read the tensors the distribution holds instead.
        return _attribute_provenance(fn)


def _attribute_provenance(fn: Any) -> frozenset:
    provenance: frozenset = frozenset()
    for value in vars(fn).values():
        if isinstance(value, ProvenanceTensor):
            provenance |= value._provenance
    return provenance


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
    """

    def __init__(self, record: TraceRecord) -> None:
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        position = _REFERENCE_ONLY.get(func)
        if position is not None and len(args) > position:
            args = list(args)
            args[position] = detach_provenance(args[position])
            return func(*args, **(kwargs or {}))
        operation = _ESCAPES.get(func)
        if operation is not None:
            provenance = get_provenance(args)
            if provenance:
                location = _user_location()
                if location is not None:
                    sites, arg_paths = split_provenance(provenance)
                    self.record.escapes.append(
                        Escape(sites, arg_paths, operation, location, len(self.record.sites))
                    )
        return func(*args, **(kwargs or {}))


def _user_location() -> str | None:
    """``file:line`` of the code that triggered an escape, or None if it is library code."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith(_FORWARDING_FILES):
        frame = frame.f_back
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    if filename.startswith(_LIBRARY_DIRS) or filename.startswith("<frozen"):
        return None
    return f"{filename}:{frame.f_lineno}"
