"""Which part of a model argument a value reads: argument views.

Users slice their data inside the model: ``obs=x.reshape(-1, 784)``,
``obs=mini_batch[:, t - 1, :]``, ``obs=data[:, 0]`` with ``scale=data[:, 1]``.
Provenance per whole argument cannot tell the observed column from the
column that scales it, so every tensor argument is tagged with an
:class:`ArgumentRef` that also carries its *derivation*: the chain of view
operations (indexing, ``select``, ``narrow``, ``unbind``, ``reshape``,
``transpose``, ``squeeze``, dtype casts, device moves...) that took the
argument to the value, as :class:`ViewOp` records.

Two things follow from a derivation:

* the **region** of the argument a value reads (:meth:`ArgumentRef.region`):
  the derivation replayed on ``arange(numel).reshape(shape)``, so that two
  reads of the same argument are related exactly when their regions
  overlap;
* a **replay** (:meth:`ArgumentRef.replay`): the same operations applied to
  the argument of another call, which is how an amortized guide reads an
  observed value that is a view of an argument, with a new batch size.

A ref is *exact* while the value is the derivation applied to the argument
and nothing else; any other operation (arithmetic, reductions, indexing by a
sampled value) makes it inexact: the value is then some function of the
region, which still places edges, but cannot be replayed.

Plate subsample indices (``with pyro.plate("docs", n, subsample_size=b) as
ind: ... data[:, ind]``) are tagged :class:`PlateIndex`; a view that indexes
with them replays as "all members" (the guide subsamples with its own plate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch

#: marker, in a recorded view's arguments, of the tensor being viewed
SELF = object()


@dataclass(frozen=True)
class PlateIndex:
    """Provenance tag of a plate's subsample indices (``with pyro.plate(...) as ind``)."""

    plate: str


@dataclass(frozen=True, eq=False)
class ViewOp:
    """One recorded view operation: ``func(SELF, *args, **kwargs)[output]``.

    Attributes:
        func: the torch function or ``Tensor`` method.
        args: its arguments, :data:`SELF` standing for the viewed tensor.
        kwargs: its keywords.
        output: the position in the result for ops returning several views
            (``unbind``, ``split``, ``chunk``), else ``None``.
        changes_region: False for value-preserving ops (dtype casts, device
            moves, ``contiguous``, ``clone``), skipped when computing regions.
        in_shape, out_shape: shapes seen in the trace (for messages, and to
            let a reshape that keeps the leading dimension follow a new batch
            size).
        plate_slots: ``{position in args: plate}`` for index tensors that are
            a plate's subsample indices.
    """

    func: Callable[..., Any]
    args: tuple
    kwargs: dict = field(default_factory=dict)
    output: int | None = None
    changes_region: bool = True
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    plate_slots: tuple[tuple[tuple[int, ...], str], ...] = ()

    def apply(self, value: torch.Tensor, *, for_region: bool = False) -> torch.Tensor:
        """This operation on ``value`` (plate indices read as "all members"
        unless ``for_region``, where the traced indices are used)."""
        args = tuple(value if a is SELF else a for a in self.args)
        if for_region:  # on the CPU index tensor: index tensors recorded on a GPU follow
            args = tuple(_to_device(a, value.device) for a in args)
        if self.plate_slots and not for_region:
            if getattr(self.func, "__name__", "") == "index_select":
                return value  # all members: the guide subsamples with its own plate
            args = _all_members(args, self.plate_slots)
        if (
            _is_reshape(self.func)
            and self.out_shape
            and value.dim() == len(self.in_shape) > 0
            and self.out_shape[0] == self.in_shape[0]
            and value.shape[0] != self.in_shape[0]
        ):
            # ``x.view(x.size(0), -1)``: the leading (batch) size follows the call's
            args = (value, (value.shape[0], *self.out_shape[1:]))
        result = self.func(*args, **self.kwargs)
        if self.output is not None:
            result = result[self.output]
        return result

    def describe(self) -> str:
        """The operation as code, e.g. ``[:, 0]`` or ``.reshape(-1, 784)``."""
        name = getattr(self.func, "__name__", str(self.func))
        rest = [a for a in self.args if a is not SELF]
        if name == "__getitem__":
            (key,) = rest or (None,)
            return f"[{_key(key)}]"
        if name == "__get__":  # a property such as .T or .mT
            return f".{getattr(getattr(self.func, '__self__', None), '__name__', 'T')}"
        keywords = [f"{k}={_arg(v)}" for k, v in self.kwargs.items()]
        text = ", ".join([_arg(a) for a in rest] + keywords)
        suffix = f"[{self.output}]" if self.output is not None else ""
        return f".{name}({text}){suffix}"


