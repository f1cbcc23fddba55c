"""The CompVAE zoo model's measurements: latent bits per instance and the paired lesion."""

from __future__ import annotations

import pyro
import pytest
import torch

from models.compvae import latent_bits, latent_bits_per_instance, paired_lesion, train_compvae
from pgmdl.datasets import sines
from pgmdl.errors import ArgumentError


def test_paired_lesion_reads_the_median_difference_and_the_share_saved():
    without = torch.tensor([10.0, 12.0, 30.0, 11.0, 1e9])  # one week far in a prior's tail
    with_c = torch.tensor([8.0, 12.5, 20.0, 7.0, 9.0])
    lesion = paired_lesion(without, with_c)
    assert lesion["median"] == 4.0  # differences 2, -0.5, 10, 4, ~1e9
    assert lesion["share_saved"] == pytest.approx(0.8)
    assert lesion["low"] <= lesion["median"] <= lesion["high"]
    assert lesion["low"] >= -0.5  # a bootstrap median lies among the differences
    with pytest.raises(ArgumentError, match=r"two \(N,\) tensors"):
        paired_lesion(without, with_c[:4])


def test_latent_bits_per_instance_sums_the_sites_and_costs_nothing_for_an_empty_set():
    torch.set_num_threads(1)

    def draw(n, generator):
        return sines(n, k_min=0, k_max=3, generator=generator)

    trained = train_compvae(draw, steps=3, batch_size=8, with_context=False, w_dim=2, z_dim=2)
    test = sines(12, k_min=0, k_max=3, generator=torch.Generator().manual_seed(1))
    assert int(test.sizes.min()) == 0
    pyro.set_rng_seed(3)
    bits = latent_bits_per_instance(trained, test, with_context=False, particles=2)
    assert set(bits) == {"w", "z", "x", "total"}
    assert all(v.shape == (12,) for v in bits.values())
    torch.testing.assert_close(bits["total"], bits["w"] + bits["z"])
    assert (bits["w"][test.sizes == 0] == 0).all()  # no part: nothing to encode in w
    assert (bits["w"][test.sizes > 0] != 0).all()
    pyro.set_rng_seed(3)
    summary = latent_bits(trained, test, with_context=False, particles=2)
    assert summary["total_bits"] == pytest.approx(float(bits["total"].mean()))
    assert summary["median_total_bits"] == pytest.approx(float(bits["total"].median()))
    assert summary["reconstruction_nats"] == pytest.approx(float(bits["x"].mean()))


@pytest.mark.parametrize("with_c", [False, True])
def test_a_z_prior_that_does_not_read_the_parts_drops_the_edge(with_c: bool):
    import pgmdl
    from models.compvae import CompVAE, example_args

    (labels, mask), kwargs = example_args()
    if not with_c:
        kwargs["c"] = None
    net = CompVAE(label_dim=3, x_dim=8, context_dim=2 if with_c else 0, w_dim=2, z_dim=2)
    reads = pgmdl.compile_model(net.model, model_args=(labels, mask), model_kwargs=kwargs)
    assert "w" in reads.parents("z")
    net = CompVAE(
        label_dim=3, x_dim=8, context_dim=2 if with_c else 0, w_dim=2, z_dim=2, z_reads_parts=False
    )
    alone = pgmdl.compile_model(net.model, model_args=(labels, mask), model_kwargs=kwargs)
    assert "w" not in alone.parents("z")
    assert set(alone.parents("x")) == {"w", "z"}
    trace = pyro.poutine.trace(net.model).get_trace(labels, mask, **kwargs)
    prior = trace.nodes["z"]["fn"].base_dist
    if with_c:  # p(z | c): the same for any parts
        loc, scale = net.z_prior(kwargs["c"])
        torch.testing.assert_close(prior.loc, loc)
    else:  # N(0, I)
        assert (prior.loc == 0).all() and (prior.scale == 1).all()


