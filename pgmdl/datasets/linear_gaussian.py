"""Synthetic linear-Gaussian Bayesian networks with exact evidence and posteriors.

The data made here is SYNTHETIC: it is drawn from a known Gaussian network,
not measured. Its use is as a test bed for amortized inference: when every
conditional is Gaussian with a mean linear in the parents, the joint, the
marginal of the observed nodes and the posterior of the latent nodes are all
Gaussian and known in closed form (Koller & Friedman 2009, *Probabilistic
Graphical Models*, §7.2 "Linear Gaussian networks"; Bishop 2006, *Pattern
Recognition and Machine Learning*, §2.3 and §8.1.4). A trained guide's ELBO
can then be compared with the exact log-evidence ``log p(x)``, and its
posterior with the exact one.

The network. Nodes ``v_1..v_D`` are listed in topological order and

    v_j = b_j + sum_{k in pa(j)} W[j, k] v_k + s_j eps_j,    eps_j ~ N(0, 1) i.i.d.

In vector form ``v = b + W v + S eps`` with ``W`` strictly lower triangular
and ``S = diag(s)``, so ``v = A (b + S eps)`` with ``A = (I - W)^{-1}``:

* mean ``mu = A b`` and covariance ``Sigma = A S^2 A^T``;
* precision ``Lambda = Sigma^{-1} = (I - W)^T S^{-2} (I - W)``;
* evidence: the observed block ``x`` is ``N(mu_x, Sigma_xx)``;
* posterior (Gaussian conditioning; Bishop eqs. 2.81-2.82 and, in precision
  form, 2.73-2.75): ``z | x ~ N(m, C)`` with
  ``C = Sigma_zz - Sigma_zx Sigma_xx^{-1} Sigma_xz = Lambda_zz^{-1}`` (the
  Schur complement) and
  ``m = mu_z + Sigma_zx Sigma_xx^{-1} (x - mu_x) = mu_z - C Lambda_zx (x - mu_x)``.
  The posterior covariance does not depend on ``x``.

Everything exact is computed in float64 and returned in the dtype and on the
device of the data it is asked about.

Example (the values are synthetic):

>>> import torch
>>> from pgmdl.datasets import chain
>>> bn = chain(3)
>>> bn.latent, bn.observed
(('z0', 'z1', 'z2'), ('x0', 'x1', 'x2'))
>>> data = bn.sample(5, generator=torch.Generator().manual_seed(0))
>>> data["x0"].shape, bn.log_evidence(data).shape
(torch.Size([5]), torch.Size([5]))
>>> mean, cov = bn.posterior(data)
>>> mean.shape, cov.shape
(torch.Size([5, 3]), torch.Size([3, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import networkx as nx
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import MultivariateNormal

from pgmdl.errors import SiteNotFoundError

__all__ = ["LinearGaussianBN", "binary_tree", "chain", "random_sparse"]

# Default parameters for entries not given to LinearGaussianBN.
_WEIGHT_RANGE = (0.8, 1.2)  # |w| drawn uniformly in this range, sign at random
_LATENT_SCALE = 1.0
_OBSERVED_SCALE = 0.5


class LinearGaussianBN:
    """A SYNTHETIC linear-Gaussian Bayesian network with exact inference.

    Nodes are in topological order; node ``j`` is

        v_j = b_j + sum_{k in pa(j)} W[j, k] v_k + s_j * eps_j,   eps_j ~ N(0, 1),

    so the model is Gaussian and its evidence and posterior are closed form
    (see the module docstring for the formulas and references).

    Args:
        nodes: node names, parents before children.
        parents: ``{child: [parent, ...]}``; nodes that are not keys have no parents.
        observed: the observed nodes; every other node is latent.
        weights: ``{(parent, child): w}``. Edges not listed get a weight of
            magnitude uniform in [0.8, 1.2] and random sign, drawn from
            ``torch.Generator().manual_seed(seed)`` on the CPU.
        bias: ``{node: b}``; default 0.
        scale: ``{node: s}`` with ``s > 0``; default 1 for latent nodes and
            0.5 for observed ones.
        seed: seed of the default weights.
        dtype: floating dtype of what :meth:`sample` and :meth:`model` make
            when no data fixes it (exact quantities are always computed in
            float64).
        device: device of what :meth:`sample`, :meth:`model` (without data)
            and :meth:`joint` return; default: torch's default device.

    Raises:
        ValueError: naming the node at fault, for an unknown or repeated
            name, a parent that is not a node, a cycle, nodes out of
            topological order, an observed name that is not a node, no
            observed node, no latent node, a weight on a non-edge, or a
            non-positive or non-finite scale.

    Parameters are stored as Python floats, so one network serves every
    device and dtype.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        parents: Mapping[str, Sequence[str]],
        observed: Sequence[str],
        weights: Mapping[tuple[str, str], float] | None = None,
        bias: Mapping[str, float] | None = None,
        scale: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self._nodes = _check_names(nodes, "nodes")
        index = {name: i for i, name in enumerate(self._nodes)}
        self._parents = _check_parents(self._nodes, index, parents)
        observed = _check_names(observed, "observed")
        for name in observed:
            if name not in index:
                raise ValueError(
                    f"observed node {name!r} is not one of the nodes {list(self._nodes)}"
                )
        observed_set = set(observed)
        self._observed = tuple(n for n in self._nodes if n in observed_set)
        self._latent = tuple(n for n in self._nodes if n not in observed_set)
        if not self._observed:
            raise ValueError("a LinearGaussianBN needs at least one observed node")
        if not self._latent:
            raise ValueError(
                "a LinearGaussianBN needs at least one latent node (every node is observed)"
            )
        self._edges = tuple((p, c) for c in self._nodes for p in self._parents[c])

        generator = torch.Generator().manual_seed(seed)
        low, high = _WEIGHT_RANGE
        n_edges = len(self._edges)
        magnitude = low + (high - low) * torch.rand(
            n_edges, generator=generator, dtype=torch.float64
        )
        sign = torch.randint(0, 2, (n_edges,), generator=generator) * 2 - 1
        drawn = (magnitude * sign).tolist()
        self._weights = dict(zip(self._edges, drawn, strict=True))
        for key, value in (weights or {}).items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"weights keys are (parent, child) pairs, got {key!r}")
            if key not in self._weights:
                parent, child = key
                raise ValueError(
                    f"weights has an entry for {key!r} but {parent!r} is not a parent of "
                    f"{child!r} (edges are {list(self._edges)})"
                )
            self._weights[key] = _finite(value, f"weight of the edge {key[0]!r} -> {key[1]!r}")

        self._bias = dict.fromkeys(self._nodes, 0.0)
        for name, value in (bias or {}).items():
            if name not in index:
                raise ValueError(f"bias given for {name!r}, which is not a node")
            self._bias[name] = _finite(value, f"bias of {name!r}")

        self._scale = {
            n: _OBSERVED_SCALE if n in observed_set else _LATENT_SCALE for n in self._nodes
        }
        for name, value in (scale or {}).items():
            if name not in index:
                raise ValueError(f"scale given for {name!r}, which is not a node")
            value = _finite(value, f"scale of {name!r}")
            if value <= 0:
                raise ValueError(f"the scale of {name!r} must be positive, got {value}")
            self._scale[name] = value

        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self._exact = _exact_moments(self)  # float64, CPU

    # ------------------------------------------------------------------ structure

    @property
    def nodes(self) -> tuple[str, ...]:
        """All node names, in topological order."""
        return self._nodes

    @property
    def latent(self) -> tuple[str, ...]:
        """Latent node names, in node order (the order of :meth:`posterior`)."""
        return self._latent

    @property
    def observed(self) -> tuple[str, ...]:
        """Observed node names, in node order."""
        return self._observed

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """``(parent, child)`` pairs, by child then parent in node order."""
        return self._edges

    @property
    def weights(self) -> dict[tuple[str, str], float]:
        """``{(parent, child): w}`` (a copy)."""
        return dict(self._weights)

    @property
    def bias(self) -> dict[str, float]:
        """``{node: b}`` (a copy)."""
        return dict(self._bias)

    @property
    def scale(self) -> dict[str, float]:
        """``{node: s}`` (a copy)."""
        return dict(self._scale)

    def parents(self, name: str) -> tuple[str, ...]:
        """The parents of ``name``, in node order."""
        if name not in self._parents:
            raise SiteNotFoundError(name, self._nodes, what="node")
        return self._parents[name]

    def children(self, name: str) -> tuple[str, ...]:
        """The children of ``name``, in node order."""
        if name not in self._parents:
            raise SiteNotFoundError(name, self._nodes, what="node")
        return tuple(c for p, c in self._edges if p == name)

    def to(self, device: torch.device | str) -> LinearGaussianBN:
        """Make ``device`` the default device of samples and of :meth:`joint`; returns self."""
        self.device = torch.device(device)
        return self

    def __repr__(self) -> str:
        return (
            f"LinearGaussianBN(latent={list(self._latent)}, observed={list(self._observed)}, "
            f"edges={len(self._edges)})"
        )

    # ------------------------------------------------------------------ Pyro model

    def model(
        self, data: Mapping[str, torch.Tensor] | None = None, batch_size: int | None = None
    ) -> dict[str, torch.Tensor]:
        """The network as a Pyro program over a plate ``"data"`` of ``n`` points.

        Every node is a site ``pyro.sample(name, Normal(loc, scale))``; an
        observed node gets ``obs=data[name]``, the very tensor from ``data``
        (so graph compilation sees which argument carries it). Constants are
        made on the device and in the dtype of the data.

        Args:
            data: ``{observed name: tensor of shape (n,)}``; ``None`` samples
                the observed nodes too.
            batch_size: ``n`` when ``data`` is ``None`` (default 1), in
                ``self.dtype`` on ``self.device``.

        Returns:
            ``{name: value}`` for every node.
        """
        if data is None:
            n = 1 if batch_size is None else int(batch_size)
            if n < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            dtype, device = self.dtype, self.device
        else:
            n, dtype, device = self._check_model_data(data, batch_size)
        values: dict[str, torch.Tensor] = {}
        with pyro.plate("data", n):
            for name in self._nodes:
                loc = self._bias[name]
                for parent in self._parents[name]:
                    loc = loc + self._weights[parent, name] * values[parent]
                if not isinstance(loc, torch.Tensor):  # a root node
                    loc = torch.tensor(loc, dtype=dtype, device=device)
                scale = torch.tensor(self._scale[name], dtype=dtype, device=device)
                obs = data[name] if data is not None and name in self._observed else None
                values[name] = pyro.sample(name, dist.Normal(loc, scale), obs=obs)
        return values

    def _check_model_data(
        self, data: Mapping[str, torch.Tensor], batch_size: int | None
    ) -> tuple[int, torch.dtype, torch.device]:
        for key in data:
            if key not in self._observed:
                what = "a latent node" if key in self._latent else "not a node"
                raise ValueError(
                    f"model data has an entry {key!r}, which is {what}; data holds the "
                    f"observed nodes {list(self._observed)} only (condition latents with "
                    "pyro.condition)"
                )
        n = None
        for name in self._observed:
            if name not in data:
                raise ValueError(
                    f"model data has no value for the observed node {name!r} "
                    f"(it needs {list(self._observed)})"
                )
            value = data[name]
            if not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"the value of {name!r} must be a tensor of shape (n,), "
                    f"got {type(value).__name__}"
                )
            if len(value.shape) != 1 or (n is not None and value.shape[0] != n):
                raise ValueError(
                    f"model data must be tensors of one shape (n,); {name!r} has shape "
                    f"{tuple(value.shape)}" + ("" if n is None else f" where ({n},) was expected")
                )
            n = value.shape[0]
        if batch_size is not None and batch_size != n:
            raise ValueError(f"batch_size={batch_size} but the data has {n} points")
        ref = data[self._observed[0]]
        dtype = ref.dtype if ref.dtype.is_floating_point else self.dtype
        return n, dtype, ref.device

    # ------------------------------------------------------------------ sampling

    def sample_all(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw ``n`` SYNTHETIC joint samples by ancestral sampling.

        Args:
            n: number of points.
            generator: a :class:`torch.Generator` for reproducible draws; the
                noise is drawn on its device and moved to ``device``.
            device: device of the result (default ``self.device``).
            dtype: dtype of the result (default ``self.dtype``).

        Returns:
            ``{name: tensor of shape (n,)}`` for every node, latent ones included.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        draw_on = generator.device if generator is not None else device
        eps = torch.randn(len(self._nodes), n, generator=generator, dtype=dtype, device=draw_on)
        eps = eps.to(device)
        values: dict[str, torch.Tensor] = {}
        for j, name in enumerate(self._nodes):
            value = self._bias[name] + self._scale[name] * eps[j]
            for parent in self._parents[name]:
                value = value + self._weights[parent, name] * values[parent]
            values[name] = value
        return values

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw ``n`` SYNTHETIC data points: ``{observed name: tensor of shape (n,)}``.

        See :meth:`sample_all` for the arguments.
        """
        values = self.sample_all(n, generator=generator, device=device, dtype=dtype)
        return {name: values[name] for name in self._observed}

    # ------------------------------------------------------------------ exact quantities

    def joint(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(D,)`` and covariance ``(D, D)`` of all nodes in node order, float64.

        ``mu = (I - W)^{-1} b`` and ``Sigma = A S^2 A^T`` with ``A = (I - W)^{-1}``.
        """
        mean, cov, _ = self._exact
        return mean.to(self.device), cov.to(self.device)

    def precision(self) -> torch.Tensor:
        """The joint precision ``(I - W)^T S^{-2} (I - W)``, ``(D, D)`` float64."""
        return self._exact[2].to(self.device)

    def log_evidence(self, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Exact ``log p(x)`` of each data point.

        Args:
            data: ``{observed name: tensor}`` with a common (broadcastable)
                batch shape, usually ``(n,)``. Entries for latent nodes are
                ignored.

        Returns:
            A tensor of the batch shape, computed in float64 with
            :class:`torch.distributions.MultivariateNormal` on the observed
            block ``N(mu_x, Sigma_xx)``, returned in the data's dtype and
            on its device.
        """
        x, dtype = self._observed_values(data, "log_evidence")
        mean, cov, _ = self._exact
        obs = self._indices(self._observed)
        mu_x = mean[obs].to(x.device)
        cov_xx = cov[obs][:, obs].to(x.device)
        return MultivariateNormal(mu_x, covariance_matrix=cov_xx).log_prob(x).to(dtype)

    def posterior(self, data: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior of the latents given each data point.

        Args:
            data: as for :meth:`log_evidence`.

        Returns:
            ``(mean, cov)``: means of shape ``(*batch, L)`` and the common
            covariance ``(L, L)`` (it does not depend on ``x``), over
            :attr:`latent` in that order, in the data's dtype and on its
            device. ``cov = Lambda_zz^{-1}`` (the Schur complement
            ``Sigma_zz - Sigma_zx Sigma_xx^{-1} Sigma_xz``) and
            ``mean = mu_z - cov Lambda_zx (x - mu_x)``.
        """
        x, dtype = self._observed_values(data, "posterior")
        mean, cov = self._posterior(x)
        return mean.to(dtype), cov.to(dtype)

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _, prec = self._exact
        lat, obs = self._indices(self._latent), self._indices(self._observed)
        prec_zz = prec[lat][:, lat]
        prec_zx = prec[lat][:, obs]
        cov = torch.cholesky_inverse(torch.linalg.cholesky(prec_zz))
        cov = (cov + cov.T) / 2
        gain = (cov @ prec_zx).to(x.device)  # (L, O)
        mean = mu[lat].to(x.device) - (x - mu[obs].to(x.device)) @ gain.T
        return mean, cov.to(x.device)

    def log_joint(
        self, data: Mapping[str, torch.Tensor], latents: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Exact ``log p(x, z)`` of each point.

        Args:
            data: ``{observed name: tensor}``.
            latents: ``{latent name: tensor}`` for every latent node; shapes
                broadcast with the data's (``(n,)``, or ``(S, n)`` for ``S``
                latent draws per point).

        Returns:
            ``sum_j log N(v_j; b_j + sum_k W[j, k] v_k, s_j^2)`` of the
            broadcast shape, computed in float64, in the data's dtype and on
            its device.
        """
        _, dtype = self._observed_values(data, "log_joint")
        for key in latents:
            if key not in self._latent:
                what = "an observed node" if key in self._observed else "not a node"
                raise ValueError(f"log_joint latents has an entry {key!r}, which is {what}")
        values: dict[str, torch.Tensor] = {}
        device = data[self._observed[0]].device
        for name in self._nodes:
            source = data if name in self._observed else latents
            if name not in source:
                raise ValueError(f"log_joint needs a value for the latent node {name!r}")
            values[name] = torch.as_tensor(source[name], device=device).to(torch.float64)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for name in self._nodes:
            loc = self._bias[name]
            for parent in self._parents[name]:
                loc = loc + self._weights[parent, name] * values[parent]
            s = self._scale[name]
            z = (values[name] - loc) / s
            total = total - 0.5 * z**2 - math.log(s) - 0.5 * math.log(2 * math.pi)
        return total.to(dtype)

    def mean_field_gap(self) -> float:
        """The smallest ``KL(q || p(z | x))`` a fully factorized Gaussian ``q`` can reach.

        For a Gaussian posterior with precision ``P = Lambda_zz`` the best
        mean-field ``q`` has the exact mean and variances ``1 / P_ii``, and
        ``KL = (sum_i log P_ii - log det P) / 2`` nats (Bishop §10.1.2). It is
        the same for every ``x``: the gap between the exact log-evidence and
        the best mean-field ELBO, per data point. Zero when the latents are
        independent a posteriori.
        """
        _, _, prec = self._exact
        lat = self._indices(self._latent)
        prec_zz = prec[lat][:, lat]
        return float(0.5 * (prec_zz.diagonal().log().sum() - torch.logdet(prec_zz)))

    def _indices(self, names: Sequence[str]) -> torch.Tensor:
        position = {n: i for i, n in enumerate(self._nodes)}
        return torch.tensor([position[n] for n in names], dtype=torch.long)

    def _observed_values(
        self, data: Mapping[str, torch.Tensor], what: str
    ) -> tuple[torch.Tensor, torch.dtype]:
        """Stack the observed values into (*batch, O) float64; also the output dtype."""
        if not isinstance(data, Mapping):
            raise TypeError(
                f"{what} expects a mapping {{observed name: tensor}}, got {type(data).__name__}"
            )
        for key in data:
            if key not in self._parents:
                raise ValueError(
                    f"{what}: data has an entry {key!r}, which is not a node "
                    f"(nodes: {list(self._nodes)})"
                )
        missing = [n for n in self._observed if n not in data]
        if missing:
            raise ValueError(
                f"{what}: data has no value for the observed node {missing[0]!r} "
                f"(it needs {list(self._observed)})"
            )
        ref = torch.as_tensor(data[self._observed[0]])
        dtype = ref.dtype if ref.dtype.is_floating_point else self.dtype
        columns = [
            torch.as_tensor(data[n], device=ref.device).to(torch.float64) for n in self._observed
        ]
        try:
            columns = torch.broadcast_tensors(*columns)
        except RuntimeError as err:
            shapes = {n: tuple(c.shape) for n, c in zip(self._observed, columns, strict=True)}
            raise ValueError(
                f"{what}: the observed values' shapes do not broadcast: {shapes}"
            ) from err
        return torch.stack(columns, dim=-1), dtype


def _exact_moments(bn: LinearGaussianBN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, covariance and precision of all nodes, float64 on the CPU."""
    index = {n: i for i, n in enumerate(bn.nodes)}
    d = len(bn.nodes)
    weights = torch.zeros(d, d, dtype=torch.float64)
    for (parent, child), w in bn.weights.items():
        weights[index[child], index[parent]] = w
    bias = torch.tensor([bn.bias[n] for n in bn.nodes], dtype=torch.float64)
    scale = torch.tensor([bn.scale[n] for n in bn.nodes], dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    # I - W is unit lower triangular (parents come first), so A = (I - W)^{-1} is exact
    # by forward substitution.
    a = torch.linalg.solve_triangular(eye - weights, eye, upper=False, unitriangular=True)
    mean = a @ bias
    a_s = a * scale  # A S
    cov = a_s @ a_s.T
    cov = (cov + cov.T) / 2
    root = (eye - weights) / scale[:, None]  # S^{-1} (I - W)
    prec = root.T @ root
    return mean, cov, prec


def _check_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{what} must be a sequence of names, got the string {names!r}")
    names = tuple(names)
    seen = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} must be non-empty strings, got {name!r}")
        if name in seen:
            raise ValueError(f"{what} lists {name!r} twice")
        seen.add(name)
    return names


def _check_parents(
    nodes: tuple[str, ...], index: dict[str, int], parents: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    if not isinstance(parents, Mapping):
        raise TypeError(f"parents must be a mapping {{child: [parent, ...]}}, got {parents!r}")
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    for child, pa in parents.items():
        if child not in index:
            raise ValueError(f"parents given for {child!r}, which is not one of the nodes")
        if isinstance(pa, str):
            raise TypeError(
                f"the parents of {child!r} must be a list of node names, got the string {pa!r}"
            )
        for parent in pa:
            if parent not in index:
                raise ValueError(
                    f"node {child!r} has an unknown parent {parent!r} (nodes: {list(nodes)})"
                )
            if graph.has_edge(parent, child):
                raise ValueError(f"node {child!r} lists the parent {parent!r} twice")
            graph.add_edge(parent, child)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = [u for u, _ in nx.find_cycle(graph)]
        path = " -> ".join(repr(n) for n in [*cycle, cycle[0]])
        raise ValueError(f"the parents form a cycle through {cycle[0]!r}: {path}")
    for child in nodes:
        for parent in graph.predecessors(child):
            if index[parent] > index[child]:
                raise ValueError(
                    f"nodes must be in topological order: {parent!r} is a parent of "
                    f"{child!r} but comes after it"
                )
    return {c: tuple(sorted(graph.predecessors(c), key=index.__getitem__)) for c in nodes}


def _finite(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the {what} must be a number, got {value!r}") from err
    if not math.isfinite(value):
        raise ValueError(f"the {what} must be finite, got {value}")
    return value


# ---------------------------------------------------------------------- generators


def chain(
    num_latents: int = 4,
    *,
    weight: float = 0.9,
    obs_weight: float = 1.0,
    latent_scale: float = 1.0,
    obs_scale: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LinearGaussianBN:
    """A SYNTHETIC Markov chain ``z0 -> z1 -> ...`` with one observation ``z_i -> x_i`` each.

    ``z_0 ~ N(0, latent_scale^2)``, ``z_i ~ N(weight z_{i-1}, latent_scale^2)``,
    ``x_i ~ N(obs_weight z_i, obs_scale^2)``; biases are 0. Nodes are
    ``z0..z{L-1}`` then ``x0..x{L-1}``. Given ``x``, neighbouring latents
    stay correlated (a chain-structured posterior).
    """
    if not isinstance(num_latents, int) or num_latents < 1:
        raise ValueError(f"num_latents must be a positive integer, got {num_latents!r}")
    zs = [f"z{i}" for i in range(num_latents)]
    xs = [f"x{i}" for i in range(num_latents)]
    parents = {zs[i]: [zs[i - 1]] for i in range(1, num_latents)}
    parents.update({x: [z] for z, x in zip(zs, xs, strict=True)})
    weights = {(zs[i - 1], zs[i]): weight for i in range(1, num_latents)}
    weights.update({(z, x): obs_weight for z, x in zip(zs, xs, strict=True)})
    scale = {**dict.fromkeys(zs, latent_scale), **dict.fromkeys(xs, obs_scale)}
    return LinearGaussianBN(zs + xs, parents, xs, weights, None, scale, dtype=dtype, device=device)


def binary_tree(
    depth: int = 2,
    *,
    weight: float = 1.0,
    obs_weight: float = 1.0,
    latent_scale: float = 1.0,
    obs_scale: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LinearGaussianBN:
    """A SYNTHETIC complete binary tree: latent internal nodes, observed leaves.

    ``depth`` is the number of edges from the root to a leaf: there are
    ``2**depth - 1`` latents ``z0..`` numbered as a heap (root ``z0``,
    children of ``z_i`` are ``z_{2i+1}`` and ``z_{2i+2}``) and ``2**depth``
    observed leaves ``x0..``, left to right (``x_{2i}`` and ``x_{2i+1}`` are
    the children of the ``i``-th latent of the last level). Every child's
    mean is ``weight`` (``obs_weight`` for leaves) times its parent; biases
    are 0. Given the leaves, the latents are correlated through the whole tree.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    num_latents = 2**depth - 1
    zs = [f"z{i}" for i in range(num_latents)]
    xs = [f"x{i}" for i in range(2**depth)]
    parents: dict[str, list[str]] = {}
    weights: dict[tuple[str, str], float] = {}
    for i in range(1, num_latents):
        parent = zs[(i - 1) // 2]
        parents[zs[i]] = [parent]
        weights[parent, zs[i]] = weight
    first_last_level = 2 ** (depth - 1) - 1
    for k, x in enumerate(xs):
        parent = zs[first_last_level + k // 2]
        parents[x] = [parent]
        weights[parent, x] = obs_weight
    scale = {**dict.fromkeys(zs, latent_scale), **dict.fromkeys(xs, obs_scale)}
    return LinearGaussianBN(zs + xs, parents, xs, weights, None, scale, dtype=dtype, device=device)


def random_sparse(
    num_latents: int = 6,
    num_observed: int = 6,
    *,
    edge_prob: float = 0.3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LinearGaussianBN:
    """A SYNTHETIC random sparse linear-Gaussian network, the same for the same seed.

    Nodes are latents ``z0..`` then observed ``x0..``. Each pair ``z_i -> z_j``
    (``i < j``) and each ``z_i -> x_k`` is an edge with probability
    ``edge_prob``; then every observed node without a parent gets one random
    latent parent, and every latent without a child gets one random observed
    child, so every latent has an observed descendant. Observed nodes have no
    children. Parameters, drawn from ``torch.Generator().manual_seed(seed)``
    on the CPU: weights of magnitude uniform in [0.8, 1.2] with random sign,
    biases uniform in [-0.5, 0.5], latent scales 1, observed scales uniform in
    [0.3, 0.7]. Such weights make the latents strongly correlated a
    posteriori, so a mean-field guide falls visibly short of a structured one
    (see :meth:`LinearGaussianBN.mean_field_gap`).
    """
    for value, what in ((num_latents, "num_latents"), (num_observed, "num_observed")):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if not 0.0 <= edge_prob <= 1.0:
        raise ValueError(f"edge_prob must be in [0, 1], got {edge_prob!r}")
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))

    def pick(k: int) -> int:
        return int(torch.randint(0, k, (), generator=g))

    zs = [f"z{i}" for i in range(num_latents)]
    xs = [f"x{k}" for k in range(num_observed)]
    parents: dict[str, list[str]] = {name: [] for name in zs + xs}
    for j in range(num_latents):
        for i in range(j):
            if uniform(0.0, 1.0) < edge_prob:
                parents[zs[j]].append(zs[i])
    for x in xs:
        for z in zs:
            if uniform(0.0, 1.0) < edge_prob:
                parents[x].append(z)
    for x in xs:
        if not parents[x]:
            parents[x].append(zs[pick(num_latents)])
    for z in zs:
        if not any(z in pa for pa in parents.values()):
            parents[xs[pick(num_observed)]].append(z)
    for x in xs:  # keep parents in node order
        parents[x].sort(key=zs.index)

    weights = {}
    for child in zs + xs:
        for parent in parents[child]:
            sign = 1.0 if uniform(0.0, 1.0) < 0.5 else -1.0
            weights[parent, child] = sign * uniform(*_WEIGHT_RANGE)
    bias = {name: uniform(-0.5, 0.5) for name in zs + xs}
    scale = {**dict.fromkeys(zs, _LATENT_SCALE), **{x: uniform(0.3, 0.7) for x in xs}}
    return LinearGaussianBN(
        zs + xs, parents, xs, weights, bias, scale, seed=seed, dtype=dtype, device=device
    )
