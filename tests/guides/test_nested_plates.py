"""NaMIGuide on nested plates, where the inversion joins the replicates of a site
along an outer plate while its parents also live in an inner plate (issue 16,
§4: ``global_latents="amortized"`` on LDA crashed in ``fit_batch``)."""

from __future__ import annotations

import argparse
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from torch.distributions.transforms import StickBreakingTransform

import pgmdl
from pgmdl.errors import GuideWarning
from pgmdl.guides.conditional import fit_batch
from pgmdl.guides.families import make_family


def groups(x):
    """Items nested in groups, a global scale; ``x`` is (items, groups)."""
    tau = pyro.sample("tau", dist.LogNormal(0.0, 1.0))
    with pyro.plate("groups", x.shape[1]):
        mu = pyro.sample("mu", dist.Normal(0.0, tau))
        with pyro.plate("items", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def lda(data=None, args=None, batch_size=None):
    """Latent Dirichlet allocation as Pyro's example writes it: ``data`` is
    (words per document, documents), word topics enumerated."""
    with pyro.plate("topics", args.num_topics):
        topic_weights = pyro.sample("topic_weights", dist.Gamma(1.0 / args.num_topics, 1.0))
        topic_words = pyro.sample(
            "topic_words", dist.Dirichlet(torch.ones(args.num_words) / args.num_words)
        )
    with pyro.plate("documents", args.num_docs, batch_size) as ind:
        if data is not None:
            data = data[:, ind]
        doc_topics = pyro.sample("doc_topics", dist.Dirichlet(topic_weights))
        with pyro.plate("words", args.num_words_per_doc):
            word_topics = pyro.sample(
                "word_topics", dist.Categorical(doc_topics), infer={"enumerate": "parallel"}
            )
            pyro.sample("doc_words", dist.Categorical(topic_words[word_topics]), obs=data)
    return data


LDA_ARGS = argparse.Namespace(num_topics=3, num_words=12, num_docs=8, num_words_per_doc=6)


def _lda_data() -> torch.Tensor:
    pyro.set_rng_seed(0)
    return poutine.trace(lda).get_trace(None, LDA_ARGS).nodes["doc_words"]["value"]


def _decreases(losses: list[float]) -> bool:
    k = len(losses) // 4
    return all(math.isfinite(v) for v in losses) and sum(losses[-k:]) < sum(losses[:k])


def test_a_joined_site_reads_each_replicate_pooled_over_inner_plates():
    # amortized tau is eliminated first, so the mu's are joined across groups: each mu
    # reads all of x (pooled over groups and items) and its own group's x (pooled over
    # items only); the latter kept the items dim and fit_batch could not reshape it
    x = torch.randn(5, 6) + torch.arange(6.0)
    guide = pgmdl.NaMIGuide(groups, joint_sites=(), global_latents="amortized")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuideWarning)
        guide.setup(x)
    assert str(guide.inverse.link("x", "mu")) == "pooled over groups, items"
    conditional = guide.conditional("mu")
    (spec,) = conditional.parents
    assert spec.keep_same and spec.same_pooled_dims == (-2,)
    h = conditional.features({"x": guide.parent_features("x")(x)})
    h = fit_batch(h, torch.Size([6]), guide._max_depth)
    assert h.shape == (6, conditional.in_features)
    assert not torch.allclose(h[0], h[-1])  # each group sees its own items
    assert guide(x)["mu"].shape == (6,)
    pyro.set_rng_seed(0)
    svi = SVI(groups, guide, pyro.optim.Adam({"lr": 0.005}), Trace_ELBO())
    assert _decreases([svi.step(x) for _ in range(60)])


@pytest.mark.filterwarnings("ignore::pgmdl.errors.GuideWarning")
@pytest.mark.parametrize("global_latents", ["amortized", "auto", "free"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_lda_trains_with_enumeration(global_latents, batch_size):
    data = _lda_data()
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    guide = pgmdl.NaMIGuide(lda, global_latents=global_latents)
    elbo = TraceEnum_ELBO(max_plate_nesting=2)
    svi = SVI(lda, guide, pyro.optim.Adam({"lr": 0.005}), elbo)
    losses = [svi.step(data, LDA_ARGS, batch_size) for _ in range(40)]
    assert _decreases(losses), losses
    amortized = global_latents == "amortized"
    assert bool(guide.parents("topic_words")) == amortized
    assert "doc_words" in guide.parents("doc_topics")
    sample = guide(data, LDA_ARGS, batch_size)
    assert sample["doc_topics"].shape == (batch_size or LDA_ARGS.num_docs, LDA_ARGS.num_topics)
    assert sample["topic_words"].shape == (LDA_ARGS.num_topics, LDA_ARGS.num_words)


def test_transformed_families_score_their_own_sample_exactly():
    # a logistic-normal draw whose last components are small: recomputing the Gaussian
    # draw from the simplex value in float32 (stick-breaking inverse) is off by orders of
    # magnitude, and the ELBO grew without bound (LDA's losses went to -1e10)
    support = dist.Dirichlet(torch.ones(4)).support
    family = make_family(None, "p", support, torch.Size([4]))
    q = family(torch.cat([torch.full((3,), 10.0), torch.full((3,), -8.0)]))
    pyro.set_rng_seed(0)
    u = q.base_dist.rsample().double()
    pyro.set_rng_seed(0)
    value = q.rsample()
    assert float(value.min()) < 1e-10
    exact = StickBreakingTransform()
    expected = q.base_dist.log_prob(u) - exact.log_abs_det_jacobian(u, exact(u))
    assert float(q.log_prob(value)) == pytest.approx(float(expected), rel=1e-4)


def test_stick_breaking_draws_stay_off_the_float_boundary():
    # a sparse Dirichlet prior (LDA's, concentration << 1) has an infinite log-density
    # gradient at 0: a component that underflowed to a denormal made the gradient NaN
    support = dist.Dirichlet(torch.ones(3)).support
    family = make_family(None, "p", support, torch.Size([3]))
    raw = torch.tensor([3.0, -90.0, -8.0, -8.0], requires_grad=True)
    value = family(raw).rsample()
    assert float(value.detach().min()) >= torch.finfo(value.dtype).tiny
    dist.Dirichlet(torch.full((3,), 0.05)).log_prob(value).backward()
    assert torch.isfinite(raw.grad).all()
