"""Graph compiler semantics: where pgmdl must be right and Pyro's inspection is not,
dynamic structure, isolation, and clear errors on bad input."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro import poutine
from pyro.infer.inspect import get_dependencies

import pgmdl
from pgmdl.graph import compile_model


def parents(graph):
    return {site: set(graph.parents(site)) for site in graph.sites}


def sampled_plate_size_model():
    n = pyro.sample("n", dist.Poisson(5.0))
    with pyro.plate("members", int(n) + 1):
        pyro.sample("w", dist.Normal(0.0, 1.0))


def coin_flip_model():
    k = pyro.sample("k", dist.Bernoulli(0.5))
    if k:
        pyro.sample("heads", dist.Normal(0.0, 1.0))
    else:
        pyro.sample("tails", dist.Normal(0.0, 1.0))


# ---------------------------------------------------------------------------- observed parents


def test_observed_site_return_value_is_a_parent(device):
    def model(y, x):
        y = pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)
        z = pyro.sample("z", dist.Normal(torch.zeros((), device=y.device), 1.0))
        pyro.sample("x", dist.Normal(y + z, 1.0), obs=x)

    y, x = torch.tensor(0.5, device=device), torch.tensor(1.0, device=device)
    graph = pgmdl.compile(model, y, x)
    assert parents(graph) == {"y": set(), "z": set(), "x": {"y", "z"}}
    pyro_deps = get_dependencies(model, (y, x))["prior_dependencies"]
    assert "y" not in pyro_deps["x"]  # the Pyro bug this compiler fixes


def test_observed_site_read_through_the_raw_argument_is_a_parent():
    """A model that feeds x from the argument y, not from y's sample statement."""

    def model(x, y):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z + y, 1.0), obs=x)  # uses y before it is declared
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    graph = pgmdl.compile(model, torch.tensor(1.0), torch.tensor(2.0))
    assert parents(graph) == {"z": set(), "x": {"z", "y"}, "y": set()}
    assert graph.topological_order == ("z", "y", "x")
    assert graph["y"].bound_argument == "y" and graph.inputs == {}


def test_argument_that_is_no_site_value_is_an_input():
    def model(c, x):
        z = pyro.sample("z", dist.Normal(c.sum(), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.ones(3), torch.tensor(0.0))
    assert dict(graph.inputs) == {"c": ("z",)}
    assert graph["z"].inputs == ("c",) and graph["x"].inputs == ()
    assert parents(graph) == {"z": set(), "x": {"z"}}


def test_nested_arguments_are_bound_by_path():
    def model(batch):
        x, y = batch
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)
        pyro.sample("x", dist.Normal(y, 1.0), obs=x)

    graph = pgmdl.compile(model, (torch.tensor(0.0), torch.tensor(1.0)))
    assert graph["x"].bound_argument == "batch[0]"
    assert graph["y"].bound_argument == "batch[1]"
    assert parents(graph) == {"z": set(), "y": {"z"}, "x": {"y"}}


def test_reference_only_operations_do_not_create_edges():
    """x.new_zeros / zeros_like / .to(x) read only dtype and device."""

    def model(x):
        loc = x.new_zeros(3)
        scale = torch.ones_like(x)
        w = pyro.sample("w", dist.Normal(loc, scale.to(x)).to_event(1))
        pyro.sample("x", dist.Normal(w, 1.0).to_event(1), obs=x)

    graph = pgmdl.compile(model, torch.zeros(3))
    assert parents(graph) == {"w": set(), "x": {"w"}}


def test_mask_depending_on_a_site_is_a_dependency():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with poutine.mask(mask=z > 0):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.0))
    assert parents(graph)["x"] == {"z"}


# ---------------------------------------------------------------------------- deterministic sites


def test_edges_through_deterministic_sites_are_kept():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        h = pyro.deterministic("h", torch.tanh(z) * 2)
        pyro.sample("x", dist.Normal(h, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.3))
    assert graph.deterministic_sites == ("h",)
    assert graph["h"].kind == "deterministic" and graph["h"].distribution == "Delta"
    assert parents(graph) == {"z": set(), "h": {"z"}, "x": {"h"}}
    pyro_deps = get_dependencies(model, (torch.tensor(0.3),), include_deterministic=True)
    pyro_x = set(pyro_deps["prior_dependencies"]["x"]) - {"x"}
    assert not pyro_x & {"z", "h"}  # Pyro loses z -> h -> x entirely


