r"""A SYNTHETIC multiset data set: images made of coloured anchors.

The data made here is SYNTHETIC: drawn from the known process below, not
measured. It is the 2-D artificial problem of the CompVAE (thesis §9.3.2,
Fig. 9.7): a *part* is a colour anchor, a point of the unit square with a
colour and an intensity; the *whole* is an image, alike a soft Voronoi
diagram, whose pixels mix the anchors' colours with weights given by the
distance to each anchor and its intensity. Unlike the sines
(:mod:`pgmdl.datasets.sine_sums`), the whole stays in :math:`[0, 1]` whatever the
number :math:`K` of parts, and each part only acts locally.

The process. For each instance, :math:`K \sim \mathcal U\{k_{min}, \dots, k_{max}\}`;
for each anchor :math:`i = 1..K`, independently,

.. math::

    \text{colour}_i &\sim \mathcal U\{\text{white, black, red, green, blue}\},
    \qquad c_i \in [0, 1]^3 \text{ its RGB value} \\
    p_i &\sim \mathcal U([0, 1]^2), \qquad \log s_i \sim \mathcal N(0,\ 0.5^2)

and the pixel centred at :math:`u \in [0, 1]^2` of the image (``size`` x
``size`` pixels) is a convex combination of the anchors' colours and of a
grey background :math:`g = (0.5, 0.5, 0.5)`:

.. math::

    \omega_i(u) &= \operatorname{softmax}_{i = 0..K}\big(e_i(u)\big), \qquad
    e_i(u) = \log s_i - \frac{\lVert u - p_i \rVert^2}{2 r^2}, \qquad
    e_0(u) = -\frac{\rho^2}{2 r^2} \text{ (the background)} \\
    x(u) &= \sum_{i=1}^K \omega_i(u)\, c_i + \omega_0(u)\, g

with :math:`r = 0.15` (``radius``, the softness of the borders between
anchors) and :math:`\rho = 0.4` (``reach``: an anchor of intensity 1 wins over
the background up to that distance).

* each pixel goes to the anchor of largest :math:`\log s_i - d_i^2 / 2r^2` (a
  power diagram, Voronoi-like), with soft borders about
  :math:`r^2 / \lVert p_i - p_j \rVert` wide; a brighter anchor (larger
  :math:`s_i`) takes more room; far from every anchor the grey background shows;
* the metadata :math:`\ell_i` (``labels``, :math:`L = 7`) is the one-hot colour
  (5, in the order of :data:`COLOUR_NAMES`) followed by the location
  :math:`p_i`; the intensity :math:`s_i` is hidden (``info``), left for the latent
  :math:`w_i`;
* ``parts`` holds each anchor's weighted colour :math:`\omega_i(u) c_i`
  (a black anchor's part is 0: ``info["weights"]`` holds the :math:`\omega_i`),
  so ``x = parts.sum(1) + info["background"] * 0.5``; an empty multiset gives a
  uniformly grey image; :func:`anchor_image` renders any set of anchors (one
  alone, or the first :math:`k` of a multiset, as in Fig. 9.10);
* images are ``(N, 3, size, size)``; a location :math:`p = (p_x, p_y)` is
  horizontal (column, left to right) then vertical (row, top to bottom); the
  pixel in row :math:`a`, column :math:`b` is centred at
  :math:`u = ((b + 0.5) / \text{size}, (a + 0.5) / \text{size})`;
* the thesis gives no formula for its images, nor the law of the intensities;
  those here follow its description.

Example (the values are synthetic):

>>> import torch
>>> from pgmdl.datasets import colour_anchors
>>> data = colour_anchors(8, seed=0)
>>> data.labels.shape, data.x.shape, data.parts.shape
(torch.Size([8, 5, 7]), torch.Size([8, 3, 16, 16]), torch.Size([8, 5, 3, 16, 16]))
>>> bool(((data.x >= 0) & (data.x <= 1)).all())
True
>>> background = data.info["background"][:, None] * 0.5
>>> torch.allclose(data.parts.sum(1) + background, data.x, atol=1e-6)
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

__all__ = ["BACKGROUND", "COLOURS", "COLOUR_NAMES", "anchor_image", "colour_anchors"]

#: the anchors' colour names, in the order of the one-hot labels and of :data:`COLOURS`
COLOUR_NAMES: tuple[str, ...] = ("white", "black", "red", "green", "blue")
#: ``(5, 3)`` RGB values in [0, 1] of the colours of :data:`COLOUR_NAMES`
COLOURS: Tensor = torch.tensor(
    [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
)
#: the grey level of the background (all three channels)
BACKGROUND = 0.5
#: default softness of the borders, ``r``
RADIUS = 0.15
#: default distance up to which an anchor of intensity 1 beats the background, ``rho``
REACH = 0.4
#: standard deviation of the log-intensities
INTENSITY_LOG_STD = 0.5


def _check_radius(where: str, radius: float, reach: float) -> None:
    for name, value in (("radius", radius), ("reach", reach)):
        if not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise ArgumentError(f"{where}: {name} must be a finite number > 0, got {value!r}")


def anchor_image(
    colours: Tensor,
    locations: Tensor,
    intensities: Tensor,
    mask: Tensor | None = None,
    *,
    size: int = 16,
    radius: float = RADIUS,
    reach: float = REACH,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Render anchors into images (the process of the module docstring).

    Args:
        colours: ``(N, K)`` long indices into :data:`COLOURS`, or ``(N, K, 3)`` RGB values.
        locations: ``(N, K, 2)`` in ``[0, 1]^2`` (horizontal, vertical).
        intensities: ``(N, K)``, positive.
        mask: ``(N, K)`` bool, True for the anchors to draw (default: all); a masked
            anchor is left out as if absent.
        size: the images' side in pixels.
        radius, reach: :math:`r` and :math:`\rho`.

    Returns:
        ``(x, parts, weights)``: the images ``(N, 3, size, size)``, each anchor's
        weighted colour ``(N, K, 3, size, size)`` and the weights
        :math:`\omega_i` ``(N, K, size, size)`` (0 for masked anchors), in
        ``locations``' dtype and on its device. The background's weight is
        ``1 - weights.sum(1)``.

    >>> import torch
    >>> x, parts, w = anchor_image(torch.tensor([[2]]), torch.tensor([[[0.5, 0.5]]]),
    ...                            torch.ones(1, 1), size=4)
    >>> x[0, :, 1, 1]   # 0.18 from the red anchor: almost red
    tensor([0.9729, 0.0271, 0.0271])
    >>> x[0, :, 0, 0]   # in a corner, 0.53 from it: mostly grey
    tensor([0.5317, 0.4683, 0.4683])
    """
    _check_radius("anchor_image", radius, reach)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ArgumentError(f"anchor_image: size must be an integer >= 1, got {size!r}")
    if not isinstance(locations, Tensor) or locations.dim() != 3 or locations.shape[-1] != 2:
        raise ArgumentError(
            f"anchor_image: locations must be (N, K, 2), got "
            f"{tuple(locations.shape) if isinstance(locations, Tensor) else locations!r}"
        )
    n, k = locations.shape[:2]
    dtype, device = locations.dtype, locations.device
    if colours.dim() == 2:
        rgb = COLOURS.to(device=device, dtype=dtype)[colours.to(device).long()]
    else:
        rgb = colours.to(device=device, dtype=dtype)
    if tuple(rgb.shape) != (n, k, 3) or tuple(intensities.shape) != (n, k):
        raise ArgumentError(
            f"anchor_image: colours must be (N, K) or (N, K, 3) and intensities (N, K) with "
            f"(N, K) = {(n, k)} from locations, got {tuple(colours.shape)} and "
            f"{tuple(intensities.shape)}"
        )
    if mask is None:
        mask = torch.ones(n, k, dtype=torch.bool, device=device)
    mask = mask.to(device).bool()
    centres = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size
    dx = centres.view(1, 1, 1, size) - locations[..., 0, None, None]  # columns
    dy = centres.view(1, 1, size, 1) - locations[..., 1, None, None]  # rows
    scale = 2 * radius**2
    scores = torch.log(intensities.to(dtype))[..., None, None] - (dx**2 + dy**2) / scale
    scores = scores.masked_fill(~mask[..., None, None], -math.inf)
    background = torch.full((n, 1, size, size), -(reach**2) / scale, dtype=dtype, device=device)
    weights = torch.softmax(torch.cat((background, scores), 1), dim=1)
    w_background, weights = weights[:, 0], weights[:, 1:]
    parts = weights[:, :, None] * rgb[..., None, None]
    x = parts.sum(1) + BACKGROUND * w_background[:, None]
    return x.clamp(0.0, 1.0), parts, weights


