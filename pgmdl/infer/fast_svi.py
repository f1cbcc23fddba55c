r"""A compiled SVI step: :class:`FastSVI`, a drop-in for :class:`pyro.infer.SVI`.

Pyro runs every step through its Python effect-handler stack (message
dictionaries, the param store, trace objects): about 2 ms per step on this
CPU, whatever the size of the networks. :class:`FastSVI` runs that stack
*once*, under :func:`torch.fx.experimental.proxy_tensor.make_fx`, and records
the aten operations the step performs: the reparameterized draws
(``rsample`` records the random kernels, which draw afresh at every replay),
the model's and guide's log-densities, the surrogate ELBO

.. math::

    \mathcal{L}_\text{sur} = \frac{1}{S}\sum_{s=1}^{S}
        \Big(\sum_{i \in \text{model}} \log p(x_i \mid \text{pa}_i)
           - \sum_{j \in \text{guide}} \log q(z_j \mid \cdot)\Big)
        \quad (z \sim q \text{ reparameterized}, S \text{ particles}),

and its gradient :math:`-\nabla_\theta \mathcal{L}_\text{sur}` (the backward
pass, traced too). The result is one handler-free graph per argument shape;
each later step replays it and hands the gradients to the optimizer. The
parameters are not copied: the graph reads the param store's own tensors,
which the optimizer updates in place.

**Equality with SVI.** For the same random draws (the same seed) a step
gives *the same* loss and gradients as :meth:`pyro.infer.SVI.step`: the
graph runs the very kernels the eager step runs, in the same order, on the
same global RNG stream, and the returned float is summed the way Pyro sums
it (per-site log-probabilities as Python floats for :class:`~pyro.infer.Trace_ELBO`).
``tests/infer/test_fast_svi.py`` checks bitwise equality over several steps
on the zoo and the static conformance programs. With ``compile=True`` the
graph is further compiled by :func:`torch.compile` (inductor), whose random
kernels draw other (equally distributed) numbers: same estimator, other
draws.

**Losses.** :class:`~pyro.infer.Trace_ELBO` and
:class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL where
:func:`~torch.distributions.kl_divergence` is registered, sampled otherwise,
exactly as Pyro), any ``num_particles``, ``vectorize_particles=False``.

**What takes the ordinary path** (``pyro.infer.SVI``, with one
:class:`FastSVIWarning` saying why):

* another loss (``TraceGraph_ELBO``, ``TraceEnum_ELBO``, a subclass,
  a loss function), or ``vectorize_particles=True``;
* a guide with a latent site that is not reparameterized (it needs
  score-function terms) or enumerated; a model latent site the guide lacks;
* a model or guide that reads a tensor's value in Python (``.item()``,
  ``bool(tensor)``, control flow on a sampled value): the message names the
  file and line;
* a structure that changes between two consecutive traces (different sites,
  shapes or constants: Python state read outside the arguments);
* more than ``max_specializations`` different argument signatures.

**Specialization.** A graph is keyed on the arguments' structure: shapes,
dtypes and devices of tensor arguments (anywhere in nested tuples, lists and
dicts), other arguments by value (by identity if unhashable). The first step
of a new key is an ordinary ``SVI`` step (it creates lazily built
parameters: NaMIGuide's networks, AutoGuide locations); the second is traced
(and its traced outputs used); the third is traced again and compared with
the second (a static program gives the same graph); replays start at the
fourth. A new key after the first warns once; so does a change of the param
store (a parameter replaced, for instance by ``load``), after which the step
specializes again. Python state the program reads other than through its
arguments and the param store (a module's ``training`` flag, a global) is
frozen into the graph: call :meth:`FastSVI.reset` after changing it.
pgmdl's own running statistics (:class:`~pgmdl.nn.ParentNorm`, used by
NaMIGuide) are traced as tensor updates and stay exact.

**Optimizer.** A plain :class:`pyro.optim.PyroOptim` (``pyro.optim.Adam``,
``SGD``, ... with a dict of arguments, no gradient clipping) is stepped as
*one* torch optimizer over all parameters, with ``foreach`` kernels where
the optimizer has them, sharing the per-parameter state of Pyro's
per-parameter optimizers (so ``optim.get_state()`` and checkpoints stay
meaningful; hyperparameters are read at specialization). Any other
optimizer (schedulers, :class:`~pgmdl.infer.PartitionedOptim`, ``fit``'s
guard) is called exactly as SVI calls it.

**Measured** (``benchmarks/step_overhead.py --repeats 40``, this 2-core CPU,
1 thread, Bernoulli VAE with NaMIGuide, Adam; best / median interleaved
block): a step costs 1.02x / 0.98x a plain eager PyTorch step at 784-400-20 /
batch 128 (SVI: 1.30x / 1.31x) and 0.90x / 0.88x at 16-32-4 / batch 64 (SVI:
2.03x / 2.09x); ``compile=True`` brings these to 0.73x / 0.71x and 0.37x /
0.37x, after 15-40 s of compilation with a cold inductor cache. Tracing a
step takes about 0.5 s. The graph is replayed under ``torch.no_grad()`` (it
computes its own gradients), and a plain Pyro optimizer steps as one
``foreach`` torch optimizer.

Example::

    >>> import pyro, torch
    >>> import pyro.distributions as dist
    >>> from pyro.infer import Trace_ELBO
    >>> from pyro.infer.autoguide import AutoNormal
    >>> from pgmdl.infer import FastSVI
    >>> def model(x):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
    >>> pyro.clear_param_store()
    >>> svi = FastSVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    >>> x = torch.randn(100) + 3.0
    >>> losses = [svi.step(x) for _ in range(5)]
    >>> svi.fallback is None
    True
"""

