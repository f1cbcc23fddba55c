"""Per-parent input normalization with running statistics (:class:`ParentNorm`):
inputs normalized per parent site (Berger 2021, §4.2.4)."""

from __future__ import annotations

import torch
from torch import nn


class ParentNorm(nn.Module):
    r"""Bring one parent's features to unit scale with running statistics.

    Two modes, with :math:`m_j, v_j` the running mean and variance of feature
    :math:`j`:

    * ``standardize=True`` (NaMIGuide's default, ``normalize="standardize"``):
      :math:`\hat x_j = (x_j - m_j)/\sqrt{v_j + \epsilon}`;
    * ``standardize=False`` (``normalize="scale"``): divide a feature down to
      unit root mean square, never amplifying it,
      :math:`\hat x_j = x_j / \max\big(1, \sqrt{m_j^2 + v_j}\big)`: a
      feature within unit scale (pixels, one-hot codes) reaches the network
      unchanged, as it would a hand-written encoder.

    The statistics are updated (without gradient) from every batch seen in
    training mode: a cumulative average over the first
    :math:`1/\text{momentum}` batches, then an exponential moving average.
    Unlike batch normalization, the output of one data point never depends
    on the rest of the batch, so the guide behaves the same at any batch
    size, including 1.

    Which to use (issue 17's experiments, CPU, 1 thread). Standardizing a
    sparse binary feature multiplies it by :math:`1/\sqrt{p(1-p)}` (7 for a
    pixel on in 2 % of the images): the encoder learns faster, and on a
    small training set the model and guide then fit its noise sooner. On
    ``benchmarks/guide_quality.py`` (500 steps at lr 0.01, 3 seeds; 32-64
    training images) standardizing gives the best *training* -ELBO (image
    VAE 617 vs 647 scaled and 677 hand-written) and a worse *held-out* one:
    860.8 vs 819.9 scaled (801.4 hand-written); conditional VAE 397.0 vs
    345.3 (348.8); unlabelled M2 924.6 vs 866.3 (880.8); with ``"scale"``
    NaMIGuide is within noise of the best baseline on 12 of the 15 programs,
    9 with ``"standardize"``. On 1,500 real 8x8 digits (3000 steps at lr
    0.001, ``tutorials/03_autoguide.ipynb``) the faster learning wins:
    held-out ELBO of the hierarchical VAE -18.56 standardized, -19.45
    scaled (one scalar mean and variance per parent: -18.75; one scalar root
    mean square: -19.00). Standardizing is the default (large data sets,
    small learning rates); ``"scale"`` suits small data sets and large
    learning rates. Continuous latent parents (the guide's own draws, with
    a scale that moves in training and heavy tails under sparse priors) are
    standardized in both modes: scaled only, one seed of six of the sparse
    gamma DEF at lr 0.03 (``tests/guides/test_robustness.py``) reached a
    mean loss of 1.5e8 over its last 10 of 100 steps.
    """

    def __init__(
        self, features: int, momentum: float = 0.01, eps: float = 1e-4, standardize: bool = True
    ) -> None:
        super().__init__()
        self.features = features
        self.standardize = standardize
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("var", torch.ones(features))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._seen: int | None = None  # host copy of `count` (no device sync per step)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self._seen = None
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, self.features)
        if flat.shape[0] < 2:
            return
        if self._seen is None:  # one host read after construction or loading
            self._seen = int(self.count)
        self._seen += 1
        self.count.fill_(self._seen)
        rate = max(1.0 / self._seen, self.momentum)
        var, mean = torch.var_mean(flat, dim=0)
        self.mean.lerp_(mean.to(self.mean.dtype), rate)
        self.var.lerp_(var.to(self.var.dtype), rate)

    def scale(self) -> torch.Tensor:
        r"""The per-feature factor :math:`1 / \max(1, \sqrt{m^2 + v})`."""
        return torch.rsqrt(self.mean.square() + self.var + self.eps).clamp(max=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self._update(x)
        if self.standardize:
            return (x - self.mean) * torch.rsqrt(self.var + self.eps)
        return x * self.scale()
