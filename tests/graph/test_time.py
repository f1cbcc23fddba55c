"""Time as structure (:mod:`pgmdl.graph.time`): the repeated slice of a
``pyro.markov`` loop, checked against the unrolled compiled graph."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pgmdl
from pgmdl.errors import ModelError
from pgmdl.graph.time import TimeLink, split_step, time_structure


def ssm(x, mask=None):
    """A state-space model written as Pyro's DMM example writes it."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.3))
    z = x.new_zeros(x.shape[0], 2)
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(x.shape[1])):
            step_mask = True if mask is None else mask[:, t]
            with poutine.mask(mask=step_mask):
                z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, scale).to_event(1))
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0).to_event(1), obs=x[:, t])


def second_order(x):
    """z_t reads z_{t-1} and z_{t-2} (pyro.markov(history=2))."""
    prev, prev2 = x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0])
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(x.shape[1]), history=2):
            z = pyro.sample(f"z{t}", dist.Normal(0.5 * prev + 0.3 * prev2, 1.0))
            pyro.sample(f"x{t}", dist.Normal(z, 1.0), obs=x[:, t])
            prev, prev2 = z, prev


def test_split_step():
    assert split_step("z_12") == ("z_{t}", 12)
    assert split_step("obs_x_3") == ("obs_x_{t}", 3)
    assert split_step("h3_enc") == ("h{t}_enc", 3)
    assert split_step("mu") is None


@pytest.mark.parametrize("length", [2, 3, 5, 8])
def test_the_slice_of_a_state_space_model_predicts_the_unrolled_graph(length):
    graph = pgmdl.compile(ssm, torch.zeros(3, length, 2))
    structure = time_structure(graph)
    assert [(s.template, s.kind) for s in structure.series] == [
        ("z_{t}", "latent"),
        ("x_{t}", "observed"),
    ]
    assert set(structure.links) == {
        TimeLink("z_{t}", "z_{t}", 1),
        TimeLink("z_{t}", "x_{t}", 0),
        TimeLink("scale", "z_{t}", None),
    }
    assert structure.static == ("scale",) and structure.max_lag == 1
    assert structure.steps == tuple(range(length))
    into_loop = {(u, v) for u, v in graph.dag.edges if v != "scale"}
    assert structure.edges() == into_loop


def test_a_second_order_loop_has_lag_two_links():
    graph = pgmdl.compile(second_order, torch.zeros(2, 6))
    structure = time_structure(graph)
    assert TimeLink("z{t}", "z{t}", 2) in structure.links
    assert structure.max_lag == 2
    assert structure.edges() == set(graph.dag.edges)
    assert "z{t-2}" in structure.summary()


def test_the_deep_markov_model_of_the_conformance_suite():
    from tests.conformance.programs import dmm

    program = dmm.build()
    args, kwargs = program.call
    structure = time_structure(pgmdl.compile(program.model, *args, **kwargs))
    templates = {s.template: s.kind for s in structure.series}
    assert templates == {"z_{t}": "latent", "obs_x_{t}": "observed"}
    assert TimeLink("z_{t}", "z_{t}", 1) in structure.links
    assert structure.to_dict()["series"][0]["steps"][0] == 1  # the loop runs 1..T


def test_a_model_without_markov_has_no_time_structure():
    def model(x):
        z = pyro.sample("z0", dist.Normal(0.0, 1.0))
        pyro.sample("x0", dist.Normal(z, 1.0), obs=x)

    assert time_structure(pgmdl.compile(model, torch.tensor(0.0))) is None


def test_a_site_present_at_some_steps_only_is_named():
    def model(x):
        z = x.new_zeros(x.shape[0])
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", dist.Normal(z, 1.0))
                if t != 2:
                    pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])

    graph = pgmdl.compile(model, torch.zeros(2, 5))
    with pytest.raises(
        ModelError, match=r"x_<t> exists at steps \[0, 1, 3, 4\].*not at steps \[2\]"
    ):
        time_structure(graph)


def test_a_link_missing_at_one_step_is_named():
    def model(x):
        z = x.new_zeros(x.shape[0])
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                loc = z if t != 3 else torch.zeros_like(z)  # step 3 forgets the past
                z = pyro.sample(f"z_{t}", dist.Normal(loc, 1.0))
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])

    graph = pgmdl.compile(model, torch.zeros(2, 5))
    with pytest.raises(ModelError, match=r"'z_2' is not a parent of 'z_3' \(step 3\)"):
        time_structure(graph)


def test_a_markov_site_without_a_step_in_its_name_is_named():
    def model(x):
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                pyro.sample("state" if t == 0 else f"z_{t}", dist.Normal(0.0, 1.0))

    graph = pgmdl.compile(model, torch.zeros(2, 3))
    with pytest.raises(ModelError, match="'state' is sampled inside pyro.markov"):
        time_structure(graph)


def test_sites_record_whether_they_are_inside_pyro_markov():
    graph = pgmdl.compile(ssm, torch.zeros(3, 4, 2))
    assert not graph["scale"].markov
    assert graph["z_1"].markov and graph["x_3"].markov
    assert graph["z_1"].to_dict()["markov"] is True


def test_a_static_site_feeding_the_first_step_only_is_an_initial_condition():
    """As the DVBF writes it: z_0 = f(w), then z_t = g(z_{t-1}, beta_t)."""

    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("sequences", x.shape[0]):
            z = pyro.deterministic("z_0", 2.0 * w.expand(x.shape[0]))
            pyro.sample("x_0", dist.Normal(z, 1.0), obs=x[:, 0])
            for t in pyro.markov(range(1, x.shape[1])):
                beta = pyro.sample(f"beta_{t}", dist.Normal(0.0, 1.0).expand([x.shape[0]]))
                z = pyro.deterministic(f"z_{t}", 0.9 * z + beta)
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])

    graph = pgmdl.compile(model, torch.zeros(2, 5))
    structure = time_structure(graph)
    series = {s.template: s.steps for s in structure.series}
    assert series["z_{t}"] == (1, 2, 3, 4)  # z_0 and x_0 are outside the loop
    assert TimeLink("beta_{t}", "z_{t}", 0) in structure.links
    assert structure.edges() == {(u, v) for u, v in graph.dag.edges if structure.series_of(v)}
