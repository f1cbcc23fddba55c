r"""Multiset plates: a plate over the parts of a set whose size varies within a minibatch.

Pyro's plates are rectangular: every instance of a minibatch has the same
number of replicates. A multiset of parts (the households of a district, the
anchors of an image; thesis ch. 9) has a size :math:`K_n` of its own for each
instance :math:`n`. :func:`multiset_plate` is a vectorized ``pyro.plate`` of
size :math:`K_{\max}` (the padding) together with a boolean ``mask`` of the
parts that exist: every sample site inside is masked (``poutine.mask``), so a
padded slot adds nothing to any log-density, in the model and in a guide
alike, and :meth:`MultisetPlate.sum` aggregates over the present parts only.
An empty set (:math:`K_n = 0`) is a row of ``False``.

Layout. Following Pyro's nested-plate idiom (the LDA example: the inner plate
on a dimension left of the outer one), the parts plate sits *left* of the
data plate: with ``pyro.plate("data", N, dim=-1)`` around
``multiset_plate("parts", mask, dim=-2)``, a per-part site has batch shape
``(K, N)``. The ``mask`` is given the natural way, parts last, ``(N, K)``
(outer plates' dimensions, then the parts); :meth:`MultisetPlate.align`
moves any ``(N, K, ...)`` tensor of per-part features to that layout.

Permutation invariance holds by construction: per-part sites are exchangeable
replicates of one plate, and the only way a site outside the plate reads them
is a masked sum (:meth:`MultisetPlate.sum`, eq. 9.2 with :math:`\Psi = \sum`),
optionally saturated (:class:`~pgmdl.multiset.aggregate.SaturatingSum`,
eq. 9.16–9.17).

What the rest of pgmdl sees. :func:`pgmdl.compile` records the plate as a
multiset plate (:attr:`pgmdl.PlateInfo.multiset`, with the model argument the
mask comes from), :func:`pgmdl.render` draws it with a ``K ≤ K_max`` label,
and :class:`pgmdl.NaMIGuide` applies the same mask in the guide (read from
that argument at every call) and gives the parts a joint conditional when the
inversion couples them (see :mod:`pgmdl.multiset.conditional`).

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from pgmdl.multiset import multiset_plate
    >>> mask = torch.tensor([[True, True, False], [False, False, False]])  # K = 2 and K = 0
    >>> def model(mask):
    ...     with pyro.plate("data", 2, dim=-1):
    ...         with multiset_plate("parts", mask, dim=-2) as parts:
    ...             w = pyro.sample("w", dist.Normal(0.0, 1.0))
    ...         return parts.sum(w)
    >>> trace = pyro.poutine.trace(model).get_trace(mask)
    >>> trace.nodes["w"]["value"].shape          # (K_max, N)
    torch.Size([3, 2])
    >>> trace.nodes["w"]["mask"].T               # the mask, in the plates' layout
    tensor([[ True,  True, False],
            [False, False, False]])
    >>> float(trace.nodes["_RETURN"]["value"][1])   # the empty set sums to 0
    0.0
"""

from __future__ import annotations

import pyro
import torch
from pyro.ops.provenance import detach_provenance

from pgmdl.errors import ModelError
from pgmdl.graph.sites import MULTISET_MASKS_KEY
from pgmdl.graph.tracing import retag_aligned


