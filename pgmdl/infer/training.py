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

from pgmdl.arguments import model_arguments
from pgmdl.errors import ArgumentError, ArgumentTypeError, TrainingError
from pgmdl.infer.checkpoint import (
    modules_of,
    read_checkpoint,
    restore_buffers,
    restore_checkpoint,
    write_checkpoint,
)
from pgmdl.infer.data import (
    PYRO,
    SETUP,
    Minibatch,
    derive_seed,
    epoch_order,
    minibatch,
    move_modules,
    prepare_data,
    transform_minibatch,
)
from pgmdl.infer.diagnostics import site_kl_bits
from pgmdl.infer.fast_svi import FastSVI
from pgmdl.infer.guard import FiniteGradGuard, nonfinite_message, safe_report
from pgmdl.infer.optim import PartitionedOptim, pyro_prefix

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
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    kl_every: int = 1,
    seed: int | None = None,
    callback: Callable[[int, FitResult], bool | None] | None = None,
    transform: Callable[[Any], Any] | None = None,
    strategy: Any = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    fast: bool = False,
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
        model_args, model_kwargs: fixed arguments passed to model and guide
            on every call (not batched), as in :func:`pgmdl.log_likelihood`:
            ``model_args`` after the data's positional arguments.
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
        strategy: ``None`` (default): this process trains, as described above,
            and Lightning is not imported. ``"ddp"`` (or ``"ddp_spawn"``,
            ``"ddp_fork"``, a Lightning ``Strategy``): data-parallel training
            through PyTorch Lightning (:mod:`pgmdl.infer.distributed`,
            :class:`~pgmdl.infer.svi_module.SVIModule`): each of ``devices`` workers
            on each of ``num_nodes`` machines takes its own shard of every
            epoch, the data plate is scaled to the whole data set (the loss per
            data point estimates the ELBO of all the data), gradients are
            averaged, and the trained parameters, buffers and history come back
            into the caller's model, guide and param store. ``batch_size`` is
            per worker; ``checkpoint`` is a Lightning checkpoint; ``device`` is
            where the set-up run happens; ``guide_optim`` must use the same
            optimizer class as ``optim``.
        devices: worker processes per machine (GPUs, or CPU processes).
        num_nodes: machines.
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"``.
        fast: step with :class:`~pgmdl.infer.FastSVI` instead of
            :class:`pyro.infer.SVI`: the SVI step of each minibatch shape is
            traced once into one graph and replayed (the same losses,
            gradients and parameters as SVI, to the bit, with less Python per
            step; see :mod:`pgmdl.infer.fast_svi`). Where it cannot follow the
            program (another loss, a non-reparameterized guide site, a tensor
            value read by Python, ...) it warns once
            (:class:`~pgmdl.infer.FastSVIWarning`) and steps with SVI.
            Single-process training only (not with ``strategy``).

    Returns:
        the :class:`FitResult`: losses per step and per epoch, KL bits.

    Raises:
        TrainingError: the loss or a gradient became NaN or infinite (the
            message names the sites and parameters at fault; no parameter is
            updated by that step); the checkpoint is not a ``fit``
            checkpoint or lacks parameters of the guide or model.
        ArgumentTypeError: ``data`` is not tensors, ``optim`` is not a
            PyroOptim, ``loss`` returns several numbers.
        ArgumentError: ``data`` is empty or its arguments have different
            lengths; ``epochs < 0``, ``batch_size < 1``, ``kl_every < 0``,
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
    if strategy is not None:
        if fast:
            raise ArgumentError(
                "fit: fast=True steps one process with FastSVI; it does not combine with "
                f"strategy={strategy!r} (data-parallel training through Lightning): drop one"
            )
        from pgmdl.infer.distributed import fit_distributed  # imports Lightning

        return fit_distributed(
            model,
            guide,
            data,
            strategy=strategy,
            devices=devices,
            num_nodes=num_nodes,
            accelerator=accelerator,
            epochs=epochs,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
            batch_size=batch_size,
            optim=optim,
            guide_optim=guide_optim,
            loss=loss,
            num_particles=num_particles,
            shuffle=shuffle,
            seed=seed,
            model_args=model_args,
            model_kwargs=model_kwargs,
            kl_every=kl_every,
            transform=transform,
            callback=callback,
            device=device,
        )
    if devices != 1 or num_nodes != 1:
        raise ArgumentError(
            f"devices={devices!r}, num_nodes={num_nodes!r} need a data-parallel strategy: "
            "fit(..., strategy='ddp', devices=N)"
        )
    args, kwargs, num_data, dev = prepare_data(data, device)
    if device is not None:
        move_modules(model, guide, dev)
    fixed_args, fixed = _fixed_arguments(model_args, model_kwargs, kwargs)
    optim = _check_optims(optim, guide_optim)
    if loss is None:
        loss = Trace_ELBO(num_particles=num_particles, vectorize_particles=False)

    result = FitResult(device=dev)
    path = Path(checkpoint) if checkpoint is not None else None
    saved = read_checkpoint(path, dev) if resume and path is not None and path.exists() else None
    first = minibatch(args, kwargs, fixed, slice(0, min(batch_size, num_data)), fixed_args)
    if seed is not None:
        pyro.set_rng_seed(derive_seed(seed, 0, SETUP))
    if guide_optim is not None or saved is not None:
        optim = _set_up_parameters(model, guide, optim, guide_optim, saved, path, result, first)
    guard = FiniteGradGuard(optim)
    epoch_loop = _Epochs(
        model=model,
        guide=guide,
        svi=(
            FastSVI(model, guide, guard, loss, expected_signatures=1 + bool(num_data % batch_size))
            if fast
            else SVI(model, guide, guard, loss)
        ),
        guard=guard,
        data=data,
        args=args,
        kwargs=kwargs,
        fixed=fixed,
        fixed_args=fixed_args,
        num_data=num_data,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        device=dev,
        transform=transform,
        path=path,
        result=result,
    )
    bar = tqdm(
        total=max(epochs - result.epochs, 0) * epoch_loop.per_epoch,
        disable=not progress,
        desc="fit",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(result.epochs, epochs):
            last, size = epoch_loop.run(epoch, bar)
            if kl_every and (epoch + 1) % kl_every == 0:
                kl = site_kl_bits(
                    model,
                    guide,
                    model_args=last[0],
                    model_kwargs=last[1],
                    num_particles=_KL_PARTICLES,
                    num_data=size,
                )
                result.kl_bits.append(kl)
                result.kl_epochs.append(epoch)
            result.epochs = epoch + 1
            if path is not None:
                write_checkpoint(
                    path,
                    optim,
                    result._history(),
                    seed,
                    batch_size,
                    num_data,
                    modules_of(model, guide),
                )
            if callback is not None and callback(epoch, result):
                result.stopped_early = True
                break
    finally:
        bar.close()
    return result


# ---------------------------------------------------------------------------
# Options


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
            raise ArgumentError(f"{name} must be an integer >= {least}, got {value!r}")
    if loss is not None and num_particles != 1:
        raise ArgumentError(
            "num_particles configures the default loss only; with loss= given, set it there "
            "(e.g. Trace_ELBO(num_particles=...))"
        )
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ArgumentError(f"seed must be a non-negative integer or None, got {seed!r}")
    if resume and checkpoint is None:
        raise ArgumentError("resume=True needs checkpoint=PATH: the file to resume from")


def _fixed_arguments(
    model_args: tuple, model_kwargs: Mapping[str, Any] | None, data_kwargs: dict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The fixed arguments; the keywords must not name a data argument."""
    fixed_args, fixed = model_arguments("fit", model_args, model_kwargs)
    clash = sorted(set(fixed) & set(data_kwargs))
    if clash:
        raise ArgumentError(f"model_kwargs and data both give {clash}; pass each argument once")
    return fixed_args, fixed


def _check_optims(optim: PyroOptim | None, guide_optim: PyroOptim | None) -> PyroOptim:
    """The model's optimizer (Adam, lr 1e-3, by default), both checked."""
    if optim is None:
        optim = pyro.optim.Adam({"lr": 1e-3})
    for label, value in (("optim", optim), ("guide_optim", guide_optim)):
        if value is not None and not isinstance(value, PyroOptim):
            raise ArgumentTypeError(
                f"{label} must be a pyro.optim optimizer such as pyro.optim.Adam({{'lr': 1e-3}}) "
                f"(a torch.optim class wrapped by Pyro), got {type(value).__name__}"
            )
    return optim


# ---------------------------------------------------------------------------
# Parameters: partition between model and guide, and resuming


def _set_up_parameters(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    optim: PyroOptim,
    guide_optim: PyroOptim | None,
    saved: dict[str, Any] | None,
    path: Path | None,
    result: FitResult,
    first: Minibatch,
) -> PyroOptim:
    """Create every parameter now (an AutoGuide creates its own on first
    call), so that the partition and the checkpoint see them all; give the
    guide its optimizer; restore the checkpoint. Returns the optimizer SVI
    steps with."""
    guide_names, model_names = _register_params(model, guide, *first)
    if guide_optim is not None:
        prefix = pyro_prefix(guide)
        optim = PartitionedOptim(
            optim,
            guide_optim,
            lambda name: name in guide_names or (prefix is not None and name.startswith(prefix)),
        )
    if saved is not None:
        _load_history(result, restore_checkpoint(saved, path, optim, guide_names, model_names))
        restore_buffers(saved, modules_of(model, guide))
    return optim


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
        culprits = safe_report(model, guide, (args, kwargs))
        if not culprits:
            raise
        where = "the first minibatch, before training"
        raise TrainingError(nonfinite_message(where, None, culprits, None, updated=False)) from err
    guide_names = {n for n, s in guide_trace.nodes.items() if s["type"] == "param"}
    model_names = {n for n, s in model_trace.nodes.items() if s["type"] == "param"}
    return guide_names, model_names - guide_names


def _load_history(result: FitResult, history: dict[str, Any]) -> None:
    result.losses = list(history["losses"])
    result.epoch_losses = list(history["epoch_losses"])
    result.kl_bits = [dict(kl) for kl in history["kl_bits"]]
    result.kl_epochs = list(history["kl_epochs"])
    result.steps = int(history["steps"])
    result.epochs = int(history["epochs"])


# ---------------------------------------------------------------------------
# The loop


@dataclass
class _Epochs:
    """One epoch of SVI steps over the data, in minibatches."""

    model: Callable[..., Any]
    guide: Callable[..., Any]
    svi: SVI
    guard: FiniteGradGuard
    data: Any
    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, torch.Tensor]
    fixed: dict[str, Any]
    fixed_args: tuple[Any, ...]
    num_data: int
    batch_size: int
    shuffle: bool
    seed: int | None
    device: torch.device
    transform: Callable[[Any], Any] | None
    path: Path | None
    result: FitResult

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.num_data / self.batch_size)

    def run(self, epoch: int, bar: Any) -> tuple[Minibatch, int]:
        """Train one epoch; record its losses. Returns its last minibatch and
        that minibatch's length (the KL bits are estimated on it)."""
        result = self.result
        if self.seed is not None:
            pyro.set_rng_seed(derive_seed(self.seed, epoch, PYRO))
        order = epoch_order(self.num_data, self.shuffle, self.seed, epoch, self.device)
        epoch_loss = 0.0
        for index, low in enumerate(range(0, self.num_data, self.batch_size)):
            high = min(low + self.batch_size, self.num_data)
            rows = slice(low, high) if order is None else order[low:high]
            batch = minibatch(self.args, self.kwargs, self.fixed, rows, self.fixed_args)
            if self.transform is not None:
                batch = transform_minibatch(batch, self.transform, self.data, self.fixed)
            where = f"step {result.steps + 1} (epoch {epoch}, batch {index + 1}/{self.per_epoch})"
            value = self.step(batch, where)
            per_point = value / (high - low)
            result.losses.append(per_point)
            result.steps += 1
            epoch_loss += value
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{per_point:.4g}", refresh=False)
        result.epoch_losses.append(epoch_loss / self.num_data)
        return batch, high - low

    def step(self, batch: Minibatch, where: str) -> float:
        """One SVI step; its loss. Raises :class:`TrainingError` naming what
        is not finite when the loss or a gradient is not."""
        self.guard.reset()
        try:
            value = self.svi.step(*batch[0], **batch[1])
        except (ValueError, RuntimeError) as err:
            # Validation (on by default) raises on the first NaN it meets;
            # find out where it came from.
            culprits = safe_report(self.model, self.guide, batch)
            if not culprits:
                raise
            raise TrainingError(
                nonfinite_message(where, None, culprits, self.path, updated=False)
            ) from err
        if isinstance(value, tuple):
            raise ArgumentTypeError(
                "fit needs a loss that returns one number; this one returned "
                f"{len(value)} (a ReweightedWakeSleep-style loss): call SVI.step directly"
            )
        value = float(value)
        if not math.isfinite(value) or self.guard.bad:
            # SVI zeroes the gradients after the step: the guard saw them.
            culprits = safe_report(self.model, self.guide, batch) + [
                f"parameter {name!r}: gradient has non-finite entries" for name in self.guard.bad
            ]
            raise TrainingError(
                nonfinite_message(where, value, culprits, self.path, updated=self.guard.stepped)
            )
        return value
