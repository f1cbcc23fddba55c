"""``pgmdl.fit(..., strategy="ddp")``: data-parallel SVI on PyTorch Lightning.

:func:`fit_distributed` builds a :class:`~pgmdl.infer.svi_module.SVIModule` (set-up,
parameters, shards and scaling: see there) and a
:class:`lightning.pytorch.Trainer`, trains, and hands the trained state back
to the caller's model, guide and param store.

Launching. Called from a script started by ``torchrun``, SLURM or any
launcher that sets the ranks in the environment, every process runs ``fit``
and Lightning joins them (``num_nodes`` machines of ``devices`` processes).
Called plainly (a script, a notebook, a test), ``fit`` starts the workers
itself: on CPUs by forking the calling process (``start_method="fork"``: the
model and guide need not be picklable); on GPUs by spawning (CUDA cannot be
forked: the model and guide must be picklable, i.e. defined at module level).
Either way the state of worker 0 is loaded back into the caller's objects
when training ends.

Checkpoints: with ``checkpoint=PATH`` Lightning writes a checkpoint to PATH
after every epoch (parameters, buffers, optimizer state, loop state, loss
history); ``resume=True`` continues from it (``Trainer.fit(ckpt_path=...)``).
With a ``seed`` the resumed run takes the same steps as the uninterrupted one:
permutations and random streams depend on ``(seed, epoch, worker)`` only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pgmdl.errors import ArgumentError
from pgmdl.infer.training import FitResult

#: environment variables a launcher (torchrun, SLURM, Lightning's own) sets
_LAUNCHED = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID")

STRATEGIES = ("ddp", "ddp_fork", "ddp_spawn", "ddp_notebook")


def fit_distributed(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    strategy: Any,
    devices: int | str,
    num_nodes: int,
    accelerator: str,
    epochs: int,
    checkpoint: str | os.PathLike[str] | None,
    resume: bool,
    progress: bool,
    **options: Any,
) -> FitResult:
    """Train like :func:`pgmdl.fit`, data-parallel through Lightning (see the module
    docstring); ``options`` are :class:`~pgmdl.infer.svi_module.SVIModule`'s."""
    try:
        import lightning.pytorch as pl
    except ImportError as err:  # pragma: no cover - the extra is installed by make test
        raise ImportError(
            "strategy= trains through PyTorch Lightning: pip install 'pgmdl[distributed]'"
        ) from err
    from pgmdl.infer.svi_module import SVIModule

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ArgumentError(f"epochs must be an integer >= 0, got {epochs!r}")
    if resume and checkpoint is None:
        raise ArgumentError("resume=True needs checkpoint=PATH: the file to resume from")
    _check_devices(devices, num_nodes, accelerator)
    module = SVIModule(model, guide, data, **options)
    path = Path(checkpoint) if checkpoint is not None else None
    module.checkpoint_path = path  # written at the end of every epoch
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=_strategy(strategy, accelerator, module.find_unused_parameters),
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    ckpt = str(path) if resume and path is not None and path.exists() else None
    with warnings.catch_warnings():
        # one index tensor per step, made in-process: loader workers would only add cost
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(module, ckpt_path=ckpt)
    result = module.result()
    result.device = module.data_device
    return result


def _check_devices(devices: Any, num_nodes: Any, accelerator: str) -> None:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ArgumentError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise ArgumentError(f"accelerator must be 'cpu', 'gpu' or 'auto', got {accelerator!r}")
    if not isinstance(devices, int) or isinstance(devices, bool):
        return  # "auto", a list of GPU ids: Lightning checks them
    if devices < 1:
        raise ArgumentError(f"devices must be an integer >= 1, got {devices!r}")
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    available = torch.cuda.device_count() if gpu else (os.cpu_count() or 1)
    kind = "GPU(s)" if gpu else "CPU core(s)"
    if gpu and available == 0:
        raise ArgumentError(
            f"accelerator={accelerator!r} asks for GPUs, but torch sees none: use accelerator='cpu'"
        )
    if devices > available and not any(v in os.environ for v in _LAUNCHED):
        raise ArgumentError(
            f"devices={devices} asks for {devices} worker processes on this machine, which "
            f"has {available} {kind}: use devices <= {available} (one process per "
            f"{'GPU' if gpu else 'core'}; more would only wait on each other)"
        )


def _strategy(strategy: Any, accelerator: str, find_unused: bool) -> Any:
    """The Lightning strategy ``strategy`` names, launched as the module docstring says."""
    from lightning.pytorch.strategies import DDPStrategy, Strategy

    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in STRATEGIES:
        raise ArgumentError(
            f"strategy must be one of {', '.join(map(repr, STRATEGIES))} or a Lightning "
            f"Strategy, got {strategy!r}"
        )
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if strategy == "ddp" and any(v in os.environ for v in _LAUNCHED):
        start = "popen"  # the launcher started every process: join them
    elif strategy == "ddp":
        start = "spawn" if gpu else "fork"
    else:
        start = {"ddp_fork": "fork", "ddp_notebook": "fork", "ddp_spawn": "spawn"}[strategy]
    # buffers: SVIModule averages them after every step (no broadcast needed before it)
    return DDPStrategy(
        start_method=start, find_unused_parameters=find_unused, broadcast_buffers=False
    )
