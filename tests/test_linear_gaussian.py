"""SYNTHETIC linear-Gaussian networks: exact joint, evidence, posterior and log-joint."""

from __future__ import annotations

import doctest

import networkx as nx
import pytest
import torch
from pyro import poutine
from torch.distributions import MultivariateNormal

import pgmdl
import pgmdl.datasets.linear_gaussian as linear_gaussian
from pgmdl.datasets import LinearGaussianBN, binary_tree, chain, random_sparse

NETWORKS = {
    "chain": chain,
    "binary_tree": binary_tree,
    "binary_tree_3": lambda: binary_tree(3),
    "random_sparse": random_sparse,
    "random_sparse_seed_3": lambda: random_sparse(8, 5, edge_prob=0.4, seed=3),
}


@pytest.fixture(params=list(NETWORKS))
def bn(request) -> LinearGaussianBN:
    return NETWORKS[request.param]()


def data_on(bn: LinearGaussianBN, n: int, device, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return bn.sample(n, generator=generator, device=device, dtype=torch.float64)


def as_dag(bn: LinearGaussianBN) -> nx.DiGraph:
    graph = nx.DiGraph(bn.edges)
    graph.add_nodes_from(bn.nodes)
    return graph


def test_joint_moments_match_samples(device):
    bn = random_sparse()
    n = 200_000
    samples = bn.sample_all(
        n, generator=torch.Generator().manual_seed(1), device=device, dtype=torch.float64
    )
    v = torch.stack([samples[name] for name in bn.nodes], dim=-1)
    mean, cov = bn.to(device).joint()
    assert mean.dtype == cov.dtype == torch.float64 and cov.device.type == device.type
    var = cov.diagonal()
    mean_z = (v.mean(0) - mean) / (var / n).sqrt()
    assert mean_z.abs().max() < 5
    centered = v - v.mean(0)
    sample_cov = centered.T @ centered / (n - 1)
    # standard error of a Gaussian sample covariance: sqrt((S_ii S_jj + S_ij^2) / n)
    se = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((sample_cov - cov) / se).abs().max() < 5


def test_exact_identity_evidence_posterior_log_joint(bn, device):
    """log p(x, z) - log q_exact(z | x) = log p(x) for every z drawn from the posterior."""
    data = data_on(bn, 7, device)
    log_px = bn.log_evidence(data)
    mean, cov = bn.posterior(data)
    assert log_px.shape == (7,) and mean.shape == (7, len(bn.latent))
    assert cov.shape == (len(bn.latent),) * 2
    assert log_px.device.type == mean.device.type == cov.device.type == device.type
    assert log_px.dtype == mean.dtype == torch.float64
    q = MultivariateNormal(mean, covariance_matrix=cov)
    z = q.sample((5,))  # (5, 7, L)
    latents = {name: z[..., i] for i, name in enumerate(bn.latent)}
    log_pxz = bn.log_joint(data, latents)
    assert log_pxz.shape == (5, 7)
    torch.testing.assert_close(log_pxz - q.log_prob(z), log_px.expand(5, 7), rtol=0, atol=1e-6)


def test_posterior_is_the_schur_complement_of_the_joint(bn, device):
    data = data_on(bn, 4, device)
    mu, sigma = bn.to(device).joint()
    lat = [bn.nodes.index(n) for n in bn.latent]
    obs = [bn.nodes.index(n) for n in bn.observed]
    x = torch.stack([data[n] for n in bn.observed], dim=-1)
    s_zx = sigma[lat][:, obs]
    s_xx = sigma[obs][:, obs]
    expected_cov = sigma[lat][:, lat] - s_zx @ torch.linalg.solve(s_xx, s_zx.T)
    expected_mean = mu[lat] + (x - mu[obs]) @ torch.linalg.solve(s_xx, s_zx.T)
    mean, cov = bn.posterior(data)
    torch.testing.assert_close(cov, expected_cov, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-9)
    expected_evidence = MultivariateNormal(mu[obs], s_xx).log_prob(x)
    torch.testing.assert_close(bn.log_evidence(data), expected_evidence)


def test_log_joint_matches_pyro(bn, device):
    values = bn.sample_all(
        6, generator=torch.Generator().manual_seed(2), device=device, dtype=torch.float64
    )
    data = {n: values[n] for n in bn.observed}
    latents = {n: values[n] for n in bn.latent}
    trace = poutine.trace(poutine.condition(bn.model, latents)).get_trace(data)
    trace.compute_log_prob()
    per_point = sum(trace.nodes[name]["log_prob"] for name in bn.nodes)
    ours = bn.log_joint(data, latents)
    torch.testing.assert_close(ours, per_point, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ours.sum(), trace.log_prob_sum(), rtol=1e-12, atol=1e-9)


def test_model_uses_the_data_tensor_device_and_dtype(device):
    bn = random_sparse()
    data = data_on(bn, 3, device)
    trace = poutine.trace(bn.model).get_trace(data)
    for name in bn.observed:
        assert trace.nodes[name]["value"] is data[name]
    for name in bn.latent:
        value = trace.nodes[name]["value"]
        assert value.shape == (3,) and value.dtype == torch.float64
        assert value.device.type == device.type
    prior = bn.model(batch_size=5)
    assert set(prior) == set(bn.nodes)
    assert all(v.shape == (5,) and v.dtype == torch.float32 for v in prior.values())
    assert bn.model()["x0"].shape == (1,)


def test_compile_binds_each_observed_site_to_its_data_entry(bn, device):
    data = data_on(bn, 3, device)
    graph = pgmdl.compile(bn.model, data)
    assert graph.latent_sites == bn.latent
    assert graph.observed_sites == bn.observed
    for name in bn.observed:
        # a tensor nested in a dict argument is tagged with its path in that argument
        assert graph[name].bound_argument == f"data[{name!r}]"
    for name in bn.nodes:
        assert graph.parents(name) == bn.parents(name)
    assert not graph.inputs  # the loc constants borrow the data's dtype, not its values


def test_sampling_is_reproducible_and_shaped(device):
    bn = chain(3)
    a = bn.sample(4, generator=torch.Generator().manual_seed(5), device=device)
    b = bn.sample(4, generator=torch.Generator().manual_seed(5), device=device)
    assert tuple(a) == bn.observed
    for name in bn.observed:
        assert a[name].shape == (4,) and a[name].dtype == torch.float32
        assert a[name].device.type == device.type
        assert torch.equal(a[name], b[name])
    assert tuple(bn.sample_all(2)) == bn.nodes
    float32 = bn.log_evidence(a)
    assert float32.dtype == torch.float32 and float32.device.type == device.type


def test_generator_sizes():
    c = chain(5)
    assert c.latent == tuple(f"z{i}" for i in range(5))
    assert c.observed == tuple(f"x{i}" for i in range(5))
    assert c.parents("z3") == ("z2",) and c.parents("x3") == ("z3",) and c.parents("z0") == ()
    assert c.weights["z0", "z1"] == 0.9 and c.scale["x0"] == 0.5 and c.scale["z0"] == 1.0
    for depth in (1, 2, 3):
        t = binary_tree(depth)
        assert len(t.latent) == 2**depth - 1 and len(t.observed) == 2**depth
        assert len(t.edges) == len(t.nodes) - 1
        assert all(len(t.children(z)) == 2 for z in t.latent)
    t = binary_tree(2)
    assert t.parents("z1") == t.parents("z2") == ("z0",)
    assert t.parents("x0") == t.parents("x1") == ("z1",)
    assert t.parents("x2") == t.parents("x3") == ("z2",)
    r = random_sparse(7, 4)
    assert len(r.latent) == 7 and len(r.observed) == 4


def test_every_generated_network_is_a_dag_with_observed_descendants(bn):
    graph = as_dag(bn)
    assert nx.is_directed_acyclic_graph(graph)
    order = {n: i for i, n in enumerate(bn.nodes)}
    assert all(order[p] < order[c] for p, c in bn.edges)
    for z in bn.latent:
        assert nx.descendants(graph, z) & set(bn.observed), z
    for x in bn.observed:
        assert bn.parents(x), x


@pytest.mark.parametrize("seed", range(10))
def test_random_sparse_invariants_over_seeds(seed):
    bn = random_sparse(seed=seed)
    graph = as_dag(bn)
    assert all(nx.descendants(graph, z) & set(bn.observed) for z in bn.latent)
    assert all(0.8 <= abs(w) <= 1.2 for w in bn.weights.values())
    assert all(0.3 <= bn.scale[x] <= 0.7 for x in bn.observed)


def test_random_sparse_is_deterministic_for_a_seed():
    a, b, c = random_sparse(seed=4), random_sparse(seed=4), random_sparse(seed=5)
    assert a.edges == b.edges and a.weights == b.weights
    assert a.bias == b.bias and a.scale == b.scale
    assert (a.edges, a.weights) != (c.edges, c.weights)


def test_random_sparse_posterior_is_far_from_mean_field():
    # KL from the best fully factorized Gaussian to the exact posterior, per point
    assert random_sparse().mean_field_gap() > 0.5
    assert chain().mean_field_gap() > 0.0


def test_default_weights_come_from_the_seed():
    nodes, parents = ["a", "b", "c"], {"b": ["a"], "c": ["a", "b"]}
    one = LinearGaussianBN(nodes, parents, ["c"], seed=1)
    assert one.weights == LinearGaussianBN(nodes, parents, ["c"], seed=1).weights
    assert all(0.8 <= abs(w) <= 1.2 for w in one.weights.values())
    partial = LinearGaussianBN(nodes, parents, ["c"], {("a", "b"): 0.25}, seed=1)
    assert partial.weights["a", "b"] == 0.25
    assert partial.weights["a", "c"] == one.weights["a", "c"]
    assert one.latent == ("a", "b") and one.scale == {"a": 1.0, "b": 1.0, "c": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(parents={"x": ["q"]}), "unknown parent 'q'"),
        (dict(parents={"z": ["x"], "x": ["z"]}), "cycle"),
        (dict(parents={"z": ["z"]}), "cycle"),
        (dict(parents={"z": ["x"]}), "topological order: 'x' is a parent of 'z'"),
        (dict(parents={"y": ["z"]}), "'y', which is not one of the nodes"),
        (dict(observed=["x", "w"]), "observed node 'w'"),
        (dict(observed=["z", "x"]), "at least one latent"),
        (dict(observed=[]), "at least one observed"),
        (dict(scale={"x": 0.0}), "scale of 'x' must be positive"),
        (dict(scale={"z": -1.0}), "scale of 'z' must be positive"),
        (dict(scale={"z": float("nan")}), "scale of 'z' must be finite"),
        (dict(weights={("x", "z"): 1.0}), "'x' is not a parent of 'z'"),
        (dict(nodes=["z", "x", "z"]), "'z' twice"),
    ],
)
def test_bad_networks_are_explained(kwargs, message):
    spec = dict(nodes=["z", "x"], parents={"x": ["z"]}, observed=["x"])
    spec.update(kwargs)
    with pytest.raises(ValueError, match=message):
        LinearGaussianBN(**spec)


