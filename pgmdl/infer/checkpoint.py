"""The checkpoint file of :func:`pgmdl.fit`: written at the end of every
epoch, read to resume.

A checkpoint holds the param store, the optimizer state(s), the buffers of
the model's and the guide's torch modules (running statistics such as
NaMIGuide's per-parent normalizers live outside the param store), the
epoch, the step and the history so far. It is written to a ``.partial``
file first and renamed, so a crash mid-write never leaves a broken
checkpoint. It is unpickled when read: only resume from files you trust.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim

from pgmdl.errors import TrainingError
from pgmdl.infer.optim import PartitionedOptim, merge_optim_state

FORMAT = "pgmdl.infer.fit checkpoint"
VERSION = 1


def modules_of(model: Callable, guide: Callable) -> dict[str, torch.nn.Module]:
    """The torch modules whose buffers a checkpoint keeps, by role: the module
    owning ``model`` (a bound method) and ``guide`` (when it is a module)."""
    modules = {}
    owner = getattr(model, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        modules["model"] = owner
    if isinstance(guide, torch.nn.Module):
        modules["guide"] = guide
    return modules


def write_checkpoint(
    path: Path,
    optim: PyroOptim,
    history: dict[str, Any],
    seed: int | None,
    batch_size: int,
    num_data: int,
    modules: dict[str, torch.nn.Module] | None = None,
) -> None:
    """Write the checkpoint of a run to ``path`` (``history``: the run's
    losses, KL bits, epochs and steps so far)."""
    state = {
        "buffers": {role: _buffers(m) for role, m in (modules or {}).items()},
        "format": FORMAT,
        "version": VERSION,
        "param_store": pyro.get_param_store().get_state(),
        "optim": optim.get_state(),
        "epoch": history["epochs"],
        "step": history["steps"],
        "history": history,
        "seed": seed,
        "batch_size": batch_size,
        "num_data": num_data,
    }
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # a crash mid-write never leaves a broken checkpoint


def read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The state saved in ``path``, its tensors on ``device``.

    Raises:
        TrainingError: the file cannot be read or was not written by
            :func:`pgmdl.fit`.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:
        raise TrainingError(
            f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err}); it is not a "
            "file written by pgmdl.infer.fit(checkpoint=...)"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingError(
            f"{str(path)!r} is not a pgmdl checkpoint (not written by "
            "pgmdl.infer.fit(checkpoint=...)); delete it or pass another path"
        )
    return state


def restore_checkpoint(
    state: dict[str, Any],
    path: Path | None,
    optim: PyroOptim,
    guide_names: set[str],
    model_names: set[str],
) -> dict[str, Any]:
    """Put the saved parameters and optimizer state back; return the saved history.

    Parameters already in the param store are overwritten in place (modules
    registered with ``pyro.module`` keep their own tensors); the others are
    added.

    Raises:
        TrainingError: the checkpoint lacks a parameter of the guide or the
            model, or holds one of another shape.
    """
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
    return state["history"]


def restore_buffers(state: dict[str, Any], modules: dict[str, torch.nn.Module]) -> None:
    """Load the saved buffers into the modules of the same role.

    Raises:
        TrainingError: a module's buffers are not the saved ones (another module).
    """
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


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach().clone() for name, b in module.named_buffers()}