from __future__ import annotations

import linecache
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import PyroOptim
from torch.distributions import kl_divergence
from torch.fx.experimental import proxy_tensor
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from pgmdl.errors import PgmdlWarning
from pgmdl.infer.guard import FiniteGradGuard, all_finite
from pgmdl.nn import ParentNorm

__all__ = ["FastSVI", "FastSVIWarning"]

#: default number of argument signatures with their own graph
MAX_SPECIALIZATIONS = 8


class FastSVIWarning(PgmdlWarning):
    """:class:`FastSVI` takes the ordinary ``SVI`` path (the message says why)
    or specializes its graph again."""


class _Unsupported(Exception):
    """A reason to take the ordinary path (the message is the reason)."""


class _Dynamic(Exception):
    """Two traces differ; the step was done (``args[0]``: its loss)."""


DYNAMIC = (
    "the traced step changed between two consecutive steps with the same argument shapes "
    "(other sites, shapes or constants): the program's structure is dynamic, or it reads "
    "Python state that changes"
)


@dataclass
class _Spec:
    """One argument signature: its traced graph, or how far we are."""

    seen: int = 0
    graph: Any = None
    code: str = ""
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    params: list[torch.Tensor] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    with_grad: list[int] = field(default_factory=list)
    layout: list[tuple[int, int]] = field(default_factory=list)
    norms: list[ParentNorm] = field(default_factory=list)
    tensor_slots: list[int] = field(default_factory=list)
    leaves: list[Any] = field(default_factory=list)
    treespec: Any = None
    runner: Callable[..., Any] | None = None


