"""Training steps that never apply a non-finite gradient, and the message
that says what turned NaN.

:class:`FiniteGradGuard` wraps the optimizer SVI steps with: when a gradient
has a NaN or infinite entry it skips the step and records the parameters at
fault. :func:`pgmdl.fit` then raises a
:class:`~pgmdl.errors.TrainingError` whose message
(:func:`nonfinite_message`) lists what :func:`~pgmdl.infer.nonfinite_report`
finds non-finite on the minibatch and says how to go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim

from pgmdl.infer.data import Minibatch
from pgmdl.infer.diagnostics import nonfinite_report


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one host sync)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class FiniteGradGuard(PyroOptim):
    """Steps the wrapped optimizer only when every gradient is finite, and
    records (in ``bad``) the parameters whose gradient is not.

    Attributes:
        inner: the wrapped optimizer.
        bad: param-store names of the parameters whose gradient had a
            non-finite entry at the last call (the step was skipped).
        stepped: whether the last call stepped the inner optimizer.
    """

    def __init__(self, inner: PyroOptim) -> None:  # PyroOptim.__init__ is not needed
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        """Forget the last call (before each SVI step)."""
        self.bad: list[str] = []
        self.stepped = False

    def __call__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = list(params)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not all_finite(grads):
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


def safe_report(
    model: Callable[..., Any], guide: Callable[..., Any], batch: Minibatch
) -> list[str]:
    """:func:`~pgmdl.infer.nonfinite_report` on a minibatch, or ``[]`` when it
    raises: the report is best effort, the original error is what matters."""
    try:
        args, kwargs = batch
        return nonfinite_report(model, guide, model_args=args, model_kwargs=kwargs)
    except Exception:
        return []


def nonfinite_message(
    where: str, value: float | None, culprits: list[str], path: Path | None, *, updated: bool
) -> str:
    """The message of a non-finite loss or gradient at ``where``.

    Args:
        where: the step, for example ``"step 3 (epoch 0, batch 3/4)"``.
        value: the loss, or ``None`` when the step raised.
        culprits: what is not finite (:func:`safe_report`).
        path: the checkpoint file to resume from, if any.
        updated: whether the parameters were updated before the check.
    """
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
