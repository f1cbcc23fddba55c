"""pgmdl.infer: the SVI training loop, its optimizer split, diagnostics and checkpoints."""

from __future__ import annotations

import doctest
import importlib
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from torch import nn

from pgmdl.errors import ArgumentError, ArgumentTypeError, PgmdlError, TrainingError
from pgmdl.infer import (
    FastSVIWarning,
    FitResult,
    PartitionedOptim,
    fit,
    nonfinite_report,
    site_kl_bits,
)

SIGMA = 0.5  # observation noise of the conjugate model


# ---------------------------------------------------------------------------
# A conjugate model with a hand-written amortized guide:
#   z_i ~ N(0, 1),  x_i ~ N(z_i, SIGMA);  q(z_i | x_i) = N(a x_i + b, s)
# The exact posterior is N(x_i / (1 + SIGMA^2), SIGMA^2 / (1 + SIGMA^2)) and
# the evidence N(x_i; 0, 1 + SIGMA^2).


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.linear(x.unsqueeze(-1)).squeeze(-1), self.log_scale.exp()


def conjugate_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def amortized_guide(encoder, name="encoder"):
    def guide(x):
        pyro.module(name, encoder)
        loc, scale = encoder(x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))

    return guide


def conjugate_data(n, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator) * math.sqrt(1 + SIGMA**2)
    return x.to(device)


def model_with_scale(x):
    """Global loc, a learnable observation scale (a model parameter)."""
    scale = pyro.param(
        "obs_scale", torch.ones((), device=x.device), constraint=dist.constraints.positive
    )
    loc = pyro.sample("loc", dist.Normal(torch.zeros((), device=x.device), 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale), obs=x)


def store_values():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


# ---------------------------------------------------------------------------
# Analytic answers


def test_amortized_guide_reaches_the_exact_posterior_and_evidence(device):
    torch.manual_seed(0)
    encoder = Encoder().to(device)
    guide = amortized_guide(encoder)
    x = conjugate_data(2048, device)
    result = fit(
        conjugate_model,
        guide,
        x,
        epochs=20,
        batch_size=256,
        optim=pyro.optim.Adam({"lr": 0.05}),
        seed=0,
        progress=False,
        kl_every=0,
    )
    assert result.steps == 20 * 8 and result.epochs == 20
    a, b = encoder.linear.weight.item(), encoder.linear.bias.item()
    s = encoder.log_scale.exp().item()
    assert a == pytest.approx(1 / (1 + SIGMA**2), abs=0.03)
    assert b == pytest.approx(0.0, abs=0.03)
    assert s == pytest.approx(math.sqrt(SIGMA**2 / (1 + SIGMA**2)), abs=0.015)
    # At the exact posterior the ELBO is the log evidence (and never above it).
    log_evidence = dist.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x).mean().item()
    elbo = Trace_ELBO(num_particles=16, vectorize_particles=False)
    with torch.no_grad():
        elbo_per_point = -elbo.loss(conjugate_model, guide, x) / len(x)
    assert log_evidence - 0.005 < elbo_per_point < log_evidence + 0.002
    assert result.epoch_losses[-1] == pytest.approx(-log_evidence, abs=0.01)


def test_site_kl_bits_matches_the_closed_form_gaussian_kl(device):
    encoder = Encoder().to(device)
    with torch.no_grad():
        encoder.linear.weight.fill_(0.7)
        encoder.linear.bias.fill_(0.3)
        encoder.log_scale.fill_(math.log(0.4))
    x = conjugate_data(4000, device, seed=0)
    pyro.set_rng_seed(1)  # not the data's seed: eps would equal x up to a factor
    kl = site_kl_bits(conjugate_model, amortized_guide(encoder), model_args=(x,), num_particles=16)
    m, s = 0.7 * x + 0.3, 0.4
    exact_nats = 0.5 * (s**2 + m**2 - 1 - math.log(s**2))  # KL(N(m, s^2) || N(0, 1))
    assert list(kl) == ["z"]
    assert kl["z"] == pytest.approx(exact_nats.mean().item() / math.log(2), rel=0.01)
    # num_data divides: the sum over the batch is num_data times the mean
    total = site_kl_bits(
        conjugate_model, amortized_guide(encoder), model_args=(x,), num_particles=16, num_data=1
    )
    assert total["z"] == pytest.approx(kl["z"] * len(x), rel=0.01)