def test_ignored_deterministic_return_value_keeps_direct_edge():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.deterministic("h", z * 2)  # recorded, but x reads z itself
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.tensor(0.3))
    assert parents(graph) == {"z": set(), "h": {"z"}, "x": {"z"}}


def test_partially_observed_site_with_obs_mask():
    def model(x, mask):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x, obs_mask=mask)

    x, mask = torch.zeros(4), torch.tensor([True, False, True, True])
    graph = pgmdl.compile(model, x, mask)
    assert graph["x_observed"].is_observed and graph["x_unobserved"].is_latent
    assert graph["x"].is_deterministic
    assert graph.parents("x") == ("x_observed", "x_unobserved")
    assert parents(graph)["x_unobserved"] == {"z"}


# ---------------------------------------------------------------------------- plates


def test_plate_metadata_nested_subsampled_and_sequential():
    def model(data):
        with pyro.plate("outer", 10, subsample_size=4) as idx:
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            with pyro.plate("inner", 3, dim=-2):
                b = pyro.sample("b", dist.Normal(a, 1.0))
            pyro.sample("obs", dist.Normal(b.sum(-2), 1.0), obs=data[idx])
        for i in pyro.plate("seq", 2):
            pyro.sample(f"s_{i}", dist.Normal(0.0, 1.0))

    graph = pgmdl.compile(model, torch.zeros(10))
    outer, inner, seq = graph.plates["outer"], graph.plates["inner"], graph.plates["seq"]
    assert (outer.size, outer.subsample_size, outer.dim) == (10, 4, -1)
    assert outer.is_subsampled and outer.label() == "outer (4 of N=10)"
    assert (inner.size, inner.subsample_size, inner.dim) == (3, 3, -2)
    assert (seq.dim, seq.sites) == (None, ("s_0", "s_1"))
    assert graph["b"].plates == ("outer", "inner")
    assert graph["b"].batch_shape == (3, 4)
    assert outer.sites == ("a", "b", "obs") and inner.sites == ("b",)
    assert graph["obs"].bound_argument == "data"
    assert parents(graph)["obs"] == {"b"}


def test_two_plates_with_one_name_and_different_sizes_are_an_error():
    def model():
        with pyro.plate("p", 2):
            pyro.sample("a", dist.Normal(0.0, 1.0))
        with pyro.plate("p", 3):
            pyro.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(pgmdl.ModelError, match="two plates named 'p'"):
        pgmdl.compile(model)


# ---------------------------------------------------------------------------- control flow


def test_python_control_flow_gives_conservative_edges_and_a_warning():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        loc = 1.0 if z > -100 else 0.0  # always true: a branch, yet a fixed structure
        pyro.sample("b", dist.Normal(loc, 1.0))
        pyro.sample("c", dist.Normal(a, 1.0))

    with pytest.warns(pgmdl.StructureWarning, match=r"site 'z' left PyTorch through bool"):
        graph = pgmdl.compile(model)
    assert graph.edge_kind("z", "b") == "control"
    assert graph.edge_kind("z", "c") == "control"
    assert graph.edge_kind("a", "c") == "data"
    assert not graph.dag.has_edge("a", "b")  # a never left PyTorch
    assert "(control)" in graph.summary()


@pytest.mark.parametrize(
    "escape",
    [lambda z: z.item(), lambda z: float(z), lambda z: z.tolist(), lambda z: np.asarray(z)],
    ids=["item", "float", "tolist", "numpy"],
)
def test_every_escape_route_is_seen(escape):
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        value = float(np.asarray(escape(z)))
        pyro.sample("x", dist.Normal(value, 1.0))

    with pytest.warns(pgmdl.StructureWarning):
        graph = pgmdl.compile(model)
    assert graph.parents("x") == ("z",) and graph.edge_kind("z", "x") == "control"


