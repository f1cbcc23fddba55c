"""One tiny model per failure of issue 16, sections 1-4.

1. observations that are views of an argument (no false self-dependency;
   a genuine one is a ModelError naming the site; the guide binds views);
2. data flow that was lost silently (in-place writes, ``Distribution.mask``,
   wrapped and unknown distributions);
3. arguments of any shape reach the program as themselves;
4. plates without a size, sites observed in some calls only, amortized
   globals on nested plates.
"""

from __future__ import annotations

import argparse
import warnings
from collections import namedtuple
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import SVI, Trace_ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints
from torch.distributions.transforms import AffineTransform, ExpTransform

import pgmdl
from pgmdl.errors import GuideError, ModelError
from tests.conformance.harness import argument_root, inputs_by_argument


def svi_steps(model, guide, calls, steps=3):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = []
    for i in range(steps):
        args, kwargs = calls[i % len(calls)]
        losses.append(svi.step(*args, **kwargs))
    assert all(torch.isfinite(torch.tensor(losses))), losses
    return losses


def latent_values(guide, *args, **kwargs):
    trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return {
        n: s["value"]
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    }


# ====================================================================== 1. views of arguments

VIEWS = {
    "reshape": lambda x: x.reshape(-1, 6),
    "view": lambda x: x.view(x.shape[0], 6),
    "flatten": lambda x: x.flatten(1),
    "index": lambda x: x[:, 0],
    "slice": lambda x: x[:, :, 1:],
    "select": lambda x: x.select(1, 1),
    "narrow": lambda x: x.narrow(2, 0, 2),
    "unbind": lambda x: x.unbind(1)[0],
    "transpose": lambda x: x.transpose(1, 2),
    "permute": lambda x: x.permute(0, 2, 1),
    "unsqueeze-squeeze": lambda x: x.unsqueeze(1).squeeze(1),
    "dtype-cast": lambda x: x.double(),
    "device-move": lambda x: x.to("cpu", copy=True),
    "contiguous-transpose": lambda x: x.transpose(1, 2).contiguous(),
}


def view_model(op):
    def model(x):
        y = op(x)
        event = y.dim() - 1
        with pyro.plate("data", y.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            loc = z.reshape((-1,) + (1,) * event).to(y.dtype).expand(y.shape)
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(event), obs=y)

    return model


@pytest.mark.parametrize("op", VIEWS)
def test_observation_that_is_a_view_of_an_argument(op):
    """obs=view(x): no false 'computed from its own observed value'; x is the observation."""
    model = view_model(VIEWS[op])
    x = torch.randn(8, 2, 3)
    graph = pgmdl.compile(model, x)
    assert graph.parents("obs") == ("z",)
    assert dict(graph.inputs) == {}


@pytest.mark.parametrize("op", ["reshape", "index", "transpose", "dtype-cast"])
def test_guide_binds_a_view_observation_and_follows_the_batch_size(op):
    """No bindings=: the guide replays the view on each call's argument."""
    model = view_model(VIEWS[op])
    guide = pgmdl.NaMIGuide(model)
    svi_steps(model, guide, [((torch.randn(8, 2, 3),), {}), ((torch.randn(5, 2, 3),), {})])
    assert guide.parents("z") == ("obs",)
    assert latent_values(guide, torch.randn(3, 2, 3))["z"].shape == (3,)


def data_matrix_model(data):
    with pyro.plate("rows", data.shape[0]):
        theta = pyro.sample("theta", dist.Normal(0.0, 5.0))
        pyro.sample("obs", dist.Normal(theta, data[:, 1]), obs=data[:, 0])


def test_obs_is_one_column_scale_is_another():
    """Eight-schools style: obs=data[:, 0], scale=data[:, 1]; the scale column is an input."""
    data = torch.stack([torch.randn(8), torch.rand(8) + 0.5], -1)
    graph = pgmdl.compile(data_matrix_model, data)
    assert graph.parents("obs") == ("theta",)
    assert inputs_by_argument(graph.inputs) == {"data": {"obs"}}
    guide = pgmdl.NaMIGuide(data_matrix_model)
    svi_steps(data_matrix_model, guide, [((data,), {}), ((data[:5],), {})])
    assert latent_values(guide, data[:3])["theta"].shape == (3,)


