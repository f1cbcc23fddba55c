"""Permutation-invariant set encoders (Deep Sets: Zaheer et al. 2017): parents
living in an inner plate are pooled over its replicates (:class:`SetEncoder`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pgmdl.nn.residual import ResidualMLP


class SetEncoder(nn.Module):
    r"""A permutation-invariant summary of a set of replicates (Deep Sets).

    .. math::

        s = \Big[\tfrac{1}{n}\textstyle\sum_{j=1}^n \phi(x_j),\ \log n\Big]

    :math:`\phi` is a :class:`ResidualMLP` (randomly initialized); the mean
    makes :math:`s` invariant to the order of the replicates and defined for
    any :math:`n`, and :math:`\log n` lets the conditional know how much
    evidence the set carries (a posterior over a global variable sharpens
    as :math:`n` grows).

    Reference: M. Zaheer et al., "Deep Sets", NeurIPS 2017.
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64,)):
        super().__init__()
        self.phi = ResidualMLP(in_features, out_features, hidden, zero_init=False)
        nn.init.normal_(self.phi.linear.weight, std=1.0 / math.sqrt(max(in_features, 1)))
        self.out_features = out_features + 1

    def forward(
        self, x: torch.Tensor, dims: Sequence[int], weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""Pool ``x`` (features last) over the batch dimensions ``dims``
        (negative, counted on ``x``), keeping them with size 1. ``weight``
        (broadcastable to ``x``'s batch shape plus a trailing 1, 0/1 for the
        replicates that exist: a multiset plate's mask) restricts the mean and
        the count :math:`n` to those replicates (:math:`\log n` becomes
        :math:`\log(1 + n)` there, defined for empty sets)."""
        h = self.phi(x)
        dims = tuple(dims)
        if weight is None:
            n = math.prod(x.shape[d] for d in dims)
            pooled = h.mean(dim=dims, keepdim=True)
            return torch.cat([pooled, pooled.new_full(pooled.shape[:-1] + (1,), math.log(n))], -1)
        weight = weight.expand(h.shape[:-1] + (1,))
        count = weight.sum(dim=dims, keepdim=True)
        pooled = (h * weight).sum(dim=dims, keepdim=True) / count.clamp(min=1)
        return torch.cat([pooled, torch.log1p(count)], -1)
