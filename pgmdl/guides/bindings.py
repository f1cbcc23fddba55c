"""Reading observed values and inputs from a model's arguments at call time.

An amortized guide conditions on the data the model is called with. pgmdl's
graph compiler records, for every observed site whose ``obs=`` value *is* a
model argument, the argument's path (``SiteInfo.bound_argument``), and for
every other argument that feeds a distribution, its path in
``SiteInfo.inputs``. Paths are spelled the way the compiler tags arguments:

* ``"x"``: the argument named ``x`` (positional or keyword);
* ``"batch[0]"``: an element of a tuple or list argument (or of ``*args``);
* ``"data['x0']"``: an entry of a dict argument;
* ``"x0"``: an entry of ``**kwargs``; ``"args[0]"``: a positional argument of a
  callable without a signature.

:class:`ArgumentReader` turns each path into a getter once, when the guide is
set up, and reads it on every call with one ``inspect.Signature.bind``.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from pgmdl.errors import GuideError

_STEP = re.compile(r"\[([^\[\]]+)\]")
_HEAD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*")


def parse_path(path: str) -> tuple[str, tuple[int | str, ...]]:
    """Split ``"data['x0'][1]"`` into ``("data", ("x0", 1))``."""
    head = _HEAD.match(path)
    if head is None:
        raise GuideError(f"cannot read argument path {path!r}")
    rest = path[head.end() :]
    steps: list[int | str] = []
    for match in _STEP.finditer(rest):
        steps.append(ast.literal_eval(match.group(1)))
    return head.group(0), tuple(steps)


class ArgumentReader:
    """Bind a model's ``*args, **kwargs`` and read argument paths from them.

    Args:
        model: the model (its signature decides how arguments bind).
        overrides: ``{name: fn}`` where ``fn(arguments)`` computes a value
            from the dict of the model's bound arguments (used for observed
            sites whose value is computed from the arguments).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        overrides: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        try:
            self.signature: inspect.Signature | None = inspect.signature(model)
        except (TypeError, ValueError):
            self.signature = None
        self.overrides = dict(overrides or {})
        self.var_keyword = None
        if self.signature is not None:
            for name, p in self.signature.parameters.items():
                if p.kind is inspect.Parameter.VAR_KEYWORD:
                    self.var_keyword = name

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """The model's arguments by name, defaults included."""
        if self.signature is None:
            arguments = {f"args[{i}]": a for i, a in enumerate(args)}
            arguments.update(kwargs)
            return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as err:
            raise GuideError(
                f"the guide was called with arguments the model does not accept "
                f"(signature {self.signature}): {err}. Call the guide with the model's arguments."
            ) from err
        bound.apply_defaults()
        return dict(bound.arguments)

    def read(self, arguments: dict[str, Any], path: str) -> Any:
        """The value at ``path`` (``None`` when an argument along it is ``None``)."""
        if path in self.overrides:
            return self.overrides[path](arguments)
        if path in arguments:
            return arguments[path]
        if self.var_keyword is not None and path in arguments.get(self.var_keyword, {}):
            return arguments[self.var_keyword][path]
        head, steps = parse_path(path)
        if head not in arguments:
            raise KeyError(path)
        value = arguments[head]
        for step in steps:
            if value is None:
                return None
            value = value[step]
        return value