def colour_anchors(
    n: int,
    *,
    k_min: int = 1,
    k_max: int = 5,
    size: int = 16,
    radius: float = RADIUS,
    reach: float = REACH,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> MultisetSample:
    r"""Draw ``n`` SYNTHETIC images of ``K`` colour anchors each (Fig. 9.7).

    Args:
        n: how many instances (images).
        k_min, k_max: the number of anchors ``K`` of each image is uniform in
            ``[k_min, k_max]``; ``k_min = 0`` allows empty multisets (a grey image).
            The parts are padded to ``k_max`` slots.
        size: the images' side in pixels.
        radius, reach: :math:`r` and :math:`\rho` of the module docstring.
        seed: seeds a private CPU generator (torch's global RNG is not touched);
            the same seed gives the same data on every device and in every dtype.
        generator: a CPU :class:`torch.Generator` to draw from instead of ``seed``.
        device, dtype: where the tensors go and their floating dtype (computed in
            float64 on the CPU, then cast).

    Returns:
        a :class:`~pgmdl.datasets.multisets.MultisetSample` with ``labels``
        ``(n, k_max, 7)`` (one-hot colour, then location), ``x`` ``(n, 3, size, size)``
        in ``[0, 1]``, ``parts`` ``(n, k_max, 3, size, size)``, ``context`` None and
        ``info``: ``colour`` ``(n, k_max)`` long (0 where padded), ``location``
        ``(n, k_max, 2)``, ``intensity`` ``(n, k_max)`` (0 where padded),
        ``weights`` ``(n, k_max, size, size)``, ``background`` ``(n, size, size)``
        (the background's weight), ``radius`` and ``reach`` (floats).

    >>> a, b = colour_anchors(3, seed=1), colour_anchors(3, seed=1)
    >>> bool((a.x == b.x).all()), a.x.dtype, a.sizes.tolist()
    (True, torch.float32, [...])
    """
    check_counts("colour_anchors", n, k_min, k_max)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ArgumentError(f"colour_anchors: size must be an integer >= 1, got {size!r}")
    _check_radius("colour_anchors", radius, reach)
    g = seeded_generator(seed, generator)
    f64 = torch.float64
    sizes = draw_sizes(g, n, k_min, k_max)
    mask = size_mask(sizes, k_max)
    colour = torch.randint(0, len(COLOUR_NAMES), (n, k_max), generator=g)
    location = torch.rand(n, k_max, 2, generator=g, dtype=f64)
    intensity = torch.exp(INTENSITY_LOG_STD * torch.randn(n, k_max, generator=g, dtype=f64))
    colour = torch.where(mask, colour, torch.zeros_like(colour))
    location = location * mask[..., None]
    intensity = torch.where(mask, intensity, torch.zeros_like(intensity))
    # padded anchors get intensity 1 inside anchor_image (they are masked out anyway)
    x, parts, weights = anchor_image(
        colour,
        location,
        torch.where(mask, intensity, torch.ones_like(intensity)),
        mask,
        size=size,
        radius=radius,
        reach=reach,
    )
    one_hot = torch.nn.functional.one_hot(colour, len(COLOUR_NAMES)).to(f64) * mask[..., None]
    labels = torch.cat((one_hot, location), -1)

    def cast(value: Tensor) -> Tensor:
        return value.to(device=device, dtype=dtype)

    return MultisetSample(
        labels=cast(labels),
        mask=mask.to(device),
        x=cast(x),
        parts=cast(parts),
        context=None,
        info={
            "colour": colour.to(device),
            "location": cast(location),
            "intensity": cast(intensity),
            "weights": cast(weights),
            "background": cast(1 - weights.sum(1)),
            "radius": float(radius),
            "reach": float(reach),
        },
    )
