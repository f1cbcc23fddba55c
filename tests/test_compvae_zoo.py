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
