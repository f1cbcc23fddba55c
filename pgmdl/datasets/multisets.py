r"""Padded batches of multisets: the common container of the CompVAE data sets.

A CompVAE (thesis ch. 9) generates a *whole* :math:`x` from a multiset of
*parts* :math:`\{\ell_1, \dots, \ell_K\}`, each part described by its
metadata :math:`\ell_i`, plus an optional global context :math:`c`. The
SYNTHETIC generators :func:`~pgmdl.datasets.sine_sums.sines`,
:func:`~pgmdl.datasets.anchor_images.colour_anchors` and
:func:`~pgmdl.datasets.household_power.households` all return a
:class:`MultisetSample`: a batch of :math:`N` instances whose multisets,
of sizes :math:`K_n`, are padded to a common :math:`K_{max}`:

* ``labels`` ``(N, K_max, L)``: the metadata :math:`\ell_i` as float features,
  0 in the padded slots;
* ``mask`` ``(N, K_max)`` bool: True for the :math:`K_n` real parts, which come
  first, then False for the padding;
* ``x`` ``(N, *whole_shape)``: the whole;
* ``parts`` ``(N, K_max, *whole_shape)``: each part's own contribution before
  the (non-linear) aggregation into ``x``, 0 in the padded slots (for figures
  and checks; a CompVAE never sees it);
* ``context`` ``(N, C)`` or None: the global input :math:`c`;
* ``info``: a dict of data-set specific extras (the hidden draws behind each
  part, physical units...). Its tensors are per instance (first dimension
  :math:`N`) and are indexed with the rest; other values are kept as they are.

:func:`pad_multisets` pads a list of ragged ``(K_n, L)`` tensors the same way.
:func:`check_counts`, :func:`seeded_generator`, :func:`draw_sizes` and
:func:`size_mask` are the steps every generator shares (checking ``n``,
``k_min``, ``k_max``; the CPU random stream; the multiset sizes and their
mask).

>>> import torch
>>> from pgmdl.datasets import pad_multisets
>>> labels, mask = pad_multisets([torch.ones(2, 3), torch.ones(0, 3), torch.ones(1, 3)])
>>> labels.shape, mask.tolist()
(torch.Size([3, 2, 3]), [[True, True], [False, False], [True, False]])
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pgmdl.errors import ArgumentError, ArgumentTypeError

__all__ = ["MultisetSample", "pad_multisets"]


def _shape(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


@dataclass(frozen=True)
class MultisetSample:
    """A batch of ``N`` multisets of parts and their wholes, padded to ``K_max`` parts.

    Attributes:
        labels: ``(N, K_max, L)`` float features of each part's metadata; 0 where padded.
        mask: ``(N, K_max)`` bool, True for the real parts (real parts first, then padding).
        x: ``(N, *whole_shape)``, the whole.
        parts: ``(N, K_max, *whole_shape)``, each part's own contribution before the
            non-linear aggregation (0 where padded), for figures and evidence.
        context: ``(N, C)`` global input ``c``, or None.
        info: data-set specific extras; its tensors have first dimension ``N``.

    Indexing (an int, a slice, a LongTensor or a bool tensor over ``N``) returns a
    :class:`MultisetSample`; an int keeps the batch dimension (``sample[3]`` has
    ``N = 1``), so every field keeps its documented shape.

    >>> import torch
    >>> s = MultisetSample(torch.zeros(4, 2, 1), torch.tensor([[True, False]] * 4),
    ...                    torch.zeros(4, 5), torch.zeros(4, 2, 5), None)
    >>> len(s), s.sizes.tolist(), s[1].x.shape, len(s[torch.tensor([0, 2])])
    (4, [1, 1, 1, 1], torch.Size([1, 5]), 2)
    """

    labels: Tensor
    mask: Tensor
    x: Tensor
    parts: Tensor
    context: Tensor | None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels, mask, x, parts = self.labels, self.mask, self.x, self.parts
        for name in ("labels", "mask", "x", "parts"):
            if not isinstance(getattr(self, name), Tensor):
                raise ArgumentTypeError(
                    f"MultisetSample: {name} must be a tensor, got {_shape(getattr(self, name))}"
                )
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ArgumentError(
                f"MultisetSample: mask must be a (N, K_max) bool tensor, got shape "
                f"{tuple(mask.shape)} and dtype {mask.dtype}; use mask.bool()"
            )
        n, k_max = mask.shape
        if labels.dim() != 3 or tuple(labels.shape[:2]) != (n, k_max):
            raise ArgumentError(
                f"MultisetSample: labels must be (N, K_max, L) = ({n}, {k_max}, L) like the "
                f"mask, got {tuple(labels.shape)}"
            )
        if x.dim() < 1 or x.shape[0] != n:
            raise ArgumentError(
                f"MultisetSample: x must be (N, *whole_shape) with N = {n}, got {tuple(x.shape)}"
            )
        if tuple(parts.shape) != (n, k_max, *x.shape[1:]):
            raise ArgumentError(
                f"MultisetSample: parts must be (N, K_max, *whole_shape) = "
                f"{(n, k_max, *x.shape[1:])}, got {tuple(parts.shape)}"
            )
        if self.context is not None and (
            not isinstance(self.context, Tensor)
            or self.context.dim() < 1
            or self.context.shape[0] != n
        ):
            raise ArgumentError(
                f"MultisetSample: context must be None or (N, C) with N = {n}, got "
                f"{_shape(self.context)}"
            )
        for key, value in self.info.items():
            if isinstance(value, Tensor) and (value.dim() == 0 or value.shape[0] != n):
                raise ArgumentError(
                    f"MultisetSample: info[{key!r}] is a tensor of shape {tuple(value.shape)}; "
                    f"info tensors are per instance, with first dimension N = {n} (store "
                    f"constants as Python numbers)"
                )

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def sizes(self) -> Tensor:
        """``(N,)`` long: the number ``K_n`` of real parts of each instance."""
        return self.mask.sum(-1)

    @property
    def k_max(self) -> int:
        """The padded number of part slots."""
        return self.mask.shape[1]

    def __getitem__(self, index: Any) -> MultisetSample:
        if not isinstance(index, (slice, Tensor)):
            try:
                i = operator.index(index)
            except TypeError:
                raise ArgumentTypeError(
                    f"MultisetSample index must be an int, a slice or a tensor of indices, "
                    f"got {type(index).__name__}"
                ) from None
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} instances")
            i %= n
            index = slice(i, i + 1)
        elif isinstance(index, Tensor):
            index = index.to(self.mask.device)

        def take(value: Any) -> Any:
            return value[index] if isinstance(value, Tensor) else value

        return MultisetSample(
            take(self.labels),
            take(self.mask),
            take(self.x),
            take(self.parts),
            take(self.context),
            {key: take(value) for key, value in self.info.items()},
        )

    def to(self, device: torch.device | str) -> MultisetSample:
        """The same sample with every tensor (``info``'s included) moved to ``device``."""

        def move(value: Any) -> Any:
            return value.to(device) if isinstance(value, Tensor) else value

        changes = {f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)}
        changes["info"] = {key: move(value) for key, value in self.info.items()}
        return MultisetSample(**changes)

    def padded(self, k_max: int) -> MultisetSample:
        """The same sample with ``k_max`` part slots (``k_max >= self.k_max``): the new
        slots are padding (mask False, labels and parts 0). Per-slot ``info`` tensors
        (second dimension ``self.k_max``) are padded with 0 too. Batches drawn with
        fewer parts (a set-size curriculum) then keep the model's shapes. With
        ``k_max == self.k_max`` it returns the sample itself (no copy).

        >>> import torch
        >>> s = MultisetSample(torch.ones(2, 1, 3), torch.ones(2, 1, dtype=torch.bool),
        ...                    torch.zeros(2, 5), torch.zeros(2, 1, 5), None)
        >>> p = s.padded(4)
        >>> tuple(p.labels.shape), p.sizes.tolist(), float(p.labels[:, 1:].abs().sum())
        ((2, 4, 3), [1, 1], 0.0)
        """
        if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < self.k_max:
            raise ArgumentError(
                f"MultisetSample.padded: k_max must be an integer >= the current "
                f"{self.k_max} slots, got {k_max!r}"
            )
        old = self.k_max
        if k_max == old:
            return self

        def pad(value: Any) -> Any:
            if not isinstance(value, Tensor) or value.dim() < 2 or value.shape[1] != old:
                return value
            extra = value.new_zeros((value.shape[0], k_max - old, *value.shape[2:]))
            return torch.cat([value, extra], 1)

        return MultisetSample(
            pad(self.labels),
            pad(self.mask),
            self.x,
            pad(self.parts),
            self.context,
            {key: pad(value) for key, value in self.info.items()},
        )


