r"""A Pyro model and guide as a PyTorch Lightning module: data-parallel SVI
(public as ``pgmdl.lightning.SVIModule``).

:class:`SVIModule` is what ``pgmdl.fit(..., strategy="ddp")`` trains
(:mod:`pgmdl.infer.distributed`); it is public so that a user can drive it
with their own :class:`lightning.pytorch.Trainer`, loggers and callbacks::

    import lightning.pytorch as pl
    module = pgmdl.lightning.SVIModule(model, guide, x, batch_size=256, seed=0)
    trainer = pl.Trainer(strategy="ddp", devices=2, max_epochs=10,
                         use_distributed_sampler=False)
    trainer.fit(module)
    module.result()          # a pgmdl.FitResult: losses, KL bits per site

What Pyro's own example (``examples/svi_lightning.py``) leaves to the user,
the module does when it is made, before any worker starts:

* **Set-up.** The guide and the model replayed on it run once on the first
  minibatch, so lazy guides (:class:`~pgmdl.NaMIGuide`, AutoGuides) and
  lazily created ``pyro.param`` values exist before the optimizer and the
  data-parallel wrapper are made.
* **Every parameter is the module's.** Modules registered with
  ``pyro.module``, ``PyroModule`` models and guides, and loose ``pyro.param``
  values of the param store become parameters of this module (the very
  tensors the param store holds, which stay in it), so the data-parallel
  wrapper broadcasts them and averages their gradients; module buffers
  (the guide's running normalizers) are averaged over the workers after
  every step, so they are identical everywhere and follow all the data. A tensor
  that receives a gradient but is in no module and not in the param store
  is refused, named by its shape: no worker would agree on it.
* **Shards and scale** (:mod:`pgmdl.infer.sharding`): each worker sees its
  own shard of every epoch, and the data plate is scaled by :math:`N / B_w`,
  so the loss is an estimate of the ELBO of the whole data set.
* **Random streams** differ per worker (with ``seed``, Pyro's RNGs of
  epoch :math:`e` on worker :math:`w` depend on ``(seed, e, w)``; worker 0's
  are those of the single-process :func:`pgmdl.fit`).
* **The caller's objects.** The module's state holds the parameters, the
  buffers and the loss history (``get_extra_state``); Lightning returns the
  state of worker 0 to the calling process, into the caller's model, guide
  and param store.
* **Non-finite values** are found collectively: every step, one all-reduce
  tells every worker whether some worker's loss or gradient is NaN or
  infinite, and all raise :class:`~pgmdl.TrainingError` before the update
  (a worker that raised alone would leave the others waiting).

Importing this module imports Lightning (``pip install pgmdl[distributed]``);
:func:`pgmdl.fit` without ``strategy`` never does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.optim import PyroOptim
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pgmdl.errors import ArgumentError, ArgumentTypeError, TrainingError
from pgmdl.infer.data import (
    PYRO,
    SETUP,
    Minibatch,
    derive_seed,
    minibatch,
    prepare_data,
    transform_minibatch,
)
from pgmdl.infer.diagnostics import site_kl_bits
from pgmdl.infer.sharding import (
    DataPlateScale,
    batches_per_epoch,
    data_plates,
    minibatch_length,
    shard_batches,
)
from pgmdl.infer.training import FitResult, _check_optims, _fixed_arguments, _load_history

__all__ = ["SVIModule"]

_KL_PARTICLES = 8


class SVIModule(pl.LightningModule):
    """A model and guide trained by SVI as a :class:`lightning.pytorch.LightningModule`.

    Args:
        model, guide: the Pyro model and guide (as for :func:`pgmdl.fit`).
        data: a tensor, tuple of tensors or dict of tensors batched along
            dimension 0 (as for :func:`pgmdl.fit`).
        batch_size: the minibatch length per worker.
        optim: a :class:`pyro.optim.PyroOptim` (default Adam, lr 1e-3); its
            torch optimizer class and arguments build the Lightning optimizer.
        guide_optim: other arguments for the guide's parameters (the same
            optimizer class: one optimizer, two parameter groups).
        loss: a Pyro ELBO with ``differentiable_loss`` (``Trace_ELBO``,
            ``TraceMeanField_ELBO``, ``TraceEnum_ELBO``...); default
            ``Trace_ELBO(num_particles=num_particles)``.
        num_particles: particles of the default loss.
        shuffle: a new permutation every epoch.
        seed: with a seed, permutations and random streams depend on it, the
            epoch and the worker only; without, workers still share each
            epoch's permutation (a seed drawn here) and draw their own streams.
        model_args, model_kwargs: fixed arguments after the data (as for :func:`pgmdl.fit`).
        kl_every: per-site KL bits on worker 0's last minibatch every
            ``kl_every`` epochs (0: never).
        transform: applied to every minibatch (as for :func:`pgmdl.fit`).
        callback: ``callback(epoch, result)`` on worker 0 after each epoch;
            ``True`` stops training on every worker.
        device: where the set-up run happens (default: the data's device);
            Lightning then puts the module on each worker's device.

    Raises:
        ArgumentError: see :func:`pgmdl.fit`; also a loss without
            ``differentiable_loss``, an optimizer with gradient clipping or a
            learning-rate scheduler, a guide optimizer of another class, a model
            that subsamples its data plate itself or has none, a tensor that
            gets gradients but is in no module and not in the param store.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        data: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
        *,
        batch_size: int = 128,
        optim: PyroOptim | None = None,
        guide_optim: PyroOptim | None = None,
        loss: Any = None,
        num_particles: int = 1,
        shuffle: bool = True,
        seed: int | None = None,
        model_args: tuple = (),
        model_kwargs: Mapping[str, Any] | None = None,
        kl_every: int = 1,
        transform: Callable[[Any], Any] | None = None,
        callback: Callable[[int, FitResult], bool | None] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ArgumentError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        args, kwargs, num_data, data_device = prepare_data(data, device)
        fixed_args, fixed = _fixed_arguments(model_args, model_kwargs, kwargs)
        self._model, self._guide = model, guide
        self._data, self._args, self._kwargs = data, args, kwargs
        self._fixed, self._fixed_args = fixed, fixed_args
        self.num_data, self.batch_size, self.shuffle = num_data, batch_size, shuffle
        self.kl_every, self.transform, self.callback = kl_every, transform, callback
        self.user_seed = seed
        # the permutation every worker must share: a seed drawn now when none is given
        self.shared_seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        self.data_device = data_device
        self.elbo = _check_loss(loss, num_particles)
        self.pyro_optim = _check_optims(optim, guide_optim)
        self.guide_optim = guide_optim
        _check_clipping(self.pyro_optim, guide_optim)

        first = minibatch(args, kwargs, fixed, slice(0, min(batch_size, num_data)), fixed_args)
        second = (
            minibatch(args, kwargs, fixed, slice(0, min(batch_size, num_data) - 1), fixed_args)
            if min(batch_size, num_data) > 1
            else None
        )
        if seed is not None:
            pyro.set_rng_seed(derive_seed(seed, 0, SETUP))
        self.plates = data_plates(model, first, second)
        owners, guide_names, loose, self.find_unused_parameters = _set_up(
            model, guide, self.elbo, first, self.plates, num_data
        )
        # the caller's modules and loose parameters, as submodules: Lightning moves,
        # saves and restores them, and the data-parallel wrapper synchronizes them
        self.pyro_modules = nn.ModuleList(owners)
        self.loose_params = nn.ParameterList(list(loose.values()))
        self.loose_names = list(loose)
        self.guide_param_names = guide_names
        self.history = FitResult(device=data_device)
        self._epoch_losses: list[torch.Tensor] = []
        self._last: tuple[Minibatch, int] | None = None
        #: a file :func:`pgmdl.fit` has Lightning write a checkpoint to after every epoch
        self.checkpoint_path: Path | None = None

    # ------------------------------------------------------------------ data

    def train_dataloader(self) -> DataLoader:
        """This worker's minibatches (index tensors) of the current epoch."""
        return DataLoader(_ShardBatches(self), batch_size=None, shuffle=False)

    def _shard(self, epoch: int) -> list[torch.Tensor]:
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        return shard_batches(
            self.num_data, self.batch_size, rank, world, epoch, self.shared_seed, self.shuffle
        )

    def batches_per_epoch(self) -> int:
        """Minibatches each worker takes per epoch."""
        world = self._trainer.world_size if self._trainer is not None else 1
        return batches_per_epoch(self.num_data, self.batch_size, world)

    # ------------------------------------------------------------------ training

    def on_fit_start(self) -> None:
        """On each worker: the data on the worker's device; random streams of its own."""
        device = self.device
        if device != self.data_device:
            self._args = tuple(a.to(device) for a in self._args)
            self._kwargs = {k: v.to(device) for k, v in self._kwargs.items()}
        if self.user_seed is None:
            pyro.set_rng_seed(int.from_bytes(os.urandom(4), "little"))

    def on_train_epoch_start(self) -> None:
        self._epoch_losses = []
        self._seeded_epoch: int | None = None

    def _seed_epoch(self) -> None:
        """Pyro's RNGs at the epoch's first step: ``(seed, epoch, worker)`` only. (Not
        in ``on_train_epoch_start``: on resume, Lightning draws from them between that
        hook and the first step.)"""
        epoch = self.current_epoch
        if self.user_seed is not None and getattr(self, "_seeded_epoch", None) != epoch:
            pyro.set_rng_seed(derive_seed(self.user_seed, epoch, PYRO, self.global_rank))
        self._seeded_epoch = epoch

    def training_step(self, rows: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The negative ELBO of this minibatch, its data plate scaled to the whole data."""
        self._seed_epoch()
        rows = rows.to(self._args[0].device if self._args else self.device)
        if not self._args and self._kwargs:
            rows = rows.to(next(iter(self._kwargs.values())).device)
        batch = minibatch(self._args, self._kwargs, self._fixed, rows, self._fixed_args)
        if self.transform is not None:
            batch = transform_minibatch(batch, self.transform, self._data, self._fixed)
        loss = self.loss_of(batch, len(rows))
        self._step_loss = loss.detach()
        self._epoch_losses.append(self._step_loss)
        self._last = (batch, len(rows))
        # for the user's loggers and progress bar: this worker's estimate per data point
        # (Lightning's logging costs ~1 ms a step: skipped when nobody reads it)
        if self._logged():
            self.log("loss", self._step_loss / self.num_data, prog_bar=True, batch_size=len(rows))
        return loss

    def _logged(self) -> bool:
        """Whether a logger or a progress bar reads what :meth:`log` records."""
        trainer = self._trainer
        return trainer is not None and bool(
            trainer.loggers or trainer.progress_bar_callback is not None
        )

    def loss_of(self, batch: Minibatch, size: int) -> torch.Tensor:
        """The differentiable negative ELBO of ``batch`` (``size`` points), scaled
        to the whole data set (:class:`~pgmdl.infer.sharding.DataPlateScale`)."""
        scale = DataPlateScale(self.plates, self.num_data / size)
        return self.elbo.differentiable_loss(
            scale(self._model), scale(self._guide), *batch[0], **batch[1]
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse a step whose loss or gradient is not finite on some worker, on
        every worker at once (one all-reduce of a flag)."""
        bad = [
            name
            for name, param in self._named_parameters()
            if param.grad is not None and not bool(torch.isfinite(param.grad).all())
        ]
        local = float(bool(bad) or not bool(torch.isfinite(self._step_loss)))
        flag = torch.tensor(local, device=self.device)
        flag = self.trainer.strategy.reduce(flag, reduce_op="sum")
        if float(flag) > 0:
            where = f"step {self.history.steps + 1} (epoch {self.current_epoch})"
            named = ", ".join(repr(n) for n in bad[:5]) or "none on this worker"
            raise TrainingError(
                f"at {where} the loss or a gradient is NaN or infinite on some worker "
                f"(loss here {float(self._step_loss):.4g}; parameters with non-finite "
                f"gradients here: {named}); no parameter was updated. Lower the learning "
                "rate, or run the same data with pgmdl.fit without strategy, which names "
                "the sites at fault."
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._average_buffers()
        self.history.losses.append(float(self._step_loss) / self.num_data)
        self.history.steps += 1

    def _average_buffers(self) -> None:
        """Make the buffers identical on every worker after each step: floating ones
        (running normalizers) averaged over the workers, so they follow all the
        data (an exponential moving average of the workers' batch statistics is
        the average of theirs), others taken from worker 0. (The data-parallel
        wrapper's broadcast from worker 0 before each forward would leave them
        apart after the last step, and worker 0's alone would see half the data.)"""
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return
        world = torch.distributed.get_world_size()
        if world == 1:
            return
        floating = [b for b in self.buffers() if b.is_floating_point()]
        others = [b for b in self.buffers() if not b.is_floating_point()]
        if floating:
            flat = torch.cat([b.detach().reshape(-1) for b in floating])
            torch.distributed.all_reduce(flat)
            flat /= world
            offset = 0
            with torch.no_grad():
                for b in floating:
                    b.copy_(flat[offset : offset + b.numel()].view_as(b))
                    offset += b.numel()
        for b in others:
            torch.distributed.broadcast(b, src=0)

    def on_train_epoch_end(self) -> None:
        """The epoch's loss per data point (averaged over the workers), KL bits."""
        local = torch.stack(self._epoch_losses).mean() if self._epoch_losses else None
        if local is None:
            return
        mean = self.trainer.strategy.reduce(local, reduce_op="mean")
        epoch = self.current_epoch
        self.history.epoch_losses.append(float(mean) / self.num_data)
        if self._logged():
            self.log("epoch_loss", mean / self.num_data, sync_dist=True)  # already the mean
        self.history.epochs = epoch + 1
        due = self.kl_every and (epoch + 1) % self.kl_every == 0
        if due and self._last is not None and self.trainer.is_global_zero:
            (args, kwargs), size = self._last
            kl = site_kl_bits(
                self._model,
                self._guide,
                model_args=args,
                model_kwargs=kwargs,
                num_particles=_KL_PARTICLES,
                num_data=size,
            )
            self.history.kl_bits.append(kl)
            self.history.kl_epochs.append(epoch)
        if self.callback is not None:
            stop = bool(self.trainer.is_global_zero and self.callback(epoch, self.history))
            stop = self.trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop:
                self.history.stopped_early = True
                self.trainer.should_stop = True
        if self.checkpoint_path is not None:  # after the history is complete
            self.trainer.save_checkpoint(self.checkpoint_path)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The torch optimizer the Pyro optimizer(s) describe, over every parameter."""
        groups: list[dict[str, Any]] = []
        guide_args = self.guide_optim
        for name, param in self._named_parameters():
            optim = self.pyro_optim
            if guide_args is not None and name in self.guide_param_names:
                optim = guide_args
            args = optim.pt_optim_args
            if callable(args):
                module, _, short = name.rpartition("$$$")
                args = args(module, short) if module else args(name)
            groups.append({"params": [param], **dict(args)})
        return self.pyro_optim.pt_optim_constructor(groups)

    def _named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter once, by its param-store name where it has one."""
        store = pyro.get_param_store()
        names = {id(store._params[n]): n for n in store._params}
        seen: set[int] = set()
        out = []
        for index, param in enumerate(self.parameters()):
            if id(param) in seen:
                continue
            seen.add(id(param))
            out.append((names.get(id(param), f"module parameter {index}"), param))
        return out

    # ------------------------------------------------------------------ state

    def get_extra_state(self) -> dict[str, Any]:
        """The loss history travels with the parameters (checkpoints, and back to
        the calling process)."""
        return {"history": self.history._history(), "stopped": self.history.stopped_early}

    def set_extra_state(self, state: Any) -> None:
        _load_history(self.history, state["history"])
        self.history.stopped_early = bool(state.get("stopped", False))

    def result(self) -> FitResult:
        """What training did, as :func:`pgmdl.fit` reports it."""
        return self.history


class _ShardBatches(Dataset):
    """Map-style view of one worker's minibatches of the current epoch."""

    def __init__(self, module: SVIModule) -> None:
        self.module = module
        self._epoch: int | None = None
        self._batches: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self.module.batches_per_epoch()

    def __getitem__(self, index: int) -> torch.Tensor:
        epoch = self.module.current_epoch if self.module._trainer is not None else 0
        if epoch != self._epoch:
            self._batches, self._epoch = self.module._shard(epoch), epoch
        return self._batches[index]


# ---------------------------------------------------------------------- set-up


def _check_loss(loss: Any, num_particles: int) -> Any:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ArgumentError(f"num_particles must be an integer >= 1, got {num_particles!r}")
    if loss is None:
        return Trace_ELBO(num_particles=num_particles, vectorize_particles=False)
    if num_particles != 1:
        raise ArgumentError(
            "num_particles configures the default loss only; with loss= given, set it there"
        )
    if not callable(getattr(loss, "differentiable_loss", None)):
        raise ArgumentTypeError(
            f"data-parallel training differentiates the loss itself and needs a Pyro ELBO with "
            f"differentiable_loss (Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO); "
            f"{type(loss).__name__} has none: train it with pgmdl.fit without strategy"
        )
    return loss


def _check_clipping(*optims: PyroOptim | None) -> None:
    for optim in optims:
        if optim is None:
            continue
        if getattr(optim, "pt_clip_args", None):
            raise ArgumentError(
                "a Pyro optimizer with clip_args is not supported with strategy=: pass "
                "gradient_clip_val to your own lightning Trainer driving pgmdl.lightning.SVIModule"
            )
        if not isinstance(getattr(optim, "pt_optim_constructor", None), type):
            raise ArgumentError(
                f"{type(optim).__name__} is not a torch optimizer wrapped by pyro.optim (a "
                "learning-rate scheduler?): with strategy=, pass pyro.optim.Adam(...) and "
                "schedule the rate with a Lightning callback"
            )


def _set_up(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    elbo: Any,
    first: Minibatch,
    plates: frozenset[str],
    num_data: int,
) -> tuple[list[nn.Module], set[str], dict[str, nn.Parameter], bool]:
    """Run the loss once on ``first`` (creating every lazy parameter) and
    differentiate it. Returns the modules owning parameters, the guide's
    param-store names, the loose param-store values as ``nn.Parameter`` (put
    back in the store), and whether some parameter got no gradient."""
    args, kwargs = first
    store = pyro.get_param_store()
    scale = DataPlateScale(plates, num_data / minibatch_length(first))
    guide_trace = poutine.trace(scale(guide)).get_trace(*args, **kwargs)
    guide_names = {n for n, s in guide_trace.nodes.items() if s["type"] == "param"}
    elbo.differentiable_loss(scale(model), scale(guide), *args, **kwargs)  # creates them all

    owners: list[nn.Module] = []
    for candidate in (
        model if isinstance(model, nn.Module) else None,
        getattr(model, "__self__", None),
        guide if isinstance(guide, nn.Module) else None,
        getattr(guide, "__self__", None),
    ):
        if isinstance(candidate, nn.Module) and all(candidate is not o for o in owners):
            owners.append(candidate)
    owned = {id(p) for m in owners for p in m.parameters()}
    loose: dict[str, nn.Parameter] = {}
    for name in list(store._params):
        value = store._params[name]
        if id(value) in owned:
            continue
        if not isinstance(value, nn.Parameter):  # the store keeps the same tensor, as a Parameter
            param = nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)
            del store._param_to_name[value]
            store._params[name] = param
            store._param_to_name[param] = name
            value = param
        loose[name] = value
    known = owned | {id(p) for p in loose.values()}
    loss = elbo.differentiable_loss(scale(model), scale(guide), *args, **kwargs)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise ArgumentError(
            "the loss of the first minibatch depends on no parameter: there is nothing to "
            "train (register the model's and guide's modules with pyro.module, or use "
            "pyro.param)"
        )
    strangers = [leaf for leaf in _leaves(loss) if id(leaf) not in known]
    if strangers:
        shapes = ", ".join(str(tuple(leaf.shape)) for leaf in strangers[:5])
        raise ArgumentError(
            f"{len(strangers)} tensor(s) of shape(s) {shapes} get gradients from the loss but "
            "are in no module the model or guide registers and not in Pyro's param store: "
            "data-parallel workers could not keep them in sync (and Pyro's SVI would not "
            "train them). Register them: pyro.module('name', module) for a network, "
            "pyro.param('name', init) for a tensor"
        )
    loss.backward()
    params = [p for m in owners for p in m.parameters()] + list(loose.values())
    unused = any(p.requires_grad and p.grad is None for p in params)
    for p in params:
        p.grad = None
    for p in store._params.values():
        p.grad = None
    return owners, guide_names, loose, unused


def _leaves(loss: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors ``loss`` would send gradients to (its autograd graph's
    ``AccumulateGrad`` nodes)."""
    seen: set[Any] = set()
    leaves: list[torch.Tensor] = []
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return leaves
