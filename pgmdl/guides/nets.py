r"""The networks of guide conditionals, following the thesis' design advice.

Berger (2021), §4.2.4 "Key design considerations":

* **a purely linear path** from inputs to outputs in every network, so the
  gradient reaches the deepest latent variables (:class:`ResidualMLP`:
  :math:`y = L x + W_{out}\,\phi(x)`);
* **a zero-initialized last layer**, so each conditional starts as a constant
  distribution (the family's initial value) and imposes no arbitrary
  organization on the latent space; the hidden layers still compute random
  features of the input, from which the gradient picks up correlations;
* **inputs normalized per parent site** (:class:`ParentNorm`);
* parents living in an inner plate are **pooled by a permutation-invariant
  set encoder** (:class:`SetEncoder`, Deep Sets: Zaheer et al. 2017).

Example::

    >>> import torch
    >>> from pgmdl.guides.nets import ResidualMLP
    >>> net = ResidualMLP(3, 2, hidden=(8,), init_bias=torch.tensor([0.5, -1.0]))
    >>> net(torch.randn(4, 3))  # constant at initialization
    tensor([[ 0.5000, -1.0000],
            [ 0.5000, -1.0000],
            [ 0.5000, -1.0000],
            [ 0.5000, -1.0000]], grad_fn=<AddBackward0>)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class ResidualMLP(nn.Module):
    r"""An MLP with a linear skip path: :math:`y = b + L x + W_{out}\,\phi(x)`.

    :math:`\phi` is a stack of ``Linear`` + activation layers. With
    ``zero_init=True`` (the default for conditionals) :math:`L` and
    :math:`W_{out}` start at zero, so the output starts at ``init_bias`` for
    every input, and the two zero-initialized layers are *fan-in scaled*:

    .. math::

        y = b + \frac{L x}{\sqrt{n_{in}}} + \frac{W_{out}\,\phi(x)}{\sqrt{n_{hidden}}}

    Adam moves every weight by about the learning rate per step whatever its
    gradient's size, so with all weights starting at zero the first steps
    move :math:`L x` coherently by about :math:`\text{lr}\sum_i |x_i|`: for a
    784-pixel image, 6 units of the output per step at lr 0.01, where a
    hand-written encoder's last layer moves about 0.5. The factors bring the
    step to :math:`\text{lr}\,\sqrt{n}` (the equalized learning rate of
    Karras et al. 2018, on the layers that start at zero). Measured on a
    Bernoulli VAE (issue 17: 784 pixels, 32 images, 300 steps, 2 seeds): at
    lr 0.01 the unscaled guide stalled or diverged (losses 2,900-3,800), the
    scaled one reaches 690-780 (a hand-written encoder 950); at lr 0.003
    2,730 (hand-written 2,850-2,950); at lr 0.001 4,120 (hand-written
    4,030-4,090, unscaled 3,490-3,570: the price of the robustness).

    Args:
        in_features: input width (0 gives a learned constant: free parameters).
        out_features: output width.
        hidden: widths of the hidden layers of :math:`\phi` (empty: linear).
        activation: the hidden activation (a module class).
        zero_init: start as the constant ``init_bias``.
        fan_in_scaled: with ``zero_init``, scale the zero-initialized layers
            by their fan-in (see above); ``False`` restores unscaled layers,
            which learn faster at small step sizes and stall at large ones.
        init_bias: the initial output (default zeros).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64,),
        *,
        activation: type[nn.Module] = nn.ELU,
        zero_init: bool = True,
        init_bias: torch.Tensor | None = None,
        fan_in_scaled: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bias = torch.zeros(out_features) if init_bias is None else init_bias.detach().clone()
        self.bias = nn.Parameter(bias.to(torch.get_default_dtype()))
        self.linear = nn.Linear(in_features, out_features, bias=False) if in_features else None
        self.body: nn.Module | None = None
        self.out: nn.Linear | None = None
        if in_features and hidden:
            layers: list[nn.Module] = []
            width = in_features
            for h in hidden:
                layers += [nn.Linear(width, h), activation()]
                width = h
            self.body = nn.Sequential(*layers)
            self.out = nn.Linear(width, out_features, bias=False)
        # fan-in scaling of the layers that start at zero (see the class docstring)
        scaled = zero_init and fan_in_scaled
        self.linear_gain = 1.0 / math.sqrt(in_features) if scaled and in_features else 1.0
        self.out_gain = 1.0 / math.sqrt(self.out.in_features) if scaled and self.out else 1.0
        if zero_init:
            for layer in (self.linear, self.out):
                if layer is not None:
                    nn.init.zeros_(layer.weight)

    def forward(self, x: torch.Tensor | None) -> torch.Tensor:
        if self.linear is None or x is None:
            return self.bias
        y = self.linear(x) * self.linear_gain + self.bias
        if self.body is not None:
            y = y + self.out(self.body(x)) * self.out_gain
        return y


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
    0.001, ``tutorials/01_autoguide.ipynb``) the faster learning wins:
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
