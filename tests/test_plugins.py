"""The plug-in contract (:mod:`pgmdl.plugins`) with a minimal example plug-in.

The plug-in, ``toy``, does what a real one does through the contract only:

* it marks a site with data under its own ``msg["infer"]`` key, declared with
  :func:`register_site_metadata`, and the compiled graph carries it;
* it offers a joint conditional for positive sites whose replicates NaMI
  couples (which the multiset plug-in refuses: it needs real values), and
  the guide planner picks it, and NaMIGuide trains it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import pgmdl
from pgmdl.guides.plan import JointPlan, plan_guide
from pgmdl.plugins import (
    JointRequest,
    register_joint_conditional,
    register_site_metadata,
    site_metadata,
    unregister_joint_conditional,
    unregister_site_metadata,
)


class ToyJoint(nn.Module):
    """All replicates of a positive site from one learned LogNormal (a toy)."""

    def __init__(self, request: JointRequest) -> None:
        super().__init__()
        self.request = request
        self.loc = nn.Parameter(torch.zeros(()))

    def forward(self, features, block, max_depth, mask, masks):  # noqa: ANN001, ANN201
        return dist.LogNormal(self.loc, 1.0).expand(block)


class ToyProvider:
    name = "toy"

    def unfit(self, graph, site):  # noqa: ANN001, ANN201
        return None if graph[site].support_name == "positive" else "needs a positive site"

    def plate(self, graph, site):  # noqa: ANN001, ANN201
        return graph[site].plates[-1] if graph[site].plates else None

    def build(self, request: JointRequest) -> nn.Module:
        return ToyJoint(request)


@pytest.fixture
def toy_plugin():
    register_site_metadata("toy", describe=lambda data: f"toy: {data['note']}")
    register_joint_conditional(ToyProvider())
    yield
    unregister_site_metadata("toy")
    unregister_joint_conditional("toy")


def parts_model(x):
    """Positive parts' latents summed into one whole: NaMI couples the parts."""
    with pyro.plate("data", x.shape[0], dim=-1):
        with pyro.plate("parts", 3, dim=-2):
            w = pyro.sample("w", dist.LogNormal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w.sum(-2), 0.1), obs=x, infer={"toy": {"note": "a sum"}})


def test_site_metadata_reaches_the_graph_under_the_plugin_key(toy_plugin):
    graph = pgmdl.compile(parts_model, torch.ones(4))
    assert site_metadata(graph["x"], "toy") == {"note": "a sum"}
    assert graph["x"].observation == "toy: a sum"
    assert site_metadata(graph["w"], "toy") is None
    assert graph["x"].to_dict()["metadata"] == ["toy"]


def test_an_undeclared_infer_key_is_not_metadata():
    graph = pgmdl.compile(parts_model, torch.ones(4))
    assert graph["x"].metadata == {} and graph["x"].observation is None


def test_the_planner_asks_the_registered_joint_conditionals(toy_plugin):
    graph = pgmdl.compile(parts_model, torch.ones(4))
    assert pgmdl.invert(graph).joint_plates["w"] == ("parts",)
    plan = plan_guide(graph)
    assert plan["w"].joint == JointPlan("parts", "toy")  # the multiset refuses positive sites


def test_namiguide_builds_and_trains_the_plugins_conditional(toy_plugin):
    x = torch.full((4,), 3.0)
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(parts_model)
    svi = SVI(parts_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step(x)
    module = guide.conditional("w")
    assert isinstance(module, ToyJoint) and module.request.plate == "parts"
    assert module.request.context[0].name == "x"  # the whole, outside the plate
    before = module.loc.item()
    for _ in range(20):
        svi.step(x)
    assert module.loc.item() != before  # trained with the guide
    assert guide(x)["w"].shape == (3, 4)


def test_without_the_plugin_the_coupled_site_is_warned_about():
    graph = pgmdl.compile(parts_model, torch.ones(4))
    with pytest.warns(pgmdl.GuideWarning, match="couples the replicates of 'w'"):
        plan = plan_guide(graph)
    assert plan["w"].joint is None


def test_a_provider_without_the_protocol_is_refused():
    with pytest.raises(TypeError, match="lacks name, unfit, plate or build"):
        register_joint_conditional(object())
