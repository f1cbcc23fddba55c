r"""Boltzmann tuning of a trained generative model (BTGM, thesis ch. 10).

Given a trained Pyro model :math:`p` and a differentiable criterion
:math:`f` of its sites, :func:`boltzmann_tune` learns

.. math:: \hat p_\lambda \propto p\, e^{\lambda f}  \qquad \text{(eq. 10.5)}

by replacing only the chosen latent sites by flows pushed from their own
distributions (§10.2.1-10.2.2, eq. 10.13, 10.17-10.19); the rest of the
model stays frozen. The **inner loop** maximizes, over the flows :math:`g`,

.. math:: \mathbb{E}_{x \sim p}\big[\lambda f(g(x)) + \log p(g(x)) + \log|J_g(x)|\big]
    = \lambda\, \mathbb{E}_{\hat p} f - D_{KL}(\hat p \| p) + \text{const}
    \qquad \text{(eq. 10.19, 10.11)},

starting from the identity, warm-started from one :math:`\lambda` to the
next and reset when :math:`\lambda` decreases. The **outer loop** picks
:math:`\lambda` (Algorithm 10.1 for a target KL, 10.2 for a target
:math:`\mathbb{E} f`) by second-order updates from Monte-Carlo moments of
:math:`f` under the tuned model (eq. 10.6-10.9), safeguarded by the
bracket that monotonicity in :math:`\lambda` gives. The theoretical front
from reweighted base samples (eq. 10.22-10.23) is recorded beside every
achieved point.

Reference: V. Berger and M. Sebag, "Boltzmann Tuning of Generative Models",
arXiv:2104.05252 (2021); V. Berger, PhD thesis (2022), chapter 10.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyro
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pgmdl.boltzmann.flows import FlowFactory, SiteFlow
from pgmdl.boltzmann.handler import (
    PARTICLE_PLATE,
    ParticleRun,
    TunedSites,
    criterion_per_particle,
    run_particles,
)
from pgmdl.boltzmann.theory import (
    Moments,
    TheoryPoint,
    criterion_scale,
    kl_derivatives,
    pareto_front,
    reweighted,
    second_order_step,
    value_derivatives,
)
from pgmdl.errors import SiteNotFoundError, TuningError
from pgmdl.graph.compile import compile_model
from pgmdl.graph.model_graph import ModelGraph

#: ``criterion(values) -> Tensor``: ``values`` maps every sample site
#: (latent, observed and ``pyro.deterministic``) to its value in a run of
#: ``S`` executions; the criterion returns one value per execution.
Criterion = Callable[[Mapping[str, Tensor]], Tensor]


@dataclass(frozen=True)
class TuningStep:
    """One point of the tuned family, measured by Monte-Carlo.

    Attributes:
        lam: :math:`\\lambda`, on the criterion's own scale.
        kl: :math:`D_{KL}(\\hat p_\\lambda \\| p)` over the tuned sites (eq. 10.17),
            and ``kl_se`` its standard error.
        value: :math:`\\mathbb{E}_{\\hat p_\\lambda} f`, and ``value_se``.
        var, third: variance and third central moment of :math:`f` under
            :math:`\\hat p_\\lambda` (the derivatives of eq. 10.6-10.9).
        site_kl: each tuned site's share of ``kl``.
        theory: the reweighting prediction at this :math:`\\lambda`
            (eq. 10.22-10.23), or ``None``.
        start: how the inner loop started: ``"identity"``, ``"warm"`` or
            ``"snapshot λ=…"`` (§10.2.2).
        objective: the inner objective :math:`\\lambda(\\mathbb{E} f - m) - D_{KL}`
            at the end of the inner loop (``m`` = :math:`\\mathbb{E}_p f`).
        log_z: :math:`\\log Z(\\lambda) = \\log \\mathbb{E}_p e^{\\lambda f}` by importance
            sampling with the tuned model as proposal,
            :math:`\\log \\tfrac1n \\sum e^{\\lambda f - r}` (:math:`r` the log-ratio
            :math:`\\log \\hat p / p`). Unlike the reweighting prediction it sees
            the tail the flows reached.
    """

    lam: float
    kl: float
    kl_se: float
    value: float
    value_se: float
    var: float
    third: float
    site_kl: dict[str, float] = field(default_factory=dict)
    theory: TheoryPoint | None = None
    start: str = "identity"
    objective: float = float("nan")
    log_z: float = float("nan")

    @property
    def gap(self) -> float:
        """:math:`D_{KL}(\\hat p \\| \\hat p_\\lambda) = \\log Z - (\\lambda\\mathbb{E} f - D_{KL})`
        estimated with :attr:`log_z`: how far the flows are from the exact
        tilted model (0 at the optimum; the importance-sampling estimate of
        :math:`\\log Z` is biased low, so this is a lower estimate)."""
        return self.log_z - (self.lam * self.value - self.kl)

    def __str__(self) -> str:
        theory = ""
        if self.theory is not None:
            theory = f" (theory: E f={self.theory.value:.4g}, KL={self.theory.kl:.3f})"
        return (
            f"λ={self.lam:.4g}: E f={self.value:.4g} ± {self.value_se:.2g}, "
            f"KL={self.kl:.3f} ± {self.kl_se:.2g}{theory}"
        )


class TunedModel(nn.Module):
    """A model with some latent sites pushed through learned flows.

    Calling it runs the original model under :class:`TunedSites`: it is an
    ordinary Pyro program (``pyro.infer.Predictive``, :func:`pgmdl.compile`,
    :func:`pgmdl.render`, ``poutine.trace`` all work), with the same sites,
    plates and arguments as the original. The original model and its
    parameters are not modified; the flows are this module's parameters
    (``.to(device)``, ``state_dict()``).

    Attributes:
        model: the original model.
        sites: the tuned sites.
        flows: their :class:`~pgmdl.boltzmann.flows.SiteFlow`, by site.
        contexts: the parents each conditional flow reads.
        lam: the final :math:`\\lambda` (criterion scale).
        history: every :class:`TuningStep` of the outer loop, in order.
        base: :math:`f` under the original model (``f_base``, one value per
            base sample), from which :meth:`theory` predicts the front.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        flows: Mapping[str, SiteFlow],
        contexts: Mapping[str, tuple[str, ...]],
        criterion: Criterion,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
        particle_plate: str | None,
        particle_dim: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.flows = nn.ModuleDict(dict(flows))
        self.sites = tuple(flows)
        self.contexts = dict(contexts)
        self.criterion = criterion
        self.model_args = model_args
        self.model_kwargs = dict(model_kwargs)
        self.particle_plate = particle_plate
        self.particle_dim = particle_dim
        self.lam = 0.0
        self.history: list[TuningStep] = []
        self.f_base: Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the tuned model on the original model's arguments."""
        with TunedSites(self.flows, self.contexts):
            return self.model(*args, **kwargs)

    def __repr__(self) -> str:
        name = getattr(self.model, "__qualname__", type(self.model).__name__)
        return f"TunedModel({name}, sites={list(self.sites)}, λ={self.lam:.4g})"

    # ------------------------------------------------------------------ sampling

    def run(self, num_particles: int) -> ParticleRun:
        """One vectorized run of ``num_particles`` executions (with autograd)."""
        handler = TunedSites(self.flows, self.contexts)
        return run_particles(
            self.model,
            handler,
            num_particles,
            self.particle_dim,
            self.particle_plate,
            self.model_args,
            self.model_kwargs,
        )

    def sample(self, num_samples: int) -> dict[str, Tensor]:
        """Every site's value in ``num_samples`` executions of the tuned model,
        on the tuning arguments, with the executions first: shape
        ``(num_samples, ...)`` (no autograd)."""
        out: dict[str, list[Tensor]] = {}
        done = 0
        with torch.no_grad():
            while done < num_samples:
                run = self.run(num_samples - done)
                for k, v in run.values.items():
                    out.setdefault(k, []).append(v)
                done += run.size
        if len(next(iter(out.values()))) == 1:
            return {k: v[0] for k, v in out.items()}
        dim = self.particle_dim
        return {k: torch.cat(v, dim=dim) if v[0].dim() >= -dim else v[0] for k, v in out.items()}

    def f(self, values: Mapping[str, Tensor], num: int) -> Tensor:
        """The criterion, one value per execution."""
        hint = (
            "Generate one item per execution (for example batch_size=1) and let "
            "pgmdl vectorize executions, or pass particle_plate=<plate> when the "
            "items of a plate are independent executions."
        )
        return criterion_per_particle(self.criterion(values), num, hint)

    def estimate(self, num_samples: int = 4096, chunk: int = 4096) -> TuningStep:
        """KL and the moments of :math:`f` under the tuned model, from
        ``num_samples`` executions (in chunks), without training."""
        fs, ratios, sites = [], [], {s: [] for s in self.sites}
        done = 0
        with torch.no_grad():
            while done < num_samples:
                run = self.run(min(chunk, num_samples - done))
                n = run.size
                fs.append(self.f(run.values, n))
                ratios.append(run.log_ratio)
                for s in self.sites:
                    sites[s].append(run.site_log_ratios.get(s, run.log_ratio.new_zeros(n)))
                done += n
        f = torch.cat(fs).double()
        r = torch.cat(ratios).double()
        m = Moments.of(f)
        n = f.numel()
        log_z = torch.logsumexp(self.lam * f - r, 0) - math.log(n)
        return TuningStep(
            lam=self.lam,
            kl=float(r.mean()),
            kl_se=float(r.std() / math.sqrt(n)),
            value=m.mean,
            value_se=math.sqrt(m.var / n),
            var=m.var,
            third=m.third,
            site_kl={s: float(torch.cat(v).double().mean()) for s, v in sites.items()},
            log_z=float(log_z),
        )

    def retune(
        self,
        *,
        lam: float | None = None,
        target_kl: float | None = None,
        target_value: float | None = None,
        max_updates: int = 10,
        rtol: float = 0.05,
    ) -> TunedModel:
        """Move to another member of the family, starting from the current
        flows: warm when :math:`\\lambda` grows, from a snapshot at a lower
        :math:`\\lambda` (or the identity) when it decreases (§10.2.2). A
        :math:`\\lambda` sweep along the Pareto front thus pays one cold
        start. Exactly one of ``lam``, ``target_kl`` and ``target_value``;
        the other settings are those of :func:`boltzmann_tune`, and
        ``history`` grows. Returns ``self``."""
        tuner = getattr(self, "_tuner", None)
        if tuner is None:
            raise TuningError("this TunedModel was not made by boltzmann_tune: nothing to resume.")
        _check_targets(lam, target_kl, target_value)
        return tuner.run(lam, target_kl, target_value, max_updates, rtol)

    def theory(self, lams: Sequence[float] | Tensor) -> list[TheoryPoint]:
        """The theoretical front (eq. 10.22-10.23) at each :math:`\\lambda`,
        from this model's base samples of :math:`f`."""
        if self.f_base is None:
            raise TuningError("no base samples of the criterion: run boltzmann_tune first.")
        return pareto_front(self.f_base, lams)