def test_a_global_input_the_z_prior_cannot_read_is_an_error():
    from models.compvae import CompVAE, example_args

    (labels, mask), kwargs = example_args()
    net = CompVAE(label_dim=3, x_dim=8, context_dim=0, w_dim=2, z_dim=2, z_reads_parts=False)
    with pytest.raises(ArgumentError, match=r"site 'z'.*context_dim=c.shape\[-1\]"):
        net.model(labels, mask, **kwargs)  # kwargs holds a c: it would be ignored


def test_counting_parts_feeds_the_number_of_parts_next_to_their_sum():
    from models.compvae import CompVAE, example_args

    torch.manual_seed(0)
    (labels, mask), kwargs = example_args()
    net = CompVAE(label_dim=3, x_dim=8, context_dim=2, w_dim=2, z_dim=2, count_parts=True)
    trace = pyro.poutine.trace(net.model).get_trace(labels, mask, **kwargs)
    w, z = trace.nodes["w"]["value"], trace.nodes["z"]["value"]  # w: (K_max, N, w_dim)
    total = (w * mask.T[..., None]).sum(0)
    sizes = mask.sum(-1).to(total.dtype)  # 3, 1, 0, 2
    # p(z | c, (sum w, K)) and x's mean f(z, (sum w, K)), computed by hand
    psi = torch.cat([total, sizes[:, None]], -1)
    loc, _ = net.z_prior(torch.cat([psi, kwargs["c"]], -1))
    torch.testing.assert_close(trace.nodes["z"]["fn"].base_dist.loc, loc)
    mean = net.decoder(torch.cat([z, psi], -1))
    x_fn = trace.nodes["x"]["fn"]
    x_loc = x_fn.base_dist.loc if hasattr(x_fn, "base_dist") else x_fn.loc
    torch.testing.assert_close(x_loc, mean)
    # the same sum from one part or from two makes different wholes: K is read
    one = net.decode(total[:1], kwargs["c"][:1], count=1)
    three = net.decode(total[:1], kwargs["c"][:1], count=3)
    assert not torch.allclose(one, three)
    with pytest.raises(ArgumentError, match=r"count_parts=True.*count="):
        net.decode(total, kwargs["c"])
    # compose decodes the partial sums with their counts
    rows = net.compose(labels[0], kwargs["c"][0], seed=1)
    g = torch.Generator().manual_seed(1)
    p_loc, p_scale = net.part_prior(labels[0])
    drawn = p_loc + p_scale * torch.randn(p_loc.shape, generator=g)
    eps = torch.randn(2, generator=g)
    for j in range(3):
        expected = net.decode(drawn[: j + 1].sum(0), kwargs["c"][0], eps, count=j + 1)
        torch.testing.assert_close(rows[j], expected)


def test_counting_parts_keeps_the_whole_invariant_to_the_parts_order_and_trains():
    from models.compvae import CompVAE, example_args

    torch.manual_seed(0)
    (labels, mask), kwargs = example_args()
    net = CompVAE(label_dim=3, x_dim=8, context_dim=2, w_dim=2, z_dim=2, count_parts=True)
    order = torch.tensor([2, 0, 1])
    full = mask.all(-1)  # the instance with 3 parts: permute its parts
    pyro.set_rng_seed(4)
    trace = pyro.poutine.trace(net.model).get_trace(labels, mask, **kwargs)
    w = trace.nodes["w"]["value"]
    permuted = {"w": w[order], "z": trace.nodes["z"]["value"]}
    labels_p = labels.clone()
    labels_p[full] = labels[full][:, order]
    replay = pyro.poutine.condition(net.model, data=permuted)
    trace_p = pyro.poutine.trace(replay).get_trace(labels_p, mask, **kwargs)
    loc = trace.nodes["x"]["fn"].base_dist.loc
    loc_p = trace_p.nodes["x"]["fn"].base_dist.loc
    torch.testing.assert_close(loc_p[full], loc[full])

    def draw(n, generator):
        return sines(n, k_min=0, k_max=3, generator=generator)

    trained = train_compvae(
        draw, steps=3, batch_size=8, with_context=False, w_dim=2, z_dim=2, count_parts=True
    )
    assert all(torch.isfinite(torch.tensor(trained.losses)))
