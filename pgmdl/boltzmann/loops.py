r"""The inner and outer loops of Boltzmann tuning (thesis §10.2).

The **inner loop** (:meth:`Tuner.inner`, eq. 10.19) trains the flows at one
:math:`\lambda`: Adam on :math:`\lambda(\mathbb{E} f - m) - D_{KL}`, warm-started
from the previous :math:`\lambda`, from a snapshot at a lower one, or from
the identity when :math:`\lambda` decreases (§10.2.2). The **outer loops**
pick :math:`\lambda` for a target KL (:meth:`Tuner.reach_kl`, Algorithm 10.1)
or a target :math:`\mathbb{E} f` (:meth:`Tuner.reach_value`, Algorithm 10.2)
by second-order steps (eq. 10.6-10.9), kept inside the bracket that
monotonicity gives (:func:`safeguard_lambda`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from pgmdl.boltzmann.theory import (
    Moments,
    criterion_scale,
    kl_derivatives,
    reweighted,
    second_order_step,
    value_derivatives,
)
from pgmdl.errors import ArgumentError, ArgumentTypeError, TuningError

if TYPE_CHECKING:
    from pgmdl.boltzmann.tuned_model import TunedModel, TuningStep


def check_targets(lam: Any, target_kl: Any, target_value: Any) -> None:
    """Exactly one of ``lam``, ``target_kl`` and ``target_value``; a KL target
    must be a positive number of nats.

    Raises:
        ArgumentTypeError: none or several are given (also a ``TypeError``).
        ArgumentError: ``target_kl`` is not a positive finite number.
    """
    choices = [x is not None for x in (target_kl, target_value, lam)]
    if sum(choices) != 1:
        raise ArgumentTypeError("pass exactly one of target_kl=, target_value= and lam=.")
    if target_kl is not None and not (math.isfinite(target_kl) and target_kl > 0):
        raise ArgumentError(f"target_kl must be a positive number of nats, got {target_kl!r}")


class Tuner:
    """The inner and outer loops over one :class:`~pgmdl.boltzmann.TunedModel`.

    :meth:`setup` draws the base samples of the criterion and checks it;
    :meth:`run` reaches a :math:`\\lambda`, a KL or a value of the criterion;
    every inner loop appends a :class:`~pgmdl.boltzmann.TuningStep` to the
    tuned model's ``history``.
    """

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
        """Draw the criterion's base samples and check that it is differentiable
        with respect to the tuned sites."""
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
        r"""Train the flows at one :math:`\lambda` (eq. 10.19); returns the step,
        also appended to the tuned model's ``history``."""
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
        r"""Reach a given :math:`\lambda`, a target KL or a target value of the
        criterion (whichever is not ``None``, in that order)."""
        if lam is not None:
            self.inner(float(lam))
        elif target_kl is not None:
            self.reach_kl(float(target_kl), max_updates, rtol)
        else:
            self.reach_value(float(target_value), max_updates, rtol)
        return self.tuned

    def reach_kl(self, target: float, max_updates: int, rtol: float) -> None:
        """The outer loop for a target KL (Algorithm 10.1)."""
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
            lam_n = safeguard_lambda(
                lam_n + second_order_step(step.kl - target, d1, d2), lam_n, lo, hi
            )
        self._fail(
            f"the KL target {target:.4g} nats was not reached in {max_updates} updates of λ",
            best,
            f"KL={best.kl:.4g}",
        )

    def reach_value(self, target: float, max_updates: int, rtol: float) -> None:
        """The outer loop for a target value of the criterion's mean (Algorithm 10.2)."""
        s, m0 = self.s, self.m
        sign = 1.0 if target >= m0 else -1.0
        goal = sign * (target - m0) / s  # > 0 in the signed, normalized units
        tol = rtol * goal
        lo, hi = 0.0, math.inf
        base = Moments.of(sign * (self.tuned.f_base.double() - m0) / s)
        lam_n = safeguard_lambda(second_order_step(-goal, 1.0, base.third), 0.0, lo, hi)
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
            lam_n = safeguard_lambda(
                lam_n + second_order_step(reached - goal, d1, d2), lam_n, lo, hi
            )
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


def safeguard_lambda(proposal: float, current: float, lo: float, hi: float) -> float:
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
