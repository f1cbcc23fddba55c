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

The pieces: :mod:`~pgmdl.boltzmann.tuned_model` (:class:`TunedModel`,
:class:`TuningStep`), :mod:`~pgmdl.boltzmann.preparation` (checking the
sites, building the flows at the identity: :func:`prepare`) and
:mod:`~pgmdl.boltzmann.loops` (the inner and outer loops).

Reference: V. Berger and M. Sebag, "Boltzmann Tuning of Generative Models",
arXiv:2104.05252 (2021); V. Berger, PhD thesis (2022), chapter 10.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pyro  # noqa: F401  (the docstring example uses it)
import torch  # noqa: F401  (the docstring example uses it)

from pgmdl.boltzmann.flows import FlowFactory
from pgmdl.boltzmann.loops import Tuner, check_targets
from pgmdl.boltzmann.preparation import prepare
from pgmdl.boltzmann.tuned_model import Criterion, TunedModel, TuningStep
from pgmdl.errors import ArgumentError

__all__ = ["Criterion", "TunedModel", "TuningStep", "boltzmann_tune", "prepare"]


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
    check_targets(lam, target_kl, target_value)
    for name, v in (
        ("num_particles", num_particles),
        ("steps", steps),
        ("num_eval", num_eval),
        ("num_base", num_base),
        ("max_updates", max_updates),
    ):
        if not isinstance(v, int) or v < (0 if name == "steps" else 1):
            raise ArgumentError(f"{name} must be a positive integer, got {v!r}")
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
    tuner = Tuner(tuned, num_particles, steps, lr, num_eval, num_base, progress)
    tuner.setup()
    tuned.tuner = tuner
    return tuner.run(lam, target_kl, target_value, max_updates, rtol)
