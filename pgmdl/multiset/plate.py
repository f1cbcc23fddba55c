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

import torch

from pgmdl.graph.masked_plate import MaskedPlate, align_to_plate


class MultisetPlate(MaskedPlate):
    """A :class:`~pgmdl.graph.masked_plate.MaskedPlate` over the parts of
    multisets (padded part slots, masked by the parts present).

    Use :func:`multiset_plate` to make one. Entering it returns the plate itself
    (not the indices), so the aggregation helpers are at hand.

    Attributes:
        mask: the mask as given, ``(*outer, K_max)`` booleans.
        plate_mask: the same mask moved to the plates' batch layout (the parts
            on this plate's dimension), as applied to every site inside.
    """

    label = "multiset plate"


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


__all__ = ["MultisetPlate", "align_to_plate", "multiset_plate"]