# ---------------------------------------------------------------------- setup


def boltzmann_tune(
    model: Callable[..., Any],
    criterion: Criterion,
    sites: str | Sequence[str],
    *,
    target_kl: float | None = None,
    target_value: float | None = None,
    lam: float | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    flow: str | FlowFactory = "spline",
    context: Literal["parents"] | Mapping[str, Sequence[str]] | None = "parents",
    particle_plate: str | None = None,
    num_particles: int = 256,
    steps: int = 400,
    lr: float = 5e-3,
    num_eval: int = 4096,
    num_base: int = 16384,
    max_updates: int = 10,
    rtol: float = 0.05,
    progress: bool = False,
) -> TunedModel:
    r"""Tune ``model`` towards :math:`\hat p_\lambda \propto p\,e^{\lambda f}` (BTGM).

    Exactly one of ``target_kl``, ``target_value`` and ``lam`` says which
    member of the family to return:

    - ``target_kl=D``: the :math:`\lambda \ge 0` with
      :math:`D_{KL}(\hat p_\lambda \| p) = D` (Algorithm 10.1); ``D =
      -log(rate)`` explores the top ``rate`` of the criterion (6.91 nats:
      the top 0.1%, :func:`~pgmdl.boltzmann.theory.tail_kl`);
    - ``target_value=F``: the :math:`\lambda` with :math:`\mathbb{E}_{\hat p_\lambda} f = F`
      (Algorithm 10.2; a target below :math:`\mathbb{E}_p f` gives :math:`\lambda < 0`);
    - ``lam``: that :math:`\lambda` (one inner loop; :math:`\lambda = 1` with
      :math:`f = \log c(y \mid x)` approximates :math:`p(x \mid y)`, eq. 10.21).

    Args:
        model: a trained Pyro program; it is run, never modified.
        criterion: ``criterion(values) -> Tensor``, where ``values`` maps
            each site name (latent, observed or ``pyro.deterministic``) to
            its value; one value per execution of the model. It must be
            differentiable in the tuned sites' values (read a decoder mean
            through ``pyro.deterministic`` rather than Bernoulli samples).
        sites: the latent site(s) to tune; every other site keeps its
            distribution (eq. 10.13). The KL is the sum over these sites
            (eq. 10.17).
        target_kl, target_value, lam: the member of the family (above).
        model_args, model_kwargs: the arguments of a *generating* call of
            the model (no ``obs`` for sites the criterion reads), for
            example ``model_kwargs={"batch_size": 1}``.
        flow: ``"spline"`` (coupling neural spline flow, default),
            ``"affine"`` (RealNVP), or ``factory(features, context)``
            returning a zuko ``LazyTransform``.
        context: ``"parents"``: a tuned site with parents gets a conditional
            flow reading their values (from :func:`pgmdl.compile`; parents in
            a plate the site is not in, such as a multiset's parts, are left
            out: ``tuned.contexts`` says what each flow reads); a mapping
            ``{site: [sites]}`` chooses them; ``None``: unconditional flows.
        particle_plate: ``None`` (default): pgmdl runs ``S`` independent
            executions side by side in a plate left of the model's own, and
            the criterion returns shape ``(S,)`` or ``(S, 1, ...)``.
            ``"data"``: the items of the model's plate ``"data"`` are the
            independent executions (their number is set by the model's
            arguments); every tuned site must be in it.
        num_particles: executions per inner step.
        steps: inner-loop steps per value of :math:`\lambda`.
        lr: Adam's learning rate for the flows.
        num_eval: executions for the Monte-Carlo estimates after each inner loop.
        num_base: base executions for :math:`f`'s normalization and the theoretical front.
        max_updates: most :math:`\lambda` values tried (the thesis converges in
            fewer than 10).
        rtol: convergence tolerance, relative to the requested change
            (``|KL - D| <= rtol·D``, ``|E f - F| <= rtol·|F - E_p f|``).
        progress: show a progress bar over the inner steps.

    Returns:
        the :class:`TunedModel`; ``.history`` holds every outer step with its
        theoretical prediction, ``.lam`` the final :math:`\lambda`.

    Raises:
        SiteNotFoundError: a site the model does not have.
        TuningError: a site that is not a continuous latent of this call; a
            criterion that returns NaN, the wrong shape, or is not
            differentiable in the tuned sites; a constant criterion; a
            target not reached in ``max_updates`` (``.best`` holds the
            closest step).

    Example:
        >>> import pyro.distributions as dist
        >>> pyro.set_rng_seed(0)
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> tuned = boltzmann_tune(model, lambda v: v["z"][..., 0], "z", lam=1.0, steps=200,
        ...                        num_base=4096)
        >>> step = tuned.history[-1]  # N(0, I) tilted by e^{z_0}: N((1, 0), I), KL 1/2
        >>> round(step.value, 1), round(step.kl, 1)
        (1.0, 0.5)
    """
    _check_targets(lam, target_kl, target_value)
    for name, v in (
        ("num_particles", num_particles),
        ("steps", steps),
        ("num_eval", num_eval),
        ("num_base", num_base),
        ("max_updates", max_updates),
    ):
        if not isinstance(v, int) or v < (0 if name == "steps" else 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    tuned = prepare(
        model,
        criterion,
        sites,
        model_args=model_args,
        model_kwargs=model_kwargs,
        flow=flow,
        context=context,
        particle_plate=particle_plate,
    )
    tuner = _Tuner(tuned, num_particles, steps, lr, num_eval, num_base, progress)
    tuner.setup()
    tuned._tuner = tuner
    return tuner.run(lam, target_kl, target_value, max_updates, rtol)


def _check_targets(lam: Any, target_kl: Any, target_value: Any) -> None:
    choices = [x is not None for x in (target_kl, target_value, lam)]
    if sum(choices) != 1:
        raise TypeError("pass exactly one of target_kl=, target_value= and lam=.")
    if target_kl is not None and not (math.isfinite(target_kl) and target_kl > 0):
        raise ValueError(f"target_kl must be a positive number of nats, got {target_kl!r}")


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
        raise TypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
    if not callable(criterion):
        raise TypeError(f"criterion must be callable(values) -> Tensor, got {criterion!r:.60}")
    graph = compile_model(model, model_args=model_args, model_kwargs=model_kwargs)
    site_list = [sites] if isinstance(sites, str) else list(sites)
    if not site_list:
        raise ValueError("sites must name at least one latent site to tune.")
    _check_sites(graph, site_list)
    contexts = _contexts(graph, site_list, context)
    particle_dim = _particle_dim(graph, site_list, particle_plate)
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
        model, flows, contexts, criterion, model_args, model_kwargs, particle_plate, particle_dim
    )
    _place(tuned)
    return tuned


