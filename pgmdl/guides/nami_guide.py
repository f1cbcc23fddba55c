r"""``NaMIGuide``: an amortized Pyro autoguide whose structure is the NaMI inverse.

For a model :math:`p(x, z) = \prod_i p(v_i \mid \pi_i)`, the guide is

.. math::

    q_\phi(z \mid x) = \prod_{z_j \text{ in guide order}} q_\phi\big(z_j \mid \pi^{-1}_j\big)

where :math:`\pi^{-1}_j` are the parents of :math:`z_j` in the minimally
faithful inverse of the model (:func:`pgmdl.invert`, Webb et al. 2018): the
guide can represent the exact posterior whenever each conditional can, and it
has no edge it does not need. Each factor is a
:class:`~pgmdl.guides.conditional.Conditional`: a residual network with a
zero-initialized last layer (thesis §4.2.4) feeding a family chosen from the
site's support (:mod:`pgmdl.guides.families`).

The guide is **amortized**: it holds no per-data-point parameter. The values
it conditions on are read from the model's arguments on every call (the
*binding rule*, below), so one trained guide serves new data, any batch size
and subsampled plates.

Binding rule
------------
An observed site is bound to the model argument that *is* its value: with
``pyro.sample("x", ..., obs=x)`` (``x`` an argument, an element of a tuple or
list argument, or an entry of a dict argument), the guide reads ``x`` from
the same argument when called. Arguments that feed distributions without
being any site's value (a conditional VAE's context ``c``) are read the same
way. An observed value *computed* from arguments (``obs=x[:, 0]``,
``obs=x.float()``) has no binding: pass it as an argument of its own, or give
``NaMIGuide(model, bindings={"x0": lambda arguments: arguments["x"][:, 0]})``
(``arguments`` maps the model's parameter names to this call's values). The
coarse levels of a :class:`~pgmdl.observe.MultiscaleObservation` declare how
they derive from the full-resolution site (``SiteInfo.derived_from``) and are
bound automatically.

Global latents
--------------
A *global* latent shares no plate with an observed site: a mixture's weights
and component means, a regression's coefficients. With
``global_latents="auto"`` (the default) a global latent gets free parameters,
as with :class:`~pyro.infer.autoguide.AutoNormal`, whenever observed sites
live in a plate: its posterior depends on the whole data set, which a
minibatch cannot show an encoder. In a model without plates (every site is a
variable of one data point) it is amortized like any other site. Force either
with ``global_latents="free"`` or ``"amortized"``.

Joint plates and multisets
--------------------------
When the inversion couples the replicates of a site along a plate
(:attr:`~pgmdl.InverseGraph.joint_plates`: the parts' latents of CompVAE are
co-parents of the whole), a product of per-replicate conditionals cannot be
faithful. For a real-valued site joined along one plate, the guide then uses
:class:`~pgmdl.multiset.conditional.MultisetConditional`: a GraphNN over the
replicates (linear in their number) and the correlated Gaussian of thesis
§9.2.2 (``multiset_sites="auto"``, the default); name sites in
``multiset_sites`` to ask for it where the inversion does not, or pass ``()``
to keep independent replicates. Inside a multiset plate
(:func:`pgmdl.multiset.multiset_plate`) the guide applies the model's mask,
read from the model argument it comes from, and pools over present parts only.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import networkx as nx
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import init_to_mean
from pyro.params.param_store import param_with_module_name
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from pgmdl.errors import GuideError, GuideWarning, ModelError, SiteNotFoundError, TrainingError
from pgmdl.graph.compile import compile_model
from pgmdl.graph.masked_plate import MaskedPlate
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.graph.nami import ORDERS, InverseGraph, invert
from pgmdl.graph.plated import PlateLink
from pgmdl.graph.sites import PlateInfo, SiteInfo, SiteMask
from pgmdl.graph.time import TimeStructure, split_step, time_structure
from pgmdl.graph.tracing import unwrap_distribution
from pgmdl.guides.bindings import (
    GuideBinder,
    describe_given,
    loop_axes,
    parse_path,
    sometimes_observed,
)
from pgmdl.guides.conditional import Conditional, ParentFeatures, ParentSpec
from pgmdl.guides.families import (
    Family,
    MultivariateNormalFamily,
    NormalFamily,
    base_support,
    integer_bounds,
    is_finite_integer_interval,
    make_family,
)
from pgmdl.guides.plan import GUIDE_STRUCTURES, GuidePlan, JointPlan, plan_guide
from pgmdl.guides.sequence import (
    MVN_MAX_SIZE,
    PROTOTYPE_STEPS,
    Parents,
    SequencePattern,
    StepConditional,
    TimeIndexedInput,
    prototype_call,
    read_once,
    same_slice,
    time_shared_conditionals,
)
from pgmdl.nn import ResidualMLP
from pgmdl.plugins import JointRequest, joint_conditional

#: default initial scales (``NaMIGuide(init_scale=None)``): free global sites as
#: AutoNormal, amortized ones as wide as a unit prior
FREE_INIT_SCALE = 0.1
AMORTIZED_INIT_SCALE = 1.0

#: how NaMIGuide(normalize=...) brings a conditional's inputs to unit scale
NORMALIZE_MODES = ("standardize", "scale")

#: the NaMI elimination orders a NaMIGuide takes by name (see :func:`pgmdl.invert`)
GUIDE_ORDERS = ORDERS


class NaMIGuide(AutoGuide):
    """An amortized guide with the structure of the model's NaMI inverse.

    Drops into :class:`pyro.infer.SVI` like :class:`~pyro.infer.autoguide.AutoNormal`;
    the model is compiled and inverted on the first call, with that call's
    arguments.

    Example::

        >>> import pyro, pyro.distributions as dist, torch, pgmdl
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 0.5), obs=x)
        >>> guide = pgmdl.NaMIGuide(model)
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        >>> loss = svi.step(torch.randn(16))  # any batch size, then new data
        >>> guide.parents("z"), guide(torch.randn(3))["z"].shape
        (('x',), torch.Size([3]))

    Parameters live in Pyro's param store under ``NaMIGuide.conditionals$$$...``.
    As with every Pyro module, a guide set up while the store holds parameters
    of those names starts from their values (that is how a saved param store is
    resumed); call ``pyro.clear_param_store()`` to start afresh.

    Args:
        model: the Pyro model.
        order: the NaMI elimination order (``"min-fill"``, ``"topological"``,
            ``"reverse"`` or a list of the latent sites, see :func:`pgmdl.invert`).
            ``order="mean-field"`` is the old spelling of
            ``structure="mean-field"`` (a ``FutureWarning``).
        structure: ``"nami"`` (each latent conditioned on its parents in the
            inverse: faithful) or ``"mean-field"`` (each latent conditioned on
            the observed sites and inputs it depends on in the inverse, and on
            no other latent: not faithful in general, a baseline). See
            :mod:`pgmdl.guides.plan`.
        augment: add every observed site as a parent of every latent
            (LadderVAE-style, thesis §4.2.4).
        families: ``{site: family name}`` overriding the default family
            (:data:`pgmdl.guides.families.FAMILY_NAMES`; ``"mvn"``: a
            full-covariance Gaussian per replicate). A ``pyro.markov`` loop's
            series is named by its template: ``{"z_{t}": "mvn"}``.
        networks: ``{site: module or factory(in_features, out_features)}``
            replacing a site's network; the network maps the parent features
            to the family's raw parameters.
        conditionals: ``{site: fn}`` replacing a site's whole conditional:
            ``fn(parents)`` gets ``{parent name: value}`` and returns a
            distribution (an ``nn.Module`` is trained with the guide).
        flows: sites whose conditional is a zuko neural spline flow (through
            :class:`pyro.contrib.zuko.ZukoToPyro`) instead of a Gaussian.
        hidden: hidden widths of every conditional network.
        global_latents: ``"auto"``, ``"free"`` or ``"amortized"`` (see the
            module docstring).
        enumerate: ``"parallel"`` or ``"sequential"`` to enumerate the guide's
            discrete sites under ``TraceEnum_ELBO``; ``None`` samples them.
        path_derivative: the "sticking the landing" estimator for continuous
            sites (thesis eq. 4.4-4.5).
        bindings: ``{site or input: fn(arguments)}`` for observed values that
            are computed from the model's arguments (see the binding rule).
        init_scale: the initial scale of continuous conditionals in the
            unconstrained space: one number, or ``{site: number}`` (the other
            sites keep the default). Default: 0.1 for global latents with
            free parameters (as :class:`~pyro.infer.autoguide.AutoNormal`),
            1 for amortized sites (their conditional starts as wide as a unit
            prior: no KL to pay before the encoder has learned anything).
        fan_in_scaled: scale each conditional's zero-initialized layers by
            their fan-in (:class:`~pgmdl.nn.ResidualMLP`), so that
            under Adam a conditional moves per step about as much as a
            hand-written encoder does. ``False`` gives the unscaled layers:
            faster at small learning rates (held-out ELBO on the 8x8 digits
            after 3000 steps at lr 0.001: 0.04-0.2 nats per digit better),
            but a 784-pixel VAE stalls or diverges at lr 0.01 and a sparse
            gamma DEF turns NaN at lr 0.03. On small tables the scaled layers
            learn too slowly: MIWAE on the 569 x 30 breast-cancer table
            imputes with error 0.322 after 800 steps at lr 1e-3, against 0.264
            with ``False`` (``benchmarks/missing_uci.py``).
        normalize: how a conditional's inputs are brought to unit scale
            (:class:`~pgmdl.nn.ParentNorm`): ``"standardize"``
            (running mean and variance per feature: fastest learning; the
            best held-out ELBO on 1,500 digits) or ``"scale"`` (data divided
            down to unit root mean square, never amplified, as a hand-written
            encoder sees it: generalizes better on small data sets at large
            learning rates; continuous latent parents stay standardized).
        time_shared: for a ``pyro.markov`` loop, one conditional per latent
            series shared by its steps (a GRU and a linear recurrence
            summarizing the growing run of observations,
            :mod:`pgmdl.guides.sequence`; a full-covariance Gaussian for a
            state of 2 to 16 real dimensions) instead of one per step:
            parameters independent of the length, :math:`O(T)` inputs instead
            of :math:`O(T^2)`, one guide for sequences of any length (a call at
            a new length compiles the model there once and unrolls the guide's
            slice, ``guide.sequence``, to it), a long loop planned on its
            first steps. Arguments laid out like the data with the loop's axis
            (a padding mask, controls) are read step by step. ``"auto"``
            (default): shared where every latent series of the loop fits (else
            one network per step, and ``guide.unshared_reason`` says why);
            ``True``: shared where it fits; ``False``: one network per step.
        init_loc_fn: where a global site's free parameters start, and an
            amortized conditional when the prior has no analytic mean: Pyro's
            ``init_to_mean`` by default (the prior's mean; its median where
            the mean is infinite, as for a HalfCauchy). A median of a few
            prior draws, the previous default, starts wide priors at a random
            point far from the data (a regression with N(0, 10) weights
            lagged AutoNormal by 30-60% at 200 steps).
        create_plates: as for Pyro's AutoGuides: a function of the model's
            arguments returning plates to use (for custom subsampling).
        device: where the guide's modules live (default: the device of the
            first tensor among the model's arguments).
        joint_sites: ``"auto"`` (a joint conditional for every site the
            inversion joins along one plate, from the first plug-in that
            offers one, :mod:`pgmdl.plugins`; the multiset plug-in takes
            real-valued sites), a list of sites to give one (along their
            multiset plate, else their innermost plate), or ``()`` for none
            (see "Joint plates and multisets").
        joint_options: options of those conditionals (the multiset plug-in's:
            ``{"layers": 2}``, message-passing layers of its GraphNN).
        multiset_sites, multiset_layers: the old spellings of ``joint_sites``
            and ``joint_options={"layers": n}`` (a ``FutureWarning``).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        order: str | Sequence[str] = "min-fill",
        augment: bool = False,
        *,
        families: Mapping[str, str] | None = None,
        networks: Mapping[str, nn.Module | Callable[[int, int], nn.Module]] | None = None,
        conditionals: Mapping[str, Callable[..., dist.Distribution]] | None = None,
        flows: Sequence[str] = (),
        hidden: Sequence[int] = (64,),
        global_latents: str = "auto",
        enumerate: str | None = None,  # noqa: A002 - Pyro's own word for it
        path_derivative: bool = False,
        bindings: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
        init_loc_fn: Callable[[dict], torch.Tensor] = init_to_mean,
        init_scale: float | Mapping[str, float] | None = None,
        fan_in_scaled: bool = True,
        normalize: str = "standardize",
        time_shared: bool | str = "auto",
        create_plates: Callable[..., Any] | None = None,
        device: torch.device | str | None = None,
        joint_sites: str | Sequence[str] = "auto",
        joint_options: Mapping[str, Any] | None = None,
        structure: str = "nami",
        multiset_sites: str | Sequence[str] | None = None,
        multiset_layers: int | None = None,
    ) -> None:
        joint_options = dict(joint_options or {})
        if multiset_sites is not None:
            warnings.warn(
                "NaMIGuide(multiset_sites=...) is now NaMIGuide(joint_sites=...); the old "
                "name goes in the next release",
                FutureWarning,
                stacklevel=2,
            )
            joint_sites = multiset_sites
        if multiset_layers is not None:
            warnings.warn(
                "NaMIGuide(multiset_layers=n) is now NaMIGuide(joint_options={'layers': n}); "
                "the old name goes in the next release",
                FutureWarning,
                stacklevel=2,
            )
            joint_options.setdefault("layers", multiset_layers)
        if isinstance(order, str) and order == "mean-field":
            warnings.warn(
                "NaMIGuide(order='mean-field') is now NaMIGuide(structure='mean-field'): "
                "mean field is a structure, not an elimination order; the old spelling goes "
                "in the next release",
                FutureWarning,
                stacklevel=2,
            )
            order, structure = "min-fill", "mean-field"
        if normalize not in NORMALIZE_MODES:
            raise GuideError(f"normalize={normalize!r}: use one of {NORMALIZE_MODES}")
        if structure not in GUIDE_STRUCTURES:
            raise GuideError(f"structure={structure!r}: use one of {GUIDE_STRUCTURES}")
        if global_latents not in ("auto", "free", "amortized"):
            raise GuideError(
                f"global_latents={global_latents!r}: use 'auto', 'free' or 'amortized'"
            )
        if enumerate not in (None, "parallel", "sequential"):
            raise GuideError(f"enumerate={enumerate!r}: use None, 'parallel' or 'sequential'")
        if isinstance(joint_sites, str) and joint_sites != "auto":
            raise GuideError(
                f"joint_sites={joint_sites!r}: use 'auto', a list of latent sites, or ()"
            )
        if isinstance(order, str) and order not in GUIDE_ORDERS:
            raise GuideError(f"order={order!r}: use one of {GUIDE_ORDERS} or a list of sites")
        super().__init__(model, create_plates=create_plates)
        self.order_option = order if isinstance(order, str) else tuple(order)
        self.augment = augment
        self.family_names = dict(families or {})
        self.network_overrides = dict(networks or {})
        self.conditional_overrides = dict(conditionals or {})
        self.flow_sites = tuple(flows)
        self.hidden = tuple(hidden)
        self.global_latents = global_latents
        self.enumerate = enumerate
        self.path_derivative = path_derivative
        self.bindings = dict(bindings or {})
        self.init_loc_fn = init_loc_fn
        self.init_scale = _check_init_scale(init_scale)
        self.fan_in_scaled = bool(fan_in_scaled)
        self.normalize = normalize
        if time_shared not in (True, False, "auto"):
            raise GuideError(f"time_shared={time_shared!r}: use 'auto', True or False")
        self.time_shared_option = time_shared
        self.time_shared = time_shared is True
        self.unshared_reason: str | None = None
        self.device_option = device
        self.structure_option = structure
        self.joint_option = joint_sites if isinstance(joint_sites, str) else tuple(joint_sites)
        self.joint_options = joint_options
        self.graph: ModelGraph | None = None
        self.inverse: InverseGraph | None = None
        self.plan: GuidePlan | None = None
        self.sequence: SequencePattern | None = None
        self._lengths: dict[int, _LengthState] = {}
        self._step_modules: dict[str, nn.Module] = {}
        self._time_inputs: dict[str, int] = {}
        self._series_feature_keys: dict[str, str] = {}
        self._series_links: dict[str, dict[str, PlateLink]] = {}
        self._argument_dtypes: dict[str, torch.dtype | None] = {}
        self._setup_size: int | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, *args: Any, **kwargs: Any) -> NaMIGuide:
        """Compile, invert and build the networks now (the first call does it
        otherwise); takes the model's arguments. Returns the guide."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        if self.time_shared_option != "auto":
            self._build(*args, **kwargs)
            return
        self.time_shared = True
        self._build(*args, **kwargs)
        pattern = self.sequence
        if pattern is not None and pattern.problem is not None:
            # a loop the slice does not serve: one network per step, as built before
            self.unshared_reason = pattern.problem
            self.time_shared = False
            self._forget_sequence()
            self._build(*args, **kwargs)

    def _forget_sequence(self) -> None:
        self.sequence = None
        self._lengths, self._step_modules, self._time_inputs = {}, {}, {}
        self._series_feature_keys, self._series_links, self._argument_dtypes = {}, {}, {}
        self._setup_size = None

    def _build(self, *args: Any, **kwargs: Any) -> None:
        full = None
        if self.time_shared:  # plan a long loop on its first steps (sequence.PROTOTYPE_STEPS)
            args, kwargs, full = self._prototype_arguments(args, kwargs)
        with poutine.block():  # running the model here must not reach the caller's trace
            graph = compile_model(self.model, model_args=args, model_kwargs=kwargs)
            self._sometimes, args, kwargs = sometimes_observed(self.model, graph, args, kwargs)
            if any(graph[s].is_observed for s in self._sometimes):
                graph = compile_model(
                    self.model, model_args=args, model_kwargs=kwargs
                )  # with those sites latent
        try:
            super()._setup_prototype(*args, **kwargs)
        except NotImplementedError as err:
            raise GuideError(
                f"NaMIGuide needs vectorized plates ({err}); write `with pyro.plate(name, n):` "
                "instead of `for i in pyro.plate(...)`"
            ) from err
        with poutine.block():
            self._model_trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        if not graph.latent_sites:
            raise GuideError(
                f"the model has no latent site (sites: {list(graph.sites)}); a guide has "
                "nothing to sample. Check that the latent sites are not all observed "
                "(obs= set) or pass the arguments that leave them latent."
            )
        self.family_names = _by_step(self.family_names, graph)
        named = tuple(self.joint_option) if self.joint_option != "auto" else ()
        scaled = tuple(self.init_scale) if isinstance(self.init_scale, dict) else ()
        for site in (
            self.flow_sites
            + tuple(self.family_names)
            + tuple(self.network_overrides)
            + named
            + scaled
        ):
            if site not in graph.latent_sites:
                raise SiteNotFoundError(site, graph.latent_sites, what="latent site")
        self.graph = graph
        inverse = invert(graph, order=self.order_option, augment=self.augment)
        self.plan = plan_guide(
            graph,
            inverse,
            structure=self.structure_option,  # type: ignore[arg-type]
            global_latents=self.global_latents,  # type: ignore[arg-type]
            joint_sites=self.joint_option,
            sometimes_observed=tuple(self._sometimes),
        )
        self.inverse = self.plan.inverse
        self._free = set(self.plan.free)
        # the plan's parts the guide reads at every call, as plain tuples and dicts
        self._structure = {
            site.name: tuple((p.name, p.link) for p in site.parents) for site in self.plan.sites
        }
        self._joint = {site: joint.plate for site, joint in self.plan.joint.items()}
        self._block = {site.name: site.block for site in self.plan.sites}
        self._guide_plates = list(self.plan.plates)
        self._max_depth = self.plan.max_depth
        self._read_by = set(self.plan.read)
        self._binder = GuideBinder(self.model, graph, self.bindings)
        self.bindings = self._binder.bindings
        arguments = self._binder.bind(args, kwargs)
        self._binder.check_plate_masks(arguments, self._model_trace)
        self._masks = self._mask_readers(graph)
        self._given_shapes = self._read_given_shapes(graph, arguments)
        self._witness = self._plate_witnesses(graph, arguments)
        device = self._device(args, kwargs)
        if self.time_shared:
            self._time_inputs = self._time_indexed_inputs(graph, arguments)
        modules = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        inputs = nn.ModuleDict()
        for parents in self._structure.values():
            for parent, _ in parents:
                if parent not in self._keys:
                    self._keys[parent] = _module_key(len(self._keys), parent)
                    if parent in self._time_inputs:
                        inputs[self._keys[parent]] = TimeIndexedInput(
                            self._given_shapes[parent][1], self._time_inputs[parent]
                        )
                        continue
                    inputs[self._keys[parent]] = ParentFeatures(
                        self._replicate_shape_of(graph, parent),
                        _categories(graph, parent),
                        standardize=self._standardized(graph, parent),
                    )
        self.inputs = inputs
        self._feature_keys = dict(self._keys)
        shared: dict[str, nn.Module] = {}
        if self.time_shared:
            shared, self.sequence = self._time_shared(graph)
            self._share_series_features()
            self._series_links = _series_links(self.plan.time, self._structure)
        self.inputs = self.inputs.to(device)
        for site, parents in self._structure.items():
            key = self._keys.setdefault(site, _module_key(len(self._keys), site))
            if site in shared and site not in self.conditional_overrides:
                modules[key] = shared[site]
                continue
            if site in self.conditional_overrides:
                override = self.conditional_overrides[site]
                if isinstance(override, nn.Module):
                    modules[key] = override
                continue
            modules[key] = self._conditional(graph, site, parents)
        self.conditionals = modules.to(device)
        self._adopt_param_store()
        if full is not None and self.sequence is not None and self.sequence.problem is None:
            self._state_at(*full)
            self._setup_size = full[0]

    def _prototype_arguments(self, args: tuple, kwargs: dict) -> tuple[tuple, dict, tuple | None]:
        """The arguments to plan a time-shared guide on: those of the call cut to the
        loop's first :data:`~pgmdl.guides.sequence.PROTOTYPE_STEPS` steps when the
        loop is longer (:func:`~pgmdl.guides.sequence.prototype_call`) and its
        slice is the same there, else the call's own. The third value,
        ``(size, args, kwargs, graph)`` of the call, builds its length's state."""
        # the structure at the call's length; argument checks off (the model's own run
        # makes them at every step: here they were a fifth of a T = 1000 compile)
        with poutine.block(), torch.random.fork_rng(devices=[]):
            with pyro.validation_enabled(False):
                graph = compile_model(
                    self.model, model_args=args, model_kwargs=kwargs, num_traces=1
                )
            try:
                time = time_structure(graph)
            except ModelError:
                return args, kwargs, None  # planned unrolled, with the plan's warning
            if time is None:
                return args, kwargs, None
            axes = loop_axes(graph)
            call = prototype_call(self.model, time, axes, args, kwargs)
            if call is None:
                return args, kwargs, None
            short = compile_model(
                self.model, model_args=call[0], model_kwargs=call[1], num_traces=1
            )
            try:
                cut = time_structure(short)
            except ModelError:
                cut = None
        if (
            cut is None
            or len(cut.steps) != PROTOTYPE_STEPS
            or cut.steps[0] != time.steps[0]
            or not same_slice(cut, time)
        ):
            return args, kwargs, None
        size = next(iter(axes.values()))[1]
        return call[0], call[1], (size, args, kwargs, graph)

    def _adopt_param_store(self) -> None:
        """Make the param store hold this guide's own parameter tensors.

        Pyro shares parameters by name. Parameters of the same names already in
        the store (a loaded param store, or an earlier guide) would otherwise
        shadow the new modules' tensors, and the optimizer would step tensors the
        guide never uses. Values of matching shape are taken over (resuming from
        a saved store works), then the store entries are replaced.
        """
        store = pyro.get_param_store()
        prefix = f"{self._pyro_name}.conditionals"
        with torch.no_grad():
            for name, param in self.conditionals.named_parameters():
                full = param_with_module_name(prefix, name)
                if full in store:
                    old = store[full]
                    if old.shape == param.shape:
                        param.copy_(old.detach().to(param))
                    del store[full]

    def _time_shared(
        self, graph: ModelGraph
    ) -> tuple[dict[str, StepConditional], SequencePattern | None]:
        """One conditional per latent series of a ``pyro.markov`` loop, shared by its
        steps (:mod:`pgmdl.guides.sequence`); sites it cannot share keep their own.
        Also the guide's slice, to serve other lengths."""
        widths = {name: self.inputs[key].features for name, key in self._keys.items()}

        def make_head(site: str, specs: list[ParentSpec]) -> Conditional:
            family = self._family(graph, site)
            default = site not in self.family_names and type(family) is NormalFamily
            if default and 2 <= family.size <= MVN_MAX_SIZE:  # a state's components correlate
                family = MultivariateNormalFamily(family.event_shape, graph[site].support)
            return self._make_conditional(site, specs, family)

        hidden = max(self.hidden) if self.hidden else 32
        time_inputs = {name: widths[name] for name in self._time_inputs}
        masks = [
            name
            for name in self._time_inputs
            if widths[name] == 1 and self._argument_dtypes.get(name) == torch.bool
        ]
        return time_shared_conditionals(
            self.plan,
            widths,
            make_head,
            hidden=hidden,
            time_inputs=time_inputs,
            step_mask=masks[0] if len(masks) == 1 else None,
        )

    def _time_indexed_inputs(self, graph: ModelGraph, arguments: dict[str, Any]) -> dict[str, int]:
        """``{input: axis}`` for the model arguments laid out like the data the loop
        observes step by step, with the loop's axis at the same place (``mask``
        ``(N, T)`` beside ``x`` ``(N, T, d)``); ``axis`` is its position in the
        argument's shape inside its plates."""
        axes = {
            (dim - _depth(graph, site), size) for dim, size, site in self._binder.loop_axes.values()
        }
        time = self.plan.time
        if len(axes) != 1 or time is None:
            return {}
        axis, size = axes.pop()
        if size < 2 or axis < 0:
            return {}
        readers = {
            p.name
            for series in time.series
            if series.kind == "latent"
            for site in series.sites
            if site in self.plan
            for p in self.plan[site].parents
        }
        out = {}
        for name, (_, shape) in self._given_shapes.items():
            if name in graph.sites or name not in readers:
                continue
            if len(shape) > axis and shape[axis] == size:
                out[name] = axis
                value = self._binder.read(arguments, name)
                self._argument_dtypes[name] = getattr(value, "dtype", None)
        return out

    def _share_series_features(self) -> None:
        """Every step of a series the shared conditionals read goes through the
        feature module (and its running normalization) of the series' first step:
        the same function of the value at every step, at any length."""
        pattern = self.sequence
        if pattern is None or self.plan.time is None:
            return
        shared = {s.template for s in pattern.series} | set(pattern.observed_series)
        for series in self.plan.time.series:
            if series.template not in shared:
                continue
            names = [s for s in series.sites if s in self._feature_keys]
            if not names:
                continue
            key = self._feature_keys[names[0]]
            for name in names[1:]:
                del self.inputs[self._feature_keys[name]]
                self._feature_keys[name] = key
            self._series_feature_keys[series.template] = key

    def _family(self, graph: ModelGraph, site: str) -> Family:
        """The variational family of one replicate of ``site``."""
        info = graph[site]
        _, shape = _replicate_shape(graph, site, info.batch_shape + info.event_shape)
        return make_family(self.family_names.get(site), site, info.support, torch.Size(shape))

    def _make_conditional(
        self,
        site: str,
        specs: list[ParentSpec],
        family: Family,
        network: nn.Module | Callable[[int, int], nn.Module] | None = None,
    ) -> Conditional:
        """A :class:`Conditional` with this guide's options."""
        return Conditional(
            site,
            specs,
            family,
            hidden=self.hidden,
            init=self._init_value(site, family),
            init_scale=self._initial_scale(site),
            fan_in_scaled=self.fan_in_scaled,
            network=network,
            path_derivative=self.path_derivative,
            flow=site in self.flow_sites,
        )

    def _conditional(
        self, graph: ModelGraph, site: str, parents: tuple[tuple[str, PlateLink], ...]
    ) -> nn.Module:
        if site in self._joint:
            return self._joint_conditional(graph, site, parents, self.plan[site].joint)
        family = self._family(graph, site)
        specs = []
        site_plates = self.inverse.dag.nodes[site]["plates"]

        def dims(plates: Sequence[str]) -> tuple[int, ...]:
            return tuple(graph.plates[p].dim for p in plates if graph.plates[p].dim is not None)

        for parent, link in parents:
            specs.append(
                ParentSpec(
                    parent,
                    self.inputs[self._feature_keys[parent]].features,
                    pooled_dims=dims(link.pooled),
                    keep_same=any(p in site_plates for p in link.pooled),
                    same_pooled_dims=dims([p for p in link.pooled if p not in site_plates]),
                )
            )
        network = self.network_overrides.get(site)
        if not parents and network is None and site in self._free and site not in self.flow_sites:
            network = ResidualMLP(0, family.num_params, init_bias=self._free_init(site, family))
        return self._make_conditional(site, specs, family, network)

    def _joint_conditional(
        self,
        graph: ModelGraph,
        site: str,
        parents: tuple[tuple[str, PlateLink], ...],
        joint: JointPlan,
    ) -> nn.Module:
        """The joint conditional of ``site`` over ``joint.plate``, built by the plug-in
        the plan names (:mod:`pgmdl.plugins`): parents in the plate are read per
        replicate, the others are the global context."""
        info = graph[site]
        plate = joint.plate
        nodes, context = [], []
        for parent, link in parents:
            pooled = tuple(
                graph.plates[p].dim
                for p in link.pooled
                if p != plate and graph.plates[p].dim is not None
            )
            spec = ParentSpec(parent, self.inputs[self._feature_keys[parent]].features, pooled)
            inside = plate in self.inverse.dag.nodes[parent]["plates"]
            (nodes if inside else context).append(spec)
        _, shape = _replicate_shape(graph, site, info.batch_shape + info.event_shape)
        family = make_family(None, site, info.support, torch.Size(shape))
        request = JointRequest(
            site=site,
            plate=plate,
            dim=graph.plates[plate].dim,  # type: ignore[arg-type]
            nodes=tuple(nodes),
            context=tuple(context),
            event_size=max(math.prod(shape), 1),
            scalar=len(shape) == 0,
            init=self._init_value(site, family),
            hidden=self.hidden,
            options=dict(self.joint_options),
        )
        return joint_conditional(joint.provider).build(request)

    def _standardized(self, graph: ModelGraph, name: str) -> bool:
        """Whether parent ``name`` is standardized rather than only scaled down to
        unit scale (:class:`~pgmdl.nn.ParentNorm`): every parent with
        ``normalize="standardize"``; with ``"scale"``, continuous latents only (the
        guide's own draws), not data, inputs or discrete latents."""
        if self.normalize == "standardize":
            return True
        return name in graph.sites and graph[name].is_latent and not graph[name].is_discrete

    def _replicate_shape_of(self, graph: ModelGraph, name: str) -> tuple[int, ...]:
        if name in graph.sites:
            info = graph[name]
            return _replicate_shape(graph, name, info.batch_shape + info.event_shape)[1]
        return self._given_shapes[name][1]

    def _read_given_shapes(
        self, graph: ModelGraph, arguments: dict[str, Any]
    ) -> dict[str, tuple[int, tuple[int, ...]]]:
        """(depth, replicate shape) of every given node a conditional reads."""
        needed = set(self._read_by) - set(self._structure)  # O(T): not every step's run
        shapes = {}
        for name in sorted(needed, key=lambda n: graph[n].order if n in graph.sites else -1):
            if name in graph.sites:
                info = graph[name]
                path = name if name in self.bindings else info.bound_argument
                if path is None:
                    raise GuideError(_unreadable_observation(name, info, arguments))
                value = self._binder.read(arguments, name, path)
                if not self._is_observed_value(name, value):
                    raise GuideError(
                        f"observed site {name!r} is computed from argument {path!r} (shape "
                        f"{tuple(value.shape)}) but is not that argument's value, so the guide "
                        "cannot read it from the arguments. Pass the observed value itself as an "
                        f"argument (obs={name}), or give NaMIGuide(model, bindings={{{name!r}: "
                        "lambda arguments: ...}) computing it from the model's arguments."
                    )
                info = graph[name]
                depth, shape = _depth(graph, name), tuple(info.event_shape)
                if depth == 0:
                    shape = tuple(info.batch_shape) + shape
            else:
                value = self._binder.read(arguments, name, name)
                depth = max(
                    (-graph.plates[p].dim for p in self._plates_of(name)),
                    default=0,
                )
                shape = tuple(value.shape[min(depth, value.dim()) :])
            shapes[name] = (depth, shape)
        return shapes

    def _is_observed_value(self, name: str, value: torch.Tensor) -> bool:
        """Whether ``value`` (read from the arguments) is the site's observed value in
        the prototype run, possibly before subsampling.

        A binding the user gave that reads something else is allowed (an encoder
        may read zero-filled data for a masked site, say) but told once: a wrong
        binding would otherwise train a guide on the wrong data silently."""
        if name not in self._model_trace.nodes:  # a length other than the built one
            return True
        observed = self._model_trace.nodes[name]["value"]
        if name in self._binder.user_bindings:
            candidate = self._subsampled_like(name, value)
            same = candidate.shape == observed.shape and bool(
                torch.allclose(candidate.to(observed), observed, rtol=1e-5, atol=1e-6)
            )
            if not same and not getattr(self.bindings[name], "pgmdl_transformed", False):
                warnings.warn(
                    f"NaMIGuide(bindings={{{name!r}: ...}}) reads a value of shape "
                    f"{tuple(value.shape)} that is not the model's observed value of site "
                    f"{name!r} (shape {tuple(observed.shape)}) in this call: the guide will "
                    "condition on what the binding returns. Check the binding, or drop it "
                    "to let pgmdl read the value the model observes.",
                    GuideWarning,
                    stacklevel=4,
                )
            return True
        value = self._subsampled_like(name, value)
        return value.shape == observed.shape and bool(torch.equal(value.to(observed), observed))

    def _subsampled_like(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` indexed like the prototype run where full data was passed to
        a subsampled plate."""
        event = len(self.graph[name].event_shape)
        for plate in self.graph[name].plates:
            info = self.graph.plates[plate]
            if info.is_subsampled:
                value = _take_plate(value, event, info, self._model_trace.nodes[plate]["value"])
        return value

    def _plate_witnesses(
        self, graph: ModelGraph, arguments: dict[str, Any]
    ) -> dict[str, tuple[str, int]]:
        """For each vectorized plate, a given value carrying it: (name, dim from the right)."""
        witness = {}
        for name, (_, shape) in self._given_shapes.items():
            value = self._binder.read(arguments, name)
            for plate in self._plates_of(name):
                info = graph.plates[plate]
                position = value.dim() - len(shape) + info.dim
                sizes = (info.subsample_size, info.size)
                if plate not in witness and position >= 0 and value.shape[position] in sizes:
                    witness[plate] = (name, len(shape) - info.dim)
        return witness

    def _device(self, args: tuple, kwargs: dict) -> torch.device:
        if self.device_option is not None:
            return torch.device(self.device_option)
        for value in _tensors((args, kwargs)):
            return value.device
        return torch.empty(()).device

    def _init_value(self, site: str, family: Family) -> torch.Tensor | None:
        """A typical prior value of one replicate (probabilities for discrete sites)."""
        msg = self._model_trace.nodes[site]
        fn = msg["fn"]
        depth, shape = _replicate_shape(self.graph, site, tuple(msg["value"].shape))
        if family.is_discrete:
            base = unwrap_distribution(fn)
            value = getattr(base, "probs", None)
            if value is None:
                return None
            if family.name == "categorical":
                shape = tuple(shape) + (value.shape[-1],)
        else:
            try:
                value = fn.mean
                if not bool(torch.isfinite(value).all()):
                    raise NotImplementedError
            except (NotImplementedError, AttributeError):
                value = self.init_loc_fn(msg)
        value = value.detach()
        value = value.expand(value.shape[: value.dim() - len(shape)] + torch.Size(shape))
        return value.reshape((-1,) + tuple(shape)).mean(0)

    def _initial_scale(self, site: str) -> float:
        """The initial unconstrained scale of ``site`` (see ``init_scale``)."""
        scale = self.init_scale
        if isinstance(scale, Mapping):
            scale = scale.get(site)
        if scale is None:
            return FREE_INIT_SCALE if site in self._free else AMORTIZED_INIT_SCALE
        return float(scale)

    def _free_init(self, site: str, family: Family) -> torch.Tensor:
        """Free parameters of a global site: one raw vector per replicate of its
        plates (shape ``plates + (num_params,)``), started by ``init_loc_fn`` (or
        at the prior's probabilities for a discrete site), as AutoNormal does."""
        msg = self._model_trace.nodes[site]
        depth, shape = _replicate_shape(self.graph, site, tuple(msg["value"].shape))
        if family.is_discrete:
            value = getattr(unwrap_distribution(msg["fn"]), "probs", None)
            if value is None:
                return family.init_bias(None)
            shape = tuple(shape) + ((value.shape[-1],) if family.name == "categorical" else ())
        else:
            value = self.init_loc_fn(msg)
        value = value.detach()
        block = value.shape[: value.dim() - len(shape)]
        block = torch.Size((1,) * (depth - len(block))) + block[len(block) - depth :]
        value = value.expand(value.shape[: value.dim() - len(shape)] + torch.Size(shape))
        replicates = value.reshape((-1,) + tuple(shape))
        if replicates.shape[0] != block.numel():  # batch dims outside the plates: average
            replicates = replicates.reshape((-1, block.numel()) + tuple(shape)).mean(0)
        scale = self._initial_scale(site)
        raw = torch.stack([family.init_bias(v, scale) for v in replicates])
        return raw.reshape(block + raw.shape[-1:]) if depth else raw.reshape(raw.shape[-1:])

    # ------------------------------------------------------------------ calls

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site the guide owns; returns ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        arguments = self._binder.reader.bind(args, kwargs)
        length = self._call_length(arguments)
        if length is not None:
            with self._bound(self._state_at(length, args, kwargs)):
                return self._sample(args, kwargs, self._binder.bind(args, kwargs))
        if self._binder.loop_axes:
            self._binder.check_loop_length(arguments, self.unshared_reason)
        return self._sample(args, kwargs, arguments)

    def _sample(
        self, args: tuple, kwargs: dict, arguments: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """One draw of the guide for this call's bound arguments."""
        values = {name: self._given_value(arguments, name) for name in self._given_shapes}
        plates, index = self._plates(values, args, kwargs, arguments)
        values = self._subsample(values, plates, index)
        masks = {
            plate.dim: plate.plate_mask
            for plate in plates.values()
            if isinstance(plate, MaskedPlate)
        }
        conditionals = self.conditionals  # one pyro.module statement per call
        inputs = self._modules["inputs"]  # buffers only: no pyro.module statement needed
        keys, feature_keys, steps = self._keys, self._feature_keys, self._step_modules
        features = {name: inputs[feature_keys[name]](value) for name, value in values.items()}
        result: dict[str, torch.Tensor] = {}
        given = self._observed_in_this_call(arguments, plates, index)
        for site, parents in self._structure.items():
            if site in given:  # the model observes it in this call: condition on it
                values[site] = given[site]
                if site in self._read_by:
                    features[site] = inputs[feature_keys[site]](given[site])
                continue
            # the site's batch shape: its plates' sizes in this call, 1 where no plate is
            block = torch.Size(_size(plates, p) if p else 1 for p in self._block[site])
            with ExitStack() as stack:
                for plate in self._block[site]:
                    if plate is not None:
                        stack.enter_context(plates[plate])
                if site in self.conditional_overrides:
                    q = self.conditional_overrides[site]({p: values[p] for p, _ in parents})
                else:
                    try:
                        if site in self._joint:
                            plate = plates[self._joint[site]]
                            mask = plate.mask if isinstance(plate, MaskedPlate) else None
                            q = conditionals[keys[site]](
                                features, block, self._max_depth, mask, masks
                            )
                        else:
                            module = steps[site] if site in steps else conditionals[keys[site]]
                            q = module(features, block, self._max_depth, masks)
                    except ValueError as err:
                        problem = self._nonfinite(site, parents, features)
                        if problem is None:
                            raise
                        raise TrainingError(problem) from err
                infer = {}
                if self.enumerate and q.support.is_discrete:
                    infer["enumerate"] = self.enumerate
                if site in self._masks:  # mask the entries the model masks
                    mask = None
                    for read in self._masks[site]:
                        m = read(arguments, values)
                        mask = m if mask is None else mask & m
                    stack.enter_context(poutine.mask(mask=mask))
                value = pyro.sample(site, q, infer=infer)
            values[site] = value
            result[site] = value
            if site in self._read_by:
                features[site] = inputs[feature_keys[site]](value)
        return result

    # ------------------------------------------------------------------ sequences of any length

    def _call_length(self, arguments: dict[str, Any]) -> int | None:
        """The size of this call's sequences along the loop's axis when it is not
        the size the guide was built for and the guide serves other lengths
        (:attr:`sequence`); None otherwise (the built state serves the call)."""
        pattern = self.sequence
        if pattern is None or not self._binder.loop_axes:
            return None
        path, (dim, size, _) = next(iter(self._binder.loop_axes.items()))
        value = self._binder.reader.read_argument(arguments, path)
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) <= dim or shape[dim] == size:
            return None
        if pattern.problem is not None:
            raise GuideError(
                f"argument {path!r} has {shape[dim]} steps along dim {dim} in this call; the "
                f"guide was built for {size} and cannot serve another length: "
                f"{pattern.problem}. Build the guide on sequences as long as the longest and "
                "pad them to that length with a mask"
            )
        return int(shape[dim])

    @contextmanager
    def _bound(self, state: _LengthState) -> Iterator[None]:
        """Serve one call with the structure, bindings and readers of another length
        (:class:`_LengthState`): the methods of the call read them from the guide."""
        saved = {name: getattr(self, name) for name in _LengthState.ATTRIBUTES}
        try:
            for name in _LengthState.ATTRIBUTES:
                value = getattr(state, name)
                if value is not None:
                    setattr(self, name, value)
            yield
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def _state_at(
        self, size: int, args: tuple, kwargs: dict, graph: ModelGraph | None = None
    ) -> _LengthState:
        """The guide at sequences of ``size`` steps: the model compiled at this call's
        arguments (``graph``, if given; one trace: the structure was checked at the
        built length and the loop's slice is checked here), the guide's slice
        unrolled to its length (:meth:`SequencePattern.unroll`), the same modules."""
        if size in self._lengths:
            return self._lengths[size]
        pattern, built = self.sequence, self.plan.time
        assert pattern is not None and built is not None
        # running the model here must neither reach the caller's trace nor move the
        # random stream the caller's own draws follow
        if graph is None:
            # (argument checks off: the model's own run makes them)
            with (
                poutine.block(),
                torch.random.fork_rng(devices=[]),
                pyro.validation_enabled(False),
            ):
                graph = compile_model(
                    self.model, model_args=args, model_kwargs=kwargs, num_traces=1
                )
        # no run of the model to check the observed values against: the bindings
        # are those of the built length, checked there (_is_observed_value)
        trace = SimpleNamespace(nodes={})
        time = time_structure(graph)
        if time is None or not same_slice(time, built) or time.steps[0] != built.steps[0]:
            raise GuideError(
                f"at {size} steps the model's pyro.markov loop is not the loop the guide was "
                f"built on ({built.summary() if time is None else time.summary()}); a guide "
                "serves the lengths of one loop"
            )
        length = len(time.steps)
        unrolled = pattern.unroll_groups(length)
        first_site = {s.template: s.sites[0] for s in built.series}
        structure: dict[str, tuple[tuple[str, PlateLink], ...]] = {}
        block: dict[str, tuple[str | None, ...]] = {}
        for site in pattern.order(length):
            if site not in unrolled:
                structure[site], block[site] = self._structure[site], self._block[site]
                continue
            model_site = first_site[split_step(site)[0]]  # type: ignore[index]
            links = self._series_links[model_site]
            parents = unrolled[site][1] + tuple((name, name) for name in pattern.time_inputs)
            structure[site] = _linked(parents, links)  # O(1): the runs are not copied
            block[site] = self._block[model_site]
        feature_keys = dict(self._feature_keys)
        for name, group in read_once(parents for _, parents in unrolled.values()):
            if name not in feature_keys and group in self._series_feature_keys:
                feature_keys[name] = self._series_feature_keys[group]
        steps: dict[str, nn.Module] = {}
        seen: set[str] = set()
        summary_sites = pattern.summary_sites(length)
        for site in structure:
            if site not in unrolled:
                continue
            template = split_step(site)[0]  # type: ignore[index]
            shared = self.conditionals[self._keys[first_site[template]]].shared
            roles = unrolled[site][0]
            steps[site] = StepConditional(
                shared,
                roles,
                template not in seen,
                summary_sites,
                pattern.time_inputs,
                pattern.step_mask,
            )
            seen.add(template)
        state = _LengthState(
            graph=graph,
            _model_trace=trace,
            _structure=structure,
            _block=block,
            _read_by=_read_names(structure, unrolled, summary_sites, pattern.time_inputs),
            _feature_keys=feature_keys,
            _step_modules=steps,
        )
        with self._bound(state):
            binder = GuideBinder(
                self.model, graph, {k: self.bindings[k] for k in self._binder.user_bindings}
            )
            state._binder, state.bindings = binder, binder.bindings
        with self._bound(state):
            arguments = binder.bind(args, kwargs)
            state._masks = self._mask_readers(graph)
            state._given_shapes = self._read_given_shapes(graph, arguments)
        with self._bound(state):
            state._witness = self._plate_witnesses(graph, arguments)
        self._lengths[size] = state
        return state

    def _plates_of(self, name: str) -> tuple[str, ...]:
        """The vectorized plates of a node of the guide (a step of a series the built
        inverse lacks: those of the series' first step)."""
        nodes = self.inverse.dag.nodes
        if name in nodes:
            return nodes[name]["plates"]
        split = split_step(name)
        time = self.plan.time
        if split is not None and time is not None:
            for series in time.series:
                if series.template == split[0]:
                    return nodes[series.sites[0]]["plates"]
        return self.graph[name].plates

    def _mask_readers(
        self, graph: ModelGraph
    ) -> dict[str, list[Callable[[dict[str, Any], dict[str, torch.Tensor]], Any]]]:
        """For each guide site the model masks, how to build the same mask at call
        time (:class:`~pgmdl.graph.sites.SiteMask`). Where the model scores no
        density for an entry, a guide that scores one has an unbounded ELBO
        there; a mask the guide cannot rebuild is warned about."""
        readers: dict[str, list[Callable[..., Any]]] = {}
        order = list(self._structure)
        for site in order:
            # a masked plate's own mask: the guide's MaskedPlate applies it
            multiset = {
                graph.plates[p].mask_argument
                for p in graph[site].plates
                if graph.plates[p].multiset
            }
            for mask in graph[site].masks:
                if mask.kind == "argument" and mask.source.path in multiset:
                    continue
                read = self._mask_reader(graph, site, mask, order)
                if read is not None:
                    readers.setdefault(site, []).append(_per_event(read, mask.event_dims))
        return readers

    def _mask_reader(
        self, graph: ModelGraph, site: str, mask: SiteMask, order: list[str]
    ) -> Callable[[dict[str, Any], dict[str, torch.Tensor]], Any] | None:
        if mask.kind == "constant":
            return lambda arguments, values, m=mask.source: m
        if mask.kind == "argument":
            view = mask.source

            def from_argument(arguments: dict[str, Any], values: dict) -> torch.Tensor:
                value = self._binder.reader.read_argument(arguments, view.path)
                return view.replay(torch.as_tensor(value)).bool()

            return from_argument
        source = mask.source
        if mask.kind == "site" and (
            (source in order and order.index(source) < order.index(site))
            or (source in graph.sites and not graph[source].is_latent)
        ):
            return lambda arguments, values, s=source: values[s] != 0
        reason = (
            f"site {source!r} is not sampled before it by the guide"
            if mask.kind == "site"
            else f"the mask is {mask.describe()}"
        )
        warnings.warn(
            f"the model masks latent site {site!r} ({mask.describe()}), but NaMIGuide cannot "
            f"build the same mask ({reason}): the guide scores entries the model does not, "
            "and the ELBO is no bound on them (its entropy there can grow without limit). "
            "Compute the mask as a view of a model argument, or as the value of an earlier "
            "site (.mask(z_pres)), or give NaMIGuide(conditionals={...}) for this site.",
            GuideWarning,
            stacklevel=5,
        )
        return None

    def _nonfinite(
        self,
        site: str,
        parents: tuple[tuple[str, PlateLink], ...],
        features: dict[str, torch.Tensor],
    ) -> str | None:
        """Why ``site``'s conditional got non-finite parameters, naming the site,
        or None if nothing is non-finite (the error was something else)."""
        module = self.conditionals[self._keys[site]]
        bad = [n for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            return (
                f"the parameters of q({site} | ...) in NaMIGuide are NaN or infinite "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): an earlier optimizer "
                "step applied a non-finite gradient. Lower the learning rate, or train with "
                "pgmdl.fit, which checks every step before updating and names the sites whose "
                "log-densities went non-finite."
            )
        parents_bad = [
            p for p, _ in parents if p in features and not bool(torch.isfinite(features[p]).all())
        ]
        if parents_bad:
            return (
                f"q({site} | ...) in NaMIGuide reads non-finite values of "
                f"{', '.join(map(repr, parents_bad))} in this call (NaN or infinite data, or a "
                "parent sampled from a conditional that overflowed). Check the data, or lower "
                "the learning rate."
            )
        return None

    def _observed_in_this_call(
        self, arguments: dict[str, Any], plates: dict[str, Any], index: set[str]
    ) -> dict[str, torch.Tensor]:
        """Values of the latent sites the model observes in this call (a labelled
        batch of a semi-supervised model: ``obs=ys`` with ``ys`` given)."""
        given = {}
        for site, view in self._sometimes.items():
            value = self._binder.reader.read_argument(arguments, view.path)
            if value is None:
                continue
            value = view.replay(torch.as_tensor(value))
            info = self.graph[site]
            for plate in index & set(info.plates):
                value = _take_plate(
                    value, len(info.event_shape), self.graph.plates[plate], plates[plate]._indices
                )
            given[site] = value
        return given

    def _given_value(self, arguments: dict[str, Any], name: str) -> torch.Tensor:
        value = self._binder.read(arguments, name)
        depth, shape = self._given_shapes[name]
        batch_dims = value.dim() - len(shape)
        if batch_dims < 0 or tuple(value.shape[batch_dims:]) != shape or batch_dims > depth:
            raise GuideError(
                f"{describe_given(self.graph, name)} has shape {tuple(value.shape)} in this call; "
                "the guide was built for values of shape "
                f"(<plates>..., {', '.join(map(str, shape))}) (one replicate is "
                f"{tuple(shape)}, inside plates {list(self._plates_of(name))}). "
                "Pass data shaped like the data the guide was first called with."
            )
        return value

    def _plates(
        self,
        values: dict[str, torch.Tensor],
        args: tuple,
        kwargs: dict,
        arguments: dict[str, Any],
    ) -> tuple[dict[str, Any], set[str]]:
        """This call's plates, and the plates whose full data must be indexed."""
        user = {}
        if self.create_plates is not None:
            made = self.create_plates(*args, **kwargs)
            made = [made] if isinstance(made, pyro.plate) else list(made)
            user = {p.name: p for p in made}
        plates: dict[str, Any] = {}
        index: set[str] = set()
        for name in self._guide_plates:
            info = self.graph.plates[name]
            if name in user:
                plates[name] = user[name]
                continue
            if info.multiset:
                plates[name] = MaskedPlate(name, self._binder.plate_mask(arguments, name), info.dim)
                continue
            size, subsample = info.size, info.subsample_size
            device = None
            if name in self._witness:
                given, position = self._witness[name]
                value = values[given]
                device = value.device
                n = value.shape[value.dim() - position]
                if not info.is_subsampled:
                    size = subsample = n
                elif n == info.size:  # full data passed: index it with the plate's subsample
                    index.add(name)
                else:  # a minibatch passed: the plate scales by size / n
                    subsample = n
            if info.implicit:  # as the model wrote it: pyro.plate(name), sized by the data
                plates[name] = pyro.plate(name, dim=info.dim)
                plates[name].data_size = subsample
                continue
            plates[name] = pyro.plate(
                name, size, subsample_size=subsample, dim=info.dim, device=device
            )
        return plates, index

    def _subsample(
        self, values: dict[str, torch.Tensor], plates: dict[str, Any], index: set[str]
    ) -> dict[str, torch.Tensor]:
        for plate in index:
            info, indices = self.graph.plates[plate], plates[plate]._indices
            for name, (_, shape) in self._given_shapes.items():
                if plate in self._plates_of(name):
                    values[name] = _take_plate(values[name], len(shape), info, indices)
        return values

    # ------------------------------------------------------------------ introspection

    # The introspection below shows the guide at the length of the call that set it
    # up (a time-shared guide of a long loop is planned on its first steps).

    def parents(self, site: str) -> tuple[str, ...]:
        """The parents ``site`` is conditioned on in this guide (after set-up)."""
        self._require_setup()
        with self._shown():
            if site not in self._structure:
                raise SiteNotFoundError(site, self._structure, what="guide site")
            return tuple(p for p, _ in self._structure[site])

    def conditional(self, site: str) -> nn.Module:
        """The :class:`Conditional` module of ``site`` (a step of a time-shared series:
        its :class:`~pgmdl.guides.sequence.StepConditional`)."""
        self._require_setup()
        with self._shown():
            if site in self._step_modules:
                return self._step_modules[site]
        if site not in self._keys or self._keys[site] not in self.conditionals:
            raise SiteNotFoundError(site, self._keys, what="guide site with a built conditional")
        return self.conditionals[self._keys[site]]

    def parent_features(self, name: str) -> nn.Module:
        """The module turning parent ``name``'s values into normalized features."""
        self._require_setup()
        with self._shown():
            if name not in self._read_by:
                raise SiteNotFoundError(name, sorted(self._read_by), what="guide parent")
            return self.inputs[self._feature_keys[name]]

    @property
    def sites(self) -> tuple[str, ...]:
        """The latent sites the guide samples, in sampling order."""
        self._require_setup()
        with self._shown():
            return tuple(self._structure)

    def structure(self) -> nx.DiGraph:
        """The guide's DAG (nodes: given names and guide sites; edges parent -> site)."""
        self._require_setup()
        out = nx.DiGraph()
        with self._shown():
            for site, parents in self._structure.items():
                out.add_node(site)
                for parent, _ in parents:
                    out.add_edge(parent, site)
        return out

    def _shown(self) -> AbstractContextManager[None]:
        """The state of the set-up call's length, bound (the built state otherwise)."""
        state = self._lengths.get(self._setup_size) if self._setup_size is not None else None
        return self._bound(state) if state is not None else nullcontext()

    def _require_setup(self) -> None:
        if self.prototype_trace is None:
            raise GuideError(
                "the guide is built on its first call; call it (or guide.setup(*args, **kwargs)) "
                "with the model's arguments first"
            )


# ---------------------------------------------------------------------- helpers


@dataclass
class _LengthState:
    """What a :class:`NaMIGuide` reads at one length of a ``pyro.markov`` loop other
    than the one it was built for: the model compiled at that length, the guide's
    structure there, the bindings and readers of its sites, the modules of its
    steps (views of the shared ones). ``None``: the built guide's own."""

    ATTRIBUTES = (
        "graph",
        "_model_trace",
        "_structure",
        "_block",
        "_read_by",
        "_feature_keys",
        "_step_modules",
        "_binder",
        "bindings",
        "_masks",
        "_given_shapes",
        "_witness",
    )
    graph: ModelGraph
    _model_trace: Any
    _structure: dict[str, tuple[tuple[str, PlateLink], ...]]
    _block: dict[str, tuple[str | None, ...]]
    _read_by: set[str]
    _feature_keys: dict[str, str]
    _step_modules: dict[str, nn.Module]
    _binder: GuideBinder | None = None
    bindings: dict[str, Any] | None = None
    _masks: dict[str, list[Callable[..., Any]]] | None = None
    _given_shapes: dict[str, tuple[int, tuple[int, ...]]] | None = None
    _witness: dict[str, tuple[str, int]] | None = None


def _by_step(names: Mapping[str, Any], graph: ModelGraph) -> dict[str, Any]:
    """``{site: value}`` with a series template (``"z_{t}"``) spelled out to every
    step of the series in ``graph``."""
    out = {}
    for key, value in names.items():
        if "{t}" not in key:
            out[key] = value
            continue
        steps = [s for s in graph.sites if _group(s) == key]
        out.update({s: value for s in steps} if steps else {key: value})
    return out


def _read_names(
    structure: Mapping[str, tuple[tuple[str, PlateLink], ...]],
    unrolled: Mapping[str, tuple[Any, tuple]],
    summary_sites: Sequence[Sequence[str]],
    time_inputs: Sequence[str],
) -> set[str]:
    """The names some conditional reads, in O(T): a shared step reads its lags,
    its statics, and (through the summary) every step's observations."""
    names = set(time_inputs)
    names.update(name for sites in summary_sites for name in sites)
    for site, parents in structure.items():
        if site in unrolled:
            roles = unrolled[site][0]
            names.update(p for p in roles.lagged.values() if p is not None)
            names.update(roles.static)
        else:
            names.update(p for p, _ in parents)
    return names


def _unreadable_observation(name: str, info: SiteInfo, arguments: Mapping[str, Any]) -> str:
    """Why the guide cannot read observed site ``name`` at call time, and the fix."""
    sources = ", ".join(map(repr, info.computed_from))
    what = (
        f"is computed inside the model from argument(s) {sources} by operations that are "
        "no view of one argument, which the guide cannot replay"
        if info.computed_from
        else "is not a model argument"
    )
    heads = {parse_path(p)[0] for p in info.computed_from if _HEAD_PATH.match(p)}
    packed = [h for h in sorted(heads) if isinstance(arguments.get(h), PackedSequence)]
    hint = (
        f" Argument {packed[0]!r} is a PackedSequence: unpack it before calling the model and "
        "pass the padded tensor with a mask (the deep Markov model's layout: "
        "model(mini_batch, mini_batch_mask, ...), observing mini_batch[:, t]); the guide then "
        "reads each step as a view and serves every length."
        if packed
        else ""
    )
    return (
        f"observed site {name!r} is a parent of a guide site, but its value {what}, so the "
        f"guide cannot find it at call time.{hint} Pass the observed value itself, or a tensor "
        f"it is a view of, as an argument (obs={name}), or give NaMIGuide(model, bindings="
        f"{{{name!r}: lambda arguments: ...}}) computing it from the model's arguments."
    )


_HEAD_PATH = re.compile(r"^[A-Za-z_]")


def _linked(parents: Sequence[tuple[str, str]], links: Mapping[str, PlateLink]) -> Sequence:
    """``(name, links[group])`` for each ``(name, group)`` of ``parents``, lazily
    when they are a :class:`~pgmdl.guides.sequence.Parents`."""
    if isinstance(parents, Parents):
        return parents.mapped(lambda item: (item[0], links[item[1]]))
    return tuple((name, links[group]) for name, group in parents)


def _group(name: str) -> str:
    """A name's series template (``"x_{t}"`` for ``"x_3"``), or the name itself."""
    split = split_step(name)
    return name if split is None else split[0]


def _series_links(
    time: TimeStructure | None, structure: Mapping[str, tuple[tuple[str, PlateLink], ...]]
) -> dict[str, dict[str, PlateLink]]:
    """``{first site of a latent series: {parent group: plate link}}`` from the
    built structure: the links of the steps of any length."""
    out: dict[str, dict[str, PlateLink]] = {}
    if time is None:
        return out
    for series in time.series:
        links: dict[str, PlateLink] = {}
        for site in series.sites:
            for parent, link in structure.get(site, ()):
                links.setdefault(_group(parent), link)
        out[series.sites[0]] = links
    return out


def _check_init_scale(
    init_scale: float | Mapping[str, float] | None,
) -> float | dict[str, float] | None:
    values = init_scale.values() if isinstance(init_scale, Mapping) else [init_scale]
    for value in values:
        if value is None:
            continue
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise GuideError(
                f"init_scale={init_scale!r}: use a positive number, or {{site: positive number}}"
            )
    return dict(init_scale) if isinstance(init_scale, Mapping) else init_scale


def _take_plate(
    value: torch.Tensor, replicate_ndim: int, plate: PlateInfo, indices: torch.Tensor
) -> torch.Tensor:
    """``value`` indexed by a subsampled plate's ``indices`` along the plate's
    dim when it holds the plate's full data there (``plate.size``), as when
    the full data set is passed to a model that subsamples; else unchanged.
    ``replicate_ndim`` counts the dims right of the plates' batch dims."""
    if plate.dim is None:
        return value
    position = value.dim() - replicate_ndim + plate.dim
    if position >= 0 and value.shape[position] == plate.size:
        return value.index_select(position, indices.to(value.device))
    return value


def _per_event(read: Callable[..., Any], event_dims: int) -> Callable[..., Any]:
    """A mask reader reduced over the mask's trailing ``event_dims``: an event is
    masked out when all its entries are."""
    if not event_dims:
        return read

    def reduced(arguments: dict[str, Any], values: dict[str, torch.Tensor]) -> Any:
        mask = torch.as_tensor(read(arguments, values))
        if mask.dim() <= event_dims:
            return mask.all()
        return mask.all(dim=tuple(range(-event_dims, 0)))

    return reduced


def _size(plates: dict[str, Any], name: str) -> int:
    """A plate's size in this call (a plate without a size: the data's)."""
    plate = plates[name]
    return plate.subsample_size if plate.subsample_size >= 0 else plate.data_size


# ---------------------------------------------------------------------- helpers


def _depth(graph: ModelGraph, site: str) -> int:
    dims = [graph.plates[p].dim for p in graph[site].plates if graph.plates[p].dim is not None]
    return max((-d for d in dims), default=0)


def _replicate_shape(
    graph: ModelGraph, site: str, value_shape: tuple[int, ...]
) -> tuple[int, tuple[int, ...]]:
    """(plate depth, shape of one replicate) of a site's value.

    Batch dimensions a plate declares are the replicates; without any plate,
    the whole value is one replicate. Batch dimensions a plate does not
    declare must have size 1.
    """
    info = graph[site]
    depth = _depth(graph, site)
    event = tuple(info.event_shape)
    if depth == 0:
        return 0, tuple(value_shape)
    batch = value_shape[: len(value_shape) - len(event)]
    plate_dims = {graph.plates[p].dim for p in info.plates if graph.plates[p].dim is not None}
    for position in range(-len(batch), 0):
        if position not in plate_dims and batch[position] != 1:
            raise GuideError(
                f"site {site!r} has a batch dimension of size {batch[position]} at dim "
                f"{position} that no plate declares (batch shape {tuple(batch)}, plates "
                f"{list(info.plates)}); declare it with .to_event() or a pyro.plate"
            )
    return depth, event


def _module_key(index: int, name: str) -> str:
    """A ModuleDict key for a site (site names may hold dots, keys may not)."""
    return f"n{index}_" + "".join(c if c.isalnum() else "_" for c in name)


def _categories(graph: ModelGraph, name: str) -> int:
    """The number of categories of a categorical site (fed one-hot), else 0."""
    if name not in graph.sites:
        return 0
    support = base_support(graph[name].support)
    if not is_finite_integer_interval(support):
        return 0
    low, high = integer_bounds(support)
    return high + 1 if low == 0 else 0


def _tensors(obj: Any):  # noqa: ANN202
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