def pad_multisets(sets: Sequence[Tensor], k_max: int | None = None) -> tuple[Tensor, Tensor]:
    """Pad ragged multisets ``(K_n, *feature_shape)`` into one batch.

    Args:
        sets: ``N >= 1`` tensors of shape ``(K_n, *feature_shape)``, the same
            ``feature_shape`` for all (``K_n = 0`` is an empty multiset).
        k_max: the number of slots; default: the largest ``K_n``.

    Returns:
        ``(padded, mask)``: ``padded`` ``(N, K_max, *feature_shape)`` with each set's
        rows first and zeros after them, in the first set's dtype and on its device;
        ``mask`` ``(N, K_max)`` bool, True for the real rows.

    Raises:
        ArgumentError: ``sets`` is empty, the sets' feature shapes differ, or
            some ``K_n > k_max``.

    >>> import torch
    >>> padded, mask = pad_multisets([torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0]])], 3)
    >>> padded.squeeze(-1).tolist(), mask.sum(-1).tolist()
    ([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], [2, 1])
    """
    sets = list(sets)
    if not sets:
        raise ArgumentError(
            "pad_multisets: sets is empty; give at least one tensor (a (0, L) tensor is an "
            "empty multiset)"
        )
    for i, s in enumerate(sets):
        if not isinstance(s, Tensor) or s.dim() < 1:
            raise ArgumentTypeError(
                f"pad_multisets: sets[{i}] must be a tensor of shape (K, *feature_shape), "
                f"got {_shape(s)}"
            )
    feature = tuple(sets[0].shape[1:])
    for i, s in enumerate(sets):
        if tuple(s.shape[1:]) != feature:
            raise ArgumentError(
                f"pad_multisets: sets[{i}] has feature shape {tuple(s.shape[1:])} but sets[0] "
                f"has {feature}; every set must be (K_n, *feature_shape) with the same features"
            )
    sizes = [s.shape[0] for s in sets]
    largest = max(sizes)
    if k_max is None:
        k_max = largest
    elif isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 0:
        raise ArgumentError(f"pad_multisets: k_max must be an integer >= 0 or None, got {k_max!r}")
    elif largest > k_max:
        i = sizes.index(largest)
        raise ArgumentError(
            f"pad_multisets: sets[{i}] has {largest} parts, more than k_max={k_max}; raise "
            f"k_max to at least {largest} (or leave it None to use the largest set)"
        )
    first = sets[0]
    device = first.device
    padded = first.new_zeros((len(sets), k_max, *feature))
    mask = torch.arange(k_max, device=device) < torch.tensor(sizes, device=device)[:, None]
    if largest:
        padded[mask] = torch.cat([s.to(device=device, dtype=first.dtype) for s in sets])
    return padded, mask


