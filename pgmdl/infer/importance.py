r"""Importance weights of a model and its amortized guide, per data point and per dimension.

The shared machinery of :func:`~pgmdl.infer.likelihood.log_likelihood` and
:func:`~pgmdl.infer.imputation.impute`. For ``K`` particles
:math:`z_k \sim q(z \mid x)` drawn side by side (a ``pyro.plate`` left of the
model's own, as in ``Trace_ELBO(vectorize_particles=True)``), one run of the
guide and one replay of the model give, for each data point :math:`n`,

.. math::

    \log q(z_k \mid x_n), \qquad \log p(z_k), \qquad
    \log p(x_{n,d} \mid z_k) \ \ \text{for every dimension } d,

so that a mask of observed dimensions can be applied to the likelihood:
:math:`\log w_k = \log p(z_k) + \sum_{d \in o} \log p(x_{n,d} \mid z_k) - \log q(z_k \mid \cdot)`
(Mattei & Frellsen, MIWAE, 2019). The observed site must factorize over its
last dimension (``Independent`` of a Bernoulli, Normal, Student-t,
:class:`pgmdl.QuasiDeterministic`...) and every latent must be local to the
data plate (one value per data point).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from torch import Tensor
from torch.distributions import Distribution, Independent

from pgmdl.errors import ModelError, SiteNotFoundError

PARTICLES = "_importance_particles"


@dataclass
class Scored:
    """One vectorized scoring of ``K`` particles for ``N`` data points.

    Attributes:
        log_q: :math:`\\log q(z_k \\mid \\cdot)`, shape ``(K, N)``.
        log_prior: :math:`\\log p(z_k)`, every latent of the model, ``(K, N)``.
        log_lik: :math:`\\log p(x_{n,d} \\mid z_k)`, ``(K, N, D)``.
        obs: the observed site's distribution, batch ``(K, N)``, event ``(D,)``.
        latents: the guide's sampled values, by site (particle dimension first).
        event_dims: each latent's number of event dimensions.
    """

    log_q: Tensor
    log_prior: Tensor
    log_lik: Tensor
    obs: Distribution
    latents: dict[str, Tensor]
    event_dims: dict[str, int]

    def log_weights(self, mask: Tensor | None = None) -> Tensor:
        """:math:`\\log w_{k,n}` with the likelihood summed over observed dimensions."""
        lik = self.log_lik if mask is None else self.log_lik * mask
        return self.log_prior + lik.sum(-1) - self.log_q


@dataclass(frozen=True)
class Layout:
    """Where things are in a model's traces: the observed site, the argument
    that holds its value, and the plate dimensions."""

    site: str
    particle_dim: int
    data_dim: int


@contextlib.contextmanager
def evaluating(*fns: Any) -> Iterator[None]:
    """Put the ``nn.Module`` behind each of ``fns`` (a module, or a bound
    method of one) in eval mode, and restore each module's mode after:
    estimating must not move a guide's running statistics (ParentNorm,
    batch norm) or use its dropout."""
    modules = []
    for fn in fns:
        for owner in (fn, getattr(fn, "__self__", None)):
            if isinstance(owner, torch.nn.Module) and owner not in modules:
                modules.append(owner)
    modes = [{m: m.training for m in module.modules()} for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for saved in modes:
            for m, training in saved.items():
                m.training = training


def observed_site(graph, site: str | None) -> str:  # noqa: ANN001 - a ModelGraph
    """The observed site to score: ``site``, or the model's only observed site."""
    if site is not None:
        if site not in graph:
            raise SiteNotFoundError(site, graph.observed_sites, what="observed site")
        if not graph[site].is_observed:
            raise ModelError(
                f"site {site!r} is not observed in this call: pass its data to the model "
                "(obs=...) in the arguments given here."
            )
        return site
    observed = list(graph.observed_sites)
    if len(observed) != 1:
        raise ModelError(
            f"the model has {len(observed)} observed sites {observed}: name the one whose "
            "dimensions are scored with site=."
        )
    return observed[0]


def layout(graph, site: str) -> Layout:  # noqa: ANN001
    """Check the model's shape requirements and find the plate dimensions."""
    info = graph[site]
    data_plates = [graph.plates[p] for p in info.plates if graph.plates[p].dim is not None]
    if len(data_plates) != 1:
        raise ModelError(
            f"observed site {site!r} must live in exactly one vectorized plate (the data "
            f"plate), it is in {list(info.plates)}."
        )
    data = data_plates[0]
    if len(info.event_shape) != 1:
        raise ModelError(
            f"observed site {site!r} has event shape {info.event_shape}: its dimensions must be "
            "one event dimension, (N, D) data (use .to_event(1) on a per-dimension "
            "distribution; flatten images)."
        )
    for name in graph.latent_sites:
        if data.name not in graph[name].plates:
            raise ModelError(
                f"latent site {name!r} is outside plate {data.name!r}: it is shared by all "
                "data points, so the likelihood does not split per data point. Importance "
                "sampling and imputation here need per-data-point latents."
            )
    dims = [p.dim for p in graph.plates.values() if p.dim is not None]
    return Layout(site, min(dims) - 1, data.dim)


