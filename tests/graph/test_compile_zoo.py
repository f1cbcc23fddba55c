"""The model zoo compiled against hand-derived graphs, and against Pyro's own
``get_dependencies`` wherever Pyro is right."""

from __future__ import annotations

import json

import pytest
from pyro.infer.inspect import get_dependencies

import pgmdl
from tests.conftest import load_zoo

# name -> (latent, observed, edges, plates {name: (size, members)}, inputs, bound arguments)
EXPECTED = {
    "vae": (
        ["z"],
        ["x"],
        {("z", "x")},
        {"data": (5, ["z", "x"])},
        {},
        {"x": "x"},
    ),
    "hvae": (
        ["z2", "z1"],
        ["x"],
        {("z2", "z1"), ("z1", "x")},
        {"data": (5, ["z2", "z1", "x"])},
        {},
        {"x": "x"},
    ),
    "gmm": (
        ["weights", "locs", "scale", "assignment"],
        ["x"],
        {("weights", "assignment"), ("locs", "x"), ("scale", "x"), ("assignment", "x")},
        {"components": (3, ["locs"]), "data": (5, ["assignment", "x"])},
        {},
        {"x": "x"},
    ),
    "m2": (
        ["z"],
        ["y", "x"],
        {("y", "x"), ("z", "x")},
        {"data": (5, ["y", "z", "x"])},
        {},
        {"x": "x", "y": "y"},
    ),
    "cvae": (
        ["z"],
        ["x"],
        {("z", "x")},
        {"data": (5, ["z", "x"])},
        {"c": ("z", "x")},
        {"x": "x"},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zoo_graph_matches_hand_derived_graph(name, device):
    latent, observed, edges, plates, inputs, bound = EXPECTED[name]
    loaded = load_zoo(name, device)
    graph = pgmdl.compile(loaded.model, *loaded.args, **loaded.kwargs)

    assert list(graph.latent_sites) == latent
    assert list(graph.observed_sites) == observed
    assert graph.deterministic_sites == ()
    assert set(graph.dag.edges) == edges
    assert all(kind == "data" for _, _, kind in graph.dag.edges(data="kind"))
    assert {n: (p.size, list(p.sites)) for n, p in graph.plates.items()} == plates
    assert dict(graph.inputs) == inputs
    assert {n: s.bound_argument for n, s in graph.sites.items() if s.bound_argument} == bound
    for site in graph.sites.values():
        assert graph.parents(site.name) == tuple(
            sorted((u for u, v in edges if v == site.name), key=lambda u: graph[u].order)
        )
    json.dumps(graph.to_dict())  # serializable


def test_zoo_site_metadata():
    loaded = load_zoo("gmm")
    graph = pgmdl.compile(loaded.model, *loaded.args, **loaded.kwargs)
    assignment, locs, weights = graph["assignment"], graph["locs"], graph["weights"]
    assert assignment.distribution == "Categorical"
    assert assignment.is_discrete and assignment.enumerate == "parallel"
    assert assignment.support_name == "integer_interval[0, 2]"
    assert assignment.batch_shape == (5,) and assignment.event_shape == ()
    assert locs.plates == ("components",) and locs.batch_shape == (3,)
    assert locs.event_shape == (2,) and not locs.is_discrete
    assert weights.support_name == "simplex" and weights.event_shape == (3,)
    assert graph["scale"].support_name == "positive"
    assert graph.plates["data"].dim == -1 and graph.plates["components"].dim == -1

    m2 = load_zoo("m2")
    graph = pgmdl.compile(m2.model, *m2.args, **m2.kwargs)
    assert graph["y"].distribution == "OneHotCategorical" and graph["y"].is_discrete
    assert graph["x"].distribution == "Bernoulli" and graph["x"].event_shape == (64,)


def test_m2_with_unknown_labels_makes_y_latent():
    m2 = load_zoo("m2")
    graph = pgmdl.compile(m2.model, x=m2.kwargs["x"])
    assert graph.latent_sites == ("y", "z")
    assert graph.parents("x") == ("y", "z")
    assert graph["y"].bound_argument is None


def _pyro_parents(model, args, kwargs):
    deps = get_dependencies(model, args, kwargs)["prior_dependencies"]
    return {site: set(parents) - {site} for site, parents in deps.items()}


@pytest.mark.parametrize("name", ["vae", "hvae", "gmm", "cvae"])
def test_agrees_with_pyro_get_dependencies_where_pyro_is_right(name):
    loaded = load_zoo(name)
    graph = pgmdl.compile(loaded.model, *loaded.args, **loaded.kwargs)
    ours = {site: set(graph.parents(site)) for site in graph.sites}
    assert ours == _pyro_parents(loaded.model, loaded.args, loaded.kwargs)


def test_pyro_misses_the_observed_label_of_m2_and_pgmdl_does_not():
    m2 = load_zoo("m2")
    pyro_parents = _pyro_parents(m2.model, m2.args, m2.kwargs)
    graph = pgmdl.compile(m2.model, *m2.args, **m2.kwargs)
    assert pyro_parents["x"] == {"z"}  # Pyro drops y -> x when y is observed
    assert set(graph.parents("x")) == {"y", "z"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generation_mode_has_the_same_graph(name):
    """With x=None the observed site becomes latent but the edges stay."""
    if name == "cvae":
        loaded = load_zoo(name)
        graph = pgmdl.compile(loaded.model, *loaded.args)
    else:
        loaded = load_zoo(name)
        graph = pgmdl.compile(loaded.model, batch_size=4)
    _, _, edges, _, _, _ = EXPECTED[name]
    assert set(graph.dag.edges) == edges
    assert graph.observed_sites == ()