def test_per_step_columns_of_one_argument():
    """DMM style: obs_t = x[:, t - 1, :]; each step reads its own slice only."""

    def model(x):
        with pyro.plate("seq", x.shape[0]):
            z_prev = x.new_zeros(x.shape[0], 2)
            for t in pyro.markov(range(1, x.shape[1] + 1)):
                z = pyro.sample(f"z_{t}", dist.Normal(z_prev, 1.0).to_event(1))
                pyro.sample(f"obs_{t}", dist.Normal(z, 1.0).to_event(1), obs=x[:, t - 1, :])
                z_prev = z

    x = torch.randn(4, 3, 2)
    graph = pgmdl.compile(model, x)
    assert {t: graph.parents(f"obs_{t}") for t in (1, 2, 3)} == {
        1: ("z_1",),
        2: ("z_2",),
        3: ("z_3",),
    }
    assert graph.parents("z_2") == ("z_1",)
    svi_steps(model, pgmdl.NaMIGuide(model), [((x,), {}), ((x[:2],), {})])


def test_input_quadrants_and_target_quadrant_of_one_image():
    """CVAE style: the prior reads the top half, the observation is a bottom quadrant."""

    def model(images):
        inputs = images[:, :2, :].reshape(-1, 8)
        target = images[:, 2:, :2]
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(inputs.sum(-1, keepdim=True), 1.0).to_event(1))
            pyro.sample(
                "y", dist.Normal(z.expand(-1, 4), 1.0).to_event(1), obs=target.reshape(-1, 4)
            )

    images = torch.randn(6, 4, 4)
    graph = pgmdl.compile(model, images)
    assert graph.parents("z") == ()
    assert graph.parents("y") == ("z",)
    assert inputs_by_argument(graph.inputs) == {"images": {"z"}}
    svi_steps(model, pgmdl.NaMIGuide(model), [((images,), {}), ((images[:3],), {})])


def test_mask_from_earlier_columns():
    """Capture-recapture style: occasion t is masked by columns 0..t-1, the
    observed values of y_0..y_{t-1}, which therefore are its parents."""

    def model(history):
        rho = pyro.sample("rho", dist.Beta(2.0, 2.0))
        with pyro.plate("animals", history.shape[0]):
            for t in range(history.shape[1]):
                seen = history[:, :t].sum(-1) > 0
                with poutine.mask(mask=seen):
                    pyro.sample(f"y_{t}", dist.Bernoulli(rho), obs=history[:, t])

    history = (torch.rand(6, 3) < 0.5).float()
    graph = pgmdl.compile(model, history)
    assert set(graph.parents("y_0")) == {"rho"}
    assert set(graph.parents("y_1")) == {"rho", "y_0"}
    assert set(graph.parents("y_2")) == {"rho", "y_0", "y_1"}


@pytest.mark.parametrize(
    "how",
    ["whole-mean", "same-column", "reshape-then-sum"],
)
def test_genuine_self_dependency_is_a_model_error_naming_the_site(how):
    def model(x):
        if how == "whole-mean":
            pyro.sample("x_obs", dist.Normal(x.mean(), 1.0).expand(x.shape).to_event(1), obs=x)
        elif how == "same-column":
            loc = x[:, 0].mean()
            pyro.sample(
                "x_obs", dist.Normal(loc, 1.0).expand([x.shape[0]]).to_event(1), obs=x[:, 0]
            )
        else:
            flat = x.reshape(-1)
            pyro.sample("x_obs", dist.Normal(x.sum(), 1.0).expand(flat.shape).to_event(1), obs=flat)

    with pytest.raises(ModelError, match="x_obs"):
        pgmdl.compile(model, torch.randn(5, 2))


def test_explicit_binding_still_works():
    guide = pgmdl.NaMIGuide(
        data_matrix_model, bindings={"obs": lambda arguments: arguments["data"][:, 0]}
    )
    data = torch.stack([torch.randn(8), torch.rand(8) + 0.5], -1)
    svi_steps(data_matrix_model, guide, [((data,), {})])


def test_binding_that_disagrees_with_the_traced_value_is_reported_naming_the_site():
    """Issue 16: one clear pgmdl error or warning naming the site."""
    guide = pgmdl.NaMIGuide(
        data_matrix_model, bindings={"obs": lambda arguments: arguments["data"][:, 1]}
    )
    data = torch.stack([torch.randn(8), torch.rand(8) + 0.5], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pgmdl.PgmdlWarning)
        with pytest.raises((GuideError, pgmdl.GuideWarning), match="obs"):
            guide(data)


# ====================================================================== 2. lost data flow


def _write(kind, a):
    loc = torch.zeros(3)
    if kind == "setitem":
        loc[0] = a
    elif kind == "setitem-slice":
        loc = torch.zeros(3, 1)
        loc[:, 0] = a
        loc = loc.squeeze(-1)
    elif kind == "copy_":
        loc.copy_(a.expand(3))
    elif kind == "index_put_":
        loc.index_put_((torch.tensor([0]),), a.reshape(1))
    elif kind == "masked_fill_":
        loc.masked_fill_(torch.tensor([True, False, False]), a)
    elif kind == "scatter_":
        loc.scatter_(0, torch.tensor([1]), a.reshape(1))
    elif kind == "add_":
        loc += a
    elif kind == "write-through-view":
        buffer = torch.zeros(2, 3)
        row = buffer[1]
        row[2] = a
        loc = buffer[1]
    return loc


