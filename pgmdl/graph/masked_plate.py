r"""Masked plates: a vectorized plate whose replicates exist or not, per instance.

Pyro's plates are rectangular: every instance of a minibatch has the same
number of replicates. A *masked plate* pads the replicates of each instance
to the largest number :math:`K_{\max}` and carries a boolean ``mask`` of the
replicates that exist: every sample site inside is masked
(``poutine.mask``), so a padded slot adds nothing to any log-density, in the
model and in a guide alike, and :meth:`MaskedPlate.sum` aggregates over the
present replicates only. An instance without replicates is a row of
``False``.

This is core machinery, not a plug-in: the compiler records a masked plate
(:attr:`pgmdl.PlateInfo.multiset`, with the model argument its mask comes
from; the plate leaves its mask under ``msg["infer"][PLATE_MASKS_KEY]``), and
:class:`pgmdl.NaMIGuide` enters the same plate with the same mask, read from
that argument at every call. The multiset plug-in (:mod:`pgmdl.multiset`,
thesis ch. 9) builds its plates over the parts of a set on it.

Layout. Following Pyro's nested-plate idiom (the LDA example: the inner plate
on a dimension left of the outer one), the masked plate sits *left* of the
enclosing plates: with ``pyro.plate("data", N, dim=-1)`` around a masked
plate at ``dim=-2``, a per-replicate site has batch shape ``(K, N)``. The
``mask`` is given the natural way, replicates last, ``(N, K)``;
:meth:`MaskedPlate.align` moves any ``(N, K, ...)`` tensor of per-replicate
features to that layout.
"""

from __future__ import annotations

import pyro
import torch
from pyro.ops.provenance import detach_provenance

from pgmdl.errors import ModelError
from pgmdl.graph.sites import PLATE_MASKS_KEY
from pgmdl.graph.tracing import retag_aligned


class MaskedPlate(pyro.plate):
    """A vectorized ``pyro.plate`` over padded replicate slots, masked by the replicates present.

    Entering it returns the plate itself (not the indices), so the aggregation
    helpers are at hand. :func:`pgmdl.multiset.multiset_plate` makes one for
    the parts of multisets.

    Attributes:
        mask: the mask as given, ``(*outer, K_max)`` booleans.
        plate_mask: the same mask moved to the plates' batch layout (the parts
            on this plate's dimension), as applied to every site inside.
    """

    label = "masked plate"  # how messages name it (subclasses: "multiset plate")

    def __init__(self, name: str, mask: torch.Tensor, dim: int) -> None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = type(mask).__name__ if not isinstance(mask, torch.Tensor) else mask.dtype
            raise ModelError(
                f"{self.label} {name!r}: mask must be a boolean tensor (True for the parts "
                f"that exist, shape (..., K_max)); got {got}. Build it as sizes[:, None] > "
                "torch.arange(K_max)."
            )
        if mask.dim() == 0:
            raise ModelError(
                f"{self.label} {name!r}: mask must have the part slots as its last dimension "
                "(shape (..., K_max)); got a scalar"
            )
        if not isinstance(dim, int) or dim >= 0:
            raise ModelError(
                f"{self.label} {name!r}: dim={dim!r} must be a negative integer (the batch "
                "dimension of the parts, left of the enclosing plates' dimensions)"
            )
        outer = mask.dim() - 1
        if -dim <= outer:
            raise ModelError(
                f"{self.label} {name!r}: the mask {tuple(mask.shape)} has {outer} outer "
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

    def __enter__(self) -> MaskedPlate:  # type: ignore[override]
        super().__enter__()
        return self

    def _process_message(self, msg: dict) -> None:
        super()._process_message(msg)
        if msg["type"] != "sample":
            return
        msg["mask"] = self.plate_mask if msg["mask"] is None else msg["mask"] & self.plate_mask
        masks = dict(msg["infer"].get(PLATE_MASKS_KEY, {}))
        masks[self.name] = self.mask
        msg["infer"] = {**msg["infer"], PLATE_MASKS_KEY: masks}  # never the user's dict

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
                f"{self.label} {self.name!r}: a per-part tensor of shape "
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
                    f"{self.label} {self.name!r}: part {where[-1]} of instance "
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
                f"{self.label} {self.name!r}: cannot sum a value of shape "
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