class FastSVI:
    """A drop-in for :class:`pyro.infer.SVI` that replays one traced graph per step.

    Args:
        model, guide, optim, loss: as for :class:`pyro.infer.SVI`.
        compile: also compile the traced graph with :func:`torch.compile`
            (inductor): faster steps after tens of seconds of compilation,
            and random draws that differ from eager PyTorch's. ``False``
            (default): replay the traced graph as it is.
        max_specializations: how many argument signatures get their own
            graph; beyond, the ordinary path for good.
        expected_signatures: how many signatures the caller expects (say 2
            for equal minibatches and a smaller last one); a signature beyond
            them warns once, as a sign of shapes that change by accident.
        **kwargs: passed to :class:`pyro.infer.SVI` (the ordinary path).

    Attributes:
        svi: the :class:`pyro.infer.SVI` of the ordinary path.
        fallback: why the ordinary path is taken for good, or ``None``.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        optim: PyroOptim,
        loss: Any,
        *,
        compile: bool = False,
        max_specializations: int = MAX_SPECIALIZATIONS,
        expected_signatures: int = 1,
        **kwargs: Any,
    ) -> None:
        self.svi = SVI(model, guide, optim, loss, **kwargs)
        self.model, self.guide, self.optim, self.loss = model, guide, optim, loss
        self.compile = bool(compile)
        self.max_specializations = int(max_specializations)
        self.expected_signatures = int(expected_signatures)
        self.fallback: str | None = None
        self._specs: dict[Hashable, _Spec] = {}
        self._warned_new_key = False
        self._fused: _FusedOptim | None = None
        reason = _loss_reason(loss)
        if reason is not None:
            self._fall_back(reason)

    # -- the SVI interface ----------------------------------------------------

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One gradient step; returns the loss (a float), as ``SVI.step``."""
        if self.fallback is not None:
            return self.svi.step(*args, **kwargs)
        key, leaves, treespec = _signature(args, kwargs)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= self.max_specializations:
                self._fall_back(
                    f"more than max_specializations={self.max_specializations} argument "
                    "signatures (shapes, dtypes, non-tensor arguments) were seen: the "
                    "structure is too dynamic to specialize"
                )
                return self.svi.step(*args, **kwargs)
            if len(self._specs) >= self.expected_signatures and not self._warned_new_key:
                self._warned_new_key = True
                _warn(
                    "FastSVI: new argument shapes or values; tracing the step again for them "
                    "(each new signature costs one ordinary step and two traced ones; said once)"
                )
            spec = self._specs[key] = _Spec()
        if spec.graph is not None and not self._current(spec):
            _warn(
                "FastSVI: the param store or the optimizer's state changed (a parameter was "
                "replaced or loaded); tracing the step again"
            )
            self.reset()
            spec = self._specs[key] = _Spec()
        spec.seen += 1
        if spec.seen == 1:  # ordinary step: creates lazy parameters and optimizer state
            return self.svi.step(*args, **kwargs)
        if spec.graph is None or spec.seen == 3:
            try:
                return self._trace_step(spec, leaves, treespec, check=spec.seen == 3)
            except _Dynamic as done:
                self._fall_back(DYNAMIC)
                return done.args[0]
            except _Unsupported as error:
                self._fall_back(str(error))
                return self.svi.step(*args, **kwargs)
        tensors = [leaves[i] for i in spec.tensor_slots]
        with torch.no_grad():  # the graph computes its own gradients: nothing to record
            outputs = spec.runner(*tensors)
        return self._finish(spec, outputs)

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        """The loss without a step, as ``SVI.evaluate_loss`` (Pyro's own estimator)."""
        return self.svi.evaluate_loss(*args, **kwargs)

    def reset(self) -> None:
        """Forget every traced graph (after changing Python state the program reads)."""
        self._specs.clear()
        self._fused = None

    # -- tracing --------------------------------------------------------------

    def _trace_step(self, spec: _Spec, leaves: list, treespec: Any, *, check: bool) -> float:
        tensor_slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        found: dict[str, Any] = {}
        norms: list[ParentNorm] = []

        def step_fn(*tensors: torch.Tensor) -> tuple:
            _allow_pgmdl_checks()
            flat = list(leaves)
            for slot, tensor in zip(tensor_slots, tensors, strict=True):
                flat[slot] = tensor
            args, kwargs = pytree.tree_unflatten(flat, treespec)
            values, surrogates, params, names = _particles(
                self.loss, self.model, self.guide, args, kwargs
            )
            found.update(params=params, names=names, layout=[(len(a), len(b)) for a, b in values])
            grads: list[torch.Tensor | None] = [None] * len(params)
            for surrogate in surrogates:
                if not surrogate.requires_grad:
                    continue
                parts = torch.autograd.grad(surrogate, params, allow_unused=True)
                grads = [
                    g if a is None else (a if g is None else a + g)
                    for a, g in zip(grads, parts, strict=True)
                ]
            found["with_grad"] = [i for i, g in enumerate(grads) if g is not None]
            flat_values = torch.stack([v for a, b in values for v in a + b])
            outputs = (flat_values, *(g for g in grads if g is not None))
            found["outputs"] = outputs
            return outputs

        tensors = [leaves[i] for i in tensor_slots]
        rng = pyro.util.get_rng_state()
        saved: dict[ParentNorm, list[torch.Tensor]] = {}
        with _traced_parent_norms(norms, saved):
            try:
                graph = make_fx(step_fn)(*tensors)
            except Exception as error:  # data-dependent Python, or anything untraceable
                _undo(rng, saved)  # what the partial trace did: its draws, running statistics
                if isinstance(error, _Unsupported):
                    raise
                raise _Unsupported(_trace_failure(error)) from None
        constants = {
            name: value
            for name, value in graph.__dict__.items()
            if isinstance(value, torch.Tensor) and "constant" in name
        }
        if check and (graph.code != spec.code or not _same_constants(spec.constants, constants)):
            # this trace ran the step for real: use its values, then the ordinary path
            spec.params, spec.with_grad = found["params"], found["with_grad"]
            spec.norms, spec.layout = norms, found["layout"]
            value = self._finish(spec, found["outputs"])
            raise _Dynamic(value)
        spec.graph, spec.code, spec.constants = graph, graph.code, constants
        spec.params, spec.names = found["params"], found["names"]
        spec.with_grad, spec.norms = found["with_grad"], norms  # one entry per update
        spec.layout = found["layout"]
        spec.tensor_slots, spec.leaves, spec.treespec = tensor_slots, leaves, treespec
        spec.runner = torch.compile(graph) if self.compile and check else graph
        self._fused = None
        # the traced run computed this step's values: finish it (the ParentNorm
        # updates already happened in the trace)
        return self._finish(spec, found["outputs"])

    # -- after the graph ------------------------------------------------------

    def _finish(self, spec: _Spec, outputs: Any) -> float:
        values, *grads = outputs
        for norm in spec.norms:
            norm._seen = (norm._seen or 0) + 1
        params = [spec.params[i] for i in spec.with_grad]
        self._apply(spec, params, grads)
        return _loss_value(self.loss, values.tolist(), spec.layout)

    def _apply(self, spec: _Spec, params: list[torch.Tensor], grads: list) -> None:
        optim = self.optim
        if not params:  # nothing to update (as SVI: the optimizer skips grad-less parameters)
            return
        if isinstance(optim, FiniteGradGuard) and _plain(optim.inner):
            # fit's guard: check the gradients here, then step the fused optimizer
            if not all_finite(grads):
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                optim(params)  # records the culprits, skips the step
                pyro.infer.util.zero_grads(set(spec.params))
                return
            optim.stepped = True
            optim = optim.inner
        if _plain(optim) and all(p in optim.optim_objs for p in params):
            if self._fused is None or self._fused.params != params:
                self._fused = _FusedOptim(optim, params)
            if self._fused.current():
                self._fused.step(grads)
                return
            self._fused = None
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optim(params)
        pyro.infer.util.zero_grads(set(spec.params))

    def _current(self, spec: _Spec) -> bool:
        """Whether the param store still holds the traced parameters."""
        store = pyro.get_param_store()._params
        return all(store.get(n) is p for n, p in zip(spec.names, spec.params, strict=True))

    def _fall_back(self, reason: str) -> None:
        self.fallback = reason
        self._specs.clear()
        _warn(f"FastSVI takes the ordinary pyro.infer.SVI path: {reason}")


