"""The guide-planning stage (:mod:`pgmdl.guides.plan`): pure graph code, tested
without building a module."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgmdl
from pgmdl.errors import GuideError
from pgmdl.graph.plated import PlateLink
from pgmdl.guides.plan import GuidePlan, free_sites, plan_guide


def hierarchical(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def chain(x):
    with pyro.plate("data", x.shape[0]):
        z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
        z1 = pyro.sample("z1", dist.Normal(z2, 1.0))
        pyro.sample("x", dist.Normal(z1, 1.0), obs=x)


def mixture(x):
    """A discrete assignment the model enumerates."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.0])[c], 1.0), obs=x)


def test_a_global_latent_is_free_and_the_local_reads_it_broadcast():
    plan = plan_guide(pgmdl.compile(hierarchical, torch.zeros(5)))
    assert isinstance(plan, GuidePlan) and plan.order == ("mu", "z")
    assert plan["mu"].free and plan["mu"].parents == ()
    assert not plan["z"].free
    links = {p.name: (p.kind, p.link) for p in plan["z"].parents}
    assert links == {
        "mu": ("latent", PlateLink(broadcast=("data",))),
        "x": ("observed", PlateLink(same=("data",))),
    }
    assert plan.given == ("x",) and plan.plates == ("data",) and plan.max_depth == 1
    assert plan["z"].block == ("data",) and plan["mu"].block == ()


def test_global_latents_option():
    graph = pgmdl.compile(hierarchical, torch.zeros(5))
    assert free_sites(graph) == {"mu"} == free_sites(graph, "free")
    assert free_sites(graph, "amortized") == frozenset()
    amortized = plan_guide(graph, global_latents="amortized")
    assert not amortized["mu"].free and amortized.parents("mu") == ("z",)
    assert amortized["mu"].parents[0].link == PlateLink(pooled=("data",))  # a set encoder


def test_nami_and_mean_field_structures():
    graph = pgmdl.compile(chain, torch.zeros(5))
    nami = plan_guide(graph)
    assert nami.parents("z1") == ("x",) and nami.parents("z2") == ("z1",)
    mean_field = plan_guide(graph, structure="mean-field")
    assert mean_field.parents("z1") == ("x",) and mean_field.parents("z2") == ("x",)
    assert mean_field.structure == "mean-field"


def test_the_order_of_the_given_inverse_is_kept():
    graph = pgmdl.compile(chain, torch.zeros(5))
    plan = plan_guide(graph, pgmdl.invert(graph, order="reverse"))
    assert plan.order == ("z2", "z1") and plan.parents("z1") == ("x", "z2")


def test_enumerated_sites_are_left_to_the_model_and_free_sites_come_first():
    plan = plan_guide(pgmdl.compile(mixture, torch.zeros(5)))
    assert plan.enumerated == ("c",)
    assert plan.order == ("weights",) and plan["weights"].free
    assert "c" not in plan


def test_sometimes_observed_sites_are_sampled_before_their_dependents():
    graph = pgmdl.compile(chain, torch.zeros(5))
    assert plan_guide(graph).order == ("z1", "z2")
    plan = plan_guide(graph, sometimes_observed={"z2"})
    assert plan.order == ("z2", "z1")


def test_summary_and_to_dict():
    plan = plan_guide(pgmdl.compile(hierarchical, torch.zeros(5)))
    text = plan.summary()
    assert "q(mu): free parameters" in text
    assert "q(z | x (same data), mu (broadcast over data)): amortized" in text
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["sites"][1]["parents"][1] == {
        "name": "mu",
        "kind": "latent",
        "same": [],
        "broadcast": ["data"],
        "pooled": [],
    }
    graph = plan.structure_graph()
    assert set(graph.edges) == {("mu", "z"), ("x", "z")}


