"""What is tuned, and the :class:`~pgmdl.boltzmann.TunedModel` at the identity.

:func:`prepare` compiles the model on the generating call, checks the tuned
sites (:func:`check_sites`: continuous latents), chooses what each flow reads
(:func:`flow_contexts`: by default the site's parents), where executions run
side by side (:func:`particle_dim`), and builds one
:class:`~pgmdl.boltzmann.flows.SiteFlow` per site, placed on the device of the
model's values (:func:`place_flows`). At the identity the tuned model samples
the original model; :func:`~pgmdl.boltzmann.boltzmann_tune` starts from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pyro
import torch

from pgmdl.boltzmann.flows import FlowFactory, SiteFlow
from pgmdl.boltzmann.handler import PARTICLE_PLATE, TunedSites
from pgmdl.boltzmann.tuned_model import Criterion, TunedModel
from pgmdl.errors import ArgumentError, ArgumentTypeError, SiteNotFoundError, TuningError
from pgmdl.graph.compile import compile_model
from pgmdl.graph.model_graph import ModelGraph


def prepare(
    model: Callable[..., Any],
    criterion: Criterion,
    sites: str | Sequence[str],
    *,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    flow: str | FlowFactory = "spline",
    context: Literal["parents"] | Mapping[str, Sequence[str]] | None = "parents",
    particle_plate: str | None = None,
) -> TunedModel:
    r"""Check the sites and build the :class:`TunedModel` at the identity
    (:math:`\lambda = 0`, so it samples the original model), without tuning.
    :func:`boltzmann_tune` starts from it; the diagnostics use it to read
    gradients at base samples. Arguments as in :func:`boltzmann_tune`."""
    model_kwargs = dict(model_kwargs or {})
    if not isinstance(model_args, tuple):
        raise ArgumentTypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
    if not callable(criterion):
        raise ArgumentTypeError(
            f"criterion must be callable(values) -> Tensor, got {criterion!r:.60}"
        )
    graph = compile_model(model, model_args=model_args, model_kwargs=model_kwargs)
    site_list = [sites] if isinstance(sites, str) else list(sites)
    if not site_list:
        raise ArgumentError("sites must name at least one latent site to tune.")
    check_sites(graph, site_list)
    contexts = flow_contexts(graph, site_list, context)
    dim = particle_dim(graph, site_list, particle_plate)
    flows = {
        s: SiteFlow(
            s,
            graph[s].event_shape,
            graph[s].support,
            context_features=sum(_numel(graph[p].event_shape) for p in contexts.get(s, ())),
            flow=flow,
        )
        for s in site_list
    }
    tuned = TunedModel(
        model, flows, contexts, criterion, model_args, model_kwargs, particle_plate, dim
    )
    place_flows(tuned)
    return tuned


def place_flows(tuned: TunedModel) -> None:
    """One run of two executions at the identity: move the flows to the
    device of the model's values and let them read their sites' scales."""
    probe = TunedSites(tuned.flows, tuned.contexts)
    with torch.no_grad(), probe:
        if tuned.particle_plate is None:
            with pyro.plate(PARTICLE_PLATE, 2, dim=tuned.particle_dim):
                tuned.model(*tuned.model_args, **tuned.model_kwargs)
        else:
            tuned.model(*tuned.model_args, **tuned.model_kwargs)
    device = None
    for s, base in probe.bases.items():
        tuned.flows[s].calibrate(base)
        device = probe.records[s].value.device
    if device is not None:
        tuned.flows.to(device)


def check_sites(graph: ModelGraph, sites: list[str]) -> None:
    """Every site is a continuous latent of this call of the model, named once.

    Raises:
        SiteNotFoundError: a site the model does not have.
        TuningError: an observed, deterministic or discrete site.
        ArgumentError: a site named twice.
    """
    for s in sites:
        if s not in graph:
            raise SiteNotFoundError(s, graph.latent_sites, what="latent site")
        info = graph[s]
        if info.is_observed:
            raise TuningError(
                f"site {s!r} is observed in this call of the model (obs= is given): Boltzmann "
                "tuning replaces latent sites. Pass model_args/model_kwargs that generate it, "
                f"or tune one of the latent sites {list(graph.latent_sites)}; the criterion "
                "can still read observed sites."
            )
        if info.is_deterministic:
            raise TuningError(
                f"site {s!r} is deterministic (pyro.deterministic or a Delta): it has no "
                f"distribution to tune. Tune the latent sites it depends on: "
                f"{[p for p in graph.parents(s) if graph[p].is_latent]}."
            )
        if info.is_discrete:
            raise TuningError(
                f"site {s!r} is discrete ({info.distribution}): a normalizing flow cannot push "
                "it forward. Tune continuous latent sites."
            )
    if len(set(sites)) != len(sites):
        raise ArgumentError(f"sites lists a site twice: {sites}")


def flow_contexts(graph: ModelGraph, sites: list[str], context: Any) -> dict[str, tuple[str, ...]]:
    """The sites each tuned site's flow reads (``context`` as in
    :func:`~pgmdl.boltzmann.boltzmann_tune`); sites without context are left out."""
    if context is None:
        return {}
    if context == "parents":
        out = {}
        for s in sites:
            # a parent in a plate the site is not in (a multiset's parts) has
            # one value per replicate: it cannot be one context vector
            inside = set(graph[s].plates)
            parents = tuple(p for p in graph.parents(s) if set(graph[p].plates) <= inside)
            if parents:
                out[s] = parents
        return out
    if not isinstance(context, Mapping):
        raise ArgumentTypeError(f"context must be 'parents', None or a mapping, got {context!r}")
    out = {}
    for s, parents in context.items():
        if s not in sites:
            raise ArgumentError(f"context names {s!r}, which is not among the tuned sites {sites}")
        parents = (parents,) if isinstance(parents, str) else tuple(parents)
        for p in parents:
            if p not in graph:
                raise SiteNotFoundError(p, graph.sites, what="context site")
            if graph[p].order >= graph[s].order:
                raise TuningError(
                    f"context site {p!r} of {s!r} runs after it; a flow can only read "
                    "sites that run before the tuned site."
                )
        if parents:
            out[s] = parents
    return out


def particle_dim(graph: ModelGraph, sites: list[str], particle_plate: str | None) -> int:
    """The batch dimension along which executions run side by side: a new
    plate left of the model's own (``particle_plate=None``), or the model's
    plate ``particle_plate``, which must hold every tuned site.

    Raises:
        TuningError: the model already has pgmdl's particle plate, or
            ``particle_plate`` is sequential or misses a tuned site.
        SiteNotFoundError: no plate named ``particle_plate``.
    """
    dims = [p.dim for p in graph.plates.values() if p.dim is not None]
    if particle_plate is None:
        if PARTICLE_PLATE in graph.plates:
            raise TuningError(f"the model already has a plate named {PARTICLE_PLATE!r}.")
        return min(dims, default=0) - 1
    if particle_plate not in graph.plates:
        raise SiteNotFoundError(particle_plate, graph.plates, what="plate")
    plate = graph.plates[particle_plate]
    if plate.dim is None:
        raise TuningError(
            f"plate {particle_plate!r} is sequential; particle_plate needs a vectorized plate."
        )
    outside = [s for s in sites if particle_plate not in graph[s].plates]
    if outside:
        raise TuningError(
            f"tuned sites {outside} are outside plate {particle_plate!r}: with "
            f"particle_plate={particle_plate!r}, every tuned site must be in that plate "
            "(its items are the independent executions). Leave particle_plate=None."
        )
    return plate.dim


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if len(shape) else 1
