r"""One guide conditional: :math:`q(z \mid \text{its parents in the inverse graph})`.

A :class:`Conditional` gathers the values of the site's parents (observed
values, inputs and latents the guide sampled earlier), turns each into a
feature vector per replicate, and maps the features to a distribution:

.. math::

    q(z_i \mid \pi_i) = \text{family}\Big(f\big([\,n_1(\pi_{i,1}),\ \dots,\
        \text{pool}_j\,\phi(n_k(\pi_{j,k}))\,]\big)\Big)

* :math:`n_k` standardizes parent :math:`k` (:class:`~pgmdl.nn.ParentNorm`);
* a parent living in plates the site does not (or along which NaMI joins
  every replicate) is pooled by a :class:`~pgmdl.nn.SetEncoder`;
* a parent living in fewer plates is broadcast;
* :math:`f` is a :class:`~pgmdl.nn.ResidualMLP` whose last layer
  starts at zero, so the conditional starts constant (thesis §4.2.4).

Shapes follow Pyro's conventions: a value is ``batch + replicate_shape``,
where the batch dimensions are the plates' (``dim=-1, -2...``) and, under
parallel enumeration, enumeration dimensions to their left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import nn

from pgmdl.guides.families import Family, NormalFamily
from pgmdl.nn import ParentNorm, ResidualMLP, SetEncoder


@dataclass(frozen=True)
class ParentSpec:
    """How a conditional reads one parent.

    Attributes:
        name: the parent's site (or input) name.
        features: the width of the parent's features per replicate.
        pooled_dims: batch dimensions to pool over (negative, counted on the
            parent's batch dimensions), for plates the site does not share
            or shares with all-pairs dependence.
        keep_same: also feed the same-index value (the parent shares a
            pooled plate with the site).
        same_pooled_dims: with ``keep_same``, the pooled dims of plates the
            site does not live in (a subset of ``pooled_dims``). The
            same-index value still holds every replicate along them (LDA: a
            document's words, for a document-level site joined across
            documents), so it is pooled over them by the same encoder.
    """

    name: str
    features: int
    pooled_dims: tuple[int, ...] = ()
    keep_same: bool = False
    same_pooled_dims: tuple[int, ...] = ()


class PathDerivative(dist.TorchDistribution):
    r"""Sample from ``live`` but score with ``frozen`` (the same distribution,
    parameters detached): the "sticking the landing" estimator.

    The reparameterized gradient of the ELBO has a score term
    :math:`-\nabla_\phi \log q_\phi(z)` with zero expectation (thesis eq. 4.5)
    but non-zero variance; scoring with detached parameters drops it and keeps
    the path derivative (eq. 4.4). Reference: G. Roeder, Y. Wu and D.
    Duvenaud, "Sticking the Landing", NeurIPS 2017.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, live: dist.TorchDistribution, frozen: dist.TorchDistribution) -> None:
        self.live = live
        self.frozen = frozen
        super().__init__(live.batch_shape, live.event_shape, validate_args=False)

    @property
    def support(self):  # noqa: ANN201
        return self.live.support

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.live.rsample(torch.Size(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.frozen.log_prob(value)

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001, ANN201
        return PathDerivative(self.live.expand(batch_shape), self.frozen.expand(batch_shape))


class ParentFeatures(nn.Module):
    """One parent's value as normalized features: flattened per replicate
    (one-hot for a categorical parent), then standardized (or only scaled
    down, ``standardize=False``) by a :class:`~pgmdl.nn.ParentNorm`.
    The guide keeps one per parent site, shared by every conditional that
    reads it."""

    def __init__(
        self, replicate_shape: tuple[int, ...], categories: int = 0, standardize: bool = True
    ) -> None:
        super().__init__()
        self.replicate_shape = tuple(replicate_shape)
        self.categories = categories
        n = max(categories, 1)
        for size in self.replicate_shape:
            n *= size
        self.features = n
        self.norm = ParentNorm(n, standardize=standardize)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        ndim = len(self.replicate_shape)
        if self.categories:
            value = nn.functional.one_hot(value.long(), self.categories)
            ndim += 1
        flat = value.reshape(value.shape[: value.dim() - ndim] + (self.features,))
        return self.norm(flat.to(self.norm.mean.dtype))


class Conditional(nn.Module):
    """The network and family of one latent site of the guide.

    Args:
        site: the site's name.
        parents: how to read each parent (:class:`ParentSpec`).
        family: the variational family.
        hidden: hidden widths of the networks.
        init: a typical value of the site (the family's starting point).
        init_scale: the family's initial scale (Gaussian families).
        fan_in_scaled: fan-in scaling of the network's zero-initialized
            layers (:class:`~pgmdl.nn.ResidualMLP`).
        network: a module (or a factory ``f(in_features, out_features)``)
            replacing the default :class:`ResidualMLP`; it maps the features
            to the family's raw parameters.
        path_derivative: score samples with detached parameters (STL).
        flow: use a conditional normalizing flow (zuko NSF) instead of the
            family's Gaussian (continuous sites only).
    """

    def __init__(
        self,
        site: str,
        parents: Sequence[ParentSpec],
        family: Family,
        *,
        hidden: Sequence[int] = (64,),
        init: torch.Tensor | None = None,
        init_scale: float = 1.0,
        fan_in_scaled: bool = True,
        network: nn.Module | Callable[[int, int], nn.Module] | None = None,
        path_derivative: bool = False,
        flow: bool = False,
    ) -> None:
        super().__init__()
        self.site = site
        self.parents = tuple(parents)
        self.family = family
        self.path_derivative = path_derivative and not family.is_discrete and not flow
        self.encoders, in_features = make_encoders(self.parents, hidden)
        self.in_features = in_features
        self.flow = None
        if flow:
            self.flow = _make_flow(site, family, in_features, hidden)
            self.net = None
        elif network is None:
            bias = family.init_bias(init, init_scale)
            self.net = ResidualMLP(
                in_features, family.num_params, hidden, init_bias=bias, fan_in_scaled=fan_in_scaled
            )
        elif isinstance(network, nn.Module):
            self.net = network
        else:
            self.net = network(in_features, family.num_params)

    def features(
        self,
        inputs: Mapping[str, torch.Tensor],
        masks: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """The concatenated, pooled parent features (features last), from each
        parent's normalized features ``inputs[name]`` (:class:`ParentFeatures`);
        ``masks`` (plate dim -> boolean mask in the plates' layout) keeps padded
        replicates of multiset plates out of the pools."""
        return gather_features(self.parents, self.encoders, inputs, masks)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        block: torch.Size,
        max_depth: int,
        masks: Mapping[int, torch.Tensor] | None = None,
    ) -> dist.TorchDistribution:
        """The distribution of the site given its parents.

        Args:
            inputs: parent name -> normalized features (:class:`ParentFeatures`).
            block: the site's batch shape from its plates in this call.
            max_depth: the model's plate nesting (to tell plates from
                enumeration dimensions).
            masks: plate dim -> mask of a multiset plate in the plates' layout.
        """
        h = self.features(inputs, masks)
        h = self._constant(block) if h is None else fit_batch(h, block, max_depth)
        if self.flow is not None:
            return self._flow_distribution(h, block)
        raw = self.net(h)
        if h is None:  # a free (parameter-only) conditional: one raw vector or one per replicate
            raw = raw.expand(torch.broadcast_shapes(raw.shape[:-1], block) + raw.shape[-1:])
        q = self.family(raw)
        if self.path_derivative:
            return PathDerivative(q, self.family(raw.detach()))
        return q

    def _constant(self, block: torch.Size) -> torch.Tensor | None:
        if self.flow is not None:  # flows always take a context; give them a constant one
            ref = next(self.flow.parameters())
            return ref.new_ones(block + (1,))
        return None

    def _flow_distribution(self, h: torch.Tensor, block: torch.Size) -> dist.TorchDistribution:
        from pyro.contrib.zuko import ZukoToPyro

        family: NormalFamily = self.family  # type: ignore[assignment]
        if h.shape[:-1] != block and h.dim() - 1 < len(block):
            h = h.expand(block + h.shape[-1:])
        return family.pushed(ZukoToPyro(self.flow(h)))


def make_encoders(
    parents: Sequence[ParentSpec], hidden: Sequence[int]
) -> tuple[nn.ModuleList, int]:
    """One :class:`~pgmdl.nn.SetEncoder` per pooled parent (identity
    otherwise), and the width of the concatenated features they give."""
    encoders = nn.ModuleList(
        SetEncoder(p.features, max(hidden) if hidden else p.features, hidden)
        if p.pooled_dims
        else nn.Identity()
        for p in parents
    )
    width = 0
    for p, encoder in zip(parents, encoders, strict=True):
        if p.pooled_dims:
            width += encoder.out_features
            if p.keep_same:
                width += encoder.out_features if p.same_pooled_dims else p.features
        else:
            width += p.features
    return encoders, width


def gather_features(
    parents: Sequence[ParentSpec],
    encoders: nn.ModuleList,
    inputs: Mapping[str, torch.Tensor],
    masks: Mapping[int, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Concatenate the parents' features, pooling those that need it (see
    :meth:`Conditional.features`); ``None`` when there are no parents."""
    parts = []
    for spec, encoder in zip(parents, encoders, strict=True):
        flat = inputs[spec.name]
        if spec.pooled_dims:
            parts.append(_pool(encoder, flat, spec.pooled_dims, masks))
            if spec.keep_same and spec.same_pooled_dims:
                # one summary per index of the shared plates, pooled over the others
                parts.append(_pool(encoder, flat, spec.same_pooled_dims, masks))
            elif spec.keep_same:
                parts.append(flat)
        else:
            parts.append(flat)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(shape + p.shape[-1:]) for p in parts], dim=-1)


def _pool(
    encoder: nn.Module,
    flat: torch.Tensor,
    pooled_dims: Sequence[int],
    masks: Mapping[int, torch.Tensor] | None,
) -> torch.Tensor:
    """``flat`` (features last) pooled by ``encoder`` over the plate dims
    ``pooled_dims``, counting only the present replicates of multiset plates."""
    weight = None
    for d in pooled_dims:
        if masks and d in masks:
            m = masks[d].to(flat.dtype)
            weight = m if weight is None else weight * m
    if weight is not None:
        weight = weight.unsqueeze(-1)
    return encoder(flat, tuple(d - 1 for d in pooled_dims), weight)


def fit_batch(h: torch.Tensor, block: torch.Size, max_depth: int) -> torch.Tensor:
    """Give the features the site's batch shape: expand over the site's plates
    and drop size-1 dimensions left of them (plates the site is not in), unless
    enumeration dimensions sit there."""
    batch = h.shape[:-1]
    if batch == block:  # the common case: nothing to broadcast
        return h
    if len(batch) > max_depth:  # enumerated parents: keep Pyro's padded layout
        return h.expand(torch.broadcast_shapes(batch, block) + h.shape[-1:])
    extra = len(batch) - len(block)
    if extra > 0:
        h = h.reshape(batch[extra:] + h.shape[-1:])
    return h.expand(torch.broadcast_shapes(h.shape[:-1], block) + h.shape[-1:])


def _make_flow(site: str, family: Family, context: int, hidden: Sequence[int]) -> nn.Module:
    from pgmdl.errors import GuideError

    if not isinstance(family, NormalFamily):
        raise GuideError(
            f"site {site!r}: normalizing flows are for continuous sites (family 'normal' and its "
            f"transforms), not {family.name!r}"
        )
    try:
        import zuko
    except ImportError as err:  # pragma: no cover - zuko is a dependency
        raise GuideError("normalizing-flow guides need zuko: pip install zuko") from err
    width = max(hidden) if hidden else 64
    return zuko.flows.NSF(
        features=family.size,
        context=max(context, 1),
        transforms=3,
        hidden_features=(width, width),
    )