INPLACE = [
    "setitem",
    "setitem-slice",
    "copy_",
    "index_put_",
    "masked_fill_",
    "scatter_",
    "add_",
    "write-through-view",
]


@pytest.mark.parametrize("kind", INPLACE)
def test_inplace_write_of_a_sampled_value_gives_an_edge(kind):
    def model(x):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        loc = _write(kind, a)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    graph = pgmdl.compile(model, torch.zeros(3))
    assert graph.parents("x") == ("a",)
    inverse = pgmdl.invert(graph)
    assert inverse.parents("a") == ("x",)
    assert not pgmdl.check_faithful(graph, {"a": []}).ok  # a guide ignoring x is not faithful


class Shifted(dist.TorchDistribution):
    """A user's distribution class pgmdl does not know: Normal(center, 1) stored by hand."""

    arg_constraints = {}
    support = constraints.real

    def __init__(self, center):
        self.center = center
        super().__init__(batch_shape=center.shape, validate_args=False)

    def sample(self, sample_shape=()):
        return self.center + torch.randn(torch.Size(sample_shape) + self.center.shape)

    def log_prob(self, value):
        return dist.Normal(self.center, 1.0).log_prob(value)


def _wrapped(kind, a):
    if kind == "Distribution.mask":
        return dist.Normal(torch.zeros(3), 1.0).mask(a > 0).to_event(1)
    if kind == "MaskedDistribution":
        return MaskedDistribution(dist.Normal(torch.zeros(3), 1.0), a > 0).to_event(1)
    if kind == "ExpandedDistribution":
        return ExpandedDistribution(dist.Normal(a, 1.0), torch.Size([3])).to_event(1)
    if kind == "Independent":
        return torch.distributions.Independent(dist.Normal(a.expand(3), 1.0), 1)
    if kind == "TransformedDistribution-affine":
        base = dist.Normal(torch.zeros(3), 1.0)
        return dist.TransformedDistribution(base, [AffineTransform(loc=a, scale=1.0)]).to_event(1)
    if kind == "TransformedDistribution-affine-scale":
        base = dist.Normal(torch.zeros(3), 1.0)
        scale = a.exp()
        return dist.TransformedDistribution(base, [ExpTransform(), AffineTransform(0.0, scale)])
    if kind == "unknown-class":
        return Shifted(a.expand(3)).to_event(1)
    raise AssertionError(kind)


WRAPPED = [
    "Distribution.mask",
    "MaskedDistribution",
    "ExpandedDistribution",
    "Independent",
    "TransformedDistribution-affine",
    "TransformedDistribution-affine-scale",
    "unknown-class",
]


@pytest.mark.parametrize("kind", WRAPPED)
def test_tensor_held_by_a_distribution_gives_an_edge(kind):
    def model(x):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        d = _wrapped(kind, a)
        if kind == "TransformedDistribution-affine-scale":
            d = d.to_event(1)
        pyro.sample("x", d, obs=x)

    graph = pgmdl.compile(model, torch.ones(3))
    assert graph.parents("x") == ("a",)


def test_distribution_mask_from_a_site_air_style():
    def model(img):
        with pyro.plate("data", img.shape[0]):
            z_pres = pyro.sample(
                "z_pres", dist.Bernoulli(0.5).expand([img.shape[0], 1]).to_event(1)
            )
            z_where = pyro.sample(
                "z_where",
                dist.Normal(torch.zeros(img.shape[0], 2), 1.0).mask(z_pres.bool()).to_event(1),
            )
            pyro.sample(
                "obs", dist.Normal(z_where.sum(-1, keepdim=True) * z_pres, 1.0).to_event(1), obs=img
            )

    graph = pgmdl.compile(model, torch.randn(4, 1))
    assert graph.parents("z_where") == ("z_pres",)
    assert set(graph.parents("obs")) == {"z_pres", "z_where"}


# ====================================================================== 3. arguments of any shape

Batch = namedtuple("Batch", ["x", "c"])


@dataclass
class Holder:
    x: torch.Tensor
    scale: float = 1.0


def _plated(x, loc_shift, scale=1.0):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(z + loc_shift, scale), obs=x)