def test_site_kl_bits_applies_the_plate_scale(device):
    def make(size):
        def model(x):
            with pyro.plate("data", size, subsample=torch.arange(len(x), device=x.device)):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, SIGMA), obs=x)

        def guide(x):
            with pyro.plate("data", size, subsample=torch.arange(len(x), device=x.device)):
                pyro.sample("z", dist.Normal(torch.ones_like(x), 1.0))

        return model, guide

    x = conjugate_data(20, device)
    pyro.set_rng_seed(0)
    unscaled = site_kl_bits(*make(20), model_args=(x,), num_particles=4)
    pyro.set_rng_seed(0)
    scaled = site_kl_bits(
        *make(100), model_args=(x,), num_particles=4
    )  # each point counts 100 / 20 times
    assert scaled["z"] == pytest.approx(unscaled["z"] * 100 / 20, rel=1e-5)


def test_site_kl_bits_with_autoguides(device):
    x = conjugate_data(50, device)
    normal = AutoNormal(conjugate_model)
    kl = site_kl_bits(conjugate_model, normal, model_args=(x,))
    assert list(kl) == ["z"]  # AutoNormal's auxiliary z_unconstrained is counted with z
    assert kl["z"] > 0
    delta = AutoDelta(conjugate_model)
    (name, value), *_ = site_kl_bits(conjugate_model, delta, model_args=(x,)).items()
    assert name == "z" and math.isfinite(value)  # -log p(z) in bits: no entropy term


def test_diagnostics_old_spelling_warns_and_agrees(device):
    x = conjugate_data(20, device)
    guide = AutoDelta(conjugate_model)
    pyro.set_rng_seed(0)
    new = site_kl_bits(conjugate_model, guide, model_args=(x,), num_particles=2)
    pyro.set_rng_seed(0)
    with pytest.warns(FutureWarning, match=r"site_kl_bits\(model, guide, model_args=args"):
        old = site_kl_bits(conjugate_model, guide, x, num_particles=2)
    assert old == new
    with pytest.warns(FutureWarning, match="nonfinite_report"):
        assert nonfinite_report(conjugate_model, guide, x) == []


# ---------------------------------------------------------------------------
# Data, batches, options


def recording_guide(seen):
    def guide(*args, **kwargs):
        seen.append((args, kwargs))

    return guide


