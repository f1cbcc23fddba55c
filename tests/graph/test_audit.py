"""audit_guide: what a hand-written guide cannot represent, and why."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from torch import nn

import pgmdl
from tests.conftest import load_zoo
from tests.graph.test_nami_plates import hierarchical


def explaining_away(x):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)


def test_mean_field_guide_misses_the_co_parent_and_says_why():
    def guide(x):
        pyro.sample("a", dist.Normal(x, 1.0))
        pyro.sample("b", dist.Normal(x, 1.0))

    result = pgmdl.audit_guide(explaining_away, guide, torch.tensor(0.0))
    assert not result.ok
    assert result.site("a").ok and result.site("a").needed == ("x",)
    (missing,) = result.missing
    assert (missing.site, missing.parent) == ("b", "a")
    assert missing.path == ("b", "->", "x", "<-", "a")  # explaining away through x
    assert missing.given == ("x",)
    text = result.report()
    assert "b: sampled from {x} but the posterior also needs a." in text
    assert "active path: b -> x <- a" in text
    assert "fix: condition b on {a, x}" in text


def test_faithful_guide_passes_and_unneeded_inputs_are_noted():
    def guide(x):
        a = pyro.sample("a", dist.Normal(x, 1.0))
        pyro.sample("b", dist.Normal(x - a, 1.0))

    result = pgmdl.audit_guide(explaining_away, guide, torch.tensor(0.0))
    assert result.ok, result.report()
    assert result.site("b").guide_parents == ("a", "x")

    def chain(x):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
        pyro.sample("x", dist.Normal(z2, 1.0), obs=x)

    def chain_guide(x):
        z2 = pyro.sample("z2", dist.Normal(x, 1.0))
        pyro.sample("z1", dist.Normal(z2 + x, 1.0))  # x is not needed once z2 is known

    result = pgmdl.audit_guide(chain, chain_guide, torch.tensor(0.0))
    assert result.ok
    assert result.site("z1").unneeded == ("x",)
    assert "z1 reads x, which the posterior does not need" in result.report()


def test_vae_encoder_guide_is_faithful(device):
    loaded = load_zoo("vae", device)
    encoder = nn.Linear(64, 16).to(device)

    def guide(x=None, batch_size=None):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    result = pgmdl.audit_guide(loaded.model, guide, *loaded.args, **loaded.kwargs)
    assert result.ok, result.report()
    assert result.site("z").guide_parents == ("x",)


def test_m2_guide_that_forgets_the_label_is_caught(device):
    loaded = load_zoo("m2", device)
    encoder = nn.Linear(64, 16).to(device)

    def guide(x=None, y=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, dim=-1)  # y is left out
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    result = pgmdl.audit_guide(loaded.model, guide, *loaded.args, **loaded.kwargs)
    (missing,) = result.missing
    assert (missing.site, missing.parent) == ("z", "y")
    assert missing.link.same == ("data",) and not missing.link.pooled
    assert missing.path[1:] == ("->", "x[0]", "<-", "y[0]")


def test_autonormal_is_not_amortized_and_pools_nothing():
    result = pgmdl.audit_guide(hierarchical, AutoNormal(hierarchical), torch.zeros(3))
    assert not result.ok
    assert result.site("g").guide_parents == ()
    (g_needs_x,) = result.site("g").missing
    assert g_needs_x.parent == "x" and g_needs_x.link.pooled == ("data",)
    assert {m.parent for m in result.site("z").missing} == {"g", "x"}
    assert "pool its replicates" in result.report()


def test_auxiliary_latents_are_summed_out_and_couple_their_children():
    result = pgmdl.audit_guide(
        explaining_away, AutoMultivariateNormal(explaining_away), torch.tensor(0.0)
    )
    assert result.auxiliary == ("_AutoMultivariateNormal_latent",)
    # The joint Gaussian couples a and b, but nothing reads x.
    assert result.site("b").guide_parents == ("a",)
    assert [(m.site, m.parent) for m in result.missing] == [("a", "x"), ("b", "x")]


def test_enumerated_sites_belong_in_no_guide():
    loaded = load_zoo("gmm")
    guide = AutoDelta(poutine.block(loaded.model, hide=["assignment"]))
    result = pgmdl.audit_guide(loaded.model, guide, *loaded.args, **loaded.kwargs)
    assert result.enumerated == ("assignment",)
    assert "assignment" not in result.missing_sites
    assert "correctly left out of the guide" in result.report()


def test_site_level_mistakes_are_reported():
    def model(x, unused):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(loc, scale), obs=x)

    def guide(x, unused):
        pyro.sample("scale", dist.Normal(x, 1.0))  # wrong support
        pyro.sample("x", dist.Normal(x + unused, 1.0))  # observed in the model
        # loc is never sampled

    result = pgmdl.audit_guide(model, guide, torch.tensor(1.0), torch.tensor(0.0))
    assert not result.ok
    assert result.missing_sites == ("loc",)
    assert result.unexpected_sites == ("x",)
    assert result.support_mismatches == (("scale", "real", "positive"),)
    assert result.ignored_arguments == ("unused",)
    text = result.report()
    assert "loc: the guide never samples this latent" in text
    assert "x: the guide samples it but the model observes it" in text
    assert "support 'real' but the model's has 'positive'" in text


def test_audit_agrees_with_check_faithful_on_the_nami_structure():
    # A guide written from NaMI's reverse inverse passes the audit.
    graph = pgmdl.compile(hierarchical, torch.zeros(3))
    inverse = pgmdl.invert(graph, order="reverse")
    assert inverse.parents("g") == ("x",) and set(inverse.parents("z")) == {"x", "g"}

    def guide(x):
        g = pyro.sample("g", dist.Normal(x.mean(), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x + g, 1.0))

    assert pgmdl.audit_guide(hierarchical, guide, torch.zeros(3)).ok


@pytest.mark.parametrize("bad", [None, 3])
def test_guide_that_is_not_a_program_is_a_model_error(bad):
    with pytest.raises(pgmdl.ModelError, match="the guide could not be compiled"):
        pgmdl.audit_guide(explaining_away, bad, torch.tensor(0.0))
