"""The data of a training run: checked, put on one device, cut into minibatches.

:func:`pgmdl.fit`, :func:`pgmdl.log_likelihood` and the other functions of
:mod:`pgmdl.infer` read data the same way (:func:`prepare_data`): a tensor is
the model's first positional argument, a tuple or list of tensors its
positional arguments, a dict of tensors its keyword arguments, all batched
along dimension 0 with the same length ``N``. Arguments that are not batched
are given apart, as ``model_args`` (after the data's positional arguments)
and ``model_kwargs``, the convention of every pgmdl function
(:mod:`pgmdl.arguments`).

Each epoch visits the ``N`` points in the order :func:`epoch_order` gives: a
random permutation, which with a seed depends on ``(seed, epoch)`` only
(:func:`derive_seed`), so a resumed run continues exactly as the
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from pgmdl.errors import ArgumentError, ArgumentTypeError

#: Independent random streams derived from ``(seed, epoch)`` (:func:`derive_seed`):
#: each epoch's permutation, Pyro's RNGs during it, and the set-up before training.
PERMUTATION, PYRO, SETUP = 0, 1, 2

Minibatch = tuple[tuple[Any, ...], dict[str, Any]]
"""``(args, kwargs)`` a model and its guide are called with: the rows of the
data, then the fixed (not batched) ``model_args`` and ``model_kwargs``."""


def prepare_data(
    data: Any, device: str | torch.device | None
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], int, torch.device]:
    """Split ``data`` into positional and keyword tensors, check their lengths
    and put them on one device.

    Args:
        data: a tensor, a tuple or list of tensors, or a dict of tensors
            (module docstring).
        device: where to put them; ``None``: where they are (they must all be
            on one device).

    Returns:
        ``(args, kwargs, num_data, device)``.

    Raises:
        ArgumentTypeError: ``data`` is not tensors, or a dict key is not a string.
        ArgumentError: ``data`` is empty, 0-dimensional, of different lengths
            along dimension 0, or on several devices while ``device`` is ``None``.
    """
    if isinstance(data, torch.Tensor):
        named = [("data", data)]
        positional = True
    elif isinstance(data, tuple | list):
        named = [(f"data[{i}]", value) for i, value in enumerate(data)]
        positional = True
    elif isinstance(data, Mapping):
        named = [(f"data[{key!r}]", value) for key, value in data.items()]
        positional = False
        for key in data:
            if not isinstance(key, str):
                raise ArgumentTypeError(
                    f"the keys of a dict of data must be argument names, got {key!r}"
                )
    else:
        raise ArgumentTypeError(
            "data must be a tensor, a tuple/list of tensors (positional arguments) or a dict "
            f"of tensors (keyword arguments), got {type(data).__name__}"
        )
    if not named:
        raise ArgumentError(f"data is an empty {type(data).__name__}: there is nothing to train on")
    for label, value in named:
        if not isinstance(value, torch.Tensor):
            raise ArgumentTypeError(
                f"{label} must be a tensor batched along dimension 0, got {type(value).__name__}"
                " (pass fixed, non-batched arguments with model_kwargs=)"
            )
        if value.dim() == 0:
            raise ArgumentError(
                f"{label} is a 0-dimensional tensor; data must be batched along dimension 0 "
                "(pass fixed arguments with model_kwargs=)"
            )
    lengths = {label: int(value.shape[0]) for label, value in named}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{label} has {n}" for label, n in lengths.items())
        raise ArgumentError(
            f"the data arguments must have the same length along dimension 0: {listed}"
        )
    num_data = next(iter(lengths.values()))
    if num_data == 0:
        raise ArgumentError("data is empty (length 0 along dimension 0): nothing to train on")
    if device is None:
        devices = {value.device for _, value in named}
        if len(devices) > 1:
            on = ", ".join(f"{label} on {value.device}" for label, value in named)
            raise ArgumentError(f"the data tensors are on different devices ({on}); pass device=")
        dev = named[0][1].device
    else:
        dev = torch.device(device)
    moved = [(label, value.to(dev)) for label, value in named]
    if positional:
        return tuple(v for _, v in moved), {}, num_data, dev
    return (), dict(zip(data.keys(), (v for _, v in moved), strict=True)), num_data, dev


def move_modules(model: Any, guide: Any, device: torch.device) -> None:
    """Move the ``nn.Module`` owning ``model`` (a bound method), ``guide`` (a
    module) or the module owning ``guide`` to ``device``."""
    for owner in (getattr(model, "__self__", None), guide, getattr(guide, "__self__", None)):
        if isinstance(owner, torch.nn.Module):
            owner.to(device)


def minibatch(
    args: tuple[torch.Tensor, ...],
    kwargs: dict[str, torch.Tensor],
    fixed: dict[str, Any],
    rows: slice | torch.Tensor,
    fixed_args: tuple[Any, ...] = (),
) -> Minibatch:
    """The rows ``rows`` of every data tensor, followed by the fixed
    positional arguments ``fixed_args``, with the fixed keyword arguments."""
    return (
        tuple(a[rows] for a in args) + fixed_args,
        {**{k: v[rows] for k, v in kwargs.items()}, **fixed},
    )


def transform_minibatch(
    batch: Minibatch,
    transform: Callable[[Any], Any],
    data: Any,
    fixed: dict[str, Any],
) -> Minibatch:
    """Apply ``transform`` to the batched part of a minibatch, shaped like
    ``data`` (a tensor, a tuple of tensors or a dict of the batched keyword
    arguments); the fixed arguments are left as they are.

    Raises:
        ArgumentTypeError: ``transform`` returned something shaped otherwise.
    """
    args, kwargs = batch
    if isinstance(data, torch.Tensor):
        out = transform(args[0])
        if not isinstance(out, torch.Tensor):
            raise ArgumentTypeError(
                f"transform must return a tensor for tensor data, got {type(out)}"
            )
        return (out, *args[1:]), kwargs
    if isinstance(data, tuple | list):
        n = len(data)
        out = transform(tuple(args[:n]))
        if not isinstance(out, tuple | list) or len(out) != n:
            raise ArgumentTypeError(f"transform must return a tuple of {n} tensors, got {out!r}")
        return (*out, *args[n:]), kwargs
    batched = {k: v for k, v in kwargs.items() if k not in fixed}
    out = transform(batched)
    if not isinstance(out, Mapping) or set(out) != set(batched):
        raise ArgumentTypeError(f"transform must return a dict with keys {sorted(batched)}")
    return args, {**dict(out), **fixed}


def derive_seed(seed: int, epoch: int, stream: int, worker: int = 0) -> int:
    """A 32-bit seed that depends on ``(seed, epoch, stream)`` only, and on the
    data-parallel ``worker`` (worker 0's seeds are those of a single process)."""
    entropy = [int(seed), epoch, stream] + ([int(worker)] if worker else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def epoch_order(
    num_data: int, shuffle: bool, seed: int | None, epoch: int, device: torch.device
) -> torch.Tensor | None:
    """The order epoch ``epoch`` visits the data points in: ``None`` for the
    data's order, else a permutation (reproducible from ``(seed, epoch)``)."""
    if not shuffle:
        return None
    if seed is None:
        return torch.randperm(num_data, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, epoch, PERMUTATION))
    return torch.randperm(num_data, generator=generator, device=device)
