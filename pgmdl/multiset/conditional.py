r"""The guide conditional of a plate whose replicates the inversion couples (thesis §9.2).

When a site's replicates are co-parents of one child (the parts' latents
:math:`w_i` of CompVAE all feed the whole :math:`x` through their sum),
inverting the model joins them (:attr:`pgmdl.InverseGraph.joint_plates`): a
faithful guide must sample them *jointly*, not independently given pooled
summaries. :class:`MultisetConditional` is that joint conditional:

* a :class:`~pgmdl.multiset.graphnn.GraphSetEncoder` (eq. 9.12–9.14) reads,
  for every replicate, the parents that share its index (a part's metadata)
  and, as the global context :math:`\tilde h`, the parents outside the plate
  (the whole :math:`x`, the global latent :math:`z`, the input :math:`c`);
  it costs :math:`O(K)` and is permutation-equivariant;
* it outputs :math:`(\mu_i, \sigma_i, \nu_i)` per coordinate, the parameters of
  the :class:`~pgmdl.multiset.correlated.CorrelatedMultisetNormal` of §9.2.2,
  which can pin down :math:`\sum_i w_i` while leaving each :math:`w_i` loose.

Pyro sees the joint through :class:`PlateView`: a distribution whose batch
shape runs over the plate like the model's site (so plates, masks and ELBOs
need nothing special) and whose ``log_prob`` hands each present replicate an
equal share of the joint log-density, so that the masked sum over the plate
is the exact joint density (and likewise the closed-form KL, eq. 9.28, for
``TraceMeanField_ELBO``). The last layer starts at zero: the conditional
starts at the prior's mean with unit scale and :math:`\nu = 0`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from pyro.distributions import Normal, TorchDistribution, constraints
from torch import nn
from torch.distributions import Independent, register_kl

from pgmdl.errors import GuideError
from pgmdl.graph.model_graph import ModelGraph
from pgmdl.guides.conditional import ParentSpec, fit_batch, gather_features, make_encoders
from pgmdl.multiset.correlated import CorrelatedMultisetNormal
from pgmdl.multiset.graphnn import GraphSetEncoder
from pgmdl.plugins import JointRequest, register_joint_conditional


class PlateView(TorchDistribution):
    """A joint distribution over the ``K`` replicates of a plate, seen per replicate.

    Args:
        joint: the joint over the replicates, event shape ``(K, D)``, batch shape
            the site's batch shape without the plate.
        dim: the plate's batch dimension (negative) in the site's layout.
        scalar: the site's event shape is ``()`` (``D = 1`` in ``joint``).

    The batch shape is the site's (the plate's ``K`` on ``dim``), the event shape
    ``(D,)`` (or ``()``). ``log_prob`` gives each present replicate
    ``joint.log_prob / K_n`` and padded ones 0, so summing over the plate gives
    the joint log-density exactly.

    Example:
        >>> loc, scale, nu = torch.zeros(2, 3, 1), torch.ones(2, 3, 1), torch.zeros(2, 3, 1)
        >>> joint = CorrelatedMultisetNormal(loc, scale, nu)      # batch (2,), event (3, 1)
        >>> q = PlateView(joint, dim=-2)                           # batch (3, 2), event (1,)
        >>> w = q.rsample()
        >>> w.shape, q.batch_shape
        (torch.Size([3, 2, 1]), torch.Size([3, 2]))
        >>> torch.allclose(q.log_prob(w).sum(-2), joint.log_prob(w.movedim(-3, -2)))
        True
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, joint: CorrelatedMultisetNormal, dim: int, scalar: bool = False) -> None:
        self.joint = joint
        self.dim = dim
        self.scalar = scalar
        k, d = joint.event_shape
        batch = list(joint.batch_shape)
        batch.insert(len(batch) + dim + 1, k)
        event = () if scalar else (d,)
        self._present = joint.mask.movedim(-1, dim)  # the mask in the plate layout
        super().__init__(torch.Size(batch), torch.Size(event), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.real if self.scalar else constraints.independent(constraints.real, 1)

    @property
    def mean(self) -> torch.Tensor:
        return self._to_plate(self.joint.mean)

    @property
    def variance(self) -> torch.Tensor:
        return self._to_plate(self.joint.variance)

    def _to_plate(self, value: torch.Tensor) -> torch.Tensor:
        """``(..., K, D)`` joint layout -> the plate layout (``K`` on ``dim``)."""
        value = value.movedim(-2, self.dim - 1)
        return value.squeeze(-1) if self.scalar else value

    def _to_joint(self, value: torch.Tensor) -> torch.Tensor:
        if self.scalar:
            value = value.unsqueeze(-1)
        return value.movedim(self.dim - 1, -2)

    def _share(self, joint_value: torch.Tensor) -> torch.Tensor:
        """Spread a per-multiset quantity ``(..., *batch)`` over the present replicates."""
        count = self.joint.mask.sum(-1).clamp(min=1).to(joint_value.dtype)
        share = (joint_value / count).unsqueeze(self.dim)
        return share * self._present.to(share.dtype)

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001, ANN201
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        raise NotImplementedError(
            "a joint over a plate's replicates cannot be expanded to another batch shape"
        )

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        return self._to_plate(self.joint.rsample(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._share(self.joint.log_prob(self._to_joint(value)))

    def entropy(self) -> torch.Tensor:
        return self._share(self.joint.entropy())

    def kl_to_normal(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """KL to a factorized Gaussian given in the plate layout, shared out per replicate."""
        loc = loc.expand(self.batch_shape + self.event_shape)
        scale = scale.expand(self.batch_shape + self.event_shape)
        return self._share(self.joint.kl_to_normal(self._to_joint(loc), self._to_joint(scale)))


@register_kl(PlateView, Independent)
def _kl_plate_view_independent(q: PlateView, p: Independent) -> torch.Tensor:
    base = p.base_dist
    if q.scalar or p.reinterpreted_batch_ndims != 1 or not isinstance(base, Normal):
        raise NotImplementedError
    return q.kl_to_normal(base.loc, base.scale)


@register_kl(PlateView, Normal)
def _kl_plate_view_normal(q: PlateView, p: Normal) -> torch.Tensor:
    if not q.scalar:
        raise NotImplementedError
    return q.kl_to_normal(p.loc, p.scale)


class MultisetConditional(nn.Module):
    r"""Joint conditional :math:`q(\{w_i\} \mid \cdot)` of a site over one plate (§9.2).

    Args:
        site: the site's name.
        plate: the plate's name; ``dim`` its batch dimension.
        node_parents: parents read per replicate (same index in the plate).
        global_parents: parents outside the plate (the context :math:`\tilde h`).
        size: coordinates per replicate ``D`` (1 for a scalar site).
        scalar: the site's event shape is ``()``.
        init: a typical value of one replicate (the prior's mean).
        hidden: hidden widths; ``layers``: message-passing layers.
    """

    def __init__(
        self,
        site: str,
        plate: str,
        dim: int,
        node_parents: Sequence[ParentSpec],
        global_parents: Sequence[ParentSpec],
        size: int,
        *,
        scalar: bool = False,
        init: torch.Tensor | None = None,
        hidden: Sequence[int] = (64,),
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.site, self.plate, self.dim = site, plate, dim
        self.size, self.scalar = size, scalar
        self.node_parents = tuple(node_parents)
        self.global_parents = tuple(global_parents)
        self.node_encoders, node_width = make_encoders(self.node_parents, hidden)
        self.global_encoders, global_width = make_encoders(self.global_parents, hidden)
        self.node_width = node_width
        width = max(hidden) if hidden else 64
        self.graph = GraphSetEncoder(
            max(node_width, 1),
            3 * size,
            context_features=global_width,
            width=width,
            layers=layers,
            hidden=hidden,
        )
        # start at the prior's mean, unit scale, nu = 0 (rho_i = 1 / (1 + K))
        nn.init.zeros_(self.graph.out.weight)
        loc = torch.zeros(size)
        if init is not None:
            value = init.detach().reshape(-1).to(loc)
            if value.numel() == size and bool(torch.isfinite(value).all()):
                loc = value
        bias = torch.cat([loc, torch.full((size,), 0.5413), torch.zeros(size)])  # softplus^-1(1)
        with torch.no_grad():
            self.graph.out.bias.copy_(bias)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        block: torch.Size,
        max_depth: int,
        mask: torch.Tensor | None = None,
        masks: Mapping[int, torch.Tensor] | None = None,
    ) -> PlateView:
        """The joint over the plate given the parents' features.

        Args:
            inputs: parent name -> normalized features.
            block: the site's batch shape in this call (the plate's ``K`` on ``dim``).
            max_depth: the model's plate nesting.
            mask: the plate's mask ``(*outer, K)`` (a multiset plate), or None.
            masks: plate dim -> mask in the plate layout, for pooled parents.
        """
        k = block[self.dim]
        node = gather_features(self.node_parents, self.node_encoders, inputs, masks)
        if node is None:
            ref = self.graph.out.bias
            node = ref.new_ones(block + (1,))
        node = fit_batch(node, block, max_depth)
        outer = list(block)
        outer[self.dim] = 1
        context = gather_features(self.global_parents, self.global_encoders, inputs, masks)
        if context is not None:
            context = fit_batch(context, torch.Size(outer), max_depth).squeeze(self.dim - 1)
        parts = node.movedim(self.dim - 1, -2)  # (*outer, K, F)
        if mask is None:
            mask = torch.ones(parts.shape[:-1], dtype=torch.bool, device=parts.device)
        elif tuple(mask.shape) != tuple(parts.shape[:-1]):
            raise GuideError(
                f"site {self.site!r}: the mask of plate {self.plate!r} has shape "
                f"{tuple(mask.shape)} but the site's replicates are {tuple(parts.shape[:-1])} "
                f"((*outer plates, K={k})); pass the mask of this minibatch"
            )
        raw = self.graph(parts, mask, context)
        loc, raw_scale, nu = raw.split(self.size, dim=-1)
        scale = nn.functional.softplus(raw_scale) + 1e-4
        joint = CorrelatedMultisetNormal(loc, scale, nu, mask, validate_args=False)
        return PlateView(joint, self.dim, scalar=self.scalar)


class MultisetJointConditional:
    """The multiset plug-in's offer to the guide planner (:mod:`pgmdl.plugins`):
    a :class:`MultisetConditional` for every real-valued site (at most one event
    dimension) whose replicates the inversion joins along a plate."""

    name = "multiset"

    def unfit(self, graph: ModelGraph, site: str) -> str | None:
        info = graph[site]
        if info.support_name != "real" or info.is_discrete:
            return f"has support {info.support_name!r}; the correlated Gaussian needs real values"
        if len(info.event_shape) > 1:
            return f"has event shape {tuple(info.event_shape)}; use one event dimension at most"
        if self.plate(graph, site) is None:
            return "lives in no vectorized plate"
        return None

    def plate(self, graph: ModelGraph, site: str) -> str | None:
        """The site's multiset plate, else its innermost vectorized plate."""
        plates = [graph.plates[p] for p in graph[site].plates if graph.plates[p].dim is not None]
        for info in plates:
            if info.multiset:
                return info.name
        return min(plates, key=lambda p: p.dim).name if plates else None

    def build(self, request: JointRequest) -> MultisetConditional:
        unknown = set(request.options) - {"layers"}
        if unknown:
            raise GuideError(
                f"joint_options {sorted(unknown)} are not options of the multiset joint "
                f"conditional of site {request.site!r}; it takes 'layers'"
            )
        return MultisetConditional(
            request.site,
            request.plate,
            request.dim,
            list(request.nodes),
            list(request.context),
            request.event_size,
            scalar=request.scalar,
            init=request.init,
            hidden=request.hidden,
            layers=int(request.options.get("layers", 2)),
        )


register_joint_conditional(MultisetJointConditional())