class MultisetPlate(pyro.plate):
    """A vectorized ``pyro.plate`` over padded part slots, masked by the parts present.

    Use :func:`multiset_plate` to make one. Entering it returns the plate itself
    (not the indices), so the aggregation helpers are at hand.

    Attributes:
        mask: the mask as given, ``(*outer, K_max)`` booleans.
        plate_mask: the same mask moved to the plates' batch layout (the parts
            on this plate's dimension), as applied to every site inside.
    """

    def __init__(self, name: str, mask: torch.Tensor, dim: int) -> None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = type(mask).__name__ if not isinstance(mask, torch.Tensor) else mask.dtype
            raise ModelError(
                f"multiset plate {name!r}: mask must be a boolean tensor (True for the parts "
                f"that exist, shape (..., K_max)); got {got}. Build it as sizes[:, None] > "
                "torch.arange(K_max)."
            )
        if mask.dim() == 0:
            raise ModelError(
                f"multiset plate {name!r}: mask must have the part slots as its last dimension "
                "(shape (..., K_max)); got a scalar"
            )
        if not isinstance(dim, int) or dim >= 0:
            raise ModelError(
                f"multiset plate {name!r}: dim={dim!r} must be a negative integer (the batch "
                "dimension of the parts, left of the enclosing plates' dimensions)"
            )
        outer = mask.dim() - 1
        if -dim <= outer:
            raise ModelError(
                f"multiset plate {name!r}: the mask {tuple(mask.shape)} has {outer} outer "
                f"dimension(s) before the parts, which must sit right of the parts' dim={dim}; "
                f"use dim={-(outer + 1)} or less, with the enclosing plates on the dimensions "
                "to its right"
            )
        self.mask = mask
        plain = detach_provenance(mask)
        # (*outer, K) -> parts on `dim`, outer plates on the dimensions right of it
        self.plate_mask = plain.movedim(-1, 0).reshape(
            (plain.shape[-1],) + (1,) * (-dim - 1 - outer) + tuple(plain.shape[:-1])
        )
        super().__init__(name, mask.shape[-1], dim=dim, device=mask.device)

    def __enter__(self) -> MultisetPlate:  # type: ignore[override]
        super().__enter__()
        return self

    def _process_message(self, msg: dict) -> None:
        super()._process_message(msg)
        if msg["type"] != "sample":
            return
        msg["mask"] = self.plate_mask if msg["mask"] is None else msg["mask"] & self.plate_mask
        masks = dict(msg["infer"].get(MULTISET_MASKS_KEY, {}))
        masks[self.name] = self.mask
        msg["infer"] = {**msg["infer"], MULTISET_MASKS_KEY: masks}  # never the user's dict

    @property
    def sizes(self) -> torch.Tensor:
        """The number of parts of each instance, ``(*outer,)``."""
        return self.mask.sum(-1)

    def align(self, value: torch.Tensor, event_dim: int = 0, *, check: bool = True) -> torch.Tensor:
        """Move a per-part tensor from ``(*outer, K, *event)`` to the plates' layout
        (parts on this plate's dimension): how per-part inputs such as the parts'
        metadata enter the plate.

        Args:
            value: ``(*outer, K, *event)``.
            event_dim: how many rightmost dimensions are per-part features.
            check: check that the present parts' values are finite (one
                device synchronization; pass ``False`` in a tuned training loop).

        Raises:
            ModelError: the tensor does not have the mask's ``(*outer, K)`` in front
                of its ``event_dim`` last dimensions, or a present part's value is
                NaN or infinite.
        """
        lead = tuple(value.shape[: value.dim() - event_dim])
        if lead != tuple(self.mask.shape):
            raise ModelError(
                f"multiset plate {self.name!r}: a per-part tensor of shape "
                f"{tuple(value.shape)} (event_dim={event_dim}) does not match the mask "
                f"{tuple(self.mask.shape)}: its leading dimensions must be the mask's "
                "(*outer, K_max), one entry per part slot"
            )
        if check and value.is_floating_point():
            plain, mask = detach_provenance(value), detach_provenance(self.mask)
            bad = ~torch.isfinite(plain).reshape(mask.shape + (-1,)).all(-1) & mask
            if bool(bad.any()):
                where = tuple(int(i) for i in bad.nonzero()[0])
                raise ModelError(
                    f"multiset plate {self.name!r}: part {where[-1]} of instance "
                    f"{where[:-1] if len(where) > 2 else where[0]} has a NaN or infinite value "
                    f"(per-part tensor of shape {tuple(value.shape)}); clean the parts' "
                    "metadata, or mask the part out"
                )
        aligned = align_to_plate(value, self.mask.dim() - 1, self.dim)
        return retag_aligned(value, aligned, self.name)

    def sum(self, value: torch.Tensor, event_dim: int = 0) -> torch.Tensor:
        r"""The masked sum over the parts, :math:`\sum_{i \le K_n} v_i` (eq. 9.2), of a value
        in the plates' layout; padded slots add nothing and an empty set gives 0.

        Args:
            value: a per-part value, the parts on this plate's dimension
                (a sample site's value inside the plate).
            event_dim: how many rightmost dimensions are event dimensions.
        """
        position = value.dim() - event_dim + self.dim
        if position < 0 or value.shape[position] != self.size:
            raise ModelError(
                f"multiset plate {self.name!r}: cannot sum a value of shape "
                f"{tuple(value.shape)} (event_dim={event_dim}) over the parts: dimension "
                f"{self.dim} left of the event should have size K_max={self.size}"
            )
        mask = self.plate_mask.reshape(self.plate_mask.shape + (1,) * event_dim)
        return (value * mask.to(value.dtype)).sum(position)


def align_to_plate(value: torch.Tensor, outer: int, dim: int) -> torch.Tensor:
    """``(*outer, K, *rest)`` -> the plates' layout: ``K`` moved left of the
    ``outer`` dimensions, on batch dimension ``dim`` (size-1 dimensions fill the gap)."""
    moved = value.movedim(outer, 0)
    return moved.reshape(moved.shape[:1] + (1,) * (-dim - 1 - outer) + moved.shape[1:])


def multiset_plate(name: str, mask: torch.Tensor, *, dim: int = -2) -> MultisetPlate:
    """A plate over the parts of multisets of varying size, padded to ``K_max``.

    Args:
        name: the plate's name (unique in the model).
        mask: ``(*outer, K_max)`` booleans, ``True`` for the parts that exist, real
            parts first; ``*outer`` are the enclosing plates' sizes (usually the
            minibatch, ``(N, K_max)``). Pass it as a model argument, so that an
            amortized guide can read it at every call.
        dim: the batch dimension of the parts; left of every enclosing plate
            (default ``-2``, inside a data plate at ``dim=-1``).

    Returns:
        a :class:`MultisetPlate`; use it as ``with multiset_plate(...) as parts``.

    Raises:
        ModelError: the mask is not boolean, has no part dimension, does not
            fit the enclosing plates.
    """
    return MultisetPlate(name, mask, dim)
