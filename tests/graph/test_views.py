"""Argument views: which part of an argument a value reads, and its replay.

Checked against a reference: the elements a view reads are found by
applying the same indexing to ``arange(numel)``, and the replay on a new
tensor must equal the user's own expression on it.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgmdl
from pgmdl.errors import ModelError, StructureWarning
from pgmdl.graph.tracing import TaggedTensor
from pgmdl.graph.views import ArgumentRef


def _tagged(x: torch.Tensor, path: str = "x") -> TaggedTensor:
    return TaggedTensor(x, frozenset({ArgumentRef(path, tuple(x.shape))}))


def _ref(value: torch.Tensor) -> ArgumentRef:
    (ref,) = value._provenance
    return ref


VIEWS = {
    "column": lambda x: x[:, 0],
    "slice": lambda x: x[1:, ::2],
    "ellipsis": lambda x: x[..., -1],
    "select": lambda x: x.select(1, 2),
    "narrow": lambda x: x.narrow(1, 1, 2),
    "unbind": lambda x: x.unbind(1)[3],
    "split": lambda x: torch.split(x, 2, dim=1)[1],
    "chunk": lambda x: x.chunk(2, dim=1)[0],
    "reshape": lambda x: x.reshape(-1, 2),
    "view": lambda x: x.view(x.size(0), -1),
    "flatten": lambda x: x.flatten(),
    "transpose": lambda x: x.transpose(0, 1)[0],
    "permute": lambda x: x.permute(1, 0)[1:3],
    "T": lambda x: x.T[2],
    "squeeze": lambda x: x[:, :1].squeeze(-1),
    "unsqueeze": lambda x: x[:, 1].unsqueeze(-1),
    "cast": lambda x: x[:, 1].double(),
    "to": lambda x: x[:, 3].to(torch.float64),
    "index_select": lambda x: x.index_select(0, torch.tensor([0, 2])),
    "chain": lambda x: x.reshape(-1, 2, 2)[:, 1].float().flatten(),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_view_region_and_replay_match_the_expression(name):
    view = VIEWS[name]
    x = torch.arange(12.0).reshape(3, 4)
    result = view(_tagged(x))
    ref = _ref(result)
    assert ref.exact, f"{name} should stay an exact view"
    # region: exactly the elements the expression reads
    read = view(torch.arange(12).reshape(3, 4).double()).long().reshape(-1).unique()
    assert torch.equal(ref.region.nonzero().reshape(-1), read)
    # replay on new data of the same shape equals the expression on it
    other = torch.randn(3, 4)
    assert torch.equal(ref.replay(other), view(other))


def test_reshape_keeping_the_batch_follows_a_new_batch_size():
    x = _tagged(torch.zeros(5, 4, 4))
    ref = _ref(x.view(x.size(0), -1))  # the literal 5 is in the recorded view
    new = torch.randn(7, 4, 4)
    assert torch.equal(ref.replay(new), new.reshape(7, 16))


def test_arithmetic_makes_a_ref_inexact_but_keeps_its_region():
    x = _tagged(torch.ones(3, 4))
    ref = _ref(x[:, 1] * 2.0)
    assert not ref.exact
    assert ref.region.reshape(3, 4)[:, 1].all() and ref.region.sum() == 3
    # a view of a reduction is not a view of the argument: region stays whole
    whole = _ref(x.sum(0)[0])
    assert not whole.exact and whole.region.all()


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    start=st.integers(0, 4),
    stop=st.integers(0, 5),
    step=st.integers(1, 3),
    column=st.integers(0, 4),
)
def test_slices_against_reference(rows, cols, start, stop, step, column):
    column = column % cols
    x = torch.arange(float(rows * cols)).reshape(rows, cols)
    a = _ref(_tagged(x)[start:stop:step])
    b = _ref(_tagged(x)[:, column])
    expected_a = set(x[start:stop:step].reshape(-1).long().tolist())
    expected_b = set(x[:, column].long().tolist())
    assert set(a.region.nonzero().reshape(-1).tolist()) == expected_a
    assert a.overlaps(b) == bool(expected_a & expected_b)


def test_describe_reads_like_code():
    x = _tagged(torch.zeros(4, 3, 2), "data")
    assert _ref(x[:, 0]).describe() == "data[:, 0]"
    assert _ref(x.reshape(-1, 6)).describe() == "data.reshape(-1, 6)"
    assert _ref(x[:, 1] + 1).describe() == "a value computed from data[:, 1]"


# --------------------------------------------------------------------------- in the compiler


def test_observed_column_and_scale_column_of_one_matrix():
    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("schools", data.shape[0]):
            theta = pyro.sample("theta", dist.Normal(mu, 2.0))
            pyro.sample("y", dist.Normal(theta, data[:, 1]), obs=data[:, 0])

    graph = pgmdl.compile(model, torch.rand(8, 2) + 0.5)
    assert graph.parents("y") == ("theta",)
    assert graph["y"].inputs == ("data",)
    assert graph["y"].bound_argument == "data"
    assert graph["y"].bound_view.describe() == "data[:, 0]"


def test_genuine_self_dependency_names_both_reads():
    def model(data):
        pyro.sample(
            "y", dist.Normal(data[:, 0].mean(), 1.0).expand([4]).to_event(1), obs=data[:, 0]
        )

    with pytest.raises(ModelError, match=r"'y'.*a value computed from data\[:, 0\].*data\[:, 0\]"):
        pgmdl.compile(model, torch.zeros(4, 2))


def test_reads_of_earlier_columns_are_edges_from_the_sites_that_observed_them():
    def model(history):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("animals", history.shape[0]):
            for t in range(history.shape[1]):
                first = torch.ones(history.shape[0], dtype=torch.bool)
                seen_before = history[:, :t].sum(-1) > 0 if t else first
                with pyro.poutine.mask(mask=seen_before):
                    pyro.sample(f"y_{t}", dist.Bernoulli(p), obs=history[:, t])

    graph = pgmdl.compile(model, (torch.rand(5, 3) > 0.5).float())
    assert graph.parents("y_0") == ("p",)
    assert set(graph.parents("y_2")) == {"p", "y_0", "y_1"}
    assert not graph.inputs  # every column read is some site's observed value


@pytest.mark.parametrize(
    "write",
    [
        "setitem",
        "copy_",
        "index_put_",
        "masked_fill_",
        "scatter_",
        "iadd_view",
        "out",
    ],
)
def test_in_place_writes_keep_their_edge(write):
    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        loc = torch.zeros(3, 2)
        if write == "setitem":
            loc[:, 0] = a
        elif write == "copy_":
            loc[0].copy_(a.expand(2))
        elif write == "index_put_":
            loc.index_put_((torch.tensor([1]), torch.tensor([1])), a.reshape(1))
        elif write == "masked_fill_":
            loc.masked_fill_(torch.eye(3, 2).bool(), a)
        elif write == "scatter_":
            loc.scatter_(1, torch.zeros(3, 1, dtype=torch.long), a.expand(3, 1))
        elif write == "iadd_view":
            view = loc[:, 1]
            view += a
        else:
            torch.add(torch.zeros(3, 2), a, out=loc)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(2), obs=torch.zeros(3, 2))

    assert pgmdl.compile(model).parents("x") == ("a",)


def test_write_into_an_argument_warns_with_file_and_line():
    def model(x):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        x[:, 0] = a
        pyro.sample("y", dist.Normal(x, 1.0).to_event(2), obs=torch.zeros(2, 2))

    with pytest.warns(StructureWarning, match=r"argument 'x'.*test_views.py:\d+.*clone"):
        graph = pgmdl.compile(model, torch.zeros(2, 2))
    assert "a" in graph.parents("y")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda d, m: d.mask(m),
        lambda d, m: d.expand([2]).mask(m.expand(2)).to_event(1),
        lambda d, m: dist.MaskedDistribution(d, m),
    ],
)
def test_distribution_masks_are_parents(wrap):
    def model():
        present = pyro.sample("present", dist.Bernoulli(0.5))
        pyro.sample("where", wrap(dist.Normal(0.0, 1.0), present.bool()))

    assert pgmdl.compile(model).parents("where") == ("present",)


def test_parameterized_transforms_and_unknown_distributions_are_read():
    class Shifted(dist.TorchDistribution):  # a class pgmdl knows nothing about
        arg_constraints = {}
        support = dist.constraints.real

        def __init__(self, shift):
            self.shift = shift
            super().__init__()

        def sample(self, sample_shape=()):
            return self.shift.expand(sample_shape).clone()

        def log_prob(self, value):
            return torch.zeros_like(value)

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample(
            "b",
            dist.TransformedDistribution(
                dist.Normal(0.0, 1.0), [dist.transforms.AffineTransform(a, 2.0)]
            ),
        )
        pyro.sample("c", Shifted(b))

    graph = pgmdl.compile(model)
    assert graph.parents("b") == ("a",)
    assert graph.parents("c") == ("b",)


def test_containers_reach_the_model_as_themselves():
    import argparse
    import collections
    import dataclasses

    Batch = collections.namedtuple("Batch", "x lengths")

    @dataclasses.dataclass
    class Data:
        y: torch.Tensor

    def model(batch, data, config, extra):
        assert isinstance(batch, Batch) and isinstance(data, Data)
        assert config.hidden == 3 and extra["names"] == ["a"]
        z = pyro.sample("z", dist.Normal(torch.zeros(config.hidden), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=batch.x)
        pyro.sample("y", dist.Normal(z.sum(), 1.0), obs=data.y)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = pgmdl.compile(
            model,
            Batch(torch.zeros(3), torch.tensor([3])),
            Data(torch.tensor(1.0)),
            argparse.Namespace(hidden=3),
            {"names": ["a"]},
        )
    assert graph["x"].bound_argument == "batch[0]"
    assert graph["y"].bound_argument == "data.y"