def test_validation_and_printing_inside_libraries_are_not_escapes():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        repr(z)
        pyro.sample("x", dist.Normal(z, torch.tensor(1.0)), obs=torch.tensor(0.0))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pyro.validation_enabled(True):
            graph = pgmdl.compile(model)
    assert graph.edge_kind("z", "x") == "data"


def test_sampled_plate_size_is_a_dynamic_structure_error():
    model = sampled_plate_size_model

    with pytest.raises(pgmdl.DynamicStructureError) as info:
        pgmdl.compile(model)
    message = str(info.value)
    assert "'w'" in message and "plates of site 'w'" in message
    assert "value of 'n' left PyTorch through int()" in message


def test_branch_on_a_sampled_value_is_a_dynamic_structure_error():
    model = coin_flip_model

    with pytest.raises(pgmdl.DynamicStructureError, match=r"site '(heads|tails)' exists in"):
        compile_model(model, num_traces=8)


def test_on_dynamic_warn_returns_the_union_of_runs():
    model = coin_flip_model

    with pytest.warns(pgmdl.StructureWarning):
        graph = compile_model(model, num_traces=8, on_dynamic="warn")
    assert set(graph.sites) == {"k", "heads", "tails"}
    assert set(graph.dynamic_sites) == {"heads", "tails"}
    assert graph.parents("heads") == ("k",) and graph.parents("tails") == ("k",)


def test_one_trace_disables_the_dynamic_check():
    model = sampled_plate_size_model

    with pytest.warns(pgmdl.StructureWarning):
        graph = compile_model(model, num_traces=1)
    assert graph.parents("w") == ("n",)


# ---------------------------------------------------------------------------- isolation


def test_compile_leaves_rng_states_and_param_store_alone():
    def model(x):
        w = pyro.param("w", torch.tensor(0.5))
        b = pyro.param("b", torch.tensor(0.1))
        z = pyro.sample("z", dist.Normal(w, 1.0))
        pyro.sample("x", dist.Normal(z + b, 1.0), obs=x)

    pyro.param("w", torch.tensor(3.0))  # trained value the user already has
    pyro.set_rng_seed(123)
    expected = (torch.rand(2), random.random(), np.random.rand())
    pyro.set_rng_seed(123)
    graph = pgmdl.compile(model, torch.tensor(0.0))
    got = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]
    store = pyro.get_param_store()
    assert set(store.keys()) == {"w"} and store["w"].item() == 3.0
    assert set(graph.params) == {"w", "b"}


def test_compile_is_deterministic():
    model = sampled_plate_size_model

    with pytest.warns(pgmdl.StructureWarning):
        first = compile_model(model, num_traces=1).to_dict()
    with pytest.warns(pgmdl.StructureWarning):
        second = compile_model(model, num_traces=1).to_dict()
    assert first == second


# ---------------------------------------------------------------------------- bad input


def test_not_callable():
    with pytest.raises(pgmdl.ModelError, match="expects a Pyro model.*got int"):
        pgmdl.compile(3)


def test_compiled_graph_given_as_model():
    graph = pgmdl.compile(lambda: pyro.sample("a", dist.Normal(0.0, 1.0)))
    with pytest.raises(pgmdl.ModelError, match="already a compiled ModelGraph"):
        pgmdl.compile(graph)


def test_no_sample_site():
    def model(x):
        return x * 2

    with pytest.raises(pgmdl.ModelError, match="created no pyro.sample"):
        pgmdl.compile(model, torch.ones(2))


def test_model_raising_is_chained_and_located():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        raise ZeroDivisionError("boom")

    with pytest.raises(
        pgmdl.ModelError, match="raised ZeroDivisionError after site 'a'.*boom"
    ) as e:
        pgmdl.compile(model)
    assert isinstance(e.value.__cause__, ZeroDivisionError)


def test_wrong_arguments_name_the_signature():
    def model(x, y):
        pyro.sample("a", dist.Normal(x, y))

    with pytest.raises(pgmdl.ModelError, match=r"signature \(x, y\).*missing a required"):
        pgmdl.compile(model, torch.tensor(0.0))


