r"""How a plug-in attaches to pgmdl's core: the contract, and the registries it fills.

pgmdl's core is the pipeline ``compile -> invert -> plan -> build -> fit``
(:mod:`pgmdl.graph`, :mod:`pgmdl.guides`, :mod:`pgmdl.infer`). A *plug-in*
adds a kind of model statement, site or plate and what the guide should do
with it (:mod:`pgmdl.observe`: quasi-deterministic and multiscale
observations; :mod:`pgmdl.multiset`: multiset plates and their joint
conditionals; :mod:`pgmdl.boltzmann`: tuning of trained models). The core
imports no plug-in and no plug-in imports another; a plug-in talks to the
core through this module only, so that a new one needs no edit of the core.

The contract
------------

1. **Site metadata.** A plug-in that marks sample sites puts its data under a
   key of its own in the site's ``msg["infer"]`` (a Pyro ``infer`` dict, which
   Pyro carries untouched), and declares the key on import::

       register_site_metadata("my_plugin", describe=lambda data: f"x = f(z) + eps")

   The compiler copies the value of every declared key into
   :attr:`pgmdl.SiteInfo.metadata` (read it back with :func:`site_metadata`);
   ``describe(value)`` (optional) returns the line :func:`pgmdl.render` draws
   under the site (:attr:`pgmdl.SiteInfo.observation` joins them). Keys are
   plug-in names, so two plug-ins never read each other's data.

2. **Joint conditionals.** When the NaMI inverse couples the replicates of a
   site along a plate (:attr:`pgmdl.InverseGraph.joint_plates`), a faithful
   guide must sample them jointly. A plug-in offers a conditional for the
   kind of site it can handle by registering a :class:`JointConditional`::

       register_joint_conditional(MyJointConditional())

   The guide planner (:func:`pgmdl.guides.plan.plan_guide`) asks the
   registered providers, in registration order, whether they can take a
   joined site (:meth:`JointConditional.unfit` returns ``None``) and records
   the first that can in the site's plan; :class:`pgmdl.NaMIGuide` then calls
   its :meth:`JointConditional.build` with a :class:`JointRequest` and
   trains the module it returns. The module is called at every guide call
   as ``module(features, block, max_depth, mask, masks)`` and returns the
   site's distribution, with the batch shape of the model's site:

   * ``features``: ``{parent name: features}`` (:class:`~pgmdl.guides.conditional.ParentFeatures`);
   * ``block``: the site's batch shape in this call (plates' sizes, 1 where none);
   * ``max_depth``: the number of batch dims the guide's plates use;
   * ``mask``: the plate's mask of present replicates (a masked plate), or ``None``;
   * ``masks``: ``{dim: mask}`` of every masked plate of this call.

Two ``msg["infer"]`` keys belong to the core, for any plug-in to use:
``"derived_from"`` (an observed site whose value is ``fn(value of another
observed site)``, ``(source, fn)``: :attr:`pgmdl.SiteInfo.derived_from`, how
:mod:`pgmdl.observe`'s multiscale observations let the guide read a coarse
level from the full-resolution argument), and
:data:`pgmdl.graph.sites.PLATE_MASKS_KEY`, left by a masked plate
(:class:`pgmdl.graph.masked_plate.MaskedPlate`: a plate padded to its largest
size with a mask of the replicates that exist). Masked plates are core, since
compiling and guiding them needs the tracer and the guide's plates; the
multiset plug-in builds on them.

A minimal plug-in is in ``tests/test_plugins.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - types only: the registry imports nothing heavy
    import torch
    from torch import nn

    from pgmdl.graph.model_graph import ModelGraph
    from pgmdl.graph.sites import SiteInfo
    from pgmdl.guides.conditional import ParentSpec


# ---------------------------------------------------------------- site metadata

_SITE_METADATA: dict[str, Callable[[Any], str | None] | None] = {}


def register_site_metadata(key: str, describe: Callable[[Any], str | None] | None = None) -> None:
    """Declare ``msg["infer"][key]`` as a plug-in's site metadata (see the contract).

    Args:
        key: the plug-in's own key (its name).
        describe: ``describe(value)``, the line drawn under the site, or None.

    Registering the same key again replaces its ``describe`` (modules may be
    reloaded).
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"register_site_metadata: key must be a non-empty string, got {key!r}")
    _SITE_METADATA[key] = describe


