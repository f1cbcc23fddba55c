"""The graph compiler: Pyro program in, :class:`~pgmdl.graph.model_graph.ModelGraph` out.

The program is run ``num_traces`` times under provenance tracking
(:mod:`pgmdl.graph.tracing`), each run with its own seed, in isolation: the
global RNG states and the param store are restored afterwards, so compiling
never changes what the user's next ``pyro.sample`` or SVI step does.

A Bayesian network is a *static* object. When the runs disagree (a site
exists in some runs only, its parents, plates or shapes change) the program
has dynamic structure: with ``on_dynamic="error"`` (the default) pgmdl
raises :class:`~pgmdl.errors.DynamicStructureError` naming the sites; with
``on_dynamic="warn"`` it warns and returns the union of what it saw (every
site and edge of any run), which over-approximates the dependencies.

When a sampled value leaves PyTorch (``if z > 0:``, ``z.item()``,
``int(n)``), provenance tracking cannot see which later sites it
influenced. pgmdl then adds conservative ``"control"`` edges from that site
to every site created afterwards and issues a
:class:`~pgmdl.errors.StructureWarning` saying where it happened.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
import numpy as np
import pyro
import torch
from pyro.poutine.util import is_validation_enabled

from pgmdl.arguments import model_arguments
from pgmdl.errors import ArgumentError, DynamicStructureError, ModelError, StructureWarning
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.sites import PlateInfo, SiteInfo
from pgmdl.graph.tracing import PlateFrame, TraceRecord, trace_structure
from pgmdl.graph.views import ArgumentRef


def compile(model: Callable[..., Any], *args: Any, **kwargs: Any) -> ModelGraph:  # noqa: A001
    """Compile a Pyro program into its Bayesian network.

    ``model(*args, **kwargs)`` is run a few times under Pyro's provenance
    tracking. This is the option-less shorthand, read as
    ``poutine.trace(model).get_trace(*args, **kwargs)`` is: every argument
    goes to the model. It equals
    ``compile_model(model, model_args=args, model_kwargs=kwargs)``; use
    :func:`compile_model` for the options (number of runs, what to do about
    dynamic structure).

    Args:
        model: a Pyro program (a function or bound method with
            ``pyro.sample`` / ``pyro.deterministic`` / ``pyro.plate`` calls).
        *args, **kwargs: the model's arguments; observed data is passed
            here and used with ``obs=``.

    Returns:
        the model's :class:`~pgmdl.graph.model_graph.ModelGraph`.

    Raises:
        ModelError: ``model`` is not callable, does not accept the arguments,
            raised while running (chained), or has no sample site.
        DynamicStructureError: the structure changes between runs.
    """
    return compile_model(model, model_args=args, model_kwargs=kwargs)


def compile_model(
    model: Callable[..., Any],
    *legacy: Any,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    num_traces: int = 3,
    on_dynamic: Literal["error", "warn"] = "error",
    seed: int = 0,
) -> ModelGraph:
    """:func:`compile` with options.

    The model's arguments are keywords, as every pgmdl function with options
    takes them (:mod:`pgmdl.arguments`)::

        compile_model(model, model_args=(x,), model_kwargs={"y": y}, num_traces=1)

    The old spelling ``compile_model(model, args, kwargs, ...)`` still works
    for one release, with a ``FutureWarning``.

    Args:
        model: the Pyro program.
        model_args: its positional arguments, a tuple.
        model_kwargs: its keyword arguments.
        num_traces: how many runs to compare (at least 1; 1 disables the
            dynamic-structure check).
        on_dynamic: ``"error"`` raises :class:`DynamicStructureError` when
            runs disagree; ``"warn"`` warns and returns their union.
        seed: runs use seeds ``seed, seed + 1, ...``; the caller's RNG
            states are restored afterwards.

    Raises:
        ArgumentError: ``num_traces`` or ``on_dynamic`` cannot be used
            (:class:`~pgmdl.errors.ArgumentTypeError` for a ``model_args``
            that is not a tuple).
        ModelError, DynamicStructureError: as :func:`compile`.
    """
    if len(legacy) > 2:
        raise ArgumentError(
            "compile_model takes the model, then keywords: pass the model's arguments as "
            "model_args=(...) and model_kwargs={...}"
        )
    args, kwargs = model_arguments(
        "compile_model",
        model_args,
        model_kwargs,
        legacy=(legacy[0], legacy[1] if len(legacy) > 1 else None) if legacy else None,
        old_spelling="compile_model(model, args, kwargs, ...)",
        new_spelling="compile_model(model, model_args=args, model_kwargs=kwargs, ...)",
    )
    name = _model_name(model)
    if isinstance(model, ModelGraph):
        raise ModelError("this is already a compiled ModelGraph; pass the model function instead.")
    if not callable(model):
        raise ModelError(
            f"pgmdl.compile expects a Pyro model (a function or method that calls "
            f"pyro.sample), got {type(model).__name__} {model!r:.80}."
        )
    if not isinstance(num_traces, int) or num_traces < 1:
        raise ArgumentError(f"num_traces must be a positive integer, got {num_traces!r}")
    if on_dynamic not in ("error", "warn"):
        raise ArgumentError(f"on_dynamic must be 'error' or 'warn', got {on_dynamic!r}")

    records = []
    validate = is_validation_enabled()
    with isolated_run():
        for i in range(num_traces):
            pyro.set_rng_seed(seed + i)
            # The first run validates as the user asked; later runs only compare
            # structure, and validation would double their cost.
            with pyro.validation_enabled(validate and i == 0):
                records.append(trace_structure(model, args, kwargs, name))
    if not records[0].sites:
        raise ModelError(
            f"model {name!r} ran but created no pyro.sample or pyro.deterministic site: "
            "there is no random variable to build a graph of."
        )
    runs = [_resolve(record, name) for record in records]
    differences = _compare(runs)
    if differences:
        message = (
            f"the structure of model {name!r} changes between runs "
            f"({len(runs)} runs compared):\n  - "
            + "\n  - ".join(differences)
            + _escape_hint(records)
        )
        if on_dynamic == "error":
            raise DynamicStructureError(
                message + "\nA Bayesian network needs a fixed structure: make the sites, plate "
                "sizes and shapes independent of sampled values (use masks, torch.where, or a "
                "maximum size with pyro.poutine.mask), or pass on_dynamic='warn' to "
                "pgmdl.graph.compile_model to get the union of all runs."
            )
        warnings.warn(
            message + "\nReturning the union of all runs (an over-approximation).",
            StructureWarning,
            stacklevel=2,
        )
    _warn_escapes(records[0], runs[0], name)
    _warn_argument_writes(records[0], name)
    return _build(runs, records, name)


# --------------------------------------------------------------------------- one run, resolved


@dataclass(frozen=True)
class _Site:
    """A site of one run with its parents resolved to sites and inputs."""

    info: SiteInfo
    frames: tuple[PlateFrame, ...]
    data_parents: frozenset[str]
    control_parents: frozenset[str]

    def signature(self) -> tuple:
        i = self.info
        return (
            i.kind,
            i.distribution,
            i.batch_shape,
            i.event_shape,
            self.frames,
            self.data_parents,
            self.control_parents,
            i.inputs,
            i.bound_argument,
        )


def _resolve(record: TraceRecord, model_name: str) -> dict[str, _Site]:
    """Turn argument provenance into edges.

    An observed site whose value is (a view of) an argument stands for the
    part of the argument it reads (:class:`~pgmdl.graph.views.ArgumentRef`
    regions): a site that reads elements of that part gets the observed site
    as a parent; the elements no observed site owns are an input.
    """
    bindings: dict[str, list[tuple[str, ArgumentRef]]] = defaultdict(list)
    for site in record.sites.values():
        if site.value_ref is not None:
            bindings[site.value_ref.path].append((site.name, site.value_ref))

    resolved: dict[str, _Site] = {}
    for site in record.sites.values():
        data = set(site.parent_sites)
        inputs = set()
        for ref in site.parent_refs:
            bound = bindings.get(ref.path)
            if not bound:
                inputs.add(ref.path)
                continue
            owners = [(name, owned) for name, owned in bound if ref.overlaps(owned)]
            for name, owned in owners:
                if name == site.name:
                    raise ModelError(
                        f"the distribution of observed site {site.name!r} in model "
                        f"{model_name!r} reads {ref.describe()}, which overlaps the site's own "
                        f"observed value {owned.describe()}: a site cannot be its own parent. "
                        "Compute its parameters from other arguments or other elements of "
                        f"{ref.path!r}."
                    )
                data.add(name)
            if _reads_beyond(ref, [owned for _, owned in bound]):
                inputs.add(ref.path)
        control = set()
        for escape in record.escapes:
            if escape.position <= site.order:
                control |= escape.sites
                control |= {
                    s
                    for path in escape.args
                    for s, _ in bindings.get(path, ())
                    if record.sites[s].order < escape.position
                }
        control -= data | {site.name}
        bound_argument = site.value_ref.path if site.value_ref is not None else None
        info = SiteInfo(
            name=site.name,
            kind=site.kind,  # type: ignore[arg-type]
            distribution=site.distribution,
            support=site.support,
            batch_shape=site.batch_shape,
            event_shape=site.event_shape,
            is_discrete=site.is_discrete,
            plates=tuple(f.name for f in site.plates),
            order=site.order,
            bound_argument=bound_argument,
            bound_view=site.value_ref,
            masks=site.masks,
            inputs=tuple(sorted(inputs)),
            enumerate=site.enumerate,
            markov=site.markov,
            observation=site.observation,
            metadata=site.metadata,
            derived_from=site.derived_from,
            computed_from=site.computed_from,
        )
        resolved[site.name] = _Site(info, site.plates, frozenset(data), frozenset(control))
    return resolved


def _reads_beyond(ref: ArgumentRef, owned: list[ArgumentRef]) -> bool:
    """Whether ``ref`` reads elements of its argument that no observed site owns."""
    if any(o.shape != ref.shape for o in owned):
        return True
    covered = owned[0].region.clone()
    for o in owned[1:]:
        covered |= o.region
    return bool((ref.region & ~covered).any())


# --------------------------------------------------------------------------- comparing runs


def _compare(runs: list[dict[str, _Site]]) -> list[str]:
    """Human-readable differences between runs, naming sites and plates."""
    differences = []
    names = [set(run) for run in runs]
    everywhere = set.intersection(*names)
    somewhere = set.union(*names)
    for name in sorted(somewhere - everywhere, key=lambda n: _first_order(runs, n)):
        count = sum(name in n for n in names)
        differences.append(f"site {name!r} exists in {count} of {len(runs)} runs")

    fields = [
        ("kind", lambda s: s.info.kind),
        ("distribution", lambda s: s.info.distribution),
        ("batch shape", lambda s: s.info.batch_shape),
        ("event shape", lambda s: s.info.event_shape),
        ("plates", lambda s: tuple((f.name, f.subsample_size) for f in s.frames)),
        ("parents", lambda s: sorted(s.data_parents)),
        ("control parents", lambda s: sorted(s.control_parents)),
        ("inputs", lambda s: s.info.inputs),
        ("bound argument", lambda s: s.info.bound_argument),
        ("observed view", lambda s: s.info.bound_view and s.info.bound_view.describe()),
        ("observation model", lambda s: s.info.observation),
    ]
    for name in sorted(everywhere, key=lambda n: runs[0][n].info.order):
        for label, get in fields:
            values = [get(run[name]) for run in runs]
            if any(v != values[0] for v in values[1:]):
                seen = " / ".join(_fmt(v) for v in values)
                differences.append(f"{label} of site {name!r} differs between runs: {seen}")
    return differences


def _first_order(runs: list[dict[str, _Site]], name: str) -> int:
    return min(run[name].info.order for run in runs if name in run)


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "{" + ", ".join(map(str, value)) + "}"
    return str(value)


def _escape_hint(records: list[TraceRecord]) -> str:
    seen = {
        (tuple(sorted(e.sites)), e.operation, e.location)
        for record in records
        for e in record.escapes
        if e.sites
    }
    if not seen:
        return ""
    lines = [
        f"value of {', '.join(map(repr, sites))} left PyTorch through {op} at {loc}"
        for sites, op, loc in sorted(seen)
    ]
    return "\nLikely cause:\n  - " + "\n  - ".join(lines)


def _warn_escapes(record: TraceRecord, run: dict[str, _Site], model_name: str) -> None:
    for escape in record.escapes:
        if not escape.sites:
            continue
        later = [n for n, s in run.items() if s.info.order >= escape.position]
        sites = ", ".join(map(repr, sorted(escape.sites)))
        consequence = (
            f"so pgmdl made it a parent ('control' edge) of every later site: {', '.join(later)}"
            if later
            else "no site comes after it, so no edge was added"
        )
        warnings.warn(
            f"in model {model_name!r}, the value of site {sites} left PyTorch through "
            f"{escape.operation} at {escape.location}; provenance tracking cannot follow it, "
            f"{consequence}. Keep sampled values in tensor operations (torch.where, masks) "
            "to get exact edges.",
            StructureWarning,
            stacklevel=4,
        )


def _warn_argument_writes(record: TraceRecord, model_name: str) -> None:
    """In-place writes into a model argument change the caller's data on every
    call, and what an observed site bound to it reads: pgmdl follows the tags
    written (conservatively, per storage) but says where it happened."""
    seen = set()
    for write in record.argument_writes:
        if (write.path, write.location) in seen:
            continue
        seen.add((write.path, write.location))
        written = (
            f" with values of {', '.join(map(repr, sorted(write.sites)))}" if write.sites else ""
        )
        warnings.warn(
            f"model {model_name!r} writes in place into its argument {write.path!r}{written} "
            f"({write.operation} at {write.location}): this changes the caller's data, and every "
            f"later read of {write.path!r} is treated as reading what was written (conservative "
            f"edges). Write into a copy instead: {write.path.split('[')[0]} = "
            f"{write.path.split('[')[0]}.clone().",
            StructureWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- building


def _build(runs: list[dict[str, _Site]], records: list[TraceRecord], name: str) -> ModelGraph:
    union: dict[str, _Site] = {}
    for run in runs:
        for site_name, site in run.items():
            union.setdefault(site_name, site)
    edges: dict[tuple[str, str], str] = {}
    for run in runs:
        for site in run.values():
            for parent in site.control_parents:
                edges.setdefault((parent, site.info.name), "control")
            for parent in site.data_parents:
                edges[(parent, site.info.name)] = "data"
    dynamic = _dynamic_sites(runs)

    plates: dict[str, PlateFrame] = {}
    plate_sites: dict[str, list[str]] = defaultdict(list)
    for site in sorted(union.values(), key=lambda s: s.info.order):
        for frame in site.frames:
            known = plates.setdefault(frame.name, frame)
            if known.implicit and frame.implicit:
                # a plate without a size: as large as its largest site
                if frame.size > known.size:
                    plates[frame.name] = frame
                plate_sites[frame.name].append(site.info.name)
                continue
            if known.subsample_size != frame.subsample_size and not dynamic:
                raise ModelError(
                    f"model {name!r} uses two plates named {frame.name!r} with sizes "
                    f"{known.subsample_size} and {frame.subsample_size} (site "
                    f"{site.info.name!r}); give the plates distinct names."
                )
            plate_sites[frame.name].append(site.info.name)

    inputs: dict[str, list[str]] = defaultdict(list)
    for site in sorted(union.values(), key=lambda s: s.info.order):
        for path in site.info.inputs:
            inputs[path].append(site.info.name)

    graph = ModelGraph(
        sites=[site.info for site in union.values()],
        edges=[(u, v, kind) for (u, v), kind in edges.items()],
        plates=[
            PlateInfo(
                f.name,
                f.size,
                f.subsample_size,
                f.dim,
                tuple(plate_sites[f.name]),
                multiset=f.multiset,
                mask_argument=f.mask_argument,
                implicit=f.implicit,
            )
            for f in plates.values()
        ],
        inputs=inputs,
        params=dict.fromkeys(p for record in records for p in record.params),
        model_name=name,
        dynamic_sites=dynamic,
    )
    if not nx.is_directed_acyclic_graph(graph.dag):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(graph.dag))
        raise ModelError(
            f"the dependencies of model {name!r} form a cycle ({cycle}): a site reads a model "
            "argument that is the observed value of a site computed from it."
        )
    return graph


def _dynamic_sites(runs: list[dict[str, _Site]]) -> list[str]:
    names = set().union(*runs)
    dynamic = []
    for name in names:
        present = [run[name] for run in runs if name in run]
        if len(present) < len(runs) or any(
            s.signature() != present[0].signature() for s in present[1:]
        ):
            dynamic.append(name)
    return sorted(dynamic, key=lambda n: _first_order(runs, n))


# --------------------------------------------------------------------------- isolation


@contextmanager
def isolated_run():
    """Restore the RNG states and drop params created while compiling."""
    store = pyro.get_param_store()
    known_params = set(store.keys())
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    devices = (
        list(range(torch.cuda.device_count()))
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for param in set(store.keys()) - known_params:
            # one tensor under two names (a module inside another registered module):
            # deleting its first name already dropped the tensor's reverse entry
            with contextlib.suppress(KeyError):
                del store[param]


def _model_name(model: Any) -> str:
    name = getattr(model, "__qualname__", None) or getattr(model, "__name__", None)
    return name or type(model).__name__
