"""NaMI on plate-level graphs, checked against the inversion of the unrolled graph."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgmdl
from pgmdl.graph.nami import eliminate
from pgmdl.graph.plated import (
    flatten,
    plated_dag,
    replicate_name,
    replicates,
    unroll,
    unroll_sizes,
)
from tests.conftest import load_zoo


def hierarchical(x):
    """A global latent, one local latent per data point, observed x."""
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(g, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def nested(x):
    """Groups of members: a global, a latent per group, a latent per member."""
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    with pyro.plate("groups", x.shape[0], dim=-2):
        h = pyro.sample("h", dist.Normal(g, 1.0))
        with pyro.plate("members", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(h, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def pooled_observation(y, x):
    """Locals summed into one global observation: y couples every z."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=y)


def matrix_factorization(x):
    """Row and column factors; each entry observes their product."""
    with pyro.plate("rows", x.shape[0], dim=-2):
        u = pyro.sample("u", dist.Normal(0.0, 1.0))
    with pyro.plate("cols", x.shape[1], dim=-1):
        v = pyro.sample("v", dist.Normal(0.0, 1.0))
    with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
        pyro.sample("x", dist.Normal(u * v, 1.0), obs=x)


def through_deterministic(x):
    """A deterministic summary of all locals feeds a per-point observation."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
    mean = pyro.deterministic("mean", z.mean(-1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mean + z, 1.0), obs=x)


SYNTHETIC = {
    "hierarchical": (hierarchical, (torch.zeros(3),)),
    "nested": (nested, (torch.zeros(2, 3),)),
    "pooled_observation": (pooled_observation, (torch.tensor(0.0), torch.zeros(3))),
    "matrix_factorization": (matrix_factorization, (torch.zeros(2, 3),)),
    "through_deterministic": (through_deterministic, (torch.zeros(3),)),
}


def compiled(name: str) -> pgmdl.ModelGraph:
    if name in SYNTHETIC:
        model, args = SYNTHETIC[name]
        return pgmdl.compile(model, *args)
    loaded = load_zoo(name)
    return pgmdl.compile(loaded.model, *loaded.args, **loaded.kwargs)


def assert_matches_unrolled(graph: pgmdl.ModelGraph, inverse: pgmdl.InverseGraph) -> None:
    """The plate-level inverse, expanded to replicates, against NaMI run on the
    unrolled graph with the same order (each site's replicates in index order).

    Sites without a joint plate get exactly the unrolled parents. A site whose
    replicates the posterior couples gets, per replicate, a superset (every
    later replicate of its block, every parent replicate of the block), and
    over the block the same parents as the unrolled inversion."""
    plated = plated_dag(graph)
    sizes = unroll_sizes(plated, None)
    order = [
        replicate_name(site, plated.plates[site], index)
        for site in inverse.elimination_order
        for _, index in replicates(site, plated, sizes)
    ]
    unrolled = eliminate(flatten(plated, sizes), order)
    unrolled_parents: dict[str, set[str]] = {r: set() for r in order}
    for parent, child in unrolled.parents:
        unrolled_parents[child].add(parent)
    expanded = unroll(
        plated,
        sizes,
        edges={(u, v): p for u, v, p in inverse.dag.edges(data="patterns")},
        coupled={s: frozenset(p) for s, p in inverse.joint_plates.items()},
    )
    for site in inverse.order:
        block_unrolled, block_expanded = set(), set()
        for _, index in replicates(site, plated, sizes):
            name = replicate_name(site, plated.plates[site], index)
            mine = set(expanded.predecessors(name))
            theirs = unrolled_parents[name]
            if site in inverse.joint_plates:
                assert mine >= theirs, (site, name, mine, theirs)
                block_unrolled |= {p for p in theirs if expanded.nodes[p]["site"] != site}
                block_expanded |= {p for p in mine if expanded.nodes[p]["site"] != site}
            else:
                assert mine == theirs, (site, name, mine, theirs)
        assert block_expanded == block_unrolled, site
    # The joint plates are exactly the sites the unrolled inversion couples.
    coupled_unrolled = {
        expanded.nodes[child]["site"]
        for parent, child in unrolled.parents
        if expanded.nodes[parent]["site"] == expanded.nodes[child]["site"]
    }
    assert coupled_unrolled == set(inverse.joint_plates)


CASES = [*SYNTHETIC, "vae", "hvae", "m2", "cvae", "gmm"]


@pytest.mark.parametrize("order", ["min-fill", "topological", "reverse"])
@pytest.mark.parametrize("name", CASES)
def test_plate_level_inverse_matches_the_unrolled_inverse(name, order):
    graph = compiled(name)
    inverse = pgmdl.invert(graph, order=order)
    assert_matches_unrolled(graph, inverse)
    assert pgmdl.check_faithful(graph, inverse, max_replicates=None).ok
    # Joint conditionals and pooled links are needed: no plate-level edge is redundant.
    assert pgmdl.redundant_edges(graph, inverse, max_replicates=None) == ()


def test_vae_encoder_reads_the_same_data_point():
    inverse = pgmdl.invert(compiled("vae"))
    assert inverse.parents("z") == ("x",)
    link = inverse.link("x", "z")
    assert (link.same, link.pooled, link.broadcast, link.mode) == (("data",), (), (), "same")
    assert not inverse.joint_plates


def test_hierarchical_orders_differ_in_coupling():
    graph = compiled("hierarchical")
    # reverse: locals first; each z[i] sees g and its own x[i]; g pools all x.
    reverse = pgmdl.invert(graph, order="reverse")
    assert reverse.order == ("g", "z")
    assert set(reverse.parents("z")) == {"x", "g"}
    assert reverse.link("g", "z").mode == "broadcast"
    assert reverse.link("x", "z").mode == "same"
    assert reverse.link("x", "g").pooled == ("data",)
    assert not reverse.joint_plates
    # min-fill must take g first (z's latent parent): the locals become coupled.
    natural = pgmdl.invert(graph)
    assert natural.order == ("z", "g")
    assert natural.joint_plates == {"z": ("data",)}
    assert natural.link("z", "g").pooled == ("data",)
    assert "joint conditional over the whole plate" in natural.summary()


def test_gmm_locs_need_a_joint_conditional_and_pool_the_data():
    inverse = pgmdl.invert(compiled("gmm"), order="reverse")
    assert inverse.joint_plates["locs"] == ("components",)
    assert inverse.link("x", "locs").pooled == ("data",)
    assert ("x", "locs") in inverse.pooled_edges


def test_matrix_factorization_couples_the_factors_eliminated_last():
    graph = compiled("matrix_factorization")
    inverse = pgmdl.invert(graph, order="reverse")
    # v is eliminated first: every u[r] then shares every entry's information,
    # so the rows factors need one joint conditional that reads the whole matrix.
    assert inverse.order == ("u", "v")
    assert inverse.joint_plates == {"u": ("rows",)}
    assert inverse.link("x", "u").pooled == ("rows", "cols")
    # Each column factor then reads its own column and every row factor.
    assert inverse.link("x", "v").same == ("cols",) and inverse.link("x", "v").pooled == ("rows",)
    assert inverse.link("u", "v").pooled == ("rows",)
    assert inverse.link("u", "v").broadcast == ("cols",)


def test_summary_marks_pooled_and_joint_sites():
    text = pgmdl.invert(compiled("gmm"), order="reverse").summary()
    assert "locs [pooled over components]" in text
    assert "components (joint over components)" in text
