"""Model specs: ``FILE.py:NAME`` or ``package.module:NAME`` to a model and its
example arguments.

The ``pgmdl`` command (:mod:`pgmdl.cli`), the demo (:mod:`pgmdl.demo`) and
the tests name models this way. ``NAME`` defaults to ``model``. A model
needs example arguments to be run; the convention is a function in the same
module::

    def example_args() -> tuple[tuple, dict]:
        return (torch.zeros(5, 64),), {}

which returns the positional and keyword arguments ``NAME`` is called with.
A module without ``example_args`` has its model called with no argument.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pgmdl.errors import SpecError

__all__ = ["EXAMPLE_ARGS", "LoadedModel", "load_model"]

EXAMPLE_ARGS = "example_args"
"""Name of the module-level function that supplies a model's example arguments."""


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from a ``FILE.py:NAME`` spec, with its example arguments."""

    model: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    module: ModuleType
    name: str


def load_model(spec: str) -> LoadedModel:
    """Load ``FILE.py:NAME`` or ``package.module:NAME`` and its example arguments.

    Args:
        spec: ``FILE.py:NAME`` (a path, imported as ``python FILE.py`` would:
            the file's folder and the working directory importable while it
            runs) or ``package.module:NAME``; ``NAME`` defaults to ``model``.

    Returns:
        the :class:`LoadedModel`: the callable, its example arguments, its module.

    Raises:
        SpecError: the file or module cannot be found or imported, ``NAME`` is
            missing or not callable, or ``example_args`` fails or returns
            something other than ``(tuple, dict)``.
    """
    target, _, name = spec.rpartition(":") if ":" in spec else (spec, "", "model")
    name = name or "model"
    module = _import(target)
    model = getattr(module, name, None)
    if model is None:
        candidates = sorted(
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and not inspect.isclass(v)
            and getattr(v, "__module__", module.__name__) == module.__name__
        )
        raise SpecError(
            f"{target} has no attribute {name!r}; callables defined there: {candidates}. "
            f"Name the model as {target}:NAME."
        )
    if not callable(model):
        raise SpecError(f"{target}:{name} is a {type(model).__name__}, not a callable Pyro model.")
    args, kwargs = _example_args(module, target)
    return LoadedModel(model, args, kwargs, module, name)


def _import(target: str) -> ModuleType:
    is_path = target.endswith(".py") or "/" in target or "\\" in target
    if is_path:
        path = Path(target)
        if not path.is_file():
            raise SpecError(f"no such file: {target!r} (expected FILE.py:NAME)")
        module_name = f"_pgmdl_cli_{path.stem}_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise SpecError(f"cannot load {target!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        # As `python FILE.py` would: the file's folder and the working directory
        # are importable while the module runs.
        with _extra_sys_path([str(path.resolve().parent), str(Path.cwd())]):
            try:
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except Exception as err:
                sys.modules.pop(module_name, None)
                raise SpecError(f"could not load {target}: {type(err).__name__}: {err}") from err
        return module
    try:
        with _extra_sys_path([str(Path.cwd())]):
            return importlib.import_module(target)
    except Exception as err:
        raise SpecError(f"could not import {target!r}: {type(err).__name__}: {err}") from err


@contextmanager
def _extra_sys_path(paths: list[str]) -> Iterator[None]:
    added = [p for p in paths if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def _example_args(module: ModuleType, target: str) -> tuple[tuple, dict[str, Any]]:
    supplier = getattr(module, EXAMPLE_ARGS, None)
    if supplier is None:
        return (), {}
    if not callable(supplier):
        raise SpecError(f"{target}: {EXAMPLE_ARGS} must be a function returning (args, kwargs)")
    try:
        result = supplier()
    except Exception as err:
        raise SpecError(f"{target}: {EXAMPLE_ARGS}() raised {type(err).__name__}: {err}") from err
    if (
        not isinstance(result, tuple)
        or len(result) != 2
        or not isinstance(result[0], tuple)
        or not isinstance(result[1], dict)
    ):
        raise SpecError(
            f"{target}: {EXAMPLE_ARGS}() must return (args_tuple, kwargs_dict), "
            f"got {type(result).__name__}"
        )
    return result
