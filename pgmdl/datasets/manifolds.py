r"""A SYNTHETIC 2-D data set: a 1-D sinusoidal manifold with heteroscedastic noise.

The data made here is SYNTHETIC: drawn from the known process below, not
measured. It is the test bed of thesis §6.3.2 (V. Berger, 2021, "Experimental
study of manifold approximation", Figs 6.6-6.7) and ch. 7 (Figs 7.1-7.5): a
curve in :math:`\mathbb R^2` whose curvature varies along it, plus an
isotropic Gaussian noise whose amplitude varies along it, so that one can see
what a quasi-deterministic VAE :math:`x = f_\theta(z) + \epsilon` keeps as
manifold and what it calls noise. The thesis gives no formula for its curve;
the one here follows its description.

The process. With :math:`t \sim \mathcal U(0, 1)` and
:math:`\epsilon \sim \mathcal N(0, I_2)`,

.. math::

    c(t) &= \Big(4t - 2,\ \ 0.5 \sin\big(2\pi (0.5\,t + 1.25\,t^2)\big)\Big) \\
    s(t) &= 0.08 \cdot (0.01 / 0.08)^{t} \\
    x &= c(t) + s(t)\,\epsilon

* the phase :math:`2\pi(0.5t + 1.25t^2)` has a frequency that ramps from 0.5
  to 3 cycles per unit of :math:`t` (1.75 cycles in all), so the curvature of
  :math:`c` grows from at most 0.4 on the left to 11 at the sharpest crest on
  the right (radius of curvature 0.09); the curve is 5.58 long: the left is
  almost straight, the right is tightly folded;
* the noise standard deviation decreases log-linearly from 0.08 (left) to
  0.01 (right), the range of the :math:`\sigma(z)` the thesis' local-variance
  model learns (Fig. 7.6); its mean variance per coordinate is
  :math:`\int_0^1 s(t)^2 dt = s_0^2 (r^2 - 1) / (2 \ln r)` with
  :math:`s_0 = 0.08`, :math:`r = 1/8`, that is about :math:`1.515 \cdot 10^{-3}`
  (:func:`mean_noise_variance`; its square root 0.039 is close to the
  :math:`\sigma = 0.043` the thesis' global-variance model settles on);
* the data's entropy is :math:`H(p) \approx -0.448` nat (:func:`log_density`
  on 20 000 points), so no model's expected ELBO exceeds about 0.448 nat per
  point. (The thesis' ELBOs, 1.26 and 1.62, are on its own curve, whose scale
  it does not give; ELBOs on different curves are not comparable.)

Measures of a model's manifold (all computed on a dense sampling of the clean
curve :math:`c(t_k)`, :math:`t_k` evenly spaced in :math:`[0, 1]`):

* :func:`distance_to_manifold`: the Euclidean distance of points to the curve
  (how far generated or reconstructed points are from it);
* :func:`coverage_gap`: the mean over the curve of the distance to the nearest
  of a set of points (large when a model smooths away part of the manifold);
* :func:`log_density`: the exact :math:`\log p(x)` of the data distribution,
  by quadrature over :math:`t`: the upper bound of any model's expected
  log-likelihood is its mean over the data, :math:`-H(p)`.

Example (the values are synthetic):

>>> from pgmdl.datasets import coverage_gap, distance_to_manifold, sinusoid_manifold
>>> data = sinusoid_manifold(1000, seed=0)
>>> data.x.shape, data.t.shape, data.clean.shape, data.noise_std.shape
(torch.Size([1000, 2]), torch.Size([1000]), torch.Size([1000, 2]), torch.Size([1000]))
>>> float(distance_to_manifold(data.clean).max()) < 1e-4
True
>>> float(coverage_gap(data.clean)) < 0.01
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "ManifoldSample",
    "coverage_gap",
    "distance_to_manifold",
    "log_density",
    "manifold_curve",
    "mean_noise_variance",
    "noise_std",
    "sinusoid_manifold",
]

#: half-width of the curve's first coordinate, amplitude of its second
X_HALF_WIDTH = 2.0
AMPLITUDE = 0.5
#: the phase is 2π (PHASE_LINEAR t + PHASE_QUADRATIC t²)
PHASE_LINEAR = 0.5
PHASE_QUADRATIC = 1.25
#: noise standard deviation at t = 0 and at t = 1
NOISE_START = 0.08
NOISE_END = 0.01

# Elements of one distance matrix chunk (points x curve samples): 4M floats.
_CHUNK_ELEMENTS = 1 << 22


class ManifoldSample(NamedTuple):
    """A sample of the SYNTHETIC manifold data set.

    Attributes:
        x: the noisy points, ``(n, 2)``.
        t: their positions along the curve, ``(n,)``, in ``[0, 1]``.
        clean: the points on the curve, ``c(t)``, ``(n, 2)``.
        noise_std: the noise standard deviation ``s(t)`` of each point, ``(n,)``.
    """

    x: torch.Tensor
    t: torch.Tensor
    clean: torch.Tensor
    noise_std: torch.Tensor


def manifold_curve(t: torch.Tensor) -> torch.Tensor:
    r"""The clean curve :math:`c(t) = (4t - 2,\ 0.5 \sin(2\pi(0.5t + 1.25t^2)))`.

    Args:
        t: positions along the curve, any shape (``[0, 1]`` is the data's range).

    Returns:
        ``t.shape + (2,)``, in ``t``'s dtype and on its device.

    >>> import torch
    >>> manifold_curve(torch.tensor([0.0, 1.0]))
    tensor([[-2.0000,  0.0000],
            [ 2.0000, -0.5000]])
    """
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    phase = 2 * math.pi * (PHASE_LINEAR * t + PHASE_QUADRATIC * t**2)
    return torch.stack((2 * X_HALF_WIDTH * t - X_HALF_WIDTH, AMPLITUDE * torch.sin(phase)), -1)


def noise_std(t: torch.Tensor) -> torch.Tensor:
    r"""The noise standard deviation :math:`s(t) = 0.08 \cdot (0.01/0.08)^t`.

    It decreases log-linearly from 0.08 at ``t = 0`` to 0.01 at ``t = 1``.

    >>> import torch
    >>> noise_std(torch.tensor([0.0, 0.5, 1.0]))
    tensor([0.0800, 0.0283, 0.0100])
    """
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return NOISE_START * (NOISE_END / NOISE_START) ** t


def mean_noise_variance() -> float:
    r"""The noise variance per coordinate averaged over the data,
    :math:`\int_0^1 s(t)^2 dt = s_0^2 (r^2 - 1) / (2 \ln r)`, :math:`r = s_1 / s_0`.

    A reconstruction error per coordinate well below it means the model keeps
    part of the noise in its latent code.

    >>> round(mean_noise_variance(), 6)
    0.001515
    """
    ratio = NOISE_END / NOISE_START
    return NOISE_START**2 * (ratio**2 - 1) / (2 * math.log(ratio))


def sinusoid_manifold(
    n: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ManifoldSample:
    r"""Draw ``n`` SYNTHETIC points :math:`x = c(t) + s(t)\,\epsilon`, :math:`t \sim U(0, 1)`.

    Args:
        n: how many points.
        seed: seeds a private CPU generator (the same seed gives the same points
            on every device and in every dtype); ``None`` uses ``generator``.
        generator: a CPU :class:`torch.Generator` to draw from (for a stream of
            fresh samples); with neither ``seed`` nor ``generator``, torch's
            global RNG is used.
        device: where the tensors go; default: torch's default device.
        dtype: their floating dtype; default: torch's default dtype. Points are
            drawn in float64 and then cast.

    Returns:
        a :class:`ManifoldSample` ``(x, t, clean, noise_std)``.

    >>> a, b = sinusoid_manifold(4, seed=1), sinusoid_manifold(4, seed=1)
    >>> bool((a.x == b.x).all()), a.x.dtype
    (True, torch.float32)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if seed is not None:
        if generator is not None:
            raise ValueError("give seed or generator, not both")
        generator = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=generator, dtype=torch.float64)
    eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    clean = manifold_curve(t)
    std = noise_std(t)
    x = clean + std[:, None] * eps
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device) if device is not None else torch.empty(0).device

    def cast(value: torch.Tensor) -> torch.Tensor:
        return value.to(device=device, dtype=dtype)

    return ManifoldSample(cast(x), cast(t), cast(clean), cast(std))


