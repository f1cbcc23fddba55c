r"""The tuned model and the points of its family.

:class:`TunedModel` is the original Pyro model with some latent sites pushed
through learned flows (run under :class:`~pgmdl.boltzmann.handler.TunedSites`):
an ordinary Pyro program with the same sites, plates and arguments.
:class:`TuningStep` is one member :math:`\hat p_\lambda` of the family,
measured by Monte-Carlo (KL to the original, moments of the criterion,
the reweighting theory beside it). :func:`~pgmdl.boltzmann.boltzmann_tune`
builds the first (:mod:`~pgmdl.boltzmann.preparation`) and records the
second (:mod:`~pgmdl.boltzmann.loops`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pgmdl.boltzmann.flows import SiteFlow
from pgmdl.boltzmann.handler import (
    ParticleRun,
    TunedSites,
    criterion_per_particle,
    run_particles,
)
from pgmdl.boltzmann.loops import Tuner, check_targets
from pgmdl.boltzmann.theory import Moments, TheoryPoint, pareto_front
from pgmdl.errors import TuningError

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
        f_base: :math:`f` under the original model (one value per base
            sample), from which :meth:`theory` predicts the front.
        tuner: the loops that tuned it (:class:`~pgmdl.boltzmann.loops.Tuner`),
            which :meth:`retune` resumes; ``None`` before tuning.
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
        self.tuner: Tuner | None = None

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
        tuner = self.tuner
        if tuner is None:
            raise TuningError("this TunedModel was not made by boltzmann_tune: nothing to resume.")
        check_targets(lam, target_kl, target_value)
        return tuner.run(lam, target_kl, target_value, max_updates, rtol)

    def theory(self, lams: Sequence[float] | Tensor) -> list[TheoryPoint]:
        """The theoretical front (eq. 10.22-10.23) at each :math:`\\lambda`,
        from this model's base samples of :math:`f`."""
        if self.f_base is None:
            raise TuningError("no base samples of the criterion: run boltzmann_tune first.")
        return pareto_front(self.f_base, lams)
