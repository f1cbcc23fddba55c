r"""Splitting the data among data-parallel workers, and scaling each worker's
ELBO to the whole data set.

With :math:`W` workers, epoch :math:`e` draws one permutation of the
:math:`N` points (the same on every worker: it depends on ``(seed, e)``
only) and gives worker :math:`w` the points at positions
:math:`w, w + W, w + 2W, \dots` of it (:func:`shard_batches`): the shards are
disjoint and cover the data. Each worker cuts its shard into the same number
of minibatches, :math:`\lceil \lceil N / W \rceil / B \rceil` (sizes differ by
at most one), so that every worker takes the same number of optimizer steps:
an extra step on one worker would wait forever for the others' gradients.

Scaling. A worker's minibatch :math:`b_w` of :math:`B_w` points is a uniform
random subset of the data, so

.. math::

    \widehat{\mathcal L}_w = \mathcal L_{\text{global}}
        + \frac{N}{B_w} \sum_{i \in b_w} \mathcal L_i

is an unbiased estimate of the ELBO of the whole data set, and so is the
average over workers that data-parallel training differentiates (its
gradients are averaged by all-reduce). :class:`DataPlateScale` multiplies
the log-densities of the sites inside the model's data plate (in model and
guide) by :math:`N / B_w`, as ``pyro.plate("data", N, subsample=...)`` would:
the model keeps ``pyro.plate("data", len(x))``. The data plates are those
whose size follows the minibatch length (:func:`data_plates`, found by
tracing two minibatch lengths). A model that subsamples its plate itself
would give every worker the same indices and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pgmdl.errors import ArgumentError
from pgmdl.infer.data import Minibatch, epoch_order


def batches_per_epoch(num_data: int, batch_size: int, world_size: int) -> int:
    """The number of minibatches every worker takes per epoch: enough for the
    largest shard, and no more than the smallest shard has points (then, with
    ``batch_size`` 1 and an uneven split, a minibatch holds two points)."""
    wanted = math.ceil(math.ceil(num_data / world_size) / batch_size)
    return max(1, min(wanted, num_data // world_size))


def shard_batches(
    num_data: int,
    batch_size: int,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    shuffle: bool = True,
) -> list[torch.Tensor]:
    """Worker ``rank``'s minibatches of epoch ``epoch``: index tensors, disjoint
    from the other workers' and covering the data with them.

    Args:
        num_data: ``N``.
        batch_size: the largest minibatch length ``B``.
        rank, world_size: this worker and how many there are.
        epoch: the epoch (its permutation depends on ``(seed, epoch)`` only).
        seed: the seed every worker shares.
        shuffle: ``False``: worker ``w`` takes points ``w, w + W, ...`` in order.

    Returns:
        :func:`batches_per_epoch` index tensors (on the CPU).

    Raises:
        ArgumentError: fewer points than workers (some worker would get none).
    """
    if num_data < world_size:
        raise ArgumentError(
            f"{num_data} data point(s) cannot be shared among {world_size} workers: every "
            "worker needs at least one; use fewer devices"
        )
    order = epoch_order(num_data, shuffle, seed, epoch, torch.device("cpu"))
    if order is None:
        order = torch.arange(num_data)
    shard = order[rank::world_size]
    return list(torch.tensor_split(shard, batches_per_epoch(num_data, batch_size, world_size)))


class DataPlateScale(Messenger):
    """Multiply the log-density of every site inside one of ``plates`` by
    ``factor`` (:math:`N / B_w`: the whole data set over this minibatch)."""

    def __init__(self, plates: frozenset[str], factor: float) -> None:
        super().__init__()
        self.plates = plates
        self.factor = factor

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg):
            return
        if any(frame.name in self.plates for frame in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


def data_plates(
    model: Callable[..., Any], first: Minibatch, second: Minibatch | None
) -> frozenset[str]:
    """The plates of ``model`` whose size is the minibatch length: the model's
    plate sizes traced on two minibatches of different lengths (one, when the
    data has a single point) follow the length exactly.

    Raises:
        ArgumentError: the model subsamples a plate itself
            (``pyro.plate("data", N, subsample_size=b)``), which would give every
            worker the same indices; or no plate follows the minibatch length
            (the model does not put its data in a plate).
    """
    lengths = [minibatch_length(first)] + ([minibatch_length(second)] if second is not None else [])
    sizes: list[dict[str, int]] = []
    for args, kwargs in [first] + ([second] if second is not None else []):
        with poutine.block():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        found: dict[str, int] = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site_is_subsample(site):
                full = site["fn"].size
                used = site["fn"].subsample_size
                if used is not None and used != full:
                    raise ArgumentError(
                        f"the model subsamples plate {name!r} itself (pyro.plate({name!r}, "
                        f"{full}, subsample_size={used}) or subsample=...): in data-parallel "
                        "training every worker would draw the same points. Let fit shard the "
                        f"data: write pyro.plate({name!r}, len(x)) over the minibatch it is "
                        "called with; fit scales the plate to the whole data set"
                    )
                continue
            for frame in site["cond_indep_stack"]:
                found[frame.name] = frame.size
        sizes.append(found)
    plates = frozenset(
        name
        for name in sizes[0]
        if all(run.get(name) == length for run, length in zip(sizes, lengths, strict=True))
    )
    if not plates:
        listed = ", ".join(f"{n!r} of size {s}" for n, s in sizes[0].items()) or "none"
        raise ArgumentError(
            f"no plate of the model has the minibatch's length {lengths[0]} (plates: {listed}): "
            "data-parallel training scales the data plate to the whole data set, so the model "
            "must put its data sites in pyro.plate('data', len(x))"
        )
    return plates


def minibatch_length(batch: Minibatch) -> int:
    """The number of points in ``batch``: the length of its first batched tensor."""
    args, kwargs = batch
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ArgumentError("the minibatch holds no batched tensor")
