"""A thin training loop over :class:`pyro.infer.SVI`: minibatches, devices,
checkpoints, per-site KL in bits, and errors that say what turned NaN.

:func:`fit` does what every SVI script does by hand and nothing more; the
model, guide, loss (any Pyro ELBO) and optimizer (any
:class:`pyro.optim.PyroOptim`) are Pyro's own, and so is the param store
where the parameters live.

Each epoch visits the ``N`` data points once, in minibatches of
``batch_size`` (the last one may be shorter) drawn from a random permutation
when ``shuffle=True``. The model and guide are called with the minibatch and
are responsible for their own ``pyro.plate``: the loss SVI returns is the
negative ELBO of *that call*, so with ``pyro.plate("data", len(x))`` it is a
sum over the ``B`` points of the minibatch. :func:`fit` reports it per data
point::

    loss per data point = loss / B

which is comparable across batch sizes. (A model whose plate rescales the
minibatch to the whole data set, ``pyro.plate("data", N, subsample=...)``,
reports ``N / B`` times that; the same holds for the KL.) An epoch's loss is
the sum of its minibatch losses divided by ``N``.

Amortized guides (an encoder ``q(z_i | x_i)``) and guides of global latents
work on any minibatch. A guide with free parameters per data point
(:class:`~pyro.infer.autoguide.AutoNormal` over a local ``z_i``) must be told
which points a minibatch holds: pass the indices as data and subsample both
plates with them::

    def model(x, idx):
        with pyro.plate("data", N, subsample=idx):
            ...

    guide = AutoNormal(model, create_plates=lambda x, idx: pyro.plate("data", N, subsample=idx))
    fit(model, guide, {"x": x, "idx": torch.arange(N)})

Every ``kl_every`` epochs, :func:`~pgmdl.infer.diagnostics.site_kl_bits`
estimates on the epoch's last minibatch how many bits per data point each
latent site carries, ``KL(q(z | .) || p(z | pa)) / ln 2`` (see
:mod:`pgmdl.infer.diagnostics`).

With ``guide_optim``, the guide's parameters get their own optimizer
(:class:`~pgmdl.infer.optim.PartitionedOptim`): thesis §4.2.4, "choosing an
optimizer with more inertia and a smaller stepsize for p_theta permits q_phi
to converge quicker".

Reproducibility: with ``seed``, the permutation of epoch ``e`` and Pyro's
global RNGs (:func:`pyro.set_rng_seed`, reseeded at the start of every
epoch) depend on ``(seed, e)`` only, so a run resumed from a checkpoint
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import PyroOptim
from tqdm.auto import tqdm

from pgmdl.errors import TrainingError
from pgmdl.infer.diagnostics import _nonfinite_report, _site_kl_bits
from pgmdl.infer.optim import PartitionedOptim, merge_optim_state
from pgmdl.infer.optim import _pyro_prefix as _guide_prefix

_CHECKPOINT_FORMAT = "pgmdl.infer.fit checkpoint"
_CHECKPOINT_VERSION = 1
# Independent random streams derived from (seed, epoch).
_PERMUTATION, _PYRO, _SETUP = 0, 1, 2
_KL_PARTICLES = 8  # guide traces per site_kl_bits estimate


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        losses: the loss per data point of every step (loss / batch length).
        epoch_losses: the loss per data point of every epoch (the sum of its
            minibatch losses divided by the number of data points).
        kl_bits: for each epoch where it was computed, site name to KL in
            bits per data point (see :func:`~pgmdl.infer.site_kl_bits`).
        kl_epochs: the (0-based) epochs ``kl_bits`` was computed at.
        steps: optimizer steps taken (in all runs, when resumed).
        epochs: epochs completed (in all runs, when resumed).
        device: the device the data was on during training.
        stopped_early: whether ``callback`` stopped training.
    """

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    kl_bits: list[dict[str, float]] = field(default_factory=list)
    kl_epochs: list[int] = field(default_factory=list)
    steps: int = 0
    epochs: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    stopped_early: bool = False

    def summary(self, max_rows: int = 10) -> str:
        """A small table: loss per data point and KL bits per site, per epoch.

        Args:
            max_rows: the last ``max_rows`` epochs are shown.
        """
        head = (
            f"FitResult: {self.epochs} epoch{'s' if self.epochs != 1 else ''}, "
            f"{self.steps} step{'s' if self.steps != 1 else ''} on {self.device}"
            + (" (stopped early)" if self.stopped_early else "")
        )
        if not self.epoch_losses:
            return head
        sites: list[str] = []
        for kl in self.kl_bits:
            sites.extend(name for name in kl if name not in sites)
        columns = sites if len(sites) <= 4 else []
        kl_at = dict(zip(self.kl_epochs, self.kl_bits, strict=True))
        header = ["epoch", "loss/point"] + [f"KL[{s}] bits" for s in columns]
        total = len(sites) > 1 or (sites and not columns)
        if total:
            header.append("KL total bits")
        rows = []
        first = len(self.epoch_losses) - min(max_rows, len(self.epoch_losses))
        for epoch in range(first, len(self.epoch_losses)):
            row = [str(epoch), f"{self.epoch_losses[epoch]:.4f}"]
            kl = kl_at.get(epoch)
            row += ["-" if kl is None or s not in kl else f"{kl[s]:.3f}" for s in columns]
            if total:
                row.append("-" if kl is None else f"{sum(kl.values()):.3f}")
            rows.append(row)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [head, "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        if first:
            lines.append(f"({first} earlier epoch{'s' if first != 1 else ''} not shown)")
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _history(self) -> dict[str, Any]:
        return {
            "losses": list(self.losses),
            "epoch_losses": list(self.epoch_losses),
            "kl_bits": [dict(kl) for kl in self.kl_bits],
            "kl_epochs": list(self.kl_epochs),
            "steps": self.steps,
            "epochs": self.epochs,
        }


def fit(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    epochs: int = 10,
    batch_size: int = 128,
    optim: PyroOptim | None = None,
    guide_optim: PyroOptim | None = None,
    loss: Any = None,
    num_particles: int = 1,
    device: str | torch.device | None = None,
    shuffle: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    kl_every: int = 1,
    seed: int | None = None,
    callback: Callable[[int, FitResult], bool | None] | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> FitResult:
    """Train ``model`` and ``guide`` with :class:`pyro.infer.SVI` on minibatches of ``data``.

    Parameters live in Pyro's param store, which ``fit`` neither clears nor
    copies: call :func:`pyro.clear_param_store` first for a fresh start.

    Args:
        model: the Pyro model; it is called with a minibatch and must put its
            data sites in its own ``pyro.plate``.
        guide: any Pyro guide of it (an AutoGuide, a hand-written amortized
            guide, ...).
        data: a tensor (the model's first positional argument), a tuple or
            list of tensors (its positional arguments) or a dict of tensors
            (its keyword arguments), all batched along dimension 0 with the
            same length ``N``.
        epochs: how many passes over the data (in total, when resuming).
        batch_size: minibatch length; the last minibatch of an epoch holds
            what is left.
        optim: a :class:`pyro.optim.PyroOptim`; ``pyro.optim.Adam({"lr": 1e-3})``
            by default. With ``guide_optim`` it updates the model's
            parameters only.
        guide_optim: an optimizer for the guide's parameters (see
            :class:`~pgmdl.infer.PartitionedOptim`); a parameter is the
            guide's if the guide registers it when traced once on the first
            minibatch or, for a PyroModule guide, if its name is under the
            guide's prefix.
        loss: any Pyro ELBO (``Trace_ELBO``, ``TraceEnum_ELBO``,
            ``TraceGraph_ELBO``, ...) or loss callable SVI accepts; by default
            ``Trace_ELBO(num_particles=num_particles, vectorize_particles=False)``.
        num_particles: particles of the default loss (set it on ``loss``
            otherwise).
        device: where to train; data tensors are moved there, as are the
            module owning ``model`` (when it is a bound method of an
            ``nn.Module``) and ``guide`` (when it is an ``nn.Module``, or a
            bound method of one). ``None``: the data's device, nothing is
            moved.
        shuffle: draw each epoch's minibatches from a random permutation;
            ``False`` keeps the data order.
        model_kwargs: fixed keyword arguments passed to model and guide on
            every call (not batched).
        checkpoint: a file written (``torch.save``) at the end of every epoch:
            the param store, the optimizer state(s), the epoch, the step and
            the history so far.
        resume: continue from ``checkpoint`` if the file exists (from the
            epoch after the saved one); start afresh otherwise. The
            checkpoint is unpickled: only resume from files you trust.
        progress: show a ``tqdm`` progress bar with the loss per data point.
        kl_every: compute :func:`~pgmdl.infer.site_kl_bits` on the last
            minibatch of every ``kl_every``-th epoch; ``0`` never.
        seed: makes the run reproducible: epoch ``e``'s permutation and
            Pyro's RNGs (reseeded at its start) depend on ``(seed, e)`` only.
        callback: ``callback(epoch, result)`` after every epoch (``epoch`` is
            0-based); returning ``True`` stops training.
        transform: applied to every training minibatch before model and
            guide see it; it takes and returns a minibatch shaped like
            ``data`` (a tensor, a tuple of tensors or a dict). Example: the
            noise augmentation of a quasi-deterministic observation,
            ``transform=noise.augment`` (thesis §7.2).

    Returns:
        the :class:`FitResult`: losses per step and per epoch, KL bits.

    Raises:
        TrainingError: the data arguments have different lengths or are
            empty; the loss or a gradient became NaN or infinite (the
            message names the sites and parameters at fault; no parameter is
            updated by that step); the checkpoint is not a ``fit``
            checkpoint or lacks parameters of the guide or model.
        TypeError: ``data`` is not tensors, ``optim`` is not a PyroOptim.
        ValueError: ``epochs < 0``, ``batch_size < 1``, ``kl_every < 0``,
            ``resume`` without ``checkpoint``, ``model_kwargs`` naming a data
            argument.

    Example::

        >>> import pyro, torch
        >>> import pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> from pgmdl.infer import fit
        >>> def model(x):
        ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> pyro.clear_param_store()
        >>> x = torch.randn(100) + 3.0
        >>> result = fit(model, AutoNormal(model), x, epochs=2, batch_size=32,
        ...              optim=pyro.optim.Adam({"lr": 0.05}), seed=0, progress=False)
        >>> result.steps, len(result.losses), len(result.epoch_losses)
        (8, 8, 2)
        >>> list(result.kl_bits[-1])
        ['loc']
    """
    _check_options(epochs, batch_size, kl_every, num_particles, loss, seed, resume, checkpoint)
    args, kwargs, num_data, dev = _prepare_data(data, device)
    if device is not None:
        _move_modules(model, guide, dev)
    fixed = dict(model_kwargs or {})
    clash = sorted(set(fixed) & set(kwargs))
    if clash:
        raise ValueError(f"model_kwargs and data both give {clash}; pass each argument once")
    if optim is None:
        optim = pyro.optim.Adam({"lr": 1e-3})
    for label, value in (("optim", optim), ("guide_optim", guide_optim)):
        if value is not None and not isinstance(value, PyroOptim):
            raise TypeError(
                f"{label} must be a pyro.optim optimizer such as pyro.optim.Adam({{'lr': 1e-3}}) "
                f"(a torch.optim class wrapped by Pyro), got {type(value).__name__}"
            )
    if loss is None:
        loss = Trace_ELBO(num_particles=num_particles, vectorize_particles=False)

    result = FitResult(device=dev)
    path = Path(checkpoint) if checkpoint is not None else None
    saved = _read_checkpoint(path, dev) if resume and path is not None and path.exists() else None
    first = _batch(args, kwargs, fixed, slice(0, min(batch_size, num_data)))
    if seed is not None:
        pyro.set_rng_seed(_derive(seed, 0, _SETUP))
    if guide_optim is not None or saved is not None:
        # Create every parameter now (an AutoGuide creates its own on first
        # call), so that the partition and the checkpoint see them all.
        guide_names, model_names = _register_params(model, guide, *first)
        if guide_optim is not None:
            prefix = _guide_prefix(guide)
            optim = PartitionedOptim(
                optim,
                guide_optim,
                lambda name: (
                    name in guide_names or (prefix is not None and name.startswith(prefix))
                ),
            )
        if saved is not None:
            _restore(saved, path, optim, result, guide_names, model_names)
            _restore_buffers(saved, _modules(model, guide))
    guard = _FiniteGradGuard(optim)
    svi = SVI(model, guide, guard, loss)

    start = result.epochs
    per_epoch = math.ceil(num_data / batch_size)
    bar = tqdm(
        total=max(epochs - start, 0) * per_epoch,
        disable=not progress,
        desc="fit",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start, epochs):
            if seed is not None:
                pyro.set_rng_seed(_derive(seed, epoch, _PYRO))
            order = _order(num_data, shuffle, seed, epoch, dev)
            epoch_loss = 0.0
            for index, low in enumerate(range(0, num_data, batch_size)):
                high = min(low + batch_size, num_data)
                rows = slice(low, high) if order is None else order[low:high]
                batch = _batch(args, kwargs, fixed, rows)
                if transform is not None:
                    batch = _transform(batch, transform, data, fixed)
                where = f"step {result.steps + 1} (epoch {epoch}, batch {index + 1}/{per_epoch})"
                guard.reset()
                try:
                    value = svi.step(*batch[0], **batch[1])
                except (ValueError, RuntimeError) as err:
                    # Validation (on by default) raises on the first NaN it
                    # meets; find out where it came from.
                    culprits = _safe_report(model, guide, batch)
                    if not culprits:
                        raise
                    raise TrainingError(
                        _nonfinite_message(where, None, culprits, path, updated=False)
                    ) from err
                if isinstance(value, tuple):
                    raise TypeError(
                        "fit needs a loss that returns one number; this one returned "
                        f"{len(value)} (a ReweightedWakeSleep-style loss): call SVI.step directly"
                    )
                value = float(value)
                if not math.isfinite(value) or guard.bad:
                    # SVI zeroes the gradients after the step: the guard saw them.
                    culprits = _safe_report(model, guide, batch) + [
                        f"parameter {name!r}: gradient has non-finite entries" for name in guard.bad
                    ]
                    raise TrainingError(
                        _nonfinite_message(where, value, culprits, path, updated=guard.stepped)
                    )
                per_point = value / (high - low)
                result.losses.append(per_point)
                result.steps += 1
                epoch_loss += value
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{per_point:.4g}", refresh=False)
            result.epoch_losses.append(epoch_loss / num_data)
            if kl_every and (epoch + 1) % kl_every == 0:
                kl = _site_kl_bits(model, guide, *batch, _KL_PARTICLES, high - low)
                result.kl_bits.append(kl)
                result.kl_epochs.append(epoch)
            result.epochs = epoch + 1
            if path is not None:
                _write_checkpoint(
                    path, optim, result, seed, batch_size, num_data, _modules(model, guide)
                )
            if callback is not None and callback(epoch, result):
                result.stopped_early = True
                break
    finally:
        bar.close()
    return result


# ---------------------------------------------------------------------------
# Options and data


def _check_options(
    epochs: Any,
    batch_size: Any,
    kl_every: Any,
    num_particles: Any,
    loss: Any,
    seed: Any,
    resume: bool,
    checkpoint: Any,
) -> None:
    for name, value, least in (
        ("epochs", epochs, 0),
        ("batch_size", batch_size, 1),
        ("kl_every", kl_every, 0),
        ("num_particles", num_particles, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if loss is not None and num_particles != 1:
        raise ValueError(
            "num_particles configures the default loss only; with loss= given, set it there "
            "(e.g. Trace_ELBO(num_particles=...))"
        )
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH: the file to resume from")


def _prepare_data(
    data: Any, device: str | torch.device | None
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], int, torch.device]:
    """Split ``data`` into positional and keyword tensors, check their lengths
    and put them on one device."""
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
                raise TypeError(f"the keys of a dict of data must be argument names, got {key!r}")
    else:
        raise TypeError(
            "data must be a tensor, a tuple/list of tensors (positional arguments) or a dict "
            f"of tensors (keyword arguments), got {type(data).__name__}"
        )
    if not named:
        raise TrainingError(f"data is an empty {type(data).__name__}: there is nothing to train on")
    for label, value in named:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{label} must be a tensor batched along dimension 0, got {type(value).__name__}"
                " (pass fixed, non-batched arguments with model_kwargs=)"
            )
        if value.dim() == 0:
            raise TrainingError(
                f"{label} is a 0-dimensional tensor; data must be batched along dimension 0 "
                "(pass fixed arguments with model_kwargs=)"
            )
    lengths = {label: int(value.shape[0]) for label, value in named}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{label} has {n}" for label, n in lengths.items())
        raise TrainingError(
            f"the data arguments must have the same length along dimension 0: {listed}"
        )
    num_data = next(iter(lengths.values()))
    if num_data == 0:
        raise TrainingError("data is empty (length 0 along dimension 0): nothing to train on")
    if device is None:
        devices = {value.device for _, value in named}
        if len(devices) > 1:
            on = ", ".join(f"{label} on {value.device}" for label, value in named)
            raise TrainingError(f"the data tensors are on different devices ({on}); pass device=")
        dev = named[0][1].device
    else:
        dev = torch.device(device)
    moved = [(label, value.to(dev)) for label, value in named]
    if positional:
        return tuple(v for _, v in moved), {}, num_data, dev
    return (), dict(zip(data.keys(), (v for _, v in moved), strict=True)), num_data, dev


def _move_modules(model: Any, guide: Any, device: torch.device) -> None:
    for owner in (getattr(model, "__self__", None), guide, getattr(guide, "__self__", None)):
        if isinstance(owner, torch.nn.Module):
            owner.to(device)


def _batch(
    args: tuple[torch.Tensor, ...],
    kwargs: dict[str, torch.Tensor],
    fixed: dict[str, Any],
    rows: slice | torch.Tensor,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return tuple(a[rows] for a in args), {**{k: v[rows] for k, v in kwargs.items()}, **fixed}


def _transform(
    batch: tuple[tuple[Any, ...], dict[str, Any]],
    transform: Callable[[Any], Any],
    data: Any,
    fixed: dict[str, Any],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Apply ``transform`` to a minibatch shaped like ``data``."""
    args, kwargs = batch
    if isinstance(data, torch.Tensor):
        out = transform(args[0])
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"transform must return a tensor for tensor data, got {type(out)}")
        return (out,), kwargs
    if isinstance(data, tuple | list):
        out = transform(tuple(args))
        if not isinstance(out, tuple | list) or len(out) != len(args):
            raise TypeError(f"transform must return a tuple of {len(args)} tensors, got {out!r}")
        return tuple(out), kwargs
    batched = {k: v for k, v in kwargs.items() if k not in fixed}
    out = transform(batched)
    if not isinstance(out, Mapping) or set(out) != set(batched):
        raise TypeError(f"transform must return a dict with keys {sorted(batched)}")
    return args, {**dict(out), **fixed}


def _derive(seed: int, epoch: int, stream: int) -> int:
    """A 32-bit seed that depends on ``(seed, epoch, stream)`` only."""
    return int(np.random.SeedSequence([int(seed), epoch, stream]).generate_state(1)[0])


def _order(
    num_data: int, shuffle: bool, seed: int | None, epoch: int, device: torch.device
) -> torch.Tensor | None:
    if not shuffle:
        return None
    if seed is None:
        return torch.randperm(num_data, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(_derive(seed, epoch, _PERMUTATION))
    return torch.randperm(num_data, generator=generator, device=device)


# ---------------------------------------------------------------------------
# Non-finite values


class _FiniteGradGuard(PyroOptim):
    """Steps the wrapped optimizer only when every gradient is finite, and
    records (in ``bad``) the parameters whose gradient is not."""

    def __init__(self, inner: PyroOptim) -> None:  # PyroOptim.__init__ is not needed
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.bad: list[str] = []
        self.stepped = False

    def __call__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = list(params)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            store = pyro.get_param_store()
            self.bad = sorted(
                str(store.param_name(p))
                for p in params
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())
            )
            return
        self.inner(params, *args, **kwargs)
        self.stepped = True

    def get_state(self) -> dict[str, Any]:
        return self.inner.get_state()

    def set_state(self, state_dict: dict[str, Any]) -> None:
        self.inner.set_state(state_dict)


def _safe_report(
    model: Callable[..., Any], guide: Callable[..., Any], batch: tuple[tuple[Any, ...], dict]
) -> list[str]:
    try:
        return _nonfinite_report(model, guide, *batch)
    except Exception:  # the report is best effort: the original error is what matters
        return []


def _nonfinite_message(
    where: str, value: float | None, culprits: list[str], path: Path | None, *, updated: bool
) -> str:
    if value is None:
        what = "raised on a non-finite value"
    elif math.isfinite(value):
        what = f"gave non-finite gradients (loss {value:.6g})"
    else:
        what = f"gave a loss of {value}"
    lines = [
        f"training {what} at {where}; "
        + (
            "the parameters were updated before the check."
            if updated
            else "no parameter was updated by this step."
        )
    ]
    if culprits:
        lines.append("Non-finite on this minibatch:")
        lines += [f"  - {line}" for line in culprits]
    else:
        lines.append(
            "Re-run on this minibatch, every site and parameter is finite: the non-finite "
            "value came from an unlucky random draw or from inside the loss."
        )
    fix = "Lower the learning rate (e.g. optim=pyro.optim.Adam({'lr': 1e-4}))"
    if path is not None:
        fix += f", or resume from the last checkpoint (fit(..., checkpoint={str(path)!r}, "
        fix += "resume=True))"
    else:
        fix += ", and pass checkpoint= to be able to resume from the last good epoch"
    lines.append(fix + "; check the data for NaN and scales for zeros.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Checkpoints


def _register_params(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> tuple[set[str], set[str]]:
    """Run guide and replayed model once; the param-store names each uses."""
    try:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    except (ValueError, RuntimeError) as err:
        culprits = _safe_report(model, guide, (args, kwargs))
        if not culprits:
            raise
        where = "the first minibatch, before training"
        raise TrainingError(_nonfinite_message(where, None, culprits, None, updated=False)) from err
    guide_names = {n for n, s in guide_trace.nodes.items() if s["type"] == "param"}
    model_names = {n for n, s in model_trace.nodes.items() if s["type"] == "param"}
    return guide_names, model_names - guide_names


def _modules(model: Callable, guide: Callable) -> dict[str, torch.nn.Module]:
    """The torch modules whose buffers a checkpoint keeps (running statistics
    such as NaMIGuide's per-parent normalizers live outside the param store)."""
    modules = {}
    owner = getattr(model, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        modules["model"] = owner
    if isinstance(guide, torch.nn.Module):
        modules["guide"] = guide
    return modules


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach().clone() for name, b in module.named_buffers()}


def _restore_buffers(state: dict[str, Any], modules: dict[str, torch.nn.Module]) -> None:
    for role, buffers in state.get("buffers", {}).items():
        module = modules.get(role)
        if module is None:
            continue
        own = dict(module.named_buffers())
        if set(own) != set(buffers):
            raise TrainingError(
                f"the checkpoint's {role} buffers {sorted(buffers)} do not match this {role}'s "
                f"{sorted(own)}; it was written for another {role}"
            )
        module.load_state_dict(buffers, strict=False)


def _write_checkpoint(
    path: Path,
    optim: PyroOptim,
    result: FitResult,
    seed: int | None,
    batch_size: int,
    n: int,
    modules: dict[str, torch.nn.Module] | None = None,
) -> None:
    state = {
        "buffers": {role: _buffers(m) for role, m in (modules or {}).items()},
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "param_store": pyro.get_param_store().get_state(),
        "optim": optim.get_state(),
        "epoch": result.epochs,
        "step": result.steps,
        "history": result._history(),
        "seed": seed,
        "batch_size": batch_size,
        "num_data": n,
    }
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # a crash mid-write never leaves a broken checkpoint


def _read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:
        raise TrainingError(
            f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err}); it is not a "
            "file written by pgmdl.infer.fit(checkpoint=...)"
        ) from err
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise TrainingError(
            f"{str(path)!r} is not a pgmdl checkpoint (not written by "
            "pgmdl.infer.fit(checkpoint=...)); delete it or pass another path"
        )
    return state


def _restore(
    state: dict[str, Any],
    path: Path | None,
    optim: PyroOptim,
    result: FitResult,
    guide_names: set[str],
    model_names: set[str],
) -> None:
    saved = state["param_store"]["params"]
    for role, names in (("guide", guide_names), ("model", model_names)):
        missing = sorted(names - set(saved))
        if missing:
            raise TrainingError(
                f"checkpoint {str(path)!r} lacks parameters of the {role}: {missing} (it has "
                f"{sorted(saved)}); it was written for another {role}, or the {role}'s name "
                "changed"
            )
    store = pyro.get_param_store()
    live = dict(store.named_parameters())
    new: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, value in saved.items():
            target = live.get(name)
            if target is None:
                new[name] = value
                continue
            if target.shape != value.shape:
                raise TrainingError(
                    f"checkpoint {str(path)!r} has parameter {name!r} of shape "
                    f"{tuple(value.shape)}, but it has shape {tuple(target.shape)} here"
                )
            # In place: modules registered with pyro.module keep using their
            # own tensors (set_state would swap in new ones they never see).
            target.copy_(value.to(device=target.device, dtype=target.dtype))
    if new:
        constraints = state["param_store"]["constraints"]
        store.set_state({"params": new, "constraints": {n: constraints[n] for n in new}})
    optim_state = state["optim"]
    optim.set_state(
        optim_state if isinstance(optim, PartitionedOptim) else merge_optim_state(optim_state)
    )
    history = state["history"]
    result.losses = list(history["losses"])
    result.epoch_losses = list(history["epoch_losses"])
    result.kl_bits = [dict(kl) for kl in history["kl_bits"]]
    result.kl_epochs = list(history["kl_epochs"])
    result.steps = int(history["steps"])
    result.epochs = int(history["epochs"])
