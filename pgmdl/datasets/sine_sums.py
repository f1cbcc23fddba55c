r"""A SYNTHETIC multiset data set: curves made of the saturated sum of sine curves.

The data made here is SYNTHETIC: drawn from the known process below, not
measured. It is the 1-D artificial problem of the CompVAE (thesis §9.3.1,
eq. 9.15, Figs 9.5-9.6): a *part* is a sine curve, the *whole* is the
non-linear (saturated) sum of its parts, so the whole is not the sum of the
parts and its amplitude grows with the number :math:`K` of parts.

The process. For each instance, :math:`K \sim \mathcal U\{k_{min}, \dots, k_{max}\}`;
for each part :math:`i = 1..K`, independently,

.. math::

    \ell_i &\sim \mathcal U\{1, \dots, F\} \qquad (F = 10) \\
    a_i &\sim \mathcal N(1,\ 0.3^2), \qquad \kappa_i \sim \mathcal N\big(0,\ (\pi/2)^2\big) \\
    p_i[t] &= a_i \cos\Big(\frac{2\pi \ell_i}{T} t + \kappa_i\Big), \qquad t = 0, \dots, T-1 \\
    x[t] &= K \tanh\Big(\frac{\lambda}{K} \sum_{i=1}^K p_i[t]\Big), \qquad x = 0 \text{ if } K = 0

* the frequency :math:`\ell_i` is the part's metadata (``labels``: its one-hot
  code, :math:`L = F`); the amplitude :math:`a_i` and the phase
  :math:`\kappa_i` are hidden (``info``), left for the latent :math:`w_i`;
* ``parts`` holds the linear parts :math:`p_i`; ``x`` is computed from them by
  :func:`sines_whole`, and :func:`sines_sum_of_tanh` gives the "sum of the
  non-linear parts" :math:`\sum_i \tanh(\lambda p_i)` the thesis' Fig. 9.5
  compares it with (both agree where :math:`\lambda \sum_i p_i` is small);
* :math:`|x| \le K`; :math:`\lambda = 3` is the value of Fig. 9.5; the thesis
  gives neither :math:`T` nor the range of :math:`K`: the defaults here are
  :math:`T = 64` and :math:`K \in [1, 10]`;
* reading of the thesis' :math:`\mathcal N(1, 0.3)` and :math:`\mathcal N(0, \pi/2)`:
  the second argument is taken as the STANDARD DEVIATION (as in
  ``numpy.random.normal`` or ``torch.normal``, which such a generator would
  call), although the thesis writes :math:`\mathcal N(\mu, \sigma^2)` elsewhere;
  the other reading is ``amplitude_std=0.3 ** 0.5, phase_std=(math.pi / 2) ** 0.5``;
* the thesis' sum runs over :math:`i = 0..K` in eq. 9.15, an off-by-one slip:
  there are :math:`K` parts.

Example (the values are synthetic):

>>> import torch
>>> from pgmdl.datasets import sines, sines_whole
>>> data = sines(100, seed=0)
>>> data.labels.shape, data.mask.shape, data.x.shape, data.parts.shape
(torch.Size([100, 10, 10]), torch.Size([100, 10]), torch.Size([100, 64]), torch.Size([100, 10, 64]))
>>> bool((data.x.abs() <= data.sizes[:, None]).all())
True
>>> torch.allclose(sines_whole(data.parts, data.mask, lam=3.0), data.x, atol=1e-5)
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pgmdl.datasets.multisets import (
    MultisetSample,
    check_counts,
    draw_sizes,
    seeded_generator,
    size_mask,
)
from pgmdl.errors import ArgumentError

__all__ = ["sines", "sines_sum_of_tanh", "sines_whole"]


def _check_parts(where: str, parts: Tensor, mask: Tensor | None) -> Tensor:
    if not isinstance(parts, Tensor) or parts.dim() < 2:
        shape = tuple(parts.shape) if isinstance(parts, Tensor) else type(parts).__name__
        raise ArgumentError(f"{where}: parts must be a tensor (..., K, T), got {shape}")
    if mask is None:
        return torch.ones(parts.shape[:-1], dtype=torch.bool, device=parts.device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(parts.shape[:-1]):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ArgumentError(
            f"{where}: mask must be (..., K) = {tuple(parts.shape[:-1])} like parts without its "
            f"last dimension, got {shape}"
        )
    return mask.to(parts.device).bool()


def sines_whole(parts: Tensor, mask: Tensor | None = None, lam: float = 3.0) -> Tensor:
    r"""The whole of eq. 9.15, :math:`x = K \tanh\big(\frac{\lambda}{K} \sum_i p_i\big)`,
    from linear parts.

    Args:
        parts: ``(..., K_max, T)``, the linear parts :math:`p_i[t]`.
        mask: ``(..., K_max)`` bool, True for real parts (default: all real); ``K`` is
            the number of real parts of each instance.
        lam: the saturation factor :math:`\lambda`.

    Returns:
        ``(..., T)``; 0 for an empty multiset.

    >>> import torch
    >>> p = torch.tensor([[[1.0, 0.1], [0.0, 0.1]]])   # K = 2 parts, T = 2
    >>> sines_whole(p, lam=3.0)   # 2 tanh(3/2 (1, 0.2))
    tensor([[1.8103, 0.5826]])
    """
    mask = _check_parts("sines_whole", parts, mask)
    k = mask.sum(-1, keepdim=True).to(parts.dtype)
    total = (parts * mask.unsqueeze(-1).to(parts.dtype)).sum(-2)
    safe_k = k.clamp_min(1)
    return torch.where(k > 0, safe_k * torch.tanh(lam / safe_k * total), torch.zeros_like(total))


def sines_sum_of_tanh(parts: Tensor, mask: Tensor | None = None, lam: float = 3.0) -> Tensor:
    r"""The sum of the non-linear parts :math:`\sum_i \tanh(\lambda p_i)` (Fig. 9.5's
    green curve): the sum of the wholes each part would make alone, to compare with
    :func:`sines_whole`, the non-linear aggregation of the parts.

    Args:
        parts: ``(..., K_max, T)``; mask: ``(..., K_max)`` bool or None; lam: :math:`\lambda`.

    Returns:
        ``(..., T)``.

    >>> import torch
    >>> p = torch.tensor([[[1.0, 0.1], [0.0, 0.1]]])
    >>> sines_sum_of_tanh(p, lam=3.0)   # (tanh 3 + tanh 0, 2 tanh 0.3)
    tensor([[0.9951, 0.5826]])
    """
    mask = _check_parts("sines_sum_of_tanh", parts, mask)
    return (torch.tanh(lam * parts) * mask.unsqueeze(-1).to(parts.dtype)).sum(-2)


def sines(
    n: int,
    *,
    k_min: int = 1,
    k_max: int = 10,
    length: int = 64,
    lam: float = 3.0,
    frequencies: int = 10,
    amplitude_mean: float = 1.0,
    amplitude_std: float = 0.3,
    phase_std: float = math.pi / 2,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> MultisetSample:
    r"""Draw ``n`` SYNTHETIC wholes made of ``K`` sine curves each (eq. 9.15).

    Args:
        n: how many instances (wholes).
        k_min, k_max: the number of parts ``K`` of each instance is uniform in
            ``[k_min, k_max]``; ``k_min = 0`` allows empty multisets (``x = 0``).
            The parts are padded to ``k_max`` slots.
        length: the number ``T`` of time steps of each curve.
        lam: the saturation factor :math:`\lambda` (0: no signal; large: a square wave).
        frequencies: ``F``, frequencies are uniform in ``{1, ..., F}``; ``L = F``.
        amplitude_mean, amplitude_std: the normal law of the amplitudes :math:`a_i`.
        phase_std: the standard deviation of the phases :math:`\kappa_i` (mean 0).
        seed: seeds a private CPU generator (torch's global RNG is not touched);
            the same seed gives the same data on every device and in every dtype.
        generator: a CPU :class:`torch.Generator` to draw from instead of ``seed``
            (for a stream of fresh batches).
        device, dtype: where the tensors go and their floating dtype (draws are
            made in float64 on the CPU, then cast).

    Returns:
        a :class:`~pgmdl.datasets.multisets.MultisetSample` with ``labels``
        ``(n, k_max, F)`` (one-hot frequency), ``x`` ``(n, T)``, ``parts``
        ``(n, k_max, T)`` (the linear parts :math:`p_i`), ``context`` None and
        ``info``: ``frequency`` ``(n, k_max)`` long (1..F, 0 where padded),
        ``amplitude`` and ``phase`` ``(n, k_max)``, ``lam`` (a float).

    >>> a, b = sines(3, seed=1), sines(3, seed=1)
    >>> bool((a.x == b.x).all()), a.x.dtype, a.sizes.tolist()
    (True, torch.float32, [6, 10, 5])
    """
    check_counts("sines", n, k_min, k_max)
    for name, value in (("length", length), ("frequencies", frequencies)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"sines: {name} must be an integer >= 1, got {value!r}")
    for name, value in (("lam", lam), ("amplitude_std", amplitude_std), ("phase_std", phase_std)):
        if not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise ArgumentError(f"sines: {name} must be a finite number >= 0, got {value!r}")
    g = seeded_generator(seed, generator)
    f64 = torch.float64
    sizes = draw_sizes(g, n, k_min, k_max)
    mask = size_mask(sizes, k_max)
    freq = torch.randint(1, frequencies + 1, (n, k_max), generator=g)
    amplitude = amplitude_mean + amplitude_std * torch.randn(n, k_max, generator=g, dtype=f64)
    phase = phase_std * torch.randn(n, k_max, generator=g, dtype=f64)
    freq = torch.where(mask, freq, torch.zeros_like(freq))
    amplitude = torch.where(mask, amplitude, torch.zeros_like(amplitude))
    phase = torch.where(mask, phase, torch.zeros_like(phase))

    t = torch.arange(length, dtype=f64)
    angle = 2 * math.pi * freq.to(f64)[..., None] * t / length + phase[..., None]
    parts = amplitude[..., None] * torch.cos(angle)  # 0 where padded: amplitude is 0 there
    x = sines_whole(parts, mask, lam)
    labels = torch.nn.functional.one_hot((freq - 1).clamp_min(0), frequencies).to(f64)
    labels = labels * mask[..., None]

    def cast(value: Tensor) -> Tensor:
        return value.to(device=device, dtype=dtype)

    return MultisetSample(
        labels=cast(labels),
        mask=mask.to(device),
        x=cast(x),
        parts=cast(parts),
        context=None,
        info={
            "frequency": freq.to(device),
            "amplitude": cast(amplitude),
            "phase": cast(phase),
            "lam": float(lam),
        },
    )