# ---------------------------------------------------------------------------
# The loss, as a pure tensor function


def _loss_reason(loss: Any) -> str | None:
    """Why ``loss`` is not supported, or ``None``."""
    if type(loss) not in (Trace_ELBO, TraceMeanField_ELBO):
        name = getattr(type(loss), "__name__", repr(loss))
        return (
            f"the loss {name} is not supported (FastSVI supports Trace_ELBO and "
            "TraceMeanField_ELBO exactly, not their subclasses)"
        )
    if loss.vectorize_particles:
        return "vectorize_particles=True is not supported; use vectorize_particles=False"
    return None


def _particles(
    loss: Any, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[list[tuple[list, list]], list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Per particle, the terms of the loss value (added, subtracted) and the
    surrogate loss (already divided by ``num_particles``), and the parameters
    seen."""
    values, surrogates = [], []
    params: dict[int, tuple[torch.Tensor, str]] = {}
    with pyro.validation_enabled(False):
        for model_trace, guide_trace in loss._get_traces(model, guide, args, kwargs):
            _check_reparameterized(model_trace, guide_trace)
            for trace in (model_trace, guide_trace):
                for name, site in trace.nodes.items():
                    if site["type"] == "param":
                        p = site["value"].unconstrained()
                        params.setdefault(id(p), (p, name))
            if type(loss) is TraceMeanField_ELBO:
                elbo = _mean_field_elbo(model_trace, guide_trace)
                terms, surrogate = ([elbo], []), -elbo
            else:
                terms, surrogate = _trace_elbo(model_trace, guide_trace)
            values.append(terms)
            surrogates.append(surrogate / loss.num_particles)
    pairs = list(params.values())
    return values, surrogates, [p for p, _ in pairs], [n for _, n in pairs]


def _check_reparameterized(model_trace: Any, guide_trace: Any) -> None:
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["infer"].get("enumerate"):
            raise _Unsupported(f"the guide enumerates site {name!r}")
        if not getattr(site["fn"], "has_rsample", False):
            raise _Unsupported(
                f"the guide's site {name!r} ({type(site['fn']).__name__}) is not "
                "reparameterized: its gradient needs score-function terms"
            )
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace:
            raise _Unsupported(f"the model's latent site {name!r} is not in the guide")


def _trace_elbo(model_trace: Any, guide_trace: Any) -> tuple[tuple[list, list], torch.Tensor]:
    """:class:`Trace_ELBO`'s particle: value terms (model log-probabilities,
    guide ones) and the surrogate loss ``-(sum log p - sum entropy term)``."""
    plus: list[torch.Tensor] = []
    minus: list[torch.Tensor] = []
    surrogate: Any = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            plus.append(site["log_prob_sum"])
            surrogate = surrogate + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            minus.append(site["log_prob_sum"])
            entropy_term = site["score_parts"].entropy_term
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
    return (plus, minus), -surrogate


def _mean_field_elbo(model_trace: Any, guide_trace: Any) -> torch.Tensor:
    """:class:`TraceMeanField_ELBO`'s particle ELBO (its code without ``.item()``)."""
    elbo: Any = 0
    for name, model_site in model_trace.nodes.items():
        if model_site["type"] != "sample":
            continue
        if model_site["is_observed"]:
            elbo = elbo + model_site["log_prob_sum"]
            continue
        guide_site = guide_trace.nodes[name]
        try:
            kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
            kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl_qp):
                kl_qp_sum = kl_qp.sum()
            else:
                kl_qp_sum = kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
            elbo = elbo - kl_qp_sum
        except NotImplementedError:
            entropy_term = guide_site["score_parts"].entropy_term
            elbo = elbo + model_site["log_prob_sum"] - entropy_term.sum()
    for name, guide_site in guide_trace.nodes.items():
        if guide_site["type"] == "sample" and name not in model_trace.nodes:
            elbo = elbo - guide_site["score_parts"].entropy_term.sum()
    if not torch.is_tensor(elbo):
        raise _Unsupported("the ELBO does not depend on any tensor")
    return elbo


