"""audit_guide: what a hand-written guide cannot represent, and why."""

from __future__ import annotations

import importlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineTransform, ExpTransform, SigmoidTransform
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from torch import nn
from torch.distributions import biject_to
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import pgmdl
from tests.conftest import load_zoo
from tests.graph.test_nami_plates import hierarchical, nested

audit_module = importlib.import_module("pgmdl.graph.audit")


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


def test_autonormal_gives_the_global_free_parameters_but_the_local_needs_an_encoder():
    result = pgmdl.audit_guide(hierarchical, AutoNormal(hierarchical), torch.zeros(3))
    assert not result.ok
    # g is global: its free parameters are fitted to the whole data set, no failure.
    g = result.site("g")
    assert g.guide_parents == () and g.free and g.is_global and g.ok
    assert [(m.parent, m.link.pooled) for m in g.absorbed] == [("x", ("data",))]
    assert result.free == ("g",)
    # z is local: one posterior per data point, which free parameters cannot follow.
    z = result.site("z")
    assert z.free and not z.is_global
    assert {m.parent for m in z.missing} == {"g", "x"}
    text = result.report()
    assert "free g: global latent with free parameters" in text
    assert "g: sampled from" not in text and "g also needs" not in text
    assert "z is a local latent (one per data point) and its guide reads no data" in text


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


# ---------------------------------------------------------------------- supports by meaning


def _support_pair(model_site, guide_site):
    """A model with one latent ``s`` from ``model_site`` and a guide for it
    from ``guide_site(x)``."""

    def model(x):
        s = pyro.sample("s", model_site)
        pyro.sample("x", dist.Normal(s.float().sum(), 1.0), obs=x)

    def guide(x):
        pyro.sample("s", guide_site(x))

    return model, guide


def _exp_normal(x):
    return dist.TransformedDistribution(dist.Normal(x, 1.0), [ExpTransform()])


def _biject(support, shape=()):
    def make(x):
        base = dist.Normal(x.expand(shape) if shape else x, 1.0)
        if shape:
            base = base.to_event(len(shape))
        return dist.TransformedDistribution(base, biject_to(support))

    return make


AGREE = {
    "lognormal for halfcauchy": (dist.HalfCauchy(1.0), lambda x: dist.LogNormal(x, 1.0)),
    "exp-normal for halfcauchy": (dist.HalfCauchy(1.0), _exp_normal),
    "exp-normal for gamma": (dist.Gamma(2.0, 1.0), _exp_normal),
    # biject_to(positive) is exp then an affine map: its declared support is 'real'
    "biject_to(positive) for gamma": (dist.Gamma(2.0, 1.0), _biject(constraints.positive)),
    "halfnormal (nonnegative) for lognormal (positive)": (
        dist.LogNormal(0.0, 1.0),
        lambda x: dist.HalfNormal(x.exp()),
    ),
    "sigmoid-normal for beta": (
        dist.Beta(2.0, 2.0),
        lambda x: dist.TransformedDistribution(dist.Normal(x, 1.0), [SigmoidTransform()]),
    ),
    "biject_to(unit_interval) for beta": (dist.Beta(2.0, 2.0), _biject(constraints.unit_interval)),
    "uniform(0, data-dependent < 2) within uniform(0, 2)": (
        dist.Uniform(0.0, 2.0),
        lambda x: dist.Uniform(0.0, 1.0 + torch.sigmoid(x)),
    ),
    "sigmoid-affine within uniform with tensor bounds": (
        dist.Uniform(torch.zeros(3), torch.full((3,), 2.0)).to_event(1),
        lambda x: dist.TransformedDistribution(
            dist.Normal(x.expand(3), 1.0),
            [SigmoidTransform(), AffineTransform(torch.tensor([0.0, 0.5, 1.0]), 1.0)],
        ).to_event(1),
    ),
    "independent(real, 1) for real_vector": (
        dist.MultivariateNormal(torch.zeros(2), torch.eye(2)),
        lambda x: dist.Normal(x.expand(2), 1.0).to_event(1),
    ),
    "stick-breaking normal for dirichlet": (
        dist.Dirichlet(torch.ones(3)),
        _biject(constraints.simplex, (2,)),
    ),
    "geometric for poisson": (dist.Poisson(3.0), lambda x: dist.Geometric(logits=x)),
    "categorical(2) for bernoulli": (
        dist.Bernoulli(0.5),
        lambda x: dist.Categorical(logits=x.expand(2)),
    ),
}

