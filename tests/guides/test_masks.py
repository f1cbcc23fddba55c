"""NaMIGuide masks the latent entries the model masks.

Where the model scores no density for an entry of a latent site (the deep
Markov model's padded steps, AIR's absent objects), a guide that scores one
has an unbounded ELBO: its entropy there grows without limit, and training
reports losses no model can reach.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pgmdl
from pgmdl.errors import GuideWarning


def padded_sequences(x, mask):
    """A random walk observed with noise; steps past each sequence's end masked."""
    with pyro.plate("sequences", x.shape[0]):
        z = x.new_zeros(x.shape[0])
        for t in pyro.markov(range(x.shape[1])):
            with pyro.poutine.mask(mask=mask[:, t]):
                z = pyro.sample(f"z_{t}", dist.Normal(z, 1.0))
                pyro.sample(f"x_{t}", dist.Normal(z, 0.5), obs=x[:, t])


def objects(image):
    """Two objects, each present or not; an absent object's position costs nothing."""
    with pyro.plate("images", image.shape[0]):
        total = image.new_zeros(image.shape[0])
        for i in range(2):
            present = pyro.sample(f"present_{i}", dist.Bernoulli(0.5))
            where = pyro.sample(f"where_{i}", dist.Normal(0.0, 1.0).mask(present.bool()))
            total = total + where * present
        pyro.sample("image", dist.Normal(total, 0.1), obs=image)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g).cumsum(-1)
    lengths = torch.tensor([4, 4, 3, 2, 2, 1])
    return x, torch.arange(4)[None, :] < lengths[:, None]


def test_padded_steps_are_masked_in_the_guide_as_in_the_model():
    x, mask = _data()
    guide = pgmdl.NaMIGuide(padded_sequences)
    trace = pyro.poutine.trace(guide).get_trace(x, mask)
    for t in range(4):
        assert torch.equal(trace.nodes[f"z_{t}"]["mask"], mask[:, t])
    # the mask follows the data of each call (a view of the argument, replayed)
    trace = pyro.poutine.trace(guide).get_trace(x[:3], mask[:3])
    assert torch.equal(trace.nodes["z_3"]["mask"], mask[:3, 3])


def test_masked_training_stays_a_bound():
    """Without the guide's mask the -ELBO fell below any value the model can
    reach (the entropy of q on padded steps grew freely); with it, the loss is
    never below -log p(x) of the best possible fit."""
    pyro.set_rng_seed(0)
    x, mask = _data()
    guide = pgmdl.NaMIGuide(padded_sequences)
    svi = SVI(padded_sequences, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(x, mask) for _ in range(300)]
    # each observed entry has density at most N(0; 0, 0.5) = 0.80: -log p >= 0.23 per entry
    floor = int(mask.sum()) * -math.log(dist.Normal(0.0, 0.5).log_prob(torch.tensor(0.0)).exp())
    assert min(sum(losses[i : i + 20]) / 20 for i in range(0, 280, 20)) > floor


def test_a_mask_that_is_an_earlier_site_orders_the_guide_and_masks_it():
    guide = pgmdl.NaMIGuide(objects)
    image = torch.randn(5)
    guide.setup(image)
    order = guide.sites
    for i in range(2):
        assert order.index(f"present_{i}") < order.index(f"where_{i}")
    trace = pyro.poutine.trace(guide).get_trace(image)
    for i in range(2):
        present = trace.nodes[f"present_{i}"]["value"]
        assert torch.equal(trace.nodes[f"where_{i}"]["mask"], present != 0)


def test_a_mask_the_guide_cannot_rebuild_is_warned_about():
    def model(x, c):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            b = pyro.sample("b", dist.Normal(0.0, 1.0).mask((a > 0) & (c > 0)))
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    with pytest.warns(GuideWarning, match=r"masks latent site 'b'.*no bound"):
        pgmdl.NaMIGuide(model).setup(torch.randn(4), torch.randn(4))