def _loss_value(loss: Any, values: list[float], layout: list[tuple[int, int]]) -> float:
    """The float ``SVI.step`` returns, summed as Pyro sums it: per particle,
    ``elbo = 0 + log p terms - log q terms`` in Python floats, then
    ``loss += -elbo / num_particles`` from ``0.0``."""
    total, start = 0.0, 0
    for n_model, n_guide in layout:
        elbo_particle: float = 0
        for value in values[start : start + n_model]:
            elbo_particle = elbo_particle + value
        for value in values[start + n_model : start + n_model + n_guide]:
            elbo_particle = elbo_particle - value
        start += n_model + n_guide
        total += -elbo_particle / loss.num_particles
    return total


# ---------------------------------------------------------------------------
# Signatures, parent norms, failures, the optimizer


def _signature(args: tuple, kwargs: dict) -> tuple[Hashable, list, Any]:
    leaves, treespec = pytree.tree_flatten((args, kwargs))
    key = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            key.append(("T", tuple(leaf.shape), leaf.dtype, leaf.device, leaf.requires_grad))
        else:
            try:
                hash(leaf)
                key.append(("V", type(leaf), leaf))
            except TypeError:
                key.append(("I", id(leaf)))
    return (tuple(key), str(treespec)), leaves, treespec


