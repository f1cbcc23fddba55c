"""Per-site and per-plate metadata of a compiled model.

A *site* is a named random variable of a Pyro program: a ``pyro.sample``
statement (latent, or observed through ``obs=``) or a ``pyro.deterministic``
statement. Site names are the identity of variables everywhere in pgmdl:
graph nodes, guide modules and reports all use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pyro.distributions import constraints

from pgmdl.graph.views import ArgumentRef

SiteKind = Literal["latent", "observed", "deterministic"]

PLATE_MASKS_KEY = "plate_masks"
"""``msg["infer"]`` key under which a masked plate (:mod:`pgmdl.graph.masked_plate`)
leaves ``{plate name: mask}`` on every sample site inside it, for the compiler."""

MULTISET_MASKS_KEY = PLATE_MASKS_KEY  # the name before masked plates moved to the core


@dataclass(frozen=True)
class SiteMask:
    """How the model masks a latent site, so a guide can mask it the same way.

    Where the model masks entries of a latent site (``poutine.mask``, as the
    deep Markov model does for padded time steps, or ``Normal(...).mask(m)``,
    as AIR does for absent objects), it scores nothing for them; a guide that
    still scores them has an unbounded ELBO (its entropy there grows
    freely). ``kind`` says where the mask comes from:

    * ``"argument"``: ``source`` is the :class:`~pgmdl.graph.views.ArgumentRef`
      of the view of a model argument the mask is (``mask[:, t - 1]``);
    * ``"site"``: ``source`` is the name of an earlier site whose nonzero
      entries the mask is (``.mask(z_pres)``), checked on the traced values;
    * ``"constant"``: ``source`` is the mask itself (a bool or a tensor);
    * ``"unknown"``: any other computation (``source`` describes it).

    ``event_dims`` counts the trailing dims of the mask that an
    ``Independent`` outside ``.mask(m)`` reinterprets as event dims: a
    guide masks an event where the mask holds for all its entries.
    """

    kind: Literal["argument", "site", "constant", "unknown"]
    source: Any = field(compare=False)
    event_dims: int = 0  # dims of the mask that ``.to_event`` outside it makes event dims

    def describe(self) -> str:
        if self.kind == "argument":
            return self.source.describe()
        if self.kind == "site":
            return f"site {self.source!r} (its nonzero entries)"
        if self.kind == "constant":
            return "a constant mask"
        return str(self.source)


@dataclass(frozen=True)
class PlateInfo:
    """A conditional-independence plate (``pyro.plate``).

    Attributes:
        name: the plate's name.
        size: the full size of the plate (the data set size when subsampled).
        subsample_size: how many members one run draws (equals ``size``
            when the plate is not subsampled).
        dim: the batch dimension the plate occupies (negative), or ``None``
            for a sequential plate (``for i in pyro.plate(...)``).
        sites: the sites that live in the plate, in execution order.
        multiset: the plate is a multiset plate (:func:`pgmdl.multiset.multiset_plate`):
            ``size`` is the padding ``K_max`` and a boolean mask says which part
            slots exist in each instance.
        implicit: the model wrote ``pyro.plate(name)`` without a size; ``size``
            is the largest batch size its sites have along ``dim``.
        mask_argument: for a multiset plate, the model argument its mask comes
            from (``"mask"``, or ``"batch[1]"`` inside a tuple), from which an
            amortized guide reads it at call time (checking that the argument
            *is* the mask); ``None`` when the mask depends on no argument or
            on several.
    """

    name: str
    size: int
    subsample_size: int
    dim: int | None
    sites: tuple[str, ...] = ()
    multiset: bool = False
    mask_argument: str | None = None
    implicit: bool = False

    @property
    def is_subsampled(self) -> bool:
        return self.subsample_size != self.size

    @property
    def is_vectorized(self) -> bool:
        return self.dim is not None

    def label(self) -> str:
        """``"data (N=100)"``, ``"data (32 of N=100)"`` when subsampled, or
        ``"parts (multiset, K ≤ 150)"`` for a multiset plate."""
        if self.multiset:
            return f"{self.name} (multiset, K \u2264 {self.size})"
        if self.is_subsampled:
            return f"{self.name} ({self.subsample_size} of N={self.size})"
        return f"{self.name} (N={self.size})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "subsample_size": self.subsample_size,
            "dim": self.dim,
            "sites": list(self.sites),
            "multiset": self.multiset,
            "mask_argument": self.mask_argument,
        }


@dataclass(frozen=True)
class SiteInfo:
    """What pgmdl knows about one site.

    Attributes:
        name: the site's name.
        kind: ``"latent"``, ``"observed"`` or ``"deterministic"``.
        distribution: the class name of the site's distribution, with the
            ``Independent``/``Expanded``/``Masked`` wrappers removed
            (``"Normal"`` for ``Normal(0, 1).expand([3]).to_event(1)``).
        support: the distribution's support (a ``torch`` constraint).
        batch_shape: the distribution's batch shape in this run.
        event_shape: the distribution's event shape.
        is_discrete: whether the support is discrete (Bernoulli, Categorical...).
        plates: the plates the site lives in, outermost first.
        order: the position of the site in the program's execution order.
        bound_argument: for an observed site whose value is (a slice of) a
            model argument, that argument's name (``"x"``, or ``"data[0]"``
            inside a tuple): this is how an amortized guide finds the site's
            value at call time.
        bound_view: how the observed value derives from ``bound_argument``
            (``data[:, 0]``, ``x.reshape(-1, 784)``): an
            :class:`~pgmdl.graph.views.ArgumentRef` whose ``replay`` reads the
            value from another call's argument.
        inputs: model arguments that feed the site's distribution without
            being the value of any site (a conditional VAE's context ``c``).
        enumerate: the site's ``infer["enumerate"]`` hint, if any.
        markov: the site is sampled inside a ``pyro.markov`` context (one
            step of a time loop, :mod:`pgmdl.graph.time`).
        observation: the lines plug-ins ask to draw under the site's name
            (:func:`pgmdl.render`), from their site metadata (:mod:`pgmdl.plugins`:
            :mod:`pgmdl.observe` describes a quasi-deterministic
            ``x = f(z) + ε`` and its noise scale); ``None`` when none does.
        metadata: ``{plug-in key: data}``, what plug-ins attached to the site
            under their declared keys of ``msg["infer"]``
            (:func:`pgmdl.plugins.site_metadata` reads it).
        masks: for a latent site, how the model masks it (:class:`SiteMask`).
        computed_from: for an observed site whose value is computed from model
            arguments but is no view of one (``pad_packed_sequence(seqs)[0][:, t]``,
            ``x.float() / 255``), the paths of those arguments (for messages).
        derived_from: for an observed site whose value is a deterministic
            function of another observed site's value (a coarse level of a
            multiscale observation), ``(source site, fn)`` with
            ``value = fn(source value)`` (``infer["derived_from"]``); an
            amortized guide uses it to read the value from the source's
            argument.
    """

    name: str
    kind: SiteKind
    distribution: str
    support: constraints.Constraint = field(compare=False)
    batch_shape: tuple[int, ...]
    event_shape: tuple[int, ...]
    is_discrete: bool
    plates: tuple[str, ...]
    order: int
    bound_argument: str | None = None
    bound_view: ArgumentRef | None = field(default=None, compare=False, repr=False)
    inputs: tuple[str, ...] = ()
    enumerate: str | None = None
    markov: bool = False
    observation: str | None = None
    derived_from: tuple[str, Callable[[Any], Any]] | None = field(default=None, compare=False)
    masks: tuple[SiteMask, ...] = field(default=(), compare=False, repr=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    computed_from: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def is_latent(self) -> bool:
        return self.kind == "latent"

    @property
    def is_observed(self) -> bool:
        return self.kind == "observed"

    @property
    def is_deterministic(self) -> bool:
        return self.kind == "deterministic"

    @property
    def support_name(self) -> str:
        """A short name of the support: ``"real"``, ``"positive"``, ``"simplex"``..."""
        return support_name(self.support)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "distribution": self.distribution,
            "support": self.support_name,
            "batch_shape": list(self.batch_shape),
            "event_shape": list(self.event_shape),
            "is_discrete": self.is_discrete,
            "plates": list(self.plates),
            "order": self.order,
            "bound_argument": self.bound_argument,
            "bound_view": self.bound_view.describe() if self.bound_view is not None else None,
            "inputs": list(self.inputs),
            "enumerate": self.enumerate,
            "markov": self.markov,
            "observation": self.observation,
            "derived_from": self.derived_from[0] if self.derived_from else None,
            "metadata": sorted(self.metadata),
        }


def support_name(support: constraints.Constraint) -> str:
    """Name a constraint the way ``torch.distributions.constraints`` spells it.

    Independent constraints are unwrapped (``independent(real, 1)`` is
    ``"real"``); intervals keep their bounds when these are plain numbers.
    """
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, constraints.interval | constraints.half_open_interval):
        lower, upper = support.lower_bound, support.upper_bound
        if _is_number(lower) and _is_number(upper):
            right = "]" if isinstance(support, constraints.interval) else ")"
            return f"interval[{_fmt(lower)}, {_fmt(upper)}{right}"
        return "interval"
    if isinstance(support, constraints.integer_interval):
        lower, upper = support.lower_bound, support.upper_bound
        if _is_number(lower) and _is_number(upper):
            return f"integer_interval[{_fmt(lower)}, {_fmt(upper)}]"
        return "integer_interval"
    for name in _NAMED_CONSTRAINTS:
        if support is getattr(constraints, name, None):
            return name
    text = type(support).__name__.lstrip("_")
    return text[:1].lower() + text[1:]


_NAMED_CONSTRAINTS = (
    "real",
    "real_vector",
    "positive",
    "nonnegative",
    "unit_interval",
    "simplex",
    "boolean",
    "nonnegative_integer",
    "positive_integer",
    "integer",
    "corr_cholesky",
    "lower_cholesky",
    "positive_definite",
    "ordered_vector",
    "sphere",
    "one_hot",
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) or (
        isinstance(value, torch.Tensor) and value.numel() == 1
    )


def _fmt(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return f"{number:g}"