DISAGREE = {
    "normal for gamma": (
        dist.Gamma(2.0, 1.0),
        lambda x: dist.Normal(x, 1.0),
        "real",
        "nonnegative",
    ),
    "shifted exp-normal for gamma": (
        dist.Gamma(2.0, 1.0),
        lambda x: dist.TransformedDistribution(
            dist.Normal(x, 1.0), [ExpTransform(), AffineTransform(-1.0, 1.0)]
        ),
        "greater_than(-1)",
        "nonnegative",
    ),
    "uniform(0, 2) for beta": (
        dist.Beta(2.0, 2.0),
        lambda x: dist.Uniform(x - x, 2.0),
        "interval[0, 2]",
        "interval[0, 1]",
    ),
    "normal vector for dirichlet": (
        dist.Dirichlet(torch.ones(3)),
        lambda x: dist.Normal(x.expand(3), 1.0).to_event(1),
        "real",
        "simplex",
    ),
    "continuous for discrete": (
        dist.Poisson(3.0),
        lambda x: dist.LogNormal(x, 1.0),
        "positive",
        "nonnegative_integer",
    ),
    "categorical(3) for bernoulli": (
        dist.Bernoulli(0.5),
        lambda x: dist.Categorical(logits=x.expand(3)),
        "integer_interval[0, 2]",
        "boolean",
    ),
}


@pytest.mark.parametrize("case", AGREE, ids=list(AGREE))
def test_supports_are_compared_by_the_values_they_admit(case):
    model, guide = _support_pair(*AGREE[case])
    result = pgmdl.audit_guide(model, guide, torch.tensor(0.5))
    assert result.support_mismatches == (), result.report()
    assert result.ok, result.report()


@pytest.mark.parametrize("case", DISAGREE, ids=list(DISAGREE))
def test_a_guide_that_samples_values_the_model_cannot_take_is_a_mismatch(case):
    model_site, guide_site, guide_name, model_name = DISAGREE[case]
    model, guide = _support_pair(model_site, guide_site)
    result = pgmdl.audit_guide(model, guide, torch.tensor(0.5))
    assert result.support_mismatches == (("s", guide_name, model_name),)
    assert not result.ok
    text = result.report()
    assert f"s: the guide's distribution has support {guide_name!r}" in text
    assert f"fix: sample it from a distribution whose values lie in {model_name!r}" in text


def test_supports_without_the_recorded_runs_use_the_declared_constraints():
    # audit() on graphs alone cannot see through transforms, but still compares
    # declared constraints by meaning (positive within nonnegative).
    model, guide = _support_pair(dist.Gamma(2.0, 1.0), lambda x: dist.LogNormal(x, 1.0))
    graphs = [pgmdl.compile(f, torch.tensor(0.5)) for f in (model, guide)]
    assert graphs[0]["s"].support_name == "nonnegative"
    assert audit_module.audit(*graphs).support_mismatches == ()


# ---------------------------------------------------------------------- NaMI guides


NAMI_ZOO = ["vae", "cvae", "gmm", "hvae", "m2", "compvae", "manifold_vae"]


@pytest.mark.parametrize("name", NAMI_ZOO)
def test_nami_guides_of_the_zoo_pass_the_audit(name):
    loaded = load_zoo(name)
    guide = pgmdl.NaMIGuide(loaded.model)
    guide.setup(*loaded.args, **loaded.kwargs)
    result = pgmdl.audit_guide(loaded.model, guide, *loaded.args, **loaded.kwargs)
    assert result.ok, result.report()
    assert not result.support_mismatches and not result.ignored_arguments


def test_nami_guide_free_globals_and_transformed_supports_pass():
    # gmm: scale (LogNormal), weights (Dirichlet) and locs get free parameters, with
    # exp-affine and stick-breaking transforms whose declared supports are 'real'.
    loaded = load_zoo("gmm")
    guide = pgmdl.NaMIGuide(loaded.model)
    guide.setup(*loaded.args, **loaded.kwargs)
    result = pgmdl.audit_guide(loaded.model, guide, *loaded.args, **loaded.kwargs)
    assert result.ok and set(result.free) == {"weights", "locs", "scale"}
    assert "free locs" in result.report() and "mean-field" in result.report()