def _traced_update(self: ParentNorm, x: torch.Tensor) -> None:
    """:meth:`ParentNorm._update` with its step counter as a tensor (traceable):
    ``rate = max(1 / count, momentum)``."""
    with torch.no_grad():
        flat = x.detach().reshape(-1, self.features)
        if flat.shape[0] < 2:
            return
        norms, saved = _TRACED_NORMS[-1]
        norms.append(self)
        if self not in saved:
            saved[self] = [b.clone() for b in _norm_buffers(self)]
        self.count.add_(1)
        rate = self.count.reciprocal().clamp(min=self.momentum).to(self.mean.dtype)
        var, mean = torch.var_mean(flat, dim=0)
        self.mean.lerp_(mean.to(self.mean.dtype), rate)
        self.var.lerp_(var.to(self.var.dtype), rate)


def _norm_buffers(norm: ParentNorm) -> tuple[torch.Tensor, ...]:
    return (norm.mean, norm.var, norm.count)


def _undo(rng: dict, saved: dict[ParentNorm, list[torch.Tensor]]) -> None:
    """Undo a trace that is not used: the RNG state before it, and the
    running statistics it updated."""
    pyro.util.set_rng_state(rng)
    with torch.no_grad():
        for norm, buffers in saved.items():
            for buffer, value in zip(_norm_buffers(norm), buffers, strict=True):
                buffer.copy_(value)


_TRACED_NORMS: list[tuple[list[ParentNorm], dict[ParentNorm, list[torch.Tensor]]]] = []


class _traced_parent_norms:  # noqa: N801 (a context manager)
    """Within: :class:`ParentNorm` updates are traceable; the norms updated
    are appended to ``norms``, their buffers before the update saved in
    ``saved``."""

    def __init__(self, norms: list[ParentNorm], saved: dict) -> None:
        self.norms, self.saved = norms, saved

    def __enter__(self) -> None:
        _TRACED_NORMS.append((self.norms, self.saved))
        self.original = ParentNorm.__dict__["_update"]
        ParentNorm._update = _traced_update

    def __exit__(self, *exc: object) -> None:
        ParentNorm._update = self.original
        _TRACED_NORMS.pop()


