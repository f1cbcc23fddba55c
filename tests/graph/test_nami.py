"""NaMI inversion: fixed points, certificates on random DAGs, orders, bad input."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro.infer.inspect import get_dependencies

import pgmdl
from pgmdl.graph.nami import eliminate
from pgmdl.graph.plated import plated_dag
from tests.conftest import FAST, load_zoo


def binary_tree(depth: int):
    """A binary tree of latents of the given depth whose leaves are observed."""

    def model(x):
        def grow(name, parent, level):
            loc = x.new_zeros(()) if parent is None else parent
            if level == depth - 1:
                pyro.sample("x" + name, dist.Normal(loc, 1.0), obs=x)
                return
            z = pyro.sample("z" + name, dist.Normal(loc, 1.0))
            grow(name + "0", z, level + 1)
            grow(name + "1", z, level + 1)

        grow("", None, 0)

    return model


def dag_model(parents: list[list[int]], observed: list[bool]):
    """A scalar Gaussian network: site i has mean sum(parents), observed or latent."""

    def model():
        values = []
        for i, (pa, obs) in enumerate(zip(parents, observed, strict=True)):
            loc = sum((values[j] for j in pa), torch.tensor(0.0))
            name = f"{'x' if obs else 'z'}{i}"
            values.append(pyro.sample(name, dist.Normal(loc, 1.0), obs=loc if obs else None))
        return values

    return model


@st.composite
def random_dags(draw, max_nodes: int = 25):
    n = draw(st.integers(1, max_nodes))
    parents = []
    for i in range(n):
        k = draw(st.integers(0, min(i, 3)))
        parents.append(
            sorted(draw(st.sets(st.integers(0, i - 1), min_size=k, max_size=k))) if i else []
        )
    observed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return parents, observed


def compile_dag(parents, observed):
    return pgmdl.compile_model(dag_model(parents, observed), num_traces=1)


# ---------------------------------------------------------------------- fixed points


@pytest.mark.parametrize(("depth", "edges"), [(3, 9), (4, 35), (5, 135)])
def test_binary_tree_min_fill_edge_counts(depth, edges):
    graph = pgmdl.compile(binary_tree(depth), torch.tensor(0.0))
    inverse = pgmdl.invert(graph, order="min-fill")
    assert inverse.num_edges == edges
    assert pgmdl.check_faithful(graph, inverse).ok
    assert pgmdl.is_minimal(graph, inverse)


def test_binary_tree_depth_3_structure():
    graph = pgmdl.compile(binary_tree(3), torch.tensor(0.0))
    inverse = pgmdl.invert(graph)
    assert inverse.elimination_order == ("z", "z0", "z1")
    assert inverse.order == ("z1", "z0", "z")
    assert set(inverse.parents("z1")) == {"x00", "x01", "x10", "x11"}
    assert set(inverse.parents("z0")) == {"x00", "x01", "z1"}
    assert set(inverse.parents("z")) == {"z0", "z1"}
    assert set(inverse.fill_in_edges) == {("z1", "z0"), ("x00", "z1"), ("x01", "z1")}
    # Observed sites are roots.
    assert all(inverse.dag.in_degree(x) == 0 for x in graph.observed_sites)


def test_pyro_posterior_dependencies_are_not_faithful_on_a_tree():
    model = binary_tree(3)
    graph = pgmdl.compile(model, torch.tensor(0.0))
    posterior = get_dependencies(model, (torch.tensor(0.0),))["posterior_dependencies"]
    structure = {site: [p for p in parents if p != site] for site, parents in posterior.items()}
    report = pgmdl.check_faithful(graph, structure)
    assert not report.ok
    # Pyro's z0 sees only its own leaves, but the other subtree's leaves
    # still inform it through the shared root.
    z0 = next(v for v in report.violations if v.site == "z0")
    assert set(z0.others) == {"x10", "x11"} and set(z0.given) == {"x00", "x01"}
    # NaMI on the same graph is faithful.
    assert pgmdl.check_faithful(graph, pgmdl.invert(graph)).ok


def test_chain_orders_go_against_and_along_the_model():
    def model(x):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
        z3 = pyro.sample("z3", dist.Normal(z2, 1.0))
        pyro.sample("x", dist.Normal(z3, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.0))
    forward = pgmdl.invert(graph, order="topological")
    assert forward.order == ("z3", "z2", "z1")  # reverses the chain
    assert [forward.parents(z) for z in forward.order] == [("x",), ("z3",), ("z2",)]
    reverse = pgmdl.invert(graph, order="reverse")
    assert reverse.order == ("z1", "z2", "z3")  # follows the chain
    assert [reverse.parents(z) for z in reverse.order] == [("x",), ("x", "z1"), ("x", "z2")]
    assert set(reverse.fill_in_edges) == {("x", "z1"), ("x", "z2")}
    for inverse in (forward, reverse):
        assert pgmdl.check_faithful(graph, inverse).ok
        assert pgmdl.is_minimal(graph, inverse)


def test_explaining_away_needs_the_co_parent():
    def model(x):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.0))
    inverse = pgmdl.invert(graph)
    assert inverse.parents("a") == ("x", "b")
    assert inverse.edge_kind("b", "a") == "moral"
    mean_field = pgmdl.check_faithful(graph, {"a": ["x"], "b": ["x"]})
    assert [(v.site, v.others, v.given) for v in mean_field.violations] == [("b", ("a",), ("x",))]


def test_deterministic_sites_are_contracted():
    def model(x):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
        h = pyro.deterministic("h", z1 * z2)
        pyro.sample("x", dist.Normal(h, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.0))
    inverse = pgmdl.invert(graph)
    assert "h" not in inverse.dag
    assert set(inverse.parents("z1")) == {"x", "z2"}  # co-parents through h
    assert pgmdl.is_minimal(graph, inverse)


def test_augment_adds_every_observed_site_and_stays_faithful():
    graph = pgmdl.compile(binary_tree(3), torch.tensor(0.0))
    inverse = pgmdl.invert(graph, augment=True)
    for z in graph.latent_sites:
        assert set(graph.observed_sites) <= set(inverse.parents(z))
    assert inverse.edges("augment")
    assert pgmdl.check_faithful(graph, inverse).ok
    assert not pgmdl.is_minimal(graph, inverse)  # the added edges are not needed
    assert set(pgmdl.redundant_edges(graph, inverse)) <= set(inverse.edges("augment"))


@pytest.mark.parametrize("order", ["min-fill", "topological", "reverse"])
def test_latent_without_observed_descendant_is_sampled_last_from_its_parents(order):
    # c has no observed descendant: a and v are independent given x1, x2.
    # Eliminating c like the others would marry a and v (and, in reverse order,
    # leave the guide the edges a -> v and x2 -> a it does not need).
    def model(x1, x2):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        v = pyro.sample("v", dist.Normal(0.0, 1.0))
        pyro.sample("c", dist.Normal(a + v, 1.0))
        pyro.sample("x1", dist.Normal(a, 1.0), obs=x1)
        pyro.sample("x2", dist.Normal(v, 1.0), obs=x2)

    graph = pgmdl.compile(model, torch.tensor(0.0), torch.tensor(0.0))
    inverse = pgmdl.invert(graph, order=order)
    assert inverse.prior_sites == ("c",)
    assert inverse.order[-1] == "c" and set(inverse.parents("c")) == {"a", "v"}
    assert {inverse.edge_kind(p, "c") for p in inverse.parents("c")} == {"prior"}
    assert inverse.parents("a") == ("x1",) and inverse.parents("v") == ("x2",)
    assert pgmdl.is_minimal(graph, inverse)
    # What plain elimination of c first would give: faithful, not minimal.
    plain = {"a": ["x1", "x2"], "v": ["x2", "a"], "c": ["a", "v"]}
    assert pgmdl.check_faithful(graph, plain).ok
    assert set(pgmdl.redundant_edges(graph, plain)) == {("a", "v"), ("x2", "a")}


# ---------------------------------------------------------------------- properties


@settings(
    max_examples=25 if FAST else 120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(random_dags(), st.randoms(use_true_random=False))
def test_every_order_is_faithful_and_minimal(dag, rng: random.Random):
    parents, observed = dag
    graph = compile_dag(parents, observed)
    shuffled = list(graph.latent_sites)
    rng.shuffle(shuffled)
    for order in ("min-fill", "topological", "reverse", shuffled):
        inverse = pgmdl.invert(graph, order=order)
        # Structure: observed sites are roots; the guide order is reversed elimination;
        # every latent's parents come earlier in the guide order.
        assert all(inverse.dag.in_degree(x) == 0 for x in graph.observed_sites)
        assert inverse.order == tuple(reversed(inverse.elimination_order))
        assert sorted(inverse.order) == sorted(graph.latent_sites)
        position = {z: i for i, z in enumerate(inverse.order)}
        for z in inverse.order:
            assert all(position.get(p, -1) < position[z] for p in inverse.parents(z))
        report = pgmdl.check_faithful(graph, inverse)
        assert report.ok, (order, str(report))
        assert pgmdl.is_minimal(graph, inverse), (order, pgmdl.redundant_edges(graph, inverse))


@settings(max_examples=25 if FAST else 100, deadline=None)
@given(random_dags(max_nodes=12))
def test_dropping_any_nami_edge_breaks_the_certificate(dag):
    parents, observed = dag
    graph = compile_dag(parents, observed)
    inverse = pgmdl.invert(graph)
    for parent, site in inverse.edges():
        structure = {
            z: [p for p in inverse.parents(z) if (p, z) != (parent, site)] for z in inverse.order
        }
        assert not pgmdl.check_faithful(graph, structure).ok


def test_min_fill_picks_the_frontier_site_with_least_fill_in():
    # Both roots are on the frontier. Eliminating `hub` first joins its three
    # children (3 fill-ins); eliminating `leaf` first adds none.
    def model(x):
        hub = pyro.sample("hub", dist.Normal(0.0, 1.0))
        leaf = pyro.sample("leaf", dist.Normal(0.0, 1.0))
        for i in range(3):
            pyro.sample(f"x{i}", dist.Normal(hub, 1.0), obs=x)
        pyro.sample("y", dist.Normal(leaf, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.0))
    assert pgmdl.invert(graph).elimination_order == ("leaf", "hub")
    assert pgmdl.invert(graph, order="topological").elimination_order == ("hub", "leaf")


# ---------------------------------------------------------------------- bad input


@pytest.fixture
def tree3():
    return pgmdl.compile(binary_tree(3), torch.tensor(0.0))


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["z", "z0"], r"misses the latent site\(s\) \['z1'\]"),
        (["z", "z0", "z1", "z0"], r"names site 'z0' twice \(positions 1 and 3\)"),
        (["z", "z0", "z1", "x00"], r"'x00', an observed site: observed sites are never"),
        (["z", "z0", "zz1"], r"no latent site named 'zz1'.*Did you mean 'z1'"),
        ("min_fill", r"unknown order 'min_fill'"),
        (["z", 0, "z1"], r"order\[1\] is 0"),
        (3, r"order must be one of"),
    ],
)
def test_bad_orders_name_the_site_and_the_reason(tree3, order, message):
    with pytest.raises(pgmdl.InversionError, match=message):
        pgmdl.invert(tree3, order=order)


def test_deterministic_site_in_order_is_explained():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        h = pyro.deterministic("h", 2 * z)
        pyro.sample("x", dist.Normal(h, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.0))
    with pytest.raises(pgmdl.InversionError, match="'h', a deterministic site"):
        pgmdl.invert(graph, order=["h", "z"])


def test_invert_wants_a_compiled_graph():
    with pytest.raises(pgmdl.InversionError, match=r"pgmdl.invert\(pgmdl.compile\(model"):
        pgmdl.invert(binary_tree(3))


def test_bad_guide_structures_are_explained(tree3):
    with pytest.raises(pgmdl.InversionError, match="observed site 'x00' the parent 'z0'"):
        pgmdl.check_faithful(tree3, {"x00": ["z0"]})
    with pytest.raises(pgmdl.InversionError, match="cycle"):
        pgmdl.check_faithful(tree3, {"z0": ["z1"], "z1": ["z0"]})
    with pytest.raises(pgmdl.SiteNotFoundError, match="'zz'"):
        pgmdl.check_faithful(tree3, {"z0": ["zz"]})
    with pytest.raises(pgmdl.InversionError, match="must be a list of site names"):
        pgmdl.check_faithful(tree3, {"z0": "z1"})


# ---------------------------------------------------------------------- export


def test_summary_and_json(tree3):
    inverse = pgmdl.invert(tree3)
    text = inverse.summary()
    assert "3 latent sites, 9 edges, 3 fill-in" in text
    assert "guide samples: z1 -> z0 -> z" in text
    data = inverse.to_dict()
    assert data["order"] == ["z1", "z0", "z"]
    assert len(data["edges"]) == 9
    assert "strategy='min-fill', order=['z1', 'z0', 'z'], edges=9, fill_in=3)" in repr(inverse)


def test_zoo_inverses_are_faithful(device):
    for name in ("vae", "hvae", "m2", "cvae", "gmm"):
        loaded = load_zoo(name, device)
        graph = pgmdl.compile(loaded.model, *loaded.args, **loaded.kwargs)
        for order in ("min-fill", "reverse"):
            inverse = pgmdl.invert(graph, order=order)
            assert pgmdl.check_faithful(graph, inverse).ok, (name, order)


def test_eliminate_is_exposed_for_plate_free_dags(tree3):
    result = eliminate(plated_dag(tree3), "min-fill")
    assert result.order == ["z", "z0", "z1"]


def reference_nami_min_fill(graph: pgmdl.ModelGraph) -> tuple[list[str], dict[str, set[str]]]:
    """NaMI with min-fill, written plainly on networkx (scalar models only):
    every frontier score recomputed at every step."""
    dag = nx.DiGraph(graph.dag)
    observed = set(graph.observed_sites)
    informed = observed | {a for x in observed for a in nx.ancestors(dag, x)}
    prior = [z for z in graph.latent_sites if z not in informed]
    dag.remove_nodes_from(prior)
    moral = nx.moral_graph(dag)
    latent = [z for z in graph.latent_sites if z not in prior]
    position = {n: i for i, n in enumerate(graph.sites)}
    order, parents = [], {}
    while len(order) < len(latent):
        frontier = [
            z
            for z in latent
            if z not in order and all(p in order for p in dag.predecessors(z) if p in latent)
        ]

        def fill(z):
            pairs = itertools.combinations(moral[z], 2)
            return sum(1 for a, b in pairs if not moral.has_edge(a, b))

        w = min(frontier, key=lambda z: (fill(z), position[z]))
        neighbours = list(moral[w])
        parents[w] = set(neighbours)
        moral.add_edges_from(itertools.combinations(neighbours, 2))
        moral.remove_node(w)
        order.append(w)
    for z in prior:
        parents[z] = set(graph.parents(z))
    return order, parents


@settings(max_examples=25 if FAST else 100, deadline=None)
@given(random_dags())
def test_min_fill_agrees_with_a_plain_reference_implementation(dag):
    graph = compile_dag(*dag)
    order, parents = reference_nami_min_fill(graph)
    inverse = pgmdl.invert(graph)
    assert list(inverse.elimination_order[len(inverse.prior_sites) :]) == order
    assert {z: set(inverse.parents(z)) for z in inverse.order} == parents
