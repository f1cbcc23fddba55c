"""Two optimizers in one: a slow one for the model p_theta, a fast one for the guide q_phi.

In amortized variational inference the model parameters ``theta`` and the
guide parameters ``phi`` climb the same ELBO but play different roles: the
guide has to track the posterior of the *current* model, so it should move
quicker than the model it approximates. Thesis §4.2.4 puts it this way:
"choosing an optimizer with more inertia and a smaller stepsize for p_theta
permits q_phi to converge quicker". :class:`PartitionedOptim` makes that a
one-liner: it wraps two :class:`pyro.optim.PyroOptim` objects and sends each
parameter to exactly one of them::

    optim = PartitionedOptim(
        pyro.optim.Adam({"lr": 1e-4, "betas": (0.95, 0.999)}),  # model: slow, more inertia
        pyro.optim.Adam({"lr": 1e-3}),  # guide: fast
        guide_params=lambda name: name.startswith("AutoNormal."),
    )
    svi = pyro.infer.SVI(model, guide, optim, pyro.infer.Trace_ELBO())

A parameter is a guide parameter when its param-store name
(``pyro.get_param_store().param_name(p)``) satisfies ``guide_params``;
:meth:`PartitionedOptim.for_guide` builds that rule from a guide: the names
the guide registers when traced once (``pyro.param``, ``pyro.module``,
:class:`~pyro.nn.PyroModule` attributes) plus, for a
:class:`~pyro.nn.PyroModule` guide such as any
:class:`~pyro.infer.autoguide.AutoGuide`, every name under its prefix
(``AutoNormal.locs.z``), so parameters it creates later are covered too. A
parameter shared by model and guide is the guide's.

``PartitionedOptim`` is a :class:`~pyro.optim.PyroOptim` (SVI checks for
one), with the same ``get_state`` / ``set_state`` / ``save`` / ``load``; the
state is the pair of the two optimizers' states, so checkpoints restore both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from pyro.optim import PyroOptim

from pgmdl.errors import ArgumentError, ArgumentTypeError

_STATE_MARK = "pgmdl.partitioned"


def guide_param_names(guide: Callable[..., Any], *args: Any, **kwargs: Any) -> set[str]:
    """The param-store names of the parameters ``guide(*args, **kwargs)`` uses.

    The guide is run once under :func:`pyro.poutine.trace`; this creates
    the parameters it has not created yet (an AutoGuide's first call), as
    the first SVI step would.
    """
    trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return {name for name, site in trace.nodes.items() if site["type"] == "param"}


class PartitionedOptim(PyroOptim):
    """Route guide parameters to one optimizer and all others to another.

    Args:
        model_optim: the optimizer of the model parameters (every parameter
            that is not the guide's), e.g. ``pyro.optim.Adam({"lr": 1e-4})``.
        guide_optim: the optimizer of the guide parameters.
        guide_params: which parameters belong to the guide: a predicate on
            param-store names, or a collection of names.

    Raises:
        ArgumentTypeError: an optimizer is not a :class:`pyro.optim.PyroOptim`,
            or ``guide_params`` is neither callable nor a collection of names.
        ArgumentError: the two optimizers are the same object.
    """

    def __init__(
        self,
        model_optim: PyroOptim,
        guide_optim: PyroOptim,
        guide_params: Callable[[str], bool] | Iterable[str],
    ) -> None:
        # PyroOptim.__init__ is not called: this class holds no torch
        # optimizer of its own, it delegates to the two it wraps.
        for label, value in (("model_optim", model_optim), ("guide_optim", guide_optim)):
            if not isinstance(value, PyroOptim):
                raise ArgumentTypeError(
                    f"{label} must be a pyro.optim optimizer such as "
                    f"pyro.optim.Adam({{'lr': 1e-3}}), got {type(value).__name__}"
                )
        if model_optim is guide_optim:
            raise ArgumentError(
                "model_optim and guide_optim are the same object; pass two optimizers, "
                "e.g. pyro.optim.Adam({'lr': 1e-4}) and pyro.optim.Adam({'lr': 1e-3})"
            )
        if callable(guide_params):
            self._is_guide: Callable[[str], bool] = guide_params
        elif isinstance(guide_params, Iterable) and not isinstance(guide_params, str):
            names = frozenset(guide_params)
            self._is_guide = names.__contains__
        else:
            raise ArgumentTypeError(
                "guide_params must be a predicate on param-store names or a collection of "
                f"names, got {type(guide_params).__name__}"
            )
        self.model_optim = model_optim
        self.guide_optim = guide_optim

    @classmethod
    def for_guide(
        cls,
        model_optim: PyroOptim,
        guide_optim: PyroOptim,
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> PartitionedOptim:
        """Build the partition from a guide, traced once on ``*args, **kwargs``.

        The guide's parameters are those it registers when run (see
        :func:`guide_param_names`) and, for a :class:`~pyro.nn.PyroModule`
        guide (every AutoGuide), every name under its prefix.

        Example::

            optim = PartitionedOptim.for_guide(
                pyro.optim.Adam({"lr": 1e-4}), pyro.optim.Adam({"lr": 1e-3}), guide, x
            )
        """
        return cls(model_optim, guide_optim, guide_predicate(guide, *args, **kwargs))

    def is_guide_param(self, name: str | None) -> bool:
        """Whether the parameter named ``name`` in the param store is the guide's."""
        return name is not None and bool(self._is_guide(name))

    @property
    def optim_objs(self) -> dict[torch.Tensor, Any]:  # type: ignore[override]
        """The per-parameter torch optimizers of both wrapped optimizers."""
        return {**self.model_optim.optim_objs, **self.guide_optim.optim_objs}

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """Take one step: guide parameters with ``guide_optim``, the rest with
        ``model_optim``."""
        store = pyro.get_param_store()
        model_side: list[torch.Tensor] = []
        guide_side: list[torch.Tensor] = []
        for p in params:
            (guide_side if self.is_guide_param(store.param_name(p)) else model_side).append(p)
        if model_side:
            self.model_optim(model_side, *args, **kwargs)
        if guide_side:
            self.guide_optim(guide_side, *args, **kwargs)

    def get_state(self) -> dict[str, Any]:
        """Both optimizers' states: ``{"model": ..., "guide": ...}`` (by param name)."""
        return {
            _STATE_MARK: True,
            "model": self.model_optim.get_state(),
            "guide": self.guide_optim.get_state(),
        }

    def set_state(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state`, or split a plain
        :class:`~pyro.optim.PyroOptim` state (param name to state) by owner.

        As with any PyroOptim, the state of a parameter is applied when the
        parameter is first stepped.
        """
        if state_dict.get(_STATE_MARK):
            self.model_optim.set_state(state_dict["model"])
            self.guide_optim.set_state(state_dict["guide"])
            return
        model_state = {k: v for k, v in state_dict.items() if not self.is_guide_param(k)}
        guide_state = {k: v for k, v in state_dict.items() if self.is_guide_param(k)}
        self.model_optim.set_state(model_state)
        self.guide_optim.set_state(guide_state)

    def __repr__(self) -> str:
        return (
            f"PartitionedOptim(model_optim={_optim_name(self.model_optim)}, "
            f"guide_optim={_optim_name(self.guide_optim)})"
        )


def guide_predicate(guide: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[str], bool]:
    """The rule "this param-store name is the guide's" for ``guide``.

    Names registered by ``guide(*args, **kwargs)`` when traced once, and for
    a :class:`~pyro.nn.PyroModule` guide every name under its prefix.
    """
    names = frozenset(guide_param_names(guide, *args, **kwargs))
    prefix = pyro_prefix(guide)

    def is_guide(name: str) -> bool:
        return name in names or (prefix is not None and name.startswith(prefix))

    return is_guide


def merge_optim_state(state: dict[str, Any]) -> dict[str, Any]:
    """A :class:`PartitionedOptim` state flattened to a plain PyroOptim state
    (param name to state); a plain state is returned as is."""
    if state.get(_STATE_MARK):
        return {**state["model"], **state["guide"]}
    return state


def pyro_prefix(guide: Any) -> str | None:
    """The param-store prefix under which a :class:`~pyro.nn.PyroModule` guide
    registers every parameter (``"AutoNormal."``), or ``None``.

    Only a PyroModule *guide*: a bound method ``vae.guide`` of a PyroModule
    shares its prefix with ``vae.model``, so its names come from a trace.
    """
    if isinstance(guide, PyroModule) and guide._pyro_name:
        return guide._pyro_name + "."
    return None


def _optim_name(optim: PyroOptim) -> str:
    constructor = getattr(optim, "pt_optim_constructor", None)
    name = getattr(constructor, "__name__", type(optim).__name__)
    args = getattr(optim, "pt_optim_args", None)
    return f"{name}({args})" if isinstance(args, dict) else name
