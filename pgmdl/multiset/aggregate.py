r"""Permutation-invariant aggregation of a multiset's parts (thesis §9.1, §9.3.2).

CompVAE's whole depends on its parts only through a deterministic,
permutation-invariant aggregate :math:`\widetilde W = \Psi(\{w_i\})` (eq. 9.2).
The simplest is the sum; when the whole must stay bounded whatever the number
of parts (pixel intensities), the sum goes through the saturating

.. math::

    \chi(x) = \frac{x}{1 + \gamma\,|x|} \qquad (9.16), \qquad
    \widetilde W = \chi\Big(\sum_i W_i\Big) \qquad (9.17),

with :math:`\gamma > 0` learned and initialized to 1: it saturates like
:math:`\tanh` but more slowly (Fig. 9.8), which keeps gradients alive early in
training. Padded part slots (``mask`` False) add nothing, so an empty multiset
aggregates to 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pgmdl.errors import ModelError


def masked_sum(parts: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum ``parts`` ``(..., K, D)`` over the present slots of ``mask`` ``(..., K)``.

    Example:
        >>> parts = torch.tensor([[1.0], [2.0], [40.0]])
        >>> masked_sum(parts, torch.tensor([True, True, False]))
        tensor([3.])
    """
    if parts.dim() < 2:
        raise ModelError(f"parts need shape (..., K, D), got {tuple(parts.shape)}")
    if mask is None:
        return parts.sum(-2)
    if mask.shape[-1:] != parts.shape[-2:-1]:
        raise ModelError(
            f"the mask has {mask.shape[-1] if mask.dim() else 0} part slots but the parts "
            f"tensor {tuple(parts.shape)} has {parts.shape[-2]}; the mask is (..., K) for "
            "parts (..., K, D)"
        )
    return (parts * mask.unsqueeze(-1).to(parts.dtype)).sum(-2)


class SaturatingSum(nn.Module):
    r"""The saturating sum :math:`\widetilde W = \chi(\sum_i W_i)`,
    :math:`\chi(x) = x / (1 + \gamma|x|)` (eq. 9.16–9.17).

    Args:
        gamma: the starting :math:`\gamma > 0` (1.0 in the thesis).
        learn: learn :math:`\gamma` (kept positive as a softplus).
        features: one :math:`\gamma` per coordinate when given, else a scalar.

    Example:
        >>> aggregate = SaturatingSum()
        >>> aggregate(torch.tensor([[3.0], [5.0]]))   # 8 / (1 + 8)
        tensor([0.8889], grad_fn=<DivBackward0>)
    """

    def __init__(self, gamma: float = 1.0, *, learn: bool = True, features: int | None = None):
        super().__init__()
        if not gamma > 0:
            raise ModelError(f"gamma={gamma!r} must be > 0")
        raw = torch.tensor(math.log(math.expm1(float(gamma))))  # softplus(raw) = gamma
        if features is not None:
            raw = raw.expand(features).clone()
        self.raw_gamma = nn.Parameter(raw, requires_grad=learn)

    @property
    def gamma(self) -> torch.Tensor:
        return F.softplus(self.raw_gamma)

    def forward(self, parts: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.saturate(masked_sum(parts, mask))

    def saturate(self, total: torch.Tensor) -> torch.Tensor:
        r""":math:`\chi(s) = s / (1 + \gamma|s|)` of an already summed ``total`` (eq. 9.16)."""
        return total / (1 + self.gamma * total.abs())