def _same_constants(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x is y:
            continue
        if x.requires_grad or y.requires_grad or x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not torch.equal(x, y):
            return False
    return True


_HERE = os.path.dirname(os.path.abspath(__file__))
_LIBRARIES = ("/torch/", "/pyro/", "/contextlib.py", "/functools.py")


def _trace_failure(error: Exception) -> str:
    """The reason a trace failed, with the program's line when we find it."""
    where = ""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        path = frame.filename
        if os.path.abspath(path).startswith(_HERE) or any(lib in path for lib in _LIBRARIES):
            continue
        line = (frame.line or linecache.getline(path, frame.lineno)).strip()
        where = f" at {path}:{frame.lineno} ({line})" if line else f" at {path}:{frame.lineno}"
        break
    text = str(error).split("\n")[0]
    if "_local_scalar_dense" in text or "data-dependent" in text:
        return (
            "the model or guide reads a tensor's value in Python (.item(), bool(tensor), "
            f"control flow on a sampled value){where}; such a step cannot be replayed"
        )
    return f"the step could not be traced ({type(error).__name__}: {text[:200]}){where}"


_PGMDL = os.path.dirname(_HERE)


class _DataDependentPolicy:
    """Stands for make_fx's ``_error_on_data_dependent_ops`` flag, read on every
    read of a tensor's value: true (an error: the ordinary path) except for
    pgmdl's own input checks, an ``if`` on a value whose block raises (a
    finiteness check of the data, for instance), which run at trace time only."""

    def __bool__(self) -> bool:
        frame = sys._getframe(1)
        while frame is not None:
            path = frame.f_code.co_filename
            if path.startswith(_HERE) or any(lib in path for lib in _LIBRARIES):
                frame = frame.f_back
                continue
            return not (path.startswith(_PGMDL) and _is_check(path, frame.f_lineno))
        return True


def _is_check(path: str, lineno: int) -> bool:
    """Whether line ``lineno`` of ``path`` is an ``if`` whose block raises."""
    line = linecache.getline(path, lineno)
    if not line.lstrip().startswith(("if ", "if(")):
        return False
    indent = len(line) - len(line.lstrip())
    body = []
    for number in range(lineno + 1, lineno + 40):
        text = linecache.getline(path, number)
        if not text:
            break
        if text.strip() and len(text) - len(text.lstrip()) <= indent:
            break
        body.append(text.strip())
    return any(text.startswith("raise ") for text in body) and not any(
        text.startswith(("return", "yield")) for text in body
    )


def _allow_pgmdl_checks() -> None:
    """Within make_fx: let pgmdl's own input checks read values (see
    :class:`_DataDependentPolicy`)."""
    mode = proxy_tensor.get_proxy_mode()
    if mode is not None and hasattr(mode, "_error_on_data_dependent_ops"):
        mode._error_on_data_dependent_ops = _DataDependentPolicy()


def _plain(optim: Any) -> bool:
    """A plain PyroOptim: one torch optimizer per parameter, dict arguments,
    no clipping, not a scheduler."""
    return (
        type(optim) is PyroOptim
        and not callable(optim.pt_optim_args)
        and not getattr(optim, "pt_clip_args", None)
        and isinstance(optim.pt_optim_constructor, type)
        and issubclass(optim.pt_optim_constructor, torch.optim.Optimizer)
    )


class _FusedOptim:
    """One torch optimizer over all parameters that shares the state dicts of
    a plain PyroOptim's per-parameter optimizers."""

    def __init__(self, optim: PyroOptim, params: list[torch.Tensor]) -> None:
        self.params = params
        self.objs = [optim.optim_objs[p] for p in params]
        self.states = [o.state for o in self.objs]
        groups: dict[tuple, list[torch.Tensor]] = {}
        settings: dict[tuple, dict] = {}
        for p, obj in zip(params, self.objs, strict=True):
            group = {k: v for k, v in obj.param_groups[0].items() if k != "params"}
            if "foreach" in group and group["foreach"] is None:
                group["foreach"] = True
            key = tuple(sorted((k, repr(v)) for k, v in group.items()))
            groups.setdefault(key, []).append(p)
            settings[key] = group
        self.torch_optim = optim.pt_optim_constructor(
            [{"params": ps, **settings[k]} for k, ps in groups.items()]
        )
        for p, obj in zip(params, self.objs, strict=True):
            self.torch_optim.state[p] = obj.state[p]

    def current(self) -> bool:
        return all(o.state is s for o, s in zip(self.objs, self.states, strict=True))

    def step(self, grads: list[torch.Tensor]) -> None:
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        self.torch_optim.step()
        for p in self.params:
            p.grad = None


def _warn(message: str) -> None:
    warnings.warn(message, FastSVIWarning, stacklevel=3)