@dataclass(frozen=True, eq=False)
class ArgumentRef:
    """Provenance tag of (a view of) a model argument.

    Args:
        path: the argument's path (``"x"``, ``"batch[0]"``, ``"data['x']"``,
            ``"cfg.x"``).
        shape: the argument's shape in this run.
        derivation: the views that took the argument to the tagged value.
        exact: the tagged value IS ``derivation(argument)``; False once any
            other operation touched it (it is then a function of
            :meth:`region`).
    """

    path: str
    shape: tuple[int, ...] = ()
    derivation: tuple[ViewOp, ...] = ()
    exact: bool = True

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ArgumentRef)
            and self.path == other.path
            and self.exact == other.exact
            and self.derivation == other.derivation
        )

    def __hash__(self) -> int:
        return hash((self.path, self.exact, self.derivation))

    def then(self, op: ViewOp) -> ArgumentRef:
        """This ref followed by one more view."""
        return replace(self, derivation=self.derivation + (op,))

    def inexact(self) -> ArgumentRef:
        """The same region, read through some other operation."""
        return self if not self.exact else replace(self, exact=False)

    @property
    def is_whole(self) -> bool:
        """The ref reads the whole argument as it is (no view taken)."""
        return not any(op.changes_region for op in self.derivation)

    @cached_property
    def region(self) -> torch.Tensor:
        """Boolean mask over the argument's flattened elements this ref reads."""
        numel = 1
        for s in self.shape:
            numel *= s
        mask = torch.zeros(numel, dtype=torch.bool)
        if self.is_whole:
            mask[:] = True
            return mask
        index = torch.arange(numel).reshape(self.shape)
        for op in self.derivation:
            if op.changes_region:
                index = op.apply(index, for_region=True)
        mask[index.reshape(-1)] = True
        return mask

    def overlaps(self, other: ArgumentRef) -> bool:
        """Whether the two refs of one argument read a common element."""
        if self.path != other.path:
            return False
        if self.shape != other.shape:  # different runs or shapes: be conservative
            return True
        return bool((self.region & other.region).any())

    def replay(self, value: torch.Tensor) -> torch.Tensor:
        """The derivation applied to ``value`` (the argument of another call)."""
        for op in self.derivation:
            value = op.apply(value)
        return value

    def describe(self) -> str:
        """The read as code: ``data[:, 0]``, ``x.reshape(-1, 784)``, or
        ``a function of data[:, 1]`` when inexact."""
        text = self.path + "".join(op.describe() for op in self.derivation)
        return text if self.exact else f"a value computed from {text}"


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if type(value) is tuple:
        return tuple(_to_device(v, device) for v in value)
    return value


def _is_reshape(func: Any) -> bool:
    return getattr(func, "__name__", "") in ("reshape", "view")


def _all_members(args: tuple, slots: tuple[tuple[tuple[int, ...], str], ...]) -> tuple:
    """Replace plate-index tensors at ``slots`` (``(position,)`` in ``args``, or
    ``(position, k)`` inside a tuple key) by ``slice(None)``: all members."""
    out = list(args)
    for slot, _plate in slots:
        if len(slot) == 1:
            out[slot[0]] = slice(None)
        else:
            key = list(out[slot[0]])
            key[slot[1]] = slice(None)
            out[slot[0]] = tuple(key)
    return tuple(out)


def _key(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return ", ".join(_arg(p) for p in parts)


def _arg(value: Any) -> str:
    if isinstance(value, slice):
        start = "" if value.start is None else str(value.start)
        stop = "" if value.stop is None else str(value.stop)
        step = "" if value.step is None else f":{value.step}"
        return f"{start}:{stop}{step}"
    if value is Ellipsis:
        return "..."
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"<tensor {tuple(value.shape)}>"
    return repr(value)


# --------------------------------------------------------------------------- recording views


def _tensor_methods(*names: str) -> list[Any]:
    return [getattr(torch.Tensor, n) for n in names if hasattr(torch.Tensor, n)]


def _torch_functions(*names: str) -> list[Any]:
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


_VIEW_NAMES = (
    "select",
    "narrow",
    "unbind",
    "split",
    "chunk",
    "tensor_split",
    "reshape",
    "flatten",
    "unflatten",
    "transpose",
    "swapaxes",
    "swapdims",
    "permute",
    "t",
    "movedim",
    "moveaxis",
    "squeeze",
    "unsqueeze",
    "index_select",
    "diagonal",
)

#: operations that select or rearrange elements: recorded in a derivation
REGION_VIEWS: frozenset = frozenset(
    _tensor_methods("__getitem__", "view", "expand", *_VIEW_NAMES)
    + _torch_functions(*_VIEW_NAMES)
    + [torch.Tensor.T.__get__, torch.Tensor.mT.__get__]
)

#: operations that keep every element where it is (casts, device moves, copies)
VALUE_PRESERVING: frozenset = frozenset(
    _tensor_methods(
        "float",
        "double",
        "half",
        "bfloat16",
        "long",
        "int",
        "short",
        "bool",
        "byte",
        "char",
        "to",
        "type",
        "cpu",
        "cuda",
        "contiguous",
        "clone",
        "detach",
    )
)

VIEW_FUNCS: frozenset = REGION_VIEWS | VALUE_PRESERVING


def record_view(
    func: Any,
    args: tuple,
    kwargs: dict,
    result: Any,
    plate_slots: tuple[tuple[tuple[int, ...], str], ...] = (),
) -> ViewOp | list[ViewOp]:
    """The :class:`ViewOp` (one per output for ``unbind``/``split``) that took
    ``args[0]`` to ``result``. ``args`` and ``kwargs`` are plain (provenance
    removed); ``plate_slots`` locates plate subsample indices among ``args``
    (see :attr:`ViewOp.plate_slots`)."""
    recorded = (SELF,) + tuple(args[1:])
    in_shape = tuple(args[0].shape)
    common = dict(
        func=func,
        args=recorded,
        kwargs=kwargs,
        changes_region=func in REGION_VIEWS,
        in_shape=in_shape,
        plate_slots=plate_slots,
    )
    if isinstance(result, tuple | list):
        return [ViewOp(output=i, out_shape=tuple(r.shape), **common) for i, r in enumerate(result)]
    return ViewOp(out_shape=tuple(result.shape), **common)