def unregister_site_metadata(key: str) -> None:
    """Withdraw a site-metadata key (a plug-in unloaded, a test cleaning up)."""
    _SITE_METADATA.pop(key, None)


def metadata_keys() -> tuple[str, ...]:
    """The declared site-metadata keys, in registration order."""
    return tuple(_SITE_METADATA)


def describe_metadata(metadata: Mapping[str, Any]) -> str | None:
    """The lines the declared describers give for ``metadata`` (None if none)."""
    lines = []
    for key, value in metadata.items():
        describe = _SITE_METADATA.get(key)
        text = describe(value) if describe is not None else None
        if text:
            lines.append(text)
    return "\n".join(lines) or None


def site_metadata(info: SiteInfo, key: str, default: Any = None) -> Any:
    """The data plug-in ``key`` attached to a compiled site (``default`` if none)."""
    return info.metadata.get(key, default)


# ---------------------------------------------------------------- joint conditionals


@dataclass(frozen=True)
class JointRequest:
    """What :class:`pgmdl.NaMIGuide` hands a :class:`JointConditional` to build.

    Attributes:
        site: the latent site.
        plate: the plate along which its replicates are joined.
        dim: that plate's batch dimension (negative).
        nodes: the parents read per replicate (they live in ``plate``).
        context: the parents outside the plate (read once per instance).
        event_size: the number of real values in one replicate.
        scalar: one replicate is a scalar (event shape ``()``).
        init: a typical value of one replicate (the prior's mean), or None.
        hidden: the guide's hidden widths.
        options: the guide's options for this kind of conditional.
    """

    site: str
    plate: str
    dim: int
    nodes: tuple[ParentSpec, ...]
    context: tuple[ParentSpec, ...]
    event_size: int
    scalar: bool
    init: torch.Tensor | None = field(default=None, compare=False)
    hidden: tuple[int, ...] = (64,)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class JointConditional(Protocol):
    """A plug-in's joint conditional for sites whose replicates NaMI couples.

    Attributes:
        name: a short name, shown in plans and reports (``"multiset"``).
    """

    name: str

    def unfit(self, graph: ModelGraph, site: str) -> str | None:
        """Why ``site`` cannot have this conditional (``None`` if it can)."""

    def plate(self, graph: ModelGraph, site: str) -> str | None:
        """The plate to join ``site`` along when the user asks for it by name."""

    def build(self, request: JointRequest) -> nn.Module:
        """The module (called as in the contract) for ``request``."""


_JOINT: dict[str, JointConditional] = {}


def register_joint_conditional(provider: JointConditional) -> None:
    """Offer a joint conditional to the guide planner (see the contract)."""
    if not isinstance(provider, JointConditional):
        raise TypeError(
            f"register_joint_conditional: {provider!r} lacks name, unfit, plate or build"
        )
    _JOINT[provider.name] = provider


def unregister_joint_conditional(name: str) -> None:
    """Withdraw the joint conditional called ``name`` (a test cleaning up)."""
    _JOINT.pop(name, None)


def joint_conditionals() -> Sequence[JointConditional]:
    """The registered joint conditionals, in registration order."""
    return tuple(_JOINT.values())


def joint_conditional(name: str) -> JointConditional:
    """The registered joint conditional called ``name``."""
    return _JOINT[name]


__all__ = [
    "JointConditional",
    "JointRequest",
    "describe_metadata",
    "joint_conditional",
    "joint_conditionals",
    "metadata_keys",
    "register_joint_conditional",
    "register_site_metadata",
    "site_metadata",
    "unregister_joint_conditional",
    "unregister_site_metadata",
]
