r"""Missing-data imputation with a trained model and its amortized guide.

Given data :math:`x = (x_o, x_m)` whose entries under ``mask == False`` are
missing, three samplers of :math:`p(x_m \mid x_o)` (Mattei & Frellsen 2018,
"Leveraging the exact likelihood of deep latent variable models"; MIWAE 2019):

``"pseudo-gibbs"`` (Rezende et al., 2014)
    alternate :math:`z \sim q(z \mid x_o, \hat x_m)` and
    :math:`\hat x_m \sim p(x_m \mid z)`. It samples :math:`p(x_m \mid x_o)` only
    if :math:`q` is the exact posterior; otherwise its stationary
    distribution is biased.

``"mwg"`` (Metropolis-within-Gibbs)
    the same chain with :math:`q` as an independence proposal: accept
    :math:`\tilde z \sim q(\cdot \mid x_o, \hat x_m)` with probability

    .. math::

        \min\Big(1, \frac{p(x_o, \hat x_m \mid \tilde z)\, p(\tilde z)\,
                           q(z \mid x_o, \hat x_m)}
                          {p(x_o, \hat x_m \mid z)\, p(z)\, q(\tilde z \mid x_o, \hat x_m)}\Big),

    then draw :math:`\hat x_m \sim p(x_m \mid z)`. Its stationary
    distribution is the exact :math:`p(z, x_m \mid x_o)` whatever :math:`q`
    (asymptotically exact).

``"importance"`` (MIWAE imputation)
    :math:`z_k \sim q(z \mid \tilde x)` with :math:`\tilde x` the zero-filled
    data, weights :math:`w_k \propto p(x_o \mid z_k)\, p(z_k) / q(z_k \mid \tilde x)`;
    single imputation :math:`\sum_k \tilde w_k\, \mathbb{E}[x_m \mid z_k]`, multiple
    imputation by resampling :math:`z_k` with :math:`\tilde w` and drawing
    :math:`x_m \sim p(x_m \mid z_k)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from pgmdl.arguments import model_arguments
from pgmdl.errors import ArgumentError, ArgumentTypeError
from pgmdl.graph.compile import compile_model
from pgmdl.infer.importance import (
    Layout,
    check_guide,
    evaluating,
    layout,
    observed_site,
    score,
)

METHODS = ("mwg", "pseudo-gibbs", "importance")


@dataclass(frozen=True)
class Imputation:
    """Imputed data sets.

    Attributes:
        samples: ``(S, N, D)`` draws of the completed data (observed entries
            kept as given).
        mean: ``(N, D)``: the single imputation (the mean of the samples; for
            ``"importance"`` the weighted mean of the decoder means).
        method: the sampler.
        acceptance: per data point acceptance rate of Metropolis-within-Gibbs
            (``None`` for the other samplers).
        trace: ``(T, N)`` a scalar summary per step of the chain (the mean of
            the imputed entries of each row), to check mixing.
    """

    samples: Tensor
    mean: Tensor
    method: str
    acceptance: Tensor | None = None
    trace: Tensor | None = field(default=None, repr=False)


def check_mask(data: Tensor, mask: Tensor) -> Tensor:
    """A boolean mask of the data's shape, with at least one observed entry per row."""
    if not isinstance(mask, Tensor):
        raise ArgumentTypeError(f"mask must be a boolean tensor, got {type(mask).__name__}")
    if mask.shape != data.shape:
        raise ArgumentError(
            f"mask has shape {tuple(mask.shape)} but the data has {tuple(data.shape)}: they "
            "must match entry for entry (True where a value is observed)."
        )
    mask = mask.to(device=data.device, dtype=torch.bool)
    empty = (~mask.reshape(len(mask), -1).any(-1)).nonzero().flatten()
    if len(empty):
        raise ArgumentError(
            f"rows {empty[:10].tolist()} have every value missing: there is nothing to condition "
            "on (sample them from the model instead, e.g. pyro.infer.Predictive)."
        )
    return mask