def per_dimension(fn: Distribution, value: Tensor) -> Tensor:
    """Log-density of each dimension of ``value`` under a distribution that
    factorizes over its last (event) dimension (``Independent`` wrappers
    removed; the masks of masked wrappers, as :func:`~pgmdl.infer.missing.with_missing`
    sets, are applied: a masked entry scores 0)."""
    masks = []
    while isinstance(fn, Independent) or type(fn).__name__ == "MaskedDistribution":
        if type(fn).__name__ == "MaskedDistribution":
            masks.append(fn._mask)
        fn = fn.base_dist
    if len(fn.event_shape) != 0:
        raise ModelError(
            f"the observed distribution {type(fn).__name__} does not factorize over dimensions "
            "(its per-dimension log-density is not available): use an Independent "
            "per-dimension family (Normal, Bernoulli, StudentT, QuasiDeterministic)."
        )
    out = fn.log_prob(value)
    for mask in masks:
        out = torch.where(torch.as_tensor(mask, device=out.device), out, out.new_zeros(()))
    return out


def _reduce(lp: Tensor, lay: Layout, num: int, n: int) -> Tensor:
    """A batch-shaped log-density summed to ``(K, N)``."""
    depth = -lay.particle_dim
    if lp.dim() < depth:
        lp = lp.reshape((1,) * (depth - lp.dim()) + lp.shape)
    p_axis = lp.dim() + lay.particle_dim
    d_axis = lp.dim() + lay.data_dim
    moved = lp.movedim((p_axis, d_axis), (0, 1))
    out = moved.reshape(moved.shape[0], moved.shape[1], -1).sum(-1)
    return out.expand(num, n)


def score(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    kwargs: Mapping[str, Any],
    lay: Layout,
    num_particles: int,
    n: int,
    latents: Mapping[str, Tensor] | None = None,
) -> Scored:
    """Run ``guide`` (or replay it at ``latents``) and the model on ``K`` particles."""

    def particles(fn):
        def run(*a, **k):
            with pyro.plate(PARTICLES, num_particles, dim=lay.particle_dim):
                return fn(*a, **k)

        return run

    g = guide if latents is None else poutine.condition(guide, data=dict(latents))
    guide_trace = poutine.trace(particles(g)).get_trace(*args, **kwargs)
    for name in latents or {}:  # replayed at given values: sampled, as far as the model knows
        guide_trace.nodes[name]["is_observed"] = False
    model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    names = [
        name
        for name, node in guide_trace.nodes.items()
        if _is_sample(node) and not node["is_observed"]
    ]
    log_q: Tensor | float = 0.0
    log_prior: Tensor | float = 0.0
    values, event_dims = {}, {}
    for name in names:
        node = guide_trace.nodes[name]
        lp = node["fn"].log_prob(node["value"])
        if node.get("mask") is not None and not isinstance(node["mask"], bool):
            lp = lp * node["mask"]
        log_q = log_q + _reduce(lp, lay, num_particles, n)
        values[name] = node["value"]
        event_dims[name] = len(node["fn"].event_shape)
    obs_node = None
    for name, node in model_trace.nodes.items():
        if not _is_sample(node):
            continue
        if name == lay.site:
            obs_node = node
            continue
        if node["is_observed"] and name not in values:
            continue  # another observed site: not part of the weights here
        lp = node["fn"].log_prob(node["value"])
        log_prior = log_prior + _reduce(lp, lay, num_particles, n)
    if obs_node is None:
        raise ModelError(f"observed site {lay.site!r} did not run.")
    fn, value = obs_node["fn"], obs_node["value"]
    log_lik = per_dimension(fn, value)
    log_lik = log_lik.expand(num_particles, n, log_lik.shape[-1])
    zeros = log_lik.new_zeros(num_particles, n)
    return Scored(zeros + log_q, zeros + log_prior, log_lik, fn, values, event_dims)


def _is_sample(node: Mapping[str, Any]) -> bool:
    """A sample site (not a plate's subsample message)."""
    return node["type"] == "sample" and type(node["fn"]).__name__ != "_Subsample"


def check_guide(graph, guide: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> None:  # noqa: ANN001
    """The guide must sample exactly the model's latent sites."""
    with torch.no_grad(), evaluating(guide):
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    sampled = {
        name for name, node in trace.nodes.items() if _is_sample(node) and not node["is_observed"]
    }
    latents = set(graph.latent_sites)
    if sampled != latents:
        raise ModelError(
            f"the guide samples {sorted(sampled)} but the model's latent sites are "
            f"{sorted(latents)}: is it the guide of another model?"
        )
