"""How pgmdl functions receive a model's arguments: one convention.

A function that has options of its own takes the arguments the model is
called with as two keywords, as :func:`pyro.render_model` does::

    compile_model(model, model_args=(x,), model_kwargs={"y": y}, num_traces=1)
    log_likelihood(model, guide, data, model_kwargs={"beta": 0.5})

so that a model's keyword can never be mistaken for an option. The one
exception is the option-less shorthand :func:`pgmdl.compile`,
``compile(model, *args, **kwargs)``, read as
``poutine.trace(model).get_trace(*args, **kwargs)`` is, and equal to
``compile_model(model, model_args=args, model_kwargs=kwargs)``.

:func:`model_arguments` checks the two keywords and reads a deprecated
positional spelling (``compile_model(model, args, kwargs)``), warning with a
``FutureWarning`` that names the new one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from pgmdl.errors import ArgumentError, ArgumentTypeError

__all__ = ["model_arguments"]


def model_arguments(
    function: str,
    model_args: Any = (),
    model_kwargs: Any = None,
    *,
    legacy: tuple[Any, Any] | None = None,
    old_spelling: str = "",
    new_spelling: str = "",
    stacklevel: int = 3,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The model's positional and keyword arguments, checked.

    Args:
        function: the public name of the calling function, for messages
            (``"compile_model"``).
        model_args: a tuple of the model's positional arguments.
        model_kwargs: a mapping of its keyword arguments, or ``None``.
        legacy: ``(args, kwargs)`` the caller received in a deprecated
            spelling, or ``None``; when given, a ``FutureWarning`` says that
            ``old_spelling`` is deprecated and shows ``new_spelling``.
        old_spelling, new_spelling: the two spellings, as code.
        stacklevel: where the warning points (3: the caller's caller).

    Returns:
        ``(args, kwargs)``: a tuple and a new dict.

    Raises:
        ArgumentTypeError: ``model_args`` is not a tuple, ``model_kwargs`` not
            a mapping with string keys.
        ArgumentError: both spellings were used.
    """
    if legacy is not None:
        if model_args != () or model_kwargs is not None:
            raise ArgumentError(
                f"{function}: the model's arguments are given twice, in the old spelling "
                f"{old_spelling} and as model_args=/model_kwargs=; pass them once, as keywords"
            )
        warnings.warn(
            f"{old_spelling} is deprecated and will stop working in the next release: write "
            f"{new_spelling} (the model's arguments as keywords, as pyro.render_model takes "
            "them).",
            FutureWarning,
            stacklevel=stacklevel,
        )
        model_args, model_kwargs = legacy
    if not isinstance(model_args, tuple):
        raise ArgumentTypeError(
            f"{function}: model_args must be a tuple of the model's positional arguments, got "
            f"{type(model_args).__name__} (write model_args=(x,) for one argument)"
        )
    if model_kwargs is None:
        return model_args, {}
    if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
        raise ArgumentTypeError(
            f"{function}: model_kwargs must be a mapping of the model's keyword arguments "
            f"(names to values), got {type(model_kwargs).__name__}"
        )
    return model_args, dict(model_kwargs)
