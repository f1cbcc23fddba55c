"""Multiset plates: masking, layout, aggregation, what the compiler and renderer see,
and the errors for bad input."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgmdl
from pgmdl.errors import GuideError, ModelError
from pgmdl.multiset import MultisetPlate, masked_sum, multiset_plate


def part_model(labels, mask, x=None):
    """w_i ~ N(labels_i, 1) for the present parts; x ~ N(sum_i w_i, 0.5)."""
    with pyro.plate("data", labels.shape[0], dim=-1):
        with multiset_plate("parts", mask, dim=-2) as parts:
            w = pyro.sample("w", dist.Normal(parts.align(labels), 1.0))
        return pyro.sample("x", dist.Normal(parts.sum(w), 0.5), obs=x)


def sets(sizes, k_max, device=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.as_tensor(sizes)
    mask = sizes[:, None] > torch.arange(k_max)
    labels = torch.randn(len(sizes), k_max, generator=g) * mask
    return labels.to(device), mask.to(device)


def test_padded_parts_add_nothing_to_the_log_density(device):
    labels, mask = sets([3, 1, 0, 2], 3, device)
    x = torch.randn(4, device=device)
    trace = pyro.poutine.trace(part_model).get_trace(labels, mask, x)
    trace.compute_log_prob()
    w = trace.nodes["w"]["value"]  # (K, N) plate layout
    assert w.shape == (3, 4)
    expected = (dist.Normal(labels.T, 1.0).log_prob(w) * mask.T).sum()
    assert torch.allclose(trace.nodes["w"]["log_prob_sum"], expected)
    total = (w * mask.T).sum(0)
    assert torch.allclose(trace.nodes["x"]["fn"].loc, total)
    assert trace.nodes["x"]["fn"].loc[2] == 0  # the empty set sums to 0


def test_align_and_sum_agree_with_the_natural_layout(device):
    labels, mask = sets([2, 3], 3, device)
    parts3 = torch.randn(2, 3, 5, device=device)  # (N, K, D)
    with pyro.plate("data", 2, dim=-1), multiset_plate("parts", mask, dim=-2) as parts:
        aligned = parts.align(parts3, event_dim=1)
        assert aligned.shape == (3, 2, 5)
        assert torch.equal(aligned[:, 1], parts3[1])
        assert torch.allclose(parts.sum(aligned, event_dim=1), masked_sum(parts3, mask))
        assert torch.equal(parts.sizes, torch.tensor([2, 3], device=device))
    # a plate further left: size-1 dimensions fill the gap
    with pyro.plate("data", 2, dim=-1), multiset_plate("parts", mask, dim=-3) as parts:
        assert parts.align(parts3, event_dim=1).shape == (3, 1, 2, 5)
        assert parts.plate_mask.shape == (3, 1, 2)


def test_the_whole_is_invariant_to_the_order_of_the_parts(device):
    labels, mask = sets([4, 4, 4], 4, device)
    x = torch.randn(3, device=device)
    trace = pyro.poutine.trace(part_model).get_trace(labels, mask, x)
    w = trace.nodes["w"]["value"]
    perm = torch.tensor([2, 0, 3, 1], device=device)
    conditioned = pyro.poutine.condition(part_model, data={"w": w[perm]})
    permuted = pyro.poutine.trace(conditioned).get_trace(labels[:, perm], mask, x)
    assert torch.allclose(trace.log_prob_sum(), permuted.log_prob_sum())


def test_empty_sets_and_thousands_of_parts(device):
    for sizes, k_max in (([0, 0], 4), ([2500, 0, 1], 2500)):
        labels, mask = sets(sizes, k_max, device)
        trace = pyro.poutine.trace(part_model).get_trace(labels, mask)
        assert trace.nodes["w"]["value"].shape == (k_max, len(sizes))
        assert torch.isfinite(trace.log_prob_sum())


def test_compile_and_render_show_the_multiset_plate():
    labels, mask = sets([3, 1, 0], 3)
    graph = pgmdl.compile(part_model, labels, mask, torch.randn(3))
    plate = graph.plates["parts"]
    assert plate.multiset and plate.mask_argument == "mask" and plate.size == 3
    assert not graph.plates["data"].multiset
    assert plate.label() == "parts (multiset, K \u2264 3)"
    assert plate.to_dict()["multiset"] is True
    assert graph["w"].plates == ("data", "parts")
    assert graph["w"].inputs == ("labels@parts",)  # the aligned argument, not the mask
    source = pgmdl.render(part_model, labels, mask, model_kwargs={"x": torch.randn(3)}).source
    assert "multiset, K \u2264 3" in source and 'style="dashed,rounded"' in source


def test_a_mask_computed_inside_the_model_needs_a_binding():
    def model(sizes, labels, x=None):
        mask = sizes[:, None] > torch.arange(labels.shape[1])
        return part_model(labels, mask, x)

    sizes = torch.tensor([2, 1, 3])
    labels = torch.randn(3, 3)
    x = torch.randn(3)
    # the compiler sees which argument the mask comes from; the guide checks it is the mask
    assert pgmdl.compile(model, sizes, labels, x).plates["parts"].mask_argument == "sizes"
    with pytest.raises(GuideError, match=r"mask of masked plate 'parts' is computed inside"):
        pgmdl.NaMIGuide(model).setup(sizes, labels, x)

    def mask_of(arguments):
        return arguments["sizes"][:, None] > torch.arange(arguments["labels"].shape[1])

    guide = pgmdl.NaMIGuide(model, bindings={"parts": mask_of}).setup(sizes, labels, x)
    assert guide(sizes, labels, x)["w"].shape == (3, 3)


@pytest.mark.parametrize(
    "mask, dim, match",
    [
        (torch.ones(2, 3), -2, r"mask must be a boolean tensor"),
        (torch.tensor(True), -2, r"last dimension"),
        (torch.ones(2, 3, dtype=torch.bool), -1, r"use dim=-2 or less"),
        (torch.ones(2, 3, dtype=torch.bool), 1, r"dim=1 must be a negative integer"),
    ],
)
def test_bad_masks_are_named(mask, dim, match):
    with pytest.raises(ModelError, match=match):
        multiset_plate("parts", mask, dim=dim)


def test_more_parts_than_the_padding_is_an_error():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pyro.plate("data", 2, dim=-1), multiset_plate("parts", mask) as parts:
        assert isinstance(parts, MultisetPlate)
        with pytest.raises(ModelError, match=r"does not match the mask \(2, 3\)"):
            parts.align(torch.randn(2, 5, 4), event_dim=1)  # 5 parts, padding 3
        with pytest.raises(ModelError, match=r"should have size K_max=3"):
            parts.sum(torch.randn(5, 2))


def test_the_users_infer_dict_is_not_modified():
    infer = {"note": 1}
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pyro.plate("data", 2, dim=-1), multiset_plate("parts", mask):
        pyro.sample("w", dist.Normal(0.0, 1.0), infer=infer)
    assert infer == {"note": 1}


def test_a_non_finite_label_of_a_present_part_is_named():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    labels = torch.zeros(2, 3, 4)
    labels[0, 2] = float("nan")  # a padded slot: ignored
    with pyro.plate("data", 2, dim=-1), multiset_plate("parts", mask) as parts:
        parts.align(labels, event_dim=1)
        labels[1, 0, 3] = float("inf")
        with pytest.raises(ModelError, match=r"part 0 of instance 1 has a NaN or infinite"):
            parts.align(labels, event_dim=1)