def test_bad_options_are_named():
    graph = pgmdl.compile(hierarchical, torch.zeros(5))
    with pytest.raises(GuideError, match="structure='mean_field'"):
        plan_guide(graph, structure="mean_field")
    with pytest.raises(GuideError, match="global_latents='all'"):
        plan_guide(graph, global_latents="all")
    with pytest.raises(GuideError, match="joint_sites='yes'"):
        plan_guide(graph, joint_sites="yes")
    with pytest.raises(pgmdl.SiteNotFoundError):
        plan_guide(graph)["nope"]


def test_namiguide_follows_its_plan():
    x = torch.zeros(5)
    guide = pgmdl.NaMIGuide(hierarchical).setup(x)
    assert guide.plan == plan_guide(pgmdl.compile(hierarchical, x))
    assert guide.sites == guide.plan.order
    assert all(guide.parents(s) == guide.plan.parents(s) for s in guide.sites)


def test_order_mean_field_is_the_old_spelling_of_the_structure():
    with pytest.warns(FutureWarning, match="structure='mean-field'"):
        guide = pgmdl.NaMIGuide(chain, order="mean-field")
    guide.setup(torch.zeros(5))
    assert guide.plan.structure == "mean-field" and guide.parents("z2") == ("x",)


def test_the_old_nets_module_warns():
    import importlib
    import sys

    sys.modules.pop("pgmdl.guides.nets", None)
    with pytest.warns(FutureWarning, match="pgmdl.nn"):
        nets = importlib.import_module("pgmdl.guides.nets")
    assert nets.ResidualMLP is pgmdl.nn.ResidualMLP


def test_the_plan_of_a_markov_loop_reports_one_step():
    """Reverse NaMI on a state-space model is Krishnan et al.'s structured
    inference network, q(z_t | z_{t-1}, x_{t:T}); min-fill smooths backwards."""
    from pgmdl.datasets import LinearGaussianSSM

    ssm = LinearGaussianSSM()
    sample = ssm.sample(3, 8, generator=torch.Generator().manual_seed(0))
    graph = pgmdl.compile(ssm.model, sample.x, sample.mask)
    reverse = plan_guide(graph, pgmdl.invert(graph, order="reverse"))
    assert reverse.time is not None and reverse.time.max_lag == 1
    assert reverse.slice_conditionals() == ["q(z_{t} | x_{t..T}, z_{t-1}, mask)"]
    assert "one step of the pyro.markov loop" in reverse.summary()
    backward = plan_guide(graph)
    assert backward.slice_conditionals() == ["q(z_{t} | x_{0..t}, z_{t+1}, mask)"]


def test_a_loop_whose_steps_differ_is_planned_unrolled_with_a_warning():
    def model(x):
        z = x.new_zeros(x.shape[0])
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", dist.Normal(z, 1.0))
                if t != 2:
                    pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])

    graph = pgmdl.compile(model, torch.zeros(2, 5))
    with pytest.warns(pgmdl.GuideWarning, match=r"not at steps \[2\].*planned on the unrolled"):
        plan = plan_guide(graph)
    assert plan.time is None and plan.slice_conditionals() == []
    assert len(plan.sites) == 5


def test_a_guide_refuses_sequences_longer_than_it_was_built_for():
    """A guide with one network per step (time_shared=False). Before: the extra
    steps' latents silently came from the prior (Pyro only warned that the model
    has sites the guide has not). The default guide is shared across steps and
    serves any length (tests/guides/test_sequence.py)."""
    from pgmdl.datasets import LinearGaussianSSM

    ssm = LinearGaussianSSM()
    generator = torch.Generator().manual_seed(0)
    guide = pgmdl.NaMIGuide(ssm.model, time_shared=False)
    guide(ssm.sample(4, 8, generator=generator).x)
    guide(ssm.sample(6, 8, generator=generator).x)  # another batch size: fine
    with pytest.raises(GuideError, match=r"argument 'x' has 10 steps along dim 1.*built for 8"):
        guide(ssm.sample(4, 10, generator=generator).x)
    with pytest.raises(GuideError, match=r"time_shared=True\) serves sequences of any length"):
        guide(ssm.sample(4, 10, generator=generator).x)