def check_counts(where: str, n: Any, k_min: Any, k_max: Any) -> None:
    """Check a generator's ``n``, ``k_min`` and ``k_max``.

    Raises:
        ArgumentError: naming ``where`` (the generator) and the argument, when
            one is not an integer >= 0 or ``k_min > k_max``.
    """
    for name, value in (("n", n), ("k_min", k_min), ("k_max", k_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ArgumentError(f"{where}: {name} must be an integer >= 0, got {value!r}")
    if k_min > k_max:
        raise ArgumentError(
            f"{where}: k_min={k_min} is larger than k_max={k_max}; the number of parts is drawn "
            f"uniformly in [k_min, k_max], so give k_min <= k_max"
        )


def seeded_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The CPU random stream of a generator: ``generator`` if given, else a new
    one seeded with ``seed`` (draws are on the CPU, so a seed gives the same
    data on every device)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ArgumentTypeError(
                f"generator must be a CPU torch.Generator (draws are made on the CPU so a seed "
                f"gives the same data on every device), got {generator!r}"
            )
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"seed must be an integer (or give generator=), got {seed!r}")
    return torch.Generator().manual_seed(seed)


def draw_sizes(g: torch.Generator, n: int, k_min: int, k_max: int) -> Tensor:
    """``(n,)`` long sizes, uniform in ``[k_min, k_max]``."""
    return torch.randint(k_min, k_max + 1, (n,), generator=g)


def size_mask(sizes: Tensor, k_max: int) -> Tensor:
    """``(n, k_max)`` bool: True in the first ``sizes[i]`` slots of row ``i``."""
    return torch.arange(k_max) < sizes[:, None]
