"""Reading observed values and inputs from a model's arguments at call time.

An amortized guide conditions on the data the model is called with. pgmdl's
graph compiler records, for every observed site whose ``obs=`` value *is* a
model argument, the argument's path (``SiteInfo.bound_argument``), and for
every other argument that feeds a distribution, its path in
``SiteInfo.inputs``. Paths are spelled the way the compiler tags arguments:

* ``"x"``: the argument named ``x`` (positional or keyword);
* ``"batch[0]"``: an element of a tuple or list argument (or of ``*args``);
* ``"data['x0']"``: an entry of a dict argument;
* ``"cfg.x"``: a field of a dataclass or namespace argument;
* ``"x0"``: an entry of ``**kwargs``; ``"args[0]"``: a positional argument of a
  callable without a signature.

An observed value that is a *view* of an argument (``obs=x.reshape(-1, 784)``,
``obs=data[:, 0]``, ``obs=mini_batch[:, t - 1, :]``) is read by replaying the
recorded view on this call's argument (:func:`view_binding`, from
``SiteInfo.bound_view``), so the batch size may change between calls.

:class:`ArgumentReader` binds the model's arguments with one
``inspect.Signature.bind`` per call and reads paths from them.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pgmdl.errors import GuideError
from pgmdl.graph.tracing import model_signature
from pgmdl.graph.views import ArgumentRef

_STEP = re.compile(r"\[([^\[\]]+)\]|\.([A-Za-z_][A-Za-z_0-9]*)")
_HEAD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*")


class Attribute(str):
    """A path step that reads an attribute (``cfg.x``) rather than an item."""


def parse_path(path: str) -> tuple[str, tuple[int | str, ...]]:
    """Split ``"data['x0'][1].y"`` into ``("data", ("x0", 1, Attribute("y")))``."""
    head = _HEAD.match(path)
    if head is None:
        raise GuideError(f"cannot read argument path {path!r}")
    rest = path[head.end() :]
    steps: list[int | str] = []
    for match in _STEP.finditer(rest):
        if match.group(2) is not None:
            steps.append(Attribute(match.group(2)))
        else:
            steps.append(ast.literal_eval(match.group(1)))
    return head.group(0), tuple(steps)


def view_binding(
    read: Callable[[dict[str, Any], str], Any], site: str, view: ArgumentRef
) -> Callable[[dict[str, Any]], Any]:
    """A binding reading observed site ``site`` as ``view`` of this call's
    argument: ``read(arguments, view.path)`` then the recorded views replayed.

    Example::

        >>> import torch, pyro, pyro.distributions as dist, pgmdl
        >>> def model(data):
        ...     pyro.sample("y", dist.Normal(0.0, data[:, 1]), obs=data[:, 0])
        >>> view = pgmdl.compile(model, torch.ones(4, 2))["y"].bound_view
        >>> bind = view_binding(lambda arguments, path: arguments[path], "y", view)
        >>> bind({"data": torch.arange(6.0).reshape(3, 2)})
        tensor([0., 2., 4.])
    """

    def read_view(arguments: dict[str, Any]) -> Any:
        value = read(arguments, view.path)
        if value is None:
            return None
        value = torch.as_tensor(value)
        try:
            return view.replay(value)
        except (RuntimeError, IndexError, TypeError, ValueError) as err:
            raise GuideError(
                f"observed site {site!r} is {view.describe()} in the model; replaying that on "
                f"this call's argument {view.path!r} of shape {tuple(value.shape)} failed "
                f"({err}). It worked on shape {view.shape}: keep the dimensions the view "
                f"selects, or give NaMIGuide(model, bindings={{{site!r}: lambda arguments: "
                "...}) computing the value."
            ) from err

    read_view.pgmdl_view = view  # type: ignore[attr-defined]
    return read_view


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
            self.signature: inspect.Signature | None = model_signature(model)
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
        return self.read_argument(arguments, path)

    def read_argument(self, arguments: dict[str, Any], path: str) -> Any:
        """The argument at ``path`` itself, ignoring the bindings (a site may be
        named like the argument it views: ``obs=x.reshape(-1, 784)`` for site ``x``)."""
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
            value = getattr(value, step) if isinstance(step, Attribute) else value[step]
        return value