def _dense_curve(resolution: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    t = torch.linspace(0.0, 1.0, resolution, dtype=torch.float64)
    return manifold_curve(t).to(device=like.device, dtype=like.dtype)


def _check_points(points: torch.Tensor) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points must be a tensor of shape (n, 2), got {shape}")
    points = points.detach()
    return points if points.is_floating_point() else points.to(torch.get_default_dtype())


def _rows_per_chunk(columns: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(columns, 1))


def distance_to_manifold(points: torch.Tensor, resolution: int = 4000) -> torch.Tensor:
    r"""The Euclidean distance of each point to the clean curve,
    :math:`d(x) = \min_{t \in [0, 1]} \lVert x - c(t) \rVert`.

    The curve is sampled at ``resolution`` evenly spaced :math:`t_k`; the
    distance is that to the polyline through the samples, refined on the two
    segments next to the nearest sample (so the error is of the order of the
    squared spacing times the curvature, under :math:`10^{-5}` at the
    default resolution). Points are processed in chunks, so memory stays
    small for any ``n``.

    Args:
        points: ``(n, 2)``.
        resolution: samples of the curve, at least 2.

    Returns:
        ``(n,)`` distances, in ``points``' dtype and on its device.

    >>> import torch
    >>> distance_to_manifold(torch.tensor([[-2.0, 0.0], [-2.0, 0.3]]))
    tensor([0.0000, 0.2...])
    """
    points = _check_points(points)
    curve = _dense_curve(resolution, points)
    last = resolution - 1
    out = []
    for chunk in points.split(_rows_per_chunk(resolution)):
        nearest = torch.cdist(chunk, curve).argmin(-1)
        best = None
        for low in (nearest - 1, nearest):  # the segments (k-1, k) and (k, k+1)
            low = low.clamp(0, last - 1)
            a, b = curve[low], curve[low + 1]
            ab = b - a
            u = ((chunk - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-30)
            foot = a + u.clamp(0.0, 1.0)[:, None] * ab
            d = (chunk - foot).norm(dim=-1)
            best = d if best is None else torch.minimum(best, d)
        out.append(best)
    return torch.cat(out) if out else points.new_zeros(0)


def coverage_gap(points: torch.Tensor, resolution: int = 1000) -> torch.Tensor:
    r"""How much of the clean curve ``points`` leave uncovered:
    :math:`\frac1K \sum_k \min_i \lVert c(t_k) - x_i \rVert`, :math:`t_k`
    evenly spaced in :math:`[0, 1]`.

    As ``t`` is uniform in the data, this is the mean over the data's clean
    manifold of the distance to the nearest point of the set. It is near 0
    for a dense set on the curve, of the order of the noise for a dense noisy
    sample of the data, and large when a model's manifold (its reconstructions
    or its generated :math:`f(z)`) misses a part of the curve, e.g. the tight
    folds a too large :math:`\sigma` smooths away. It depends on how dense
    the set is: compare sets of the same size.

    Args:
        points: ``(n, 2)``, ``n >= 1``.
        resolution: samples of the curve, at least 2.

    Returns:
        a scalar tensor, in ``points``' dtype and on its device.

    >>> import torch
    >>> t = torch.linspace(0, 1, 500)
    >>> bool(coverage_gap(manifold_curve(t)) < 0.01)
    True
    >>> line = torch.stack((4 * t - 2, torch.zeros_like(t)), -1)   # the curve's axis
    >>> bool(coverage_gap(line) > 0.2)
    True
    """
    points = _check_points(points)
    if points.shape[0] == 0:
        raise ValueError("coverage_gap needs at least one point")
    curve = _dense_curve(resolution, points)
    nearest = [
        torch.cdist(chunk, points).min(-1).values
        for chunk in curve.split(_rows_per_chunk(points.shape[0]))
    ]
    return torch.cat(nearest).mean()


def log_density(points: torch.Tensor, resolution: int = 8000) -> torch.Tensor:
    r"""The exact log-density of the data distribution,
    :math:`\log p(x) = \log \int_0^1 \mathcal N\big(x;\ c(t),\ s(t)^2 I_2\big)\,dt`.

    The integral is a midpoint rule over ``resolution`` values of :math:`t`,
    summed with ``logsumexp`` (computed in float64, chunked). The nodes are at
    most 0.0012 apart along the curve at the default resolution, an eighth of
    the smallest noise scale, so the rule is accurate to well under 0.001 nat
    (the mean over 20 000 points moves by 6e-7 nat from 8000 to 32 000 nodes).
    Its mean over data points estimates :math:`-H(p)`, the largest expected
    log-likelihood (hence ELBO) any model can reach on this data.

    Args:
        points: ``(n, 2)``.
        resolution: quadrature nodes, at least 2.

    Returns:
        ``(n,)`` log-densities in nats, in ``points``' dtype and on its device.

    >>> data = sinusoid_manifold(2000, seed=0)
    >>> h = -float(log_density(data.x).mean())   # entropy estimate, nats
    >>> bool(-1.0 < h < 0.5)
    True
    """
    points = _check_points(points)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    x = points.to(torch.float64)
    t = (torch.arange(resolution, dtype=torch.float64, device=x.device) + 0.5) / resolution
    centers = manifold_curve(t)
    var = noise_std(t) ** 2
    # log N(x; c, s² I₂) = -log(2π s²) - |x - c|² / (2 s²); the 1/resolution of the rule
    const = -torch.log(2 * math.pi * var) - math.log(resolution)
    out = []
    for chunk in x.split(_rows_per_chunk(resolution)):
        sq = torch.cdist(chunk, centers) ** 2
        out.append(torch.logsumexp(const - sq / (2 * var), dim=-1))
    result = torch.cat(out) if out else x.new_zeros(0)
    return result.to(points.dtype)