def impute(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Tensor,
    mask: Tensor,
    *,
    method: Literal["mwg", "pseudo-gibbs", "importance"] = "mwg",
    num_steps: int = 1000,
    num_samples: int = 1,
    burn_in: int | None = None,
    num_particles: int = 1000,
    site: str | None = None,
    argument: str | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> Imputation:
    """Impute the entries of ``data`` where ``mask`` is False.

    Args:
        model, guide: a trained model and its amortized guide (the guide
            reads the observed site's argument, as a :class:`pgmdl.NaMIGuide`).
        data: ``(N, D)``; the values at missing entries are ignored.
        mask: ``(N, D)`` booleans, True where observed.
        method: ``"mwg"``, ``"pseudo-gibbs"`` or ``"importance"`` (module docstring).
        num_steps: chain length for the two Gibbs samplers.
        num_samples: completed data sets to return (the last ``num_samples``
            states of the chain, thinned evenly over the steps after
            ``burn_in``; resamples for ``"importance"``).
        burn_in: steps discarded before keeping samples (default half).
        num_particles: :math:`K` for ``"importance"``.
        site: the observed site (default: the model's only one).
        argument: the keyword under which the model receives the data
            (default: its first positional argument).
        model_args, model_kwargs: the model's other arguments.

    Returns:
        an :class:`Imputation`.

    Raises:
        ArgumentError: a mask whose shape disagrees with the data, or a row
            with every value missing; an unknown method; bad ``num_steps`` or
            ``burn_in``.
        ModelError: the model's layout does not allow it (see
            :mod:`pgmdl.infer.importance`), or the guide does not sample the
            model's latents (a guide made for another model).
    """
    if method not in METHODS:
        raise ArgumentError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(data, Tensor) or data.dim() != 2:
        raise ArgumentError("data must be an (N, D) tensor")
    mask = check_mask(data, mask)
    filled = torch.where(mask, data, torch.zeros_like(data))

    other_args, other_kwargs = model_arguments("impute", model_args, model_kwargs)

    def arguments(x: Tensor) -> tuple[tuple, dict]:
        if argument is None:
            return (x,) + other_args, dict(other_kwargs)
        return other_args, {**other_kwargs, argument: x}

    args, kwargs = arguments(filled)
    graph = compile_model(model, model_args=args, model_kwargs=kwargs, num_traces=1)
    lay = layout(graph, observed_site(graph, site))
    check_guide(graph, guide, args, kwargs)
    n = data.shape[0]
    with torch.no_grad(), evaluating(model, guide):
        if method == "importance":
            return _importance(
                model, guide, arguments, filled, mask, lay, n, num_particles, num_samples
            )
        return _gibbs(
            model, guide, arguments, filled, mask, lay, n, method, num_steps, num_samples, burn_in
        )


def _select(
    current: dict[str, Tensor],
    proposed: dict[str, Tensor],
    accept: Tensor,
    event_dims: dict[str, int],
    lay: Layout,
) -> dict[str, Tensor]:
    """Per data point, the proposed latents where accepted, else the current ones."""
    out = {}
    for name, old in current.items():
        new = proposed[name]
        axis = new.dim() - event_dims[name] + lay.data_dim
        shape = [1] * new.dim()
        shape[axis] = accept.numel()
        out[name] = torch.where(accept.reshape(shape), new, old)
    return out


def _gibbs(
    model,
    guide,
    arguments,
    filled,
    mask,
    lay,
    n,
    method,
    num_steps,
    num_samples,
    burn_in,
) -> Imputation:  # noqa: ANN001
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ArgumentError(f"num_steps must be a positive integer, got {num_steps!r}")
    burn_in = num_steps // 2 if burn_in is None else burn_in
    if not 0 <= burn_in < num_steps:
        raise ArgumentError(f"burn_in must be in [0, num_steps), got {burn_in!r}")
    keep_at = set(torch.linspace(burn_in, num_steps - 1, num_samples).round().long().tolist())
    x_hat = filled
    args, kwargs = arguments(x_hat)
    current = score(model, guide, args, kwargs, lay, 1, n)
    z = current.latents
    accepted = torch.zeros(n, device=filled.device)
    total = torch.zeros_like(filled)
    kept, summary = [], []
    missing = (~mask).to(filled.dtype)
    for t in range(num_steps):
        args, kwargs = arguments(x_hat)
        proposal = score(model, guide, args, kwargs, lay, 1, n)
        if method == "pseudo-gibbs":
            z, draw = proposal.latents, proposal.obs.sample()[0]
        else:
            current = score(model, guide, args, kwargs, lay, 1, n, latents=z)
            log_ratio = (proposal.log_weights() - current.log_weights())[0]  # (N,)
            accept = torch.rand_like(log_ratio).log() < log_ratio
            accepted += accept.to(accepted.dtype)
            z = _select(z, proposal.latents, accept, proposal.event_dims, lay)
            draw = torch.where(accept[:, None], proposal.obs.sample()[0], current.obs.sample()[0])
        x_hat = torch.where(mask, filled, draw)
        summary.append((x_hat * missing).sum(-1) / missing.sum(-1).clamp(min=1))
        if t >= burn_in:
            total += x_hat
        if t in keep_at:
            kept.append(x_hat)
    mean = total / (num_steps - burn_in)
    rate = accepted / num_steps if method == "mwg" else None
    samples = torch.stack(kept)
    while samples.shape[0] < num_samples:  # more samples asked than steps kept
        samples = torch.cat([samples, samples[-1:]])
    return Imputation(samples, mean, method, rate, torch.stack(summary))


def _importance(
    model, guide, arguments, filled, mask, lay, n, num_particles, num_samples
) -> Imputation:  # noqa: ANN001
    args, kwargs = arguments(filled)
    scored = score(model, guide, args, kwargs, lay, num_particles, n)
    log_w = scored.log_weights(mask)  # (K, N)
    w = torch.softmax(log_w, 0)
    means = scored.obs.mean  # (K, N, D)
    single = (w[..., None] * means).sum(0)
    mean = torch.where(mask, filled, single)
    idx = torch.multinomial(w.T, num_samples, replacement=True)  # (N, S)
    draws = scored.obs.sample()  # (K, N, D)
    rows = torch.arange(n, device=filled.device)
    picked = draws[idx.T, rows[None, :]]  # (S, N, D)
    samples = torch.where(mask, filled, picked)
    return Imputation(samples, mean, "importance")