@pytest.mark.parametrize("order", ["min-fill", "reverse"])
@pytest.mark.parametrize("global_latents", ["auto", "amortized"])
def test_nami_guides_of_plated_models_pass_the_audit(order, global_latents):
    # min-fill with amortized globals samples every z first: each reads all of x
    # (a set encoder, declared by the guide's inverse) and the z are joint over data.
    x = torch.randn(4)
    guide = pgmdl.NaMIGuide(hierarchical, order=order, global_latents=global_latents)
    guide.setup(x)
    result = pgmdl.audit_guide(hierarchical, guide, x)
    assert result.ok, result.report()
    assert result.free == (("g",) if global_latents == "auto" else ())


def test_nami_guide_of_a_nested_plated_model_passes_the_audit():
    x = torch.randn(3, 2)
    guide = pgmdl.NaMIGuide(nested)
    guide.setup(x)
    result = pgmdl.audit_guide(nested, guide, x)
    assert result.ok, result.report()
    assert result.free == ("g",)


def test_pooled_reads_of_a_hand_written_guide_are_found_by_experiment():
    # Sampling z before g, the posterior of z[i] needs all of x (through g), and the
    # z are coupled. A guide that pools x is missing only the coupling; one that
    # reads x[i] alone misses x too.
    def pooling(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x + x.mean(), 1.0))
        pyro.sample("g", dist.Normal(z.mean(), 1.0))

    def own_row(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x, 1.0))
        pyro.sample("g", dist.Normal(z.mean(), 1.0))

    x = torch.randn(4)
    result = pgmdl.audit_guide(hierarchical, pooling, x)
    assert [(m.site, m.parent, m.link.pooled) for m in result.missing] == [("z", "z", ("data",))]
    result = pgmdl.audit_guide(hierarchical, own_row, x)
    assert [(m.site, m.parent) for m in result.missing] == [("z", "z"), ("z", "x")]


def test_a_multiset_guide_with_independent_parts_is_still_caught():
    # The joint conditional over the parts is what makes CompVAE's guide faithful:
    # the audit sees it by probing the guide's density, and misses it without.
    loaded = load_zoo("compvae")
    with pytest.warns(UserWarning):
        guide = pgmdl.NaMIGuide(loaded.model, joint_sites=())
        guide.setup(*loaded.args, **loaded.kwargs)
    result = pgmdl.audit_guide(loaded.model, guide, *loaded.args, **loaded.kwargs)
    ((site, parent, pooled),) = [(m.site, m.parent, m.link.pooled) for m in result.missing]
    assert (site, parent, pooled) == ("w", "w", ("parts",))


# ---------------------------------------------------------------------- free parameters


def regression(x, y):
    """Bayesian linear regression: global weights and noise, one observation per row."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[-1]), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, sigma), obs=y)


def regression_guide(x, y):
    """Free parameters for the globals, as written in Pyro's tutorials."""
    loc = pyro.param("w_loc", torch.zeros(x.shape[-1]))
    scale = pyro.param("w_scale", torch.ones(x.shape[-1]), constraint=constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale).to_event(1))
    s_loc = pyro.param("sigma_loc", torch.tensor(0.0))
    pyro.sample("sigma", dist.LogNormal(s_loc, 0.1))


XY = (torch.randn(6, 2), torch.randn(6))


@pytest.mark.parametrize(
    "make_guide",
    [lambda: regression_guide, lambda: AutoNormal(regression), lambda: AutoDelta(regression)],
    ids=["pyro.param", "AutoNormal", "AutoDelta"],
)
def test_free_parameters_of_global_latents_are_reported_as_such(make_guide):
    result = pgmdl.audit_guide(regression, make_guide(), *XY)
    assert result.ok, result.report()
    assert result.free == ("w", "sigma")
    assert not result.missing and not result.support_mismatches
    for site in ("w", "sigma"):
        audit = result.site(site)
        assert audit.free and audit.is_global and "y" in {m.parent for m in audit.absorbed}
    text = result.report()
    assert "needs" not in text and "CANNOT" not in text
    assert "free w: global latent with free parameters, fitted to the whole data set" in text
    assert "they stand for its dependence on x, y" in text