def test_duplicate_site_names():
    def model():
        for _ in range(2):
            pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(pgmdl.ModelError, match="two sites named 'a'"):
        pgmdl.compile(model)


def test_site_computed_from_its_own_observation():
    def model(x):
        pyro.sample("x", dist.Normal(x.mean(), 1.0), obs=x)

    with pytest.raises(pgmdl.ModelError, match="own observed value"):
        pgmdl.compile(model, torch.zeros(3))


def test_cycle_through_an_argument():
    def model(x, y):
        pyro.sample("x", dist.Normal(y, 1.0), obs=x)
        pyro.sample("y", dist.Normal(x, 1.0), obs=y)

    with pytest.raises(pgmdl.ModelError, match="form a cycle"):
        pgmdl.compile(model, torch.tensor(0.0), torch.tensor(1.0))


def test_unknown_site_suggests_close_names():
    graph = pgmdl.compile(lambda: pyro.sample("latent", dist.Normal(0.0, 1.0)))
    with pytest.raises(pgmdl.SiteNotFoundError, match="Did you mean 'latent'"):
        graph.parents("latnet")


def test_options_are_checked():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(pgmdl.ArgumentError, match="num_traces"):
        compile_model(model, num_traces=0)
    with pytest.raises(pgmdl.ArgumentError, match="on_dynamic"):
        compile_model(model, on_dynamic="ignore")
    with pytest.raises(pgmdl.ArgumentTypeError, match="model_args must be a tuple"):
        compile_model(model, model_args=[1])


def test_model_arguments_are_keywords_and_the_old_spelling_warns():
    def model(x, scale=1.0):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    x = torch.zeros(3)
    new = compile_model(model, model_args=(x,), model_kwargs={"scale": 2.0}, num_traces=1)
    assert new.to_dict() == pgmdl.compile(model, x, scale=2.0).to_dict()
    with pytest.warns(FutureWarning, match=r"compile_model\(model, model_args=args, model_kwargs"):
        old = compile_model(model, (x,), {"scale": 2.0}, num_traces=1)
    assert old.to_dict() == new.to_dict()
    with pytest.raises(pgmdl.ArgumentError, match="given twice"):
        compile_model(model, (x,), model_args=(x,))


# ---------------------------------------------------------------------------- random DAGs


@st.composite
def random_dags(draw):
    num = draw(st.integers(1, 12))
    parent_sets = [
        draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set() for i in range(num)
    ]
    observed = draw(st.sets(st.integers(0, num - 1)))
    return parent_sets, observed


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_random_dags_compile_to_their_generating_graph(spec):
    parent_sets, observed = spec

    def model(data):
        values = []
        for i, ps in enumerate(parent_sets):
            loc = sum((values[p] for p in ps), torch.tensor(0.0))
            obs = data[i] if i in observed else None
            values.append(pyro.sample(f"s{i}", dist.Normal(loc, 1.0), obs=obs))

    graph = pgmdl.compile(model, torch.zeros(len(parent_sets)))
    assert parents(graph) == {f"s{i}": {f"s{p}" for p in ps} for i, ps in enumerate(parent_sets)}
    assert set(graph.observed_sites) == {f"s{i}" for i in observed}
    assert all(graph[f"s{i}"].bound_argument == "data" for i in observed)


def test_provenance_through_lists_sizes_and_namedtuple_results():
    """The flat fast path of TaggedTensor and its fallbacks keep provenance."""

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        c = pyro.sample("c", dist.Normal(0.0, 1.0).expand(torch.Size([3])).to_event(1))
        stacked = torch.stack([a, b])  # flat list of tagged tensors
        best = torch.max(c.expand(torch.Size([2, 3])), 0).values  # namedtuple result
        pyro.sample("x", dist.Normal(stacked.sum(), 1.0))
        pyro.sample("y", dist.Normal(best.sum(), 1.0))

    graph = pgmdl.compile(model)
    assert parents(graph) == {"a": set(), "b": set(), "c": set(), "x": {"a", "b"}, "y": {"c"}}