def test_tensor_data_covers_every_point_once_per_epoch_with_a_partial_last_batch(device):
    seen = []
    x = torch.arange(10.0, device=device)

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    result = fit(
        model, recording_guide(seen), x, epochs=2, batch_size=4, progress=False, kl_every=0
    )
    assert [len(args[0]) for args, _ in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in range(2):
        values = torch.cat([args[0] for args, _ in seen[3 * epoch : 3 * epoch + 3]])
        assert values.device == x.device
        assert sorted(values.tolist()) == x.tolist()
    # per data point: loss / batch length; per epoch: total loss / N
    expected = [-dist.Normal(0.0, 1.0).log_prob(args[0]).mean().item() for args, _ in seen]
    assert result.losses == pytest.approx(expected)
    full = -dist.Normal(0.0, 1.0).log_prob(x).mean().item()
    assert result.epoch_losses == pytest.approx([full, full])
    assert result.steps == 6 and result.epochs == 2 and result.device == x.device
    assert result.kl_bits == [] and result.kl_epochs == []


def test_shuffle_false_keeps_the_data_order(device):
    seen = []
    x = torch.arange(7.0, device=device)
    fit(
        lambda x: None,
        recording_guide(seen),
        x,
        epochs=1,
        batch_size=3,
        shuffle=False,
        progress=False,
        kl_every=0,
    )
    assert [args[0].tolist() for args, _ in seen] == [[0, 1, 2], [3, 4, 5], [6]]


def test_tuple_dict_data_and_model_kwargs(device):
    x = torch.randn(12, device=device)
    y = torch.randn(12, 3, device=device)
    calls = []

    def model(x, y, scale=None):
        calls.append((x.shape, y.shape, scale))
        loc = pyro.sample("loc", dist.Normal(torch.zeros((), device=x.device), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, scale), obs=x)

    guide = AutoNormal(model)
    fit(model, guide, (x, y), epochs=1, batch_size=5, model_kwargs={"scale": 2.0}, progress=False)
    assert {c[:2] for c in calls} >= {(torch.Size([5]), torch.Size([5, 3])), ((2,), (2, 3))}
    assert {c[2] for c in calls} == {2.0}

    calls.clear()
    pyro.clear_param_store()
    guide = AutoNormal(model)
    result = fit(
        model,
        guide,
        {"x": x, "y": y},
        epochs=1,
        batch_size=5,
        model_kwargs={"scale": 3.0},
        progress=False,
    )
    assert (torch.Size([2]), torch.Size([2, 3]), 3.0) in calls
    assert list(result.kl_bits[0]) == ["loc"]


def test_model_args_follow_the_data_as_in_log_likelihood(device):
    x = torch.randn(12, device=device)
    calls = []

    def model(x, scale):
        calls.append((x.shape, scale))
        loc = pyro.sample("loc", dist.Normal(torch.zeros((), device=x.device), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, scale), obs=x)

    doubled = []

    def transform(batch):
        doubled.append(batch.shape)
        return 2 * batch

    fit(
        model,
        AutoNormal(model),
        x,
        epochs=1,
        batch_size=5,
        model_args=(2.0,),
        progress=False,
        transform=transform,
    )
    assert (torch.Size([5]), 2.0) in calls and {c[1] for c in calls} == {2.0}
    assert torch.Size([2]) in doubled
    with pytest.raises(ArgumentTypeError, match="model_args must be a tuple"):
        fit(model, AutoNormal(model), x, model_args=[2.0], progress=False)


def test_seed_makes_runs_identical(device):
    x = conjugate_data(40, device)

    def run():
        pyro.clear_param_store()
        return fit(
            model_with_scale,
            AutoNormal(model_with_scale),
            x,
            epochs=2,
            batch_size=16,
            seed=3,
            progress=False,
        )

    first, second = run(), run()
    assert first.losses == second.losses
    assert first.kl_bits == second.kl_bits


def test_progress_bar_shows_the_loss_and_can_be_turned_off(device, capsys):
    x = conjugate_data(20, device)
    fit(model_with_scale, AutoNormal(model_with_scale), x, epochs=1, batch_size=10)
    assert "loss=" in capsys.readouterr().err
    pyro.clear_param_store()
    fit(model_with_scale, AutoNormal(model_with_scale), x, epochs=1, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_device_argument_moves_data_and_the_guide_module(device):
    encoder = Encoder()
    x = conjugate_data(16, "cpu")
    result = fit(
        conjugate_model,
        AmortizedGuide(encoder),
        x,
        epochs=1,
        batch_size=8,
        device=device,
        progress=False,
    )
    assert result.device == device
    assert encoder.linear.weight.device.type == device.type


class AmortizedGuide(nn.Module):
    """The amortized guide as an nn.Module (so that ``device=`` moves it)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        pyro.module("encoder", self.encoder)
        loc, scale = self.encoder(x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))


def test_epochs_zero_callback_and_kl_every(device):
    x = conjugate_data(30, device)
    empty = fit(model_with_scale, AutoNormal(model_with_scale), x, epochs=0, progress=False)
    assert empty.steps == 0 and empty.losses == [] and "0 epochs" in repr(empty)

    seen = []

    def stop_after_three(epoch, result):
        seen.append((epoch, result.epochs))
        return epoch == 2

    result = fit(
        model_with_scale,
        AutoNormal(model_with_scale),
        x,
        epochs=10,
        batch_size=10,
        kl_every=2,
        callback=stop_after_three,
        progress=False,
    )
    assert seen == [(0, 1), (1, 2), (2, 3)]
    assert result.stopped_early and result.epochs == 3 and result.steps == 9
    assert result.kl_epochs == [1] and list(result.kl_bits[0]) == ["loc"]
    table = result.summary()
    assert "loss/point" in table and "KL[loc] bits" in table and "stopped early" in table
    assert repr(result) == table
    assert isinstance(result, FitResult)


def test_local_autonormal_with_subsampled_plate(device):
    """A non-amortized guide over local latents: pass indices as data."""
    n = 30
    x = conjugate_data(n, device)

    def model(x, idx):
        with pyro.plate("data", n, subsample=idx):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, SIGMA), obs=x)

    guide = AutoNormal(model, create_plates=lambda x, idx: pyro.plate("data", n, subsample=idx))
    data = {"x": x, "idx": torch.arange(n, device=device)}
    result = fit(model, guide, data, epochs=2, batch_size=8, progress=False)
    assert result.steps == 8
    assert pyro.param("AutoNormal.locs.z").shape == (n,)


# ---------------------------------------------------------------------------
# Other losses


def mixture_model(x):
    locs = pyro.param("locs", torch.tensor([-2.0, 2.0], device=x.device))
    scale = pyro.sample("scale", dist.LogNormal(torch.zeros((), device=x.device), 1.0))
    with pyro.plate("data", len(x)):
        c = pyro.sample(
            "c",
            dist.Categorical(torch.ones(2, device=x.device) / 2),
            infer={"enumerate": "parallel"},
        )
        pyro.sample("x", dist.Normal(locs[c], scale), obs=x)


def test_trace_enum_elbo_sums_out_enumerated_sites(device):
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(40, generator=generator) + 2 * torch.tensor([-1.0, 1.0]).repeat(20)).to(device)
    guide = AutoNormal(pyro.poutine.block(mixture_model, hide=["c"]))
    result = fit(
        mixture_model,
        guide,
        x,
        epochs=3,
        batch_size=16,
        loss=TraceEnum_ELBO(max_plate_nesting=1),
        progress=False,
    )
    assert result.steps == 9 and all(math.isfinite(v) for v in result.losses)
    assert [list(kl) for kl in result.kl_bits] == [["scale"]] * 3  # 'c' is enumerated


def test_trace_graph_elbo_and_num_particles(device):
    x = conjugate_data(20, device)
    result = fit(
        conjugate_model,
        amortized_guide(Encoder().to(device)),
        x,
        epochs=1,
        batch_size=10,
        loss=TraceGraph_ELBO(),
        progress=False,
    )
    assert result.steps == 2
    result = fit(
        conjugate_model,
        amortized_guide(Encoder().to(device)),
        x,
        epochs=1,
        batch_size=10,
        num_particles=3,
        progress=False,
    )
    assert result.steps == 2


# ---------------------------------------------------------------------------
# Two optimizers


def guide_and_model_params():
    names = list(pyro.get_param_store().keys())
    guide = [n for n in names if n.startswith(("encoder$$$", "AutoNormal."))]
    model = [n for n in names if n not in guide]
    return guide, model


@pytest.mark.parametrize("which", ["amortized", "autonormal"])
@pytest.mark.parametrize("frozen", ["guide", "model"])
def test_guide_optim_updates_only_guide_params(device, which, frozen):
    x = conjugate_data(32, device)

    def model(x):
        scale = pyro.param(
            "obs_scale", torch.ones((), device=x.device), constraint=dist.constraints.positive
        )
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, scale), obs=x)

    guide = amortized_guide(Encoder().to(device)) if which == "amortized" else AutoNormal(model)
    batch_size = 16 if which == "amortized" else 32  # AutoNormal's local z: whole data only
    fit(model, guide, x, epochs=0, progress=False)  # nothing happens, nothing created
    assert list(pyro.get_param_store().keys()) == []
    guide(x)  # create the parameters, to compare before and after
    model(x)
    before = store_values()
    lr = {"guide": (0.1, 0.0), "model": (0.0, 0.1)}[frozen]
    fit(
        model,
        guide,
        x,
        epochs=2,
        batch_size=batch_size,
        optim=pyro.optim.Adam({"lr": lr[0]}),
        guide_optim=pyro.optim.Adam({"lr": lr[1]}),
        progress=False,
    )
    after = store_values()
    guide_names, model_names = guide_and_model_params()
    assert model_names == ["obs_scale"] and guide_names
    for name in guide_names + model_names:
        moved = not torch.equal(before[name], after[name])
        should_move = (name in guide_names) != (frozen == "guide")
        assert moved == should_move, name


def test_partitioned_optim_is_a_pyro_optim_with_split_state(device, tmp_path):
    x = conjugate_data(16, device)
    encoder = Encoder().to(device)
    guide = amortized_guide(encoder)
    optim = PartitionedOptim.for_guide(
        pyro.optim.Adam({"lr": 0.01}), pyro.optim.Adam({"lr": 0.1}), guide, x
    )
    assert optim.is_guide_param("encoder$$$linear.weight")
    assert not optim.is_guide_param("obs_scale") and not optim.is_guide_param(None)
    svi = SVI(model_with_scale_and_z, guide, optim, Trace_ELBO())
    svi.step(x)
    state = optim.get_state()
    assert set(state["model"]) == {"obs_scale"}
    assert set(state["guide"]) == {
        "encoder$$$linear.weight",
        "encoder$$$linear.bias",
        "encoder$$$log_scale",
    }
    assert len(optim.optim_objs) == 4
    optim.save(tmp_path / "optim.pt")
    other = PartitionedOptim(
        pyro.optim.Adam({"lr": 0.01}), pyro.optim.Adam({"lr": 0.1}), state["guide"]
    )
    other.load(tmp_path / "optim.pt")
    assert set(other.model_optim._state_waiting_to_be_consumed) == {"obs_scale"}
    flat = {**state["model"], **state["guide"]}  # a plain PyroOptim's state splits by owner
    other.set_state(flat)
    assert "encoder$$$log_scale" in other.guide_optim._state_waiting_to_be_consumed
    assert "PartitionedOptim(model_optim=Adam" in repr(optim)
    with pytest.raises(ArgumentError, match="same object"):
        PartitionedOptim(optim.model_optim, optim.model_optim, ["a"])
    with pytest.raises(ArgumentTypeError, match="pyro.optim"):
        PartitionedOptim(torch.optim.Adam, optim.guide_optim, ["a"])


def model_with_scale_and_z(x):
    scale = pyro.param(
        "obs_scale", torch.ones((), device=x.device), constraint=dist.constraints.positive
    )
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, scale), obs=x)


# ---------------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize("setup", ["amortized", "two optims", "autonormal"])
def test_resume_continues_exactly_like_the_uninterrupted_run(device, tmp_path, setup):
    x = conjugate_data(48, device)

    def run(epochs, init_seed, **options):
        torch.manual_seed(init_seed)
        if setup == "autonormal":  # a PyroModule guide, created lazily
            model, guide = model_with_scale, AutoNormal(model_with_scale)
        else:  # pyro.module(encoder): resuming must update the encoder itself
            model, guide = model_with_scale_and_z, amortized_guide(Encoder().to(device))
        if setup == "two optims":
            options["guide_optim"] = pyro.optim.Adam({"lr": 0.05})
        result = fit(
            model,
            guide,
            x,
            epochs=epochs,
            batch_size=20,
            optim=pyro.optim.Adam({"lr": 0.02}),
            seed=7,
            progress=False,
            **options,
        )
        return result, store_values()

    straight, expected = run(4, init_seed=0)

    pyro.clear_param_store()
    path = tmp_path / "run" / "fit.pt"
    half, _ = run(2, init_seed=0, checkpoint=path)
    assert half.epochs == 2 and path.exists()
    pyro.clear_param_store()  # as in a new process, with freshly initialized parameters
    resumed, actual = run(4, init_seed=1, checkpoint=path, resume=True)

    assert resumed.epochs == 4 and resumed.steps == straight.steps == 12
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    assert resumed.kl_epochs == [0, 1, 2, 3]
    assert set(actual) == set(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)
    saved = torch.load(path, weights_only=False)
    assert saved["epoch"] == 4 and saved["step"] == 12


def test_resume_without_a_checkpoint_file_starts_afresh(device, tmp_path):
    x = conjugate_data(20, device)
    path = tmp_path / "new.pt"
    result = fit(
        model_with_scale,
        AutoNormal(model_with_scale),
        x,
        epochs=1,
        checkpoint=path,
        resume=True,
        progress=False,
    )
    assert result.epochs == 1 and path.exists()


def test_bad_checkpoints_are_named(device, tmp_path):
    x = conjugate_data(20, device)
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, not_ours)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    for path in (not_ours, garbage):
        with pytest.raises(TrainingError, match="not a pgmdl checkpoint|cannot read checkpoint"):
            fit(
                model_with_scale,
                AutoNormal(model_with_scale),
                x,
                checkpoint=path,
                resume=True,
                progress=False,
            )

    pyro.clear_param_store()
    path = tmp_path / "fit.pt"
    guide = AutoNormal(model_with_scale)
    fit(model_with_scale, guide, x, epochs=1, checkpoint=path, progress=False)
    pyro.clear_param_store()
    other_guide = amortized_guide(Encoder().to(device), name="other_encoder")
    with pytest.raises(TrainingError, match="lacks parameters of the guide.*other_encoder"):
        fit(model_with_scale_and_z, other_guide, x, checkpoint=path, resume=True, progress=False)


# ---------------------------------------------------------------------------
# Non-finite losses


def test_nan_in_the_data_names_the_observed_site(device):
    x = conjugate_data(16, device)
    x[5] = float("nan")
    with pytest.raises(TrainingError) as info:
        fit(model_with_scale, AutoNormal(model_with_scale), x, epochs=1, progress=False)
    message = str(info.value)
    assert "model site 'x'" in message
    assert "observed value has 1 non-finite entry" in message
    assert "step 1 (epoch 0" in message and "Lower the learning rate" in message
    assert isinstance(info.value, PgmdlError)


def test_nan_gradient_of_a_parameter_is_named_and_not_applied(device, tmp_path):
    x = conjugate_data(16, device)
    guide = AutoNormal(model_with_scale)
    guide(x)
    model_with_scale(x)
    before = store_values()
    raw = dict(pyro.get_param_store().named_parameters())["obs_scale"]
    raw.register_hook(lambda grad: grad * float("nan"))
    path = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingError) as info:
        fit(model_with_scale, guide, x, epochs=1, checkpoint=path, progress=False)
    message = str(info.value)
    assert "parameter 'obs_scale': gradient has non-finite entries" in message
    assert "no parameter was updated" in message and "resume=True" in message
    after = store_values()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_nonfinite_report(device):
    x = conjugate_data(8, device)
    guide = AutoNormal(model_with_scale)
    assert nonfinite_report(model_with_scale, guide, model_args=(x,)) == []
    with torch.no_grad():
        dict(pyro.get_param_store().named_parameters())["obs_scale"].fill_(float("nan"))
    lines = nonfinite_report(model_with_scale, guide, model_args=(x,))
    assert "parameter 'obs_scale': value has 1 non-finite entry" in lines
    assert any(line.startswith("model site 'x': log-prob sum is nan") for line in lines)
    assert not any("guide site" in line for line in lines)


# ---------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("data", "options", "error", "match"),
    [
        (torch.zeros(0), {}, ArgumentError, "empty"),
        ((), {}, ArgumentError, "empty tuple"),
        ({}, {}, ArgumentError, "empty dict"),
        ((torch.zeros(3), torch.zeros(4)), {}, ArgumentError, r"data\[0\] has 3, data\[1\] has 4"),
        ({"x": torch.zeros(3), "y": torch.zeros(5, 2)}, {}, ArgumentError, "'y'] has 5"),
        (torch.tensor(1.0), {}, ArgumentError, "0-dimensional"),
        ([[1.0, 2.0]], {}, ArgumentTypeError, r"data\[0\] must be a tensor"),
        ("text", {}, ArgumentTypeError, "data must be a tensor"),
        ({"x": [1.0]}, {}, ArgumentTypeError, r"data\['x'\] must be a tensor"),
        (torch.zeros(3), {"batch_size": 0}, ArgumentError, "batch_size must be an integer >= 1"),
        (torch.zeros(3), {"epochs": -1}, ArgumentError, "epochs must be an integer >= 0"),
        (torch.zeros(3), {"kl_every": -1}, ArgumentError, "kl_every"),
        (torch.zeros(3), {"seed": -2}, ArgumentError, "seed"),
        (torch.zeros(3), {"resume": True}, ArgumentError, "checkpoint=PATH"),
        (torch.zeros(3), {"optim": torch.optim.Adam}, ArgumentTypeError, "pyro.optim"),
        (torch.zeros(3), {"loss": Trace_ELBO(), "num_particles": 2}, ArgumentError, "num_parti"),
        ({"x": torch.zeros(3)}, {"model_kwargs": {"x": 1}}, ArgumentError, "once"),
    ],
)
def test_bad_input_is_explained(data, options, error, match):
    with pytest.raises(error, match=match):
        fit(lambda *a, **k: None, lambda *a, **k: None, data, progress=False, **options)


def test_fit_docstring_example_runs():
    module = importlib.import_module("pgmdl.infer.training")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------
# fit(fast=True): FastSVI instead of SVI, the same run to the bit


def _fit_conjugate(device, fast, **options):
    pyro.clear_param_store()
    torch.manual_seed(0)
    encoder = Encoder().to(device)
    x = conjugate_data(100, device)  # batches of 32, 32, 32 and 4: two shapes
    result = fit(
        conjugate_model,
        amortized_guide(encoder),
        x,
        epochs=3,
        batch_size=32,
        optim=pyro.optim.Adam({"lr": 0.05}),
        seed=0,
        progress=False,
        fast=fast,
        **options,
    )
    return result, store_values()


def test_fast_fit_is_the_same_run_as_fit(device):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastSVIWarning)  # no fallback to SVI
        fast, fast_params = _fit_conjugate(device, True)
    slow, slow_params = _fit_conjugate(device, False)
    assert fast.steps == slow.steps == 12
    assert fast.losses == slow.losses and fast.epoch_losses == slow.epoch_losses
    assert fast.kl_bits == slow.kl_bits
    assert fast_params.keys() == slow_params.keys()
    for name, value in slow_params.items():
        assert torch.equal(fast_params[name], value), name


def test_fast_fit_falls_back_to_svi_with_a_warning_for_another_loss(device):
    loss = TraceGraph_ELBO()
    with pytest.warns(FastSVIWarning, match="TraceGraph_ELBO"):
        fast, fast_params = _fit_conjugate(device, True, loss=loss)
    slow, slow_params = _fit_conjugate(device, False, loss=TraceGraph_ELBO())
    assert fast.losses == slow.losses
    for name, value in slow_params.items():
        assert torch.equal(fast_params[name], value), name


def _sqrt_model(x, w):
    root = pyro.param("root", torch.ones((), device=x.device))
    loc = pyro.sample("loc", dist.Normal(torch.zeros((), device=x.device), 10.0))
    with pyro.plate("data", len(x)):
        # d sqrt(root w) / d root = w / (2 sqrt(root w)) = 0 / 0 where w = 0
        pyro.sample("x", dist.Normal(loc + (root * w).sqrt(), 1.0), obs=x)


def _fit_until_nan(device, fast):
    pyro.clear_param_store()
    x = conjugate_data(16, device)
    w = torch.ones(16, device=device)
    w[12:] = 0.0  # the 4th minibatch: a replayed step of FastSVI's graph
    with pytest.raises(TrainingError) as info, warnings.catch_warnings():
        warnings.simplefilter("error", FastSVIWarning)  # FastSVI's graph takes the step
        fit(
            _sqrt_model,
            AutoNormal(_sqrt_model),
            (x, w),
            epochs=2,
            batch_size=4,
            shuffle=False,
            seed=0,
            progress=False,
            fast=fast,
        )
    return str(info.value), store_values()


def test_fast_fit_names_a_non_finite_gradient_and_updates_nothing(device):
    fast_message, fast_params = _fit_until_nan(device, True)
    slow_message, slow_params = _fit_until_nan(device, False)
    assert "parameter 'root': gradient has non-finite entries" in fast_message
    assert "step 4 (epoch 0" in fast_message and fast_message == slow_message
    assert fast_params.keys() == slow_params.keys()
    for name, value in slow_params.items():  # steps 1-3 applied, step 4 not
        assert torch.equal(fast_params[name], value), name


def test_fast_fit_does_not_combine_with_a_strategy(device):
    x = conjugate_data(8, device)
    with pytest.raises(ArgumentError, match="fast=True.*strategy='ddp'"):
        fit(conjugate_model, AutoNormal(conjugate_model), x, strategy="ddp", fast=True)
