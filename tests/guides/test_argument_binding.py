"""NaMIGuide reads observed values the way the model does: views of its
arguments replayed per call, sites observed in some calls only, plates
without a size, and explicit bindings checked against the traced value."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from torch import nn

import pgmdl
from pgmdl.errors import GuideError, GuideWarning

pytestmark = pytest.mark.usefixtures("one_thread")


def image_vae(images):
    """A VAE fed image-shaped batches, flattened inside the model."""
    x = images.reshape(-1, 16)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
        pyro.sample(
            "x", dist.Bernoulli(logits=z.sum(-1, keepdim=True).expand(-1, 16)).to_event(1), obs=x
        )


def test_reshaped_observation_is_read_by_replaying_the_view(device):
    images = (torch.rand(12, 4, 4, device=device) > 0.5).float()
    guide = pgmdl.NaMIGuide(image_vae)
    svi = SVI(image_vae, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for batch in (12, 5, 12, 3):  # the batch size changes between calls
        assert torch.isfinite(torch.tensor(svi.step(images[:batch])))
    assert guide.parents("z") == ("x",)
    # the encoder reads x = images.reshape(-1, 16): trained, it tells images apart
    z = guide(images[:5])["z"]
    assert z.shape == (5, 2) and z.device.type == device.type


def test_a_view_that_cannot_follow_a_new_shape_names_the_site():
    def model(images):
        x = images.reshape(3, 32)  # pairs of images: only batches of 6 fit
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Normal(torch.zeros(3, 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.expand(3, 32), 1.0).to_event(1), obs=x)

    guide = pgmdl.NaMIGuide(model)
    guide(torch.zeros(6, 4, 4))
    with pytest.raises(GuideError, match=r"site 'x' is images.reshape\(3, 32\)"):
        guide(torch.zeros(4, 4, 4))


def test_two_columns_of_one_matrix_observed_and_scale():
    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("schools", data.shape[0]):
            theta = pyro.sample("theta", dist.Normal(mu, 5.0))
            pyro.sample("y", dist.Normal(theta, data[:, 1]), obs=data[:, 0])

    data = torch.tensor([[28.0, 15], [8, 10], [-3, 16], [7, 11], [-1, 9], [1, 11]])
    guide = pgmdl.NaMIGuide(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(150)]
    assert set(guide.parents("theta")) >= {"y", "data"}
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20


# ----------------------------------------------------------------- observed in some calls


DECODER = nn.Linear(5, 16)


def m2(xs, ys=None):
    """Semi-supervised M2 as Pyro users write it: a plate without a size, obs=ys."""
    pyro.module("decoder", DECODER)
    with pyro.plate("data"):
        z = pyro.sample("z", dist.Normal(xs.new_zeros(xs.shape[0], 2), 1.0).to_event(1))
        ys = pyro.sample("y", dist.OneHotCategorical(logits=xs.new_zeros(xs.shape[0], 3)), obs=ys)
        shape = torch.broadcast_shapes(z.shape[:-1], ys.shape[:-1])
        h = torch.cat([z.expand(shape + (2,)), ys.expand(shape + (3,))], -1)
        pyro.sample("x", dist.Bernoulli(logits=DECODER(h)).to_event(1), obs=xs)


@pytest.mark.parametrize("first", ["unlabelled", "labelled"])
@pytest.mark.parametrize("loss", ["trace", "enum"])
def test_semi_supervised_site_observed_in_labelled_calls_only(first, loss):
    pyro.set_rng_seed(0)
    xs = (torch.rand(10, 16) > 0.5).float()
    ys = torch.eye(3)[torch.arange(10) % 3]
    if loss == "enum":
        guide = pgmdl.NaMIGuide(m2, enumerate="parallel")
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
    else:
        guide = pgmdl.NaMIGuide(m2)
        elbo = Trace_ELBO()
    svi = SVI(m2, guide, pyro.optim.Adam({"lr": 0.02}), elbo)
    calls = [(xs, None), (xs, ys)] if first == "unlabelled" else [(xs, ys), (xs, None)]
    losses = [svi.step(*calls[i % 2]) for i in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    # y is sampled before z, so z's conditional reads y whether given or sampled
    assert guide.sites == ("y", "z") and set(guide.parents("z")) == {"x", "y"}
    labelled = pyro.poutine.trace(guide).get_trace(xs, ys)
    unlabelled = pyro.poutine.trace(guide).get_trace(xs)
    assert "y" not in labelled.nodes  # the model observes y: the guide must not sample it
    assert "y" in unlabelled.nodes
    if loss == "trace":
        # the z conditional is fed the given labels: other labels, another q(z | x, y)
        q = guide.conditional("z")
        assert q is not None
        with pyro.poutine.block():
            a = pyro.poutine.trace(guide).get_trace(xs, ys).nodes["z"]["fn"].mean
            b = pyro.poutine.trace(guide).get_trace(xs, ys.roll(1, 0)).nodes["z"]["fn"].mean
        assert not torch.allclose(a, b)


def test_plate_without_size_gets_its_size_from_the_data():
    def model(x):
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    graph = pgmdl.compile(model, torch.zeros(7))
    assert graph.plates["data"].size == 7
    guide = pgmdl.NaMIGuide(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(torch.randn(7))
    assert guide(torch.randn(3))["z"].shape == (3,)


# ----------------------------------------------------------------- explicit bindings


def _column_model(data):
    with pyro.plate("rows", data.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=data[:, 0])


def test_an_explicit_binding_that_agrees_is_silent(recwarn):
    guide = pgmdl.NaMIGuide(
        _column_model, bindings={"y": lambda arguments: arguments["data"][:, 0]}
    )
    guide(torch.randn(4, 2))
    assert not [w for w in recwarn if issubclass(w.category, GuideWarning)]


def test_an_explicit_binding_that_disagrees_with_the_traced_value_warns():
    guide = pgmdl.NaMIGuide(
        _column_model, bindings={"y": lambda arguments: arguments["data"][:, 1]}
    )
    with pytest.warns(GuideWarning, match=r"bindings=\{'y'.*not the model's observed value"):
        guide(torch.randn(4, 2))


def test_an_optional_argument_cast_before_obs_is_still_found():
    def model(xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            y = pyro.sample(
                "y", dist.Bernoulli(0.5), obs=None if ys is None else ys.float()
            )  # the marker cannot be cast: every latent site is tried with its own value
            z = pyro.sample("z", dist.Normal(y, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=xs)

    guide = pgmdl.NaMIGuide(model)
    guide.setup(torch.randn(6))  # unlabelled first
    labels = torch.tensor([1, 0, 1, 1, 0, 0])
    assert "y" not in pyro.poutine.trace(guide).get_trace(torch.randn(6), labels).nodes
    assert guide.sites[0] == "y"