def test_a_local_latent_that_ignores_the_data_is_still_reported():
    loc = nn.Parameter(torch.zeros(3))

    def guide(x):  # g free (fine), z "amortized" by a network that never sees x
        g = pyro.sample("g", dist.Normal(pyro.param("g_loc", torch.tensor(0.0)), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(g + loc, 1.0))

    result = pgmdl.audit_guide(hierarchical, guide, torch.zeros(3))
    assert not result.ok and result.free == ("g",)
    assert [(m.site, m.parent) for m in result.missing] == [("z", "x")]
    assert "z is a local latent" in result.report()


def test_a_free_global_sampled_after_a_local_it_ignores_still_needs_it():
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 1.0))
        pyro.sample("g", dist.Normal(pyro.param("g_loc", torch.tensor(0.0)), 1.0))

    result = pgmdl.audit_guide(hierarchical, guide, torch.zeros(3))
    assert not result.ok and result.free == ("g",)
    (missing,) = result.site("g").missing
    assert missing.parent == "z" and missing.link.pooled == ("data",)
    assert "free g" in result.report() and "g: sampled from {} but the posterior" in result.report()


def test_without_data_plates_every_latent_belongs_to_the_one_data_point():
    # No plate: x is one data point, a free-parameter guide misses it (NaMIGuide's
    # global_latents="auto" amortizes here too).
    result = pgmdl.audit_guide(explaining_away, AutoNormal(explaining_away), torch.tensor(0.0))
    assert result.free == () and not result.ok
    assert {(m.site, m.parent) for m in result.missing} >= {("a", "x"), ("b", "x")}


# ---------------------------------------------------------------------- arguments


def test_guide_arguments_are_matched_by_call_slot_not_by_name():
    def guide(*args):  # NaMIGuide-like signature: the model's x is args[0]
        pyro.sample("g", dist.Normal(pyro.param("g_loc", torch.tensor(0.0)), 1.0))
        with pyro.plate("data", args[0].shape[0]):
            pyro.sample("z", dist.Normal(args[0], 1.0))

    def renamed(data):
        g = pyro.sample("g", dist.Normal(data.mean(), 1.0))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data + g, 1.0))

    result = pgmdl.audit_guide(hierarchical, renamed, torch.zeros(3))
    assert result.ok and not result.ignored_arguments, result.report()
    assert result.site("z").guide_parents == ("g", "x")
    result = pgmdl.audit_guide(hierarchical, guide, torch.zeros(3))
    assert [(m.site, m.parent) for m in result.missing] == [("z", "g")]
    assert not result.ignored_arguments


def test_a_guide_reading_a_matrix_reads_every_column_the_model_observes():
    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("schools", data.shape[0]):
            pyro.sample("y", dist.Normal(mu, data[:, 1]), obs=data[:, 0])

    def guide(data):
        pyro.sample("mu", dist.Normal(data[:, 0].mean(), 1.0))

    result = pgmdl.audit_guide(model, guide, torch.rand(4, 2) + 0.5)
    assert result.ok and not result.ignored_arguments, result.report()


# PackedSequence: a namedtuple argument, as in Pyro's deep Markov model.

_rnn = nn.GRU(2, 4, batch_first=True)


def packed_model(seqs):
    x, lengths = pad_packed_sequence(seqs, batch_first=True)
    mask = torch.arange(x.shape[1]) < lengths.unsqueeze(-1)
    with pyro.plate("seqs", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample(
            "x",
            dist.Normal(z.unsqueeze(-2), 1.0).mask(mask.unsqueeze(-1)).to_event(2),
            obs=x,
        )


def packed_guide(seqs):
    assert isinstance(seqs, PackedSequence), type(seqs)
    pyro.module("rnn", _rnn)
    _, h = _rnn(seqs)
    with pyro.plate("seqs", h.shape[1]):
        pyro.sample("z", dist.Normal(h[-1][..., :2], 1.0).to_event(1))


def packed_mean_field(seqs):
    with pyro.plate("seqs", seqs.batch_sizes[0]):
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def _packed():
    padded = torch.randn(3, 4, 2)
    return pack_padded_sequence(padded, torch.tensor([4, 3, 2]), batch_first=True)


def test_auditing_a_guide_that_reads_a_packed_sequence():
    result = pgmdl.audit_guide(packed_model, packed_guide, _packed())
    assert result.ok, result.report()
    assert "x" in result.site("z").guide_parents
    # The same model with a guide that ignores the sequences is caught.
    result = pgmdl.audit_guide(packed_model, packed_mean_field, _packed())
    # It reads the lengths (seqs[1]), not the sequences: the observation is unknown to it.
    assert result.site("z").guide_parents == ("seqs[1]",)
    assert {m.parent for m in result.missing} == {"seqs[0]", "x"}