def _place(tuned: TunedModel) -> None:
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


def _check_sites(graph: ModelGraph, sites: list[str]) -> None:
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
        raise ValueError(f"sites lists a site twice: {sites}")


def _contexts(graph: ModelGraph, sites: list[str], context: Any) -> dict[str, tuple[str, ...]]:
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
        raise TypeError(f"context must be 'parents', None or a mapping, got {context!r}")
    out = {}
    for s, parents in context.items():
        if s not in sites:
            raise ValueError(f"context names {s!r}, which is not among the tuned sites {sites}")
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


def _particle_dim(graph: ModelGraph, sites: list[str], particle_plate: str | None) -> int:
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


# ---------------------------------------------------------------------- loops


class _Tuner:
    """The inner and outer loops over one :class:`TunedModel`."""

    def __init__(
        self,
        tuned: TunedModel,
        num_particles: int,
        steps: int,
        lr: float,
        num_eval: int,
        num_base: int,
        progress: bool,
    ) -> None:
        self.tuned = tuned
        self.num_particles = num_particles
        self.steps = steps
        self.lr = lr
        self.num_eval = num_eval
        self.num_base = num_base
        self.progress = progress
        self.snapshots: list[tuple[float, dict]] = []
        self.m = 0.0
        self.s = 1.0

    # -- setup: devices, base samples, checks
    def setup(self) -> None:
        self.base_samples()
        self.check_differentiable()

    def base_samples(self) -> None:
        tuned = self.tuned
        fs = []
        done = 0
        with torch.no_grad():
            while done < self.num_base:
                run = tuned.run(min(self.num_eval, self.num_base - done))
                fs.append(tuned.f(run.values, run.size))
                done += run.size
        f = torch.cat(fs)
        bad = ~torch.isfinite(f)
        if bool(bad.any()):
            raise TuningError(
                f"the criterion returned NaN or infinite values for {int(bad.sum())} of "
                f"{f.numel()} samples of the original model: it must be finite wherever "
                "the model puts mass (clamp logs, guard divisions)."
            )
        self.m, self.s = criterion_scale(f)
        if not self.s > 0:
            raise TuningError(
                f"the criterion is constant ({self.m:.6g}) over {f.numel()} samples of the model: "
                "no λ changes the distribution. Check what it reads."
            )
        tuned.f_base = f.detach()

    def check_differentiable(self) -> None:
        tuned = self.tuned
        run = tuned.run(min(self.num_particles, 64))
        n = run.size
        f = tuned.f(run.values, n)
        values = [run.values[s] for s in tuned.sites if s in run.values]
        grads = None
        if f.requires_grad:
            grads = torch.autograd.grad(f.sum(), values, allow_unused=True)
        if grads is None or all(g is None for g in grads):
            raise TuningError(
                f"the criterion is not differentiable with respect to the tuned sites "
                f"{list(tuned.sites)}: its value does not depend on them through "
                "differentiable operations (Bernoulli or categorical samples, argmax, "
                ".item(), numpy round trips). Read a reparameterized or deterministic site "
                "instead, for example the decoder's mean recorded with pyro.deterministic."
            )
        if all(g is None or not bool(g.any()) for g in grads):
            raise TuningError(
                f"the criterion's gradient with respect to the tuned sites {list(tuned.sites)} "
                f"is zero on all {n} samples tried: the criterion is flat (thresholded or "
                "saturated) and gives the flows nothing to follow."
            )

    # -- inner loop (eq. 10.19)
    def start(self, lam: float) -> str:
        """Warm start unless λ decreased (§10.2.2)."""
        current = self.tuned.lam
        if not self.snapshots or abs(lam) >= abs(current) and lam * current >= 0:
            return "warm" if self.snapshots else "identity"
        lower = [(lo, st) for lo, st in self.snapshots if abs(lo) < abs(lam) and lo * lam >= 0]
        if lower:
            earlier, state = max(lower, key=lambda t: abs(t[0]))
            self.tuned.flows.load_state_dict(state)
            return f"snapshot λ={earlier:.4g}"
        for flow in self.tuned.flows.values():
            flow.reset()
        return "identity"

    def inner(self, lam: float) -> TuningStep:
        tuned = self.tuned
        how = self.start(lam)
        params = [p for p in tuned.flows.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        # cosine decay to lr/20: the last steps average out the Monte-Carlo noise
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, max(self.steps, 1), eta_min=self.lr / 20
        )
        objective = float("nan")
        bar = tqdm(range(self.steps), desc=f"λ={lam:.3g}", disable=not self.progress, leave=False)
        for _ in bar:
            run = tuned.run(self.num_particles)
            f = tuned.f(run.values, run.size)
            obj = (lam * (f - self.m) - run.log_ratio).mean()
            objective = float(obj.detach())  # checked before the step: flows stay finite
            if not math.isfinite(objective):
                raise TuningError(
                    f"the inner objective turned {objective} at λ={lam:.4g}: the criterion "
                    "or the model's log-density is not finite at tuned samples (clamp the "
                    "criterion, or lower lr=)."
                )
            grads = torch.autograd.grad(-obj, params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            torch.nn.utils.clip_grad_norm_(params, 100.0)
            optimizer.step()
            schedule.step()
            bar.set_postfix(objective=f"{objective:.3f}")
        tuned.lam = lam
        self.snapshots.append((lam, copy.deepcopy(tuned.flows.state_dict())))
        step = dataclasses.replace(
            tuned.estimate(self.num_eval),
            theory=reweighted(tuned.f_base, lam),
            start=how,
            objective=objective,
        )
        tuned.history.append(step)
        return step

    # -- outer loops (Algorithms 10.1 and 10.2), in normalized units λn = λ·s
    def run(
        self,
        lam: float | None,
        target_kl: float | None,
        target_value: float | None,
        max_updates: int,
        rtol: float,
    ) -> TunedModel:
        if lam is not None:
            self.inner(float(lam))
        elif target_kl is not None:
            self.reach_kl(float(target_kl), max_updates, rtol)
        else:
            self.reach_value(float(target_value), max_updates, rtol)
        return self.tuned

    def reach_kl(self, target: float, max_updates: int, rtol: float) -> None:
        s = self.s
        lo, hi = 0.0, math.inf
        lam_n = math.sqrt(2.0 * target)  # K(0)=0, K'(0)=0, K''(0)=Var_n=1
        last = self.tuned.history[-1] if self.tuned.history else None
        if last is not None and last.lam > 0:  # resume: one second-order step from there
            m = Moments(0.0, last.var / s**2, last.third / s**3)
            d1, d2 = kl_derivatives(last.lam * s, m)
            resumed = last.lam * s + second_order_step(last.kl - target, d1, d2)
            if math.isfinite(resumed) and resumed > 0:
                lam_n = min(resumed, 4.0 * last.lam * s)
        best: TuningStep | None = None
        for _ in range(max_updates):
            step = self.inner(lam_n / s)
            if best is None or abs(step.kl - target) < abs(best.kl - target):
                best = step
            if abs(step.kl - target) <= rtol * target:
                return
            if step.kl < target:
                lo = max(lo, lam_n)
            else:
                hi = min(hi, lam_n)
            m = Moments(0.0, step.var / s**2, step.third / s**3)
            d1, d2 = kl_derivatives(lam_n, m)
            lam_n = _safeguard(lam_n + second_order_step(step.kl - target, d1, d2), lam_n, lo, hi)
        self._fail(
            f"the KL target {target:.4g} nats was not reached in {max_updates} updates of λ",
            best,
            f"KL={best.kl:.4g}",
        )

    def reach_value(self, target: float, max_updates: int, rtol: float) -> None:
        s, m0 = self.s, self.m
        sign = 1.0 if target >= m0 else -1.0
        goal = sign * (target - m0) / s  # > 0 in the signed, normalized units
        tol = rtol * goal
        lo, hi = 0.0, math.inf
        base = Moments.of(sign * (self.tuned.f_base.double() - m0) / s)
        lam_n = _safeguard(second_order_step(-goal, 1.0, base.third), 0.0, lo, hi)
        best: TuningStep | None = None
        for _ in range(max_updates):
            step = self.inner(sign * lam_n / s)
            reached = sign * (step.value - m0) / s
            if best is None or abs(step.value - target) < abs(best.value - target):
                best = step
            if abs(reached - goal) <= tol:
                return
            if reached < goal:
                lo = max(lo, lam_n)
            else:
                hi = min(hi, lam_n)
            d1, d2 = value_derivatives(Moments(0.0, step.var / s**2, sign * step.third / s**3))
            lam_n = _safeguard(lam_n + second_order_step(reached - goal, d1, d2), lam_n, lo, hi)
        self._fail(
            f"the target E f = {target:.6g} was not reached in {max_updates} updates of λ "
            f"(E_p f = {m0:.6g}; the criterion may be bounded below the target, or the flows "
            "too weak)",
            best,
            f"E f={best.value:.6g}",
        )

    def _fail(self, what: str, best: TuningStep, reached: str) -> None:
        raise TuningError(
            f"{what}. The best reached value is {reached} at λ={best.lam:.4g} ({best}). "
            "Raise max_updates= or steps=, use a more flexible flow=, or ask for a smaller "
            "target; the original model is unchanged.",
            best=best,
        )


def _safeguard(proposal: float, current: float, lo: float, hi: float) -> float:
    """Keep λ inside the bracket [lo, hi] that monotonicity gives (eq. 10.6:
    KL and E f increase with λ ≥ 0); bisect when the quadratic model leaves
    it, and grow at most 4× while no upper bound is known."""
    if not math.isfinite(proposal) or proposal <= lo or proposal >= hi:
        if math.isfinite(hi):
            return 0.5 * (lo + hi)
        return max(2.0 * max(current, lo), 1e-3)
    if not math.isfinite(hi) and current > 0:
        proposal = min(proposal, 4.0 * current)
    return proposal
