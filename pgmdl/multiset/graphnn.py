r"""A graph neural network over the parts of a multiset, linear in their number (thesis §9.2.3).

CompVAE's guide predicts :math:`(\mu_i, \sigma_i, \nu_i)` for every part from
the part's own metadata, the other parts and the global context
:math:`\tilde h` (the encoded whole :math:`x`, :math:`z`, :math:`c`). On the
fully connected graph of the parts, layer :math:`L` computes (eq. 9.12–9.14)

.. math::

    h_i^{L+1} = h_i^L + f_L\Big(h_i^L,\ \tilde h,\ \operatorname{pool}_{j \ne i}\,
        \Phi_L(h_j^L, \tilde h)\Big),

with :math:`f_L`, :math:`\Phi_L` small MLPs shared by all parts (the residual
form is ours: it keeps deep stacks trainable). As the thesis notes (§9.2.3,
footnote 4), :math:`\Phi_L` is computed once per part and the sum over the
other parts is the total minus the part's own term, so a layer costs
:math:`O(K)`, not :math:`O(K^2)`.

``pool="sum"`` is the thesis' sum. ``pool="mean"`` (the default) divides it by
the number of other parts and appends :math:`\log(1 + n)`, so that the
network's inputs keep their scale from :math:`K = 1` to thousands of parts
while still seeing how many there are. Padded slots (``mask`` False) are
neither senders nor receivers; their outputs are zero. The network is
permutation-equivariant by construction: permuting the parts permutes the
outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pgmdl.errors import ModelError
from pgmdl.nn import ResidualMLP

POOLS = ("mean", "sum")


def _mlp(in_features: int, out_features: int, hidden: Sequence[int]) -> ResidualMLP:
    """The library's residual MLP (linear skip path plus ELU body), randomly initialized."""
    return ResidualMLP(in_features, out_features, hidden, zero_init=False)


class GraphSetEncoder(nn.Module):
    r"""Permutation-equivariant message passing over a padded multiset (eq. 9.12–9.14).

    Args:
        in_features: width of each part's input (its metadata :math:`\ell_i`).
        out_features: width of each part's output (e.g. ``3 * D`` for
            :math:`\mu, \sigma, \nu`).
        context_features: width of the global context (0: none).
        width: the state width :math:`h`.
        layers: message-passing layers.
        hidden: hidden widths of each :math:`f_L` and :math:`\Phi_L`.
        pool: ``"mean"`` or ``"sum"`` over the other parts.

    Example:
        >>> encoder = GraphSetEncoder(4, 6, context_features=8)
        >>> parts, context = torch.randn(2, 5, 4), torch.randn(2, 8)
        >>> mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
        >>> encoder(parts, mask, context).shape
        torch.Size([2, 5, 6])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        context_features: int = 0,
        width: int = 64,
        layers: int = 3,
        hidden: Sequence[int] = (64,),
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ModelError(f"pool={pool!r}: use one of {POOLS}")
        if layers < 1:
            raise ModelError(f"layers={layers!r} must be ≥ 1")
        self.in_features = in_features
        self.context_features = context_features
        self.pool = pool
        extra = 1 if pool == "mean" else 0  # log(1 + number of other parts)
        self.embed = _mlp(in_features, width, hidden)
        self.context = _mlp(context_features, width, hidden) if context_features else None
        ctx = width if context_features else 0
        self.messages = nn.ModuleList(_mlp(width + ctx, width, hidden) for _ in range(layers))
        self.updates = nn.ModuleList(
            _mlp(2 * width + ctx + extra, width, hidden) for _ in range(layers)
        )
        self.out = nn.Linear(width, out_features)

    def forward(
        self,
        parts: torch.Tensor,
        mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-part outputs ``(..., K, out_features)`` for parts ``(..., K, in_features)``,
        a mask ``(..., K)`` and a context ``(..., context_features)``."""
        self._check(parts, mask, context)
        if mask is None:
            mask = torch.ones(parts.shape[:-1], dtype=torch.bool, device=parts.device)
        present = mask.unsqueeze(-1).to(parts.dtype)
        h = self.embed(parts) * present
        ctx = None
        if self.context is not None:
            ctx = self.context(context).unsqueeze(-2).expand(*h.shape[:-1], -1)
        count = present.sum(-2, keepdim=True)  # parts per multiset
        others = (count - present).clamp(min=0)  # other parts seen by each part
        for message, update in zip(self.messages, self.updates, strict=True):
            inputs = h if ctx is None else torch.cat([h, ctx], -1)
            sent = message(inputs) * present  # Φ_L once per part
            pooled = sent.sum(-2, keepdim=True) - sent  # Σ_{j≠i}: total minus own, O(K)
            features = [h, pooled]
            if self.pool == "mean":
                features = [h, pooled / others.clamp(min=1), torch.log1p(others)]
            if ctx is not None:
                features.insert(1, ctx)
            h = (h + update(torch.cat(features, -1))) * present
        return self.out(h) * present

    def _check(
        self, parts: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor | None
    ) -> None:
        if parts.dim() < 2 or parts.shape[-1] != self.in_features:
            raise ModelError(
                f"parts must have shape (..., K, {self.in_features}), got {tuple(parts.shape)}"
            )
        if mask is not None and (mask.dtype != torch.bool or mask.shape != parts.shape[:-1]):
            raise ModelError(
                f"mask must be a boolean tensor of shape {tuple(parts.shape[:-1])} (one flag per "
                f"part slot), got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(torch.isfinite(parts[mask] if mask is not None else parts).all()):
            raise ModelError("the parts' features contain NaN or infinite values")
        if self.context is None and context is not None:
            raise ModelError("context= given but the encoder was built with context_features=0")
        if self.context is not None:
            expected = parts.shape[:-2] + (self.context_features,)
            if context is None or tuple(context.shape) != tuple(expected):
                got = None if context is None else tuple(context.shape)
                raise ModelError(f"context must have shape {tuple(expected)}, got {got}")
