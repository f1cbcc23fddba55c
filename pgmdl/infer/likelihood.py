r"""The log-likelihood of data under a trained model, by importance sampling.

With the amortized guide as proposal, the importance-weighted estimate
(Burda et al., 2016: the IWAE bound)

.. math::

    \log \hat p_K(x) = \log \frac1K \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)},
    \qquad z_k \sim q(z \mid x),

is a lower bound of :math:`\log p(x)` in expectation, tightening as :math:`K`
grows, and consistent (Mattei & Frellsen's talk; Mattei & Frellsen 2018). Its
Monte-Carlo standard error follows from the delta method: with normalized
weights :math:`\tilde w_k`,

.. math:: \operatorname{se}\big[\log \hat p_K(x)\big] \approx
    \sqrt{\Big(K \textstyle\sum_k \tilde w_k^2 - 1\Big) / K}
    = \sqrt{(K / \mathrm{ESS} - 1) / K},

which is also a diagnostic: a standard error near 1 means a handful of
particles carry the estimate (the guide is a poor proposal there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pgmdl.arguments import model_arguments
from pgmdl.errors import ArgumentError, ModelError
from pgmdl.graph.compile import compile_model
from pgmdl.infer.data import prepare_data
from pgmdl.infer.importance import check_guide, evaluating, layout, observed_site, score


@dataclass(frozen=True)
class LogLikelihood:
    """Importance-sampling estimates of :math:`\\log p(x_n)`, one per data point.

    Attributes:
        per_point: :math:`\\log \\hat p_K(x_n)`, shape ``(N,)``.
        se: their Monte-Carlo standard errors, ``(N,)``.
        num_particles: :math:`K`.
        ess: the effective sample size of each point's weights, ``(N,)``.
        observed_only: the estimate is :math:`\\log p(x_o)`, over the entries a
            mask said were observed.
    """

    per_point: Tensor
    se: Tensor
    num_particles: int
    ess: Tensor
    observed_only: bool = False

    @property
    def total(self) -> float:
        """:math:`\\sum_n \\log \\hat p_K(x_n)`."""
        return float(self.per_point.sum())

    @property
    def total_se(self) -> float:
        """Standard error of :attr:`total` (independent points)."""
        return float(self.se.pow(2).sum().sqrt())

    @property
    def mean(self) -> float:
        """Average log-likelihood per data point."""
        return float(self.per_point.mean())

    @property
    def mean_se(self) -> float:
        """Monte-Carlo standard error of :attr:`mean`."""
        return self.total_se / self.per_point.numel()

    def __str__(self) -> str:
        what = "log p(x_o)" if self.observed_only else "log p(x)"
        return (
            f"{what} ≈ {self.mean:.4f} ± {self.mean_se:.2g} nats per point "
            f"({self.per_point.numel()} points, K={self.num_particles})"
        )


def _arguments(data: Any, model_args: tuple, model_kwargs: Mapping[str, Any] | None):
    """:func:`pgmdl.fit`'s convention (and checks): a tensor is the first
    positional argument, a tuple the positional arguments, a mapping keywords."""
    args, kwargs, _, _ = prepare_data(data, None)
    other_args, other_kwargs = model_arguments("log_likelihood", model_args, model_kwargs)
    return args + other_args, {**other_kwargs, **kwargs}


def log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Tensor | Sequence[Tensor] | Mapping[str, Tensor],
    *,
    num_particles: int = 1000,
    particle_batch: int = 100,
    mask: Tensor | None = None,
    site: str | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> LogLikelihood:
    """Estimate :math:`\\log p(x_n)` for every data point (IWAE, with its
    Monte-Carlo standard error).

    Args:
        model, guide: a Pyro model and its (amortized) guide, e.g. a
            :class:`pgmdl.NaMIGuide`, trained.
        data: the model's arguments, as in :func:`pgmdl.fit`: a tensor (the
            first positional argument), a tuple, or a mapping of keywords.
        num_particles: :math:`K`.
        particle_batch: particles drawn per vectorized run (memory: the
            model runs on ``particle_batch × N`` points at once).
        mask: ``(N, D)`` booleans, True where observed: estimate the
            likelihood of the observed entries, :math:`\\log p(x_o)` (the
            guide reads the data as given: zero-fill the missing entries for
            a guide trained that way).
        site: the observed site (default: the model's only one).
        model_args, model_kwargs: further arguments of the model.

    Returns:
        a :class:`LogLikelihood`.

    Raises:
        ArgumentError: ``num_particles`` is not a positive integer, ``mask``
            does not match the data, or ``data`` cannot be read (as in
            :func:`pgmdl.fit`; :class:`~pgmdl.errors.ArgumentTypeError` when
            it is not tensors).
        ModelError: no single observed site, latents shared across data
            points, an observed site that does not factorize over one event
            dimension, or a guide that does not sample the model's latents
            (the guide of another model).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):  # x ~ N(z, 1), z ~ N(0, 1): marginally x ~ N(0, 2)
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z[..., None], 1.0).to_event(1), obs=x)
        >>> def guide(x):  # the exact posterior N(x/2, 1/2)
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(x[:, 0] / 2, 0.5**0.5))
        >>> x = torch.tensor([[0.0], [2.0]])
        >>> ll = log_likelihood(model, guide, x, num_particles=10)
        >>> exact = dist.Normal(0.0, 2**0.5).log_prob(x[:, 0])
        >>> torch.allclose(ll.per_point, exact, atol=1e-5), float(ll.se.max()) < 1e-5
        (True, True)
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ArgumentError(f"num_particles must be a positive integer, got {num_particles!r}")
    args, kwargs = _arguments(data, model_args, model_kwargs)
    graph = compile_model(model, model_args=args, model_kwargs=kwargs, num_traces=1)
    lay = layout(graph, observed_site(graph, site))
    check_guide(graph, guide, args, kwargs)
    n = graph.plates[graph[lay.site].plates[0]].subsample_size
    if mask is not None:
        mask = mask.to(torch.bool)
        if mask.shape != (n, graph[lay.site].event_shape[0]):
            raise ArgumentError(
                f"mask has shape {tuple(mask.shape)}, the data "
                f"({n}, {graph[lay.site].event_shape[0]}): they must match entry for entry."
            )
    chunks = []
    done = 0
    with torch.no_grad(), evaluating(model, guide):
        while done < num_particles:
            k = min(particle_batch, num_particles - done)
            chunks.append(score(model, guide, args, kwargs, lay, k, n).log_weights(mask))
            done += k
    log_w = torch.cat(chunks).double()  # (K, N)
    if not bool(torch.isfinite(log_w).all()):
        bad = (~torch.isfinite(log_w)).any(0).nonzero().flatten()[:5].tolist()
        raise ModelError(
            f"non-finite importance weights for data points {bad}: the guide proposes latents "
            "where the model's density is 0 or infinite (a support mismatch), or the data "
            "has values the observation model cannot produce."
        )
    k = log_w.shape[0]
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    w = torch.softmax(log_w, 0)
    ess = 1.0 / (w * w).sum(0)
    se = ((k / ess - 1.0).clamp(min=0.0) / k).sqrt()
    return LogLikelihood(estimate.float(), se.float(), k, ess.float(), mask is not None)