def test_namedtuple_argument_arrives_as_the_namedtuple():
    def model(batch):
        assert isinstance(batch, Batch), type(batch)
        _plated(batch.x, batch.c)

    def guide(batch):
        with pyro.plate("data", batch.x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * (batch.x - batch.c), 0.7))

    batch = Batch(torch.randn(6), torch.randn(6))
    graph = pgmdl.compile(model, batch)
    assert graph.parents("obs") == ("z",)
    assert {argument_root(p) for p in graph.inputs} == {"batch"}
    assert pgmdl.audit_guide(model, guide, batch).ok
    guide_nami = pgmdl.NaMIGuide(model)
    svi_steps(model, guide_nami, [((batch,), {}), ((Batch(batch.x[:3], batch.c[:3]),), {})])


def test_packed_sequence_argument_arrives_as_a_packed_sequence():
    seqs = torch.nn.utils.rnn.pack_sequence([torch.randn(3, 2), torch.randn(2, 2)])

    def model(x, packed):
        assert isinstance(packed, torch.nn.utils.rnn.PackedSequence), type(packed)
        _plated(x, 0.0)

    def guide(x, packed):
        assert isinstance(packed, torch.nn.utils.rnn.PackedSequence), type(packed)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, 0.7))

    x = torch.randn(4)
    pgmdl.compile(model, x, seqs)
    pgmdl.audit_guide(model, guide, x, seqs)
    svi_steps(model, pgmdl.NaMIGuide(model), [((x, seqs), {})])


def test_dataclass_dict_nested_list_and_namespace_pass_through():
    config = argparse.Namespace(scale=0.5, name="run")

    def model(holder, extras, nested, args):
        assert isinstance(holder, Holder), type(holder)
        assert isinstance(extras, dict) and isinstance(nested, list), (type(extras), type(nested))
        assert isinstance(nested[0], list) and isinstance(args, argparse.Namespace)
        shift = extras["shift"] + nested[0][1]
        _plated(holder.x, shift, args.scale * holder.scale)

    call = (Holder(torch.randn(5)), {"shift": torch.randn(5)}, [[0, torch.randn(5)]], config)
    graph = pgmdl.compile(model, *call)
    assert graph.parents("obs") == ("z",)
    assert {argument_root(p) for p in graph.inputs} == {"extras", "nested"}
    svi_steps(model, pgmdl.NaMIGuide(model), [(call, {})])


def test_namespace_config_is_not_a_site_or_input():
    def model(data, args):
        assert isinstance(args, argparse.Namespace)
        with pyro.plate("data", args.n):
            z = pyro.sample("z", dist.Normal(0.0, args.prior_scale))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=data)

    args = argparse.Namespace(n=4, prior_scale=2.0)
    graph = pgmdl.compile(model, torch.randn(4), args)
    assert dict(graph.inputs) == {}
    svi_steps(model, pgmdl.NaMIGuide(model), [((torch.randn(4), args), {})])


# ====================================================================== 4. plates and calls


def test_plate_without_a_size_with_nami_guide():
    def model(x):
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z.sum(-1), 1.0), obs=x)

    guide = pgmdl.NaMIGuide(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svi_steps(model, guide, [((torch.randn(6),), {}), ((torch.randn(4),), {})])
    assert latent_values(guide, torch.randn(3))["z"].shape == (3, 2)
    # the guide's plates are the model's: Pyro has nothing to warn about
    assert not [str(w.message) for w in caught if "plate" in str(w.message)]


def label_model(x, y=None):
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Bernoulli(0.5), obs=y)
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z + 2.0 * y, 1.0), obs=x)


@pytest.mark.parametrize("first", ["unlabelled", "labelled"])
def test_site_observed_in_some_calls_latent_in_others(first):
    x, y = torch.randn(8), (torch.rand(8) < 0.5).float()
    labelled, unlabelled = ((x, y), {}), ((x,), {})
    calls = [labelled, unlabelled] if first == "labelled" else [unlabelled, labelled]
    guide = pgmdl.NaMIGuide(label_model)
    svi_steps(label_model, guide, calls, steps=4)
    sampled = latent_values(guide, x, y)
    assert "y" not in sampled or torch.equal(sampled["y"], y), "the guide ignored the given y"
    assert "y" in latent_values(guide, x)


def test_amortized_globals_on_nested_plates():
    def model(data):  # data: (words, docs)
        with pyro.plate("topics", 3):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("docs", data.shape[1], dim=-1):
            w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
            with pyro.plate("words", data.shape[0], dim=-2):
                pyro.sample("obs", dist.Normal((w * mu).sum(-1), 1.0), obs=data)

    data = torch.randn(5, 4)
    guide = pgmdl.NaMIGuide(model, global_latents="amortized")
    svi_steps(model, guide, [((data,), {})])