def test_bad_parent_type_is_explained():
    with pytest.raises(TypeError, match="parents of 'x' must be a list"):
        LinearGaussianBN(["z", "x"], {"x": "z"}, ["x"])


def test_bad_data_is_explained(device):
    bn = chain(2)
    data = data_on(bn, 3, device)
    partial = {"x0": data["x0"]}
    for method in (bn.log_evidence, bn.posterior):
        with pytest.raises(ValueError, match="no value for the observed node 'x1'"):
            method(partial)
    with pytest.raises(ValueError, match="no value for the observed node 'x1'"):
        bn.model(partial)
    with pytest.raises(ValueError, match="'q', which is not a node"):
        bn.log_evidence({**data, "q": data["x0"]})
    with pytest.raises(ValueError, match="'z0', which is a latent node"):
        bn.model({**data, "z0": data["x0"]})
    with pytest.raises(ValueError, match="latent node 'z1'"):
        bn.log_joint(data, {"z0": data["x0"]})
    with pytest.raises(ValueError, match="'x1' has shape"):
        bn.model({"x0": data["x0"], "x1": data["x1"][:2]})
    with pytest.raises(pgmdl.SiteNotFoundError, match="no node named 'z7'"):
        bn.parents("z7")
    # latent entries (as returned by sample_all) are ignored by the exact quantities
    full = bn.sample_all(3, dtype=torch.float64)
    observed = {n: full[n] for n in bn.observed}
    torch.testing.assert_close(bn.log_evidence(full), bn.log_evidence(observed))


def test_docstring_examples():
    result = doctest.testmod(linear_gaussian, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
