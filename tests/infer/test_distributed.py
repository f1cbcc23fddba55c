"""Data-parallel training through PyTorch Lightning (issue 20): ``pgmdl.fit(...,
strategy="ddp", devices=2)`` with two worker processes (gloo on the CPU,
forked from the test process), against exact answers: the evidence of a
linear-Gaussian network, and a one-step update whose averaged gradient is
known in closed form."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceGraph_ELBO
from torch import nn

import pgmdl
from pgmdl.datasets import chain
from pgmdl.errors import ArgumentError, ArgumentTypeError
from pgmdl.infer.data import derive_seed
from pgmdl.infer.sharding import batches_per_epoch, data_plates, shard_batches
from tests.conftest import FAST, ROOT

pytest.importorskip("lightning")  # the [distributed] extra; make test installs it

WORKERS = 2


def _accelerator(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


def _workers(device: torch.device) -> int:
    if device.type == "cuda":
        return min(WORKERS, torch.cuda.device_count())
    return WORKERS


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize(
    ("num_data", "batch_size", "world"),
    [(10, 3, 2), (9, 4, 2), (7, 2, 3), (100, 16, 2), (5, 1, 2), (2, 8, 2)],
)
def test_shards_are_disjoint_cover_the_data_and_take_equal_steps(num_data, batch_size, world):
    for epoch in range(3):
        shards = [
            shard_batches(num_data, batch_size, rank, world, epoch, seed=7) for rank in range(world)
        ]
        counts = {len(s) for s in shards}
        assert len(counts) == 1, f"workers take different numbers of steps: {counts}"
        assert counts == {batches_per_epoch(num_data, batch_size, world)}
        seen = torch.cat([b for s in shards for b in s])
        assert sorted(seen.tolist()) == list(range(num_data))  # disjoint, and covering
        # at most batch_size points (one more only where a shard has fewer points than
        # the others have minibatches: batch size 1, uneven split)
        most = batch_size + (batch_size == 1 and num_data % world != 0)
        assert all(0 < len(b) <= most for s in shards for b in s)
    # the permutation changes with the epoch and is the same on every worker
    first = shard_batches(100, 16, 0, 2, 0, seed=7)
    again = shard_batches(100, 16, 0, 2, 0, seed=7)
    later = shard_batches(100, 16, 0, 2, 1, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, later, strict=True))


def test_too_few_points_for_the_workers_is_refused():
    with pytest.raises(ArgumentError, match="3 workers"):
        shard_batches(2, 4, 0, 3, 0, seed=0)


def test_worker_streams_differ_and_worker_zero_is_the_single_process_stream():
    seeds = {derive_seed(5, 2, 1, worker) for worker in range(4)}
    assert len(seeds) == 4
    assert derive_seed(5, 2, 1, 0) == derive_seed(5, 2, 1)


# --------------------------------------------------------------------------- models


SIGMA = 0.5


def conjugate_model(x):
    loc = pyro.param("loc", torch.tensor(0.5, device=x.device))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(loc, 1.0))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def point_model(x):
    """No latent: the loss is deterministic, sum_i (x_i - loc)^2 / 2 + const."""
    loc = pyro.param("loc", torch.tensor(0.0, device=x.device))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def empty_guide(x):
    pass


def subsampling_model(x):
    with pyro.plate("data", len(x), subsample_size=2) as idx:
        pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0), obs=x[idx])


def plateless_model(x):
    loc = pyro.param("loc", torch.tensor(0.0)).expand(x.shape)
    pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


STRAY = torch.zeros((), requires_grad=True)  # in no module, not in the param store


def stray_model(x):
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(STRAY, 1.0), obs=x)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 2)

    def forward(self, x):
        pyro.module("encoder", self)
        out = self.net(x[:, None])
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(out[:, 0], out[:, 1].exp()))


BN = chain(4, obs_scale=1.0)


def bn_model(**data):
    """The network written as a user would wrap it: one keyword per observed node."""
    return BN.model(data)


# --------------------------------------------------------------------------- exact answers


def test_two_workers_reach_the_exact_evidence_like_one_process(device, one_thread):
    """A linear-Gaussian network, NaMIGuide (set up lazily before the workers
    start): trained by one process and by two, each ends within 0.05 nats per
    point of the exact held-out evidence, and the trained guide is the
    caller's."""
    generator = torch.Generator().manual_seed(1)
    train = {k: v.to(device) for k, v in BN.sample(8192, generator=generator).items()}
    test = {k: v.to(device) for k, v in BN.sample(2000, generator=generator).items()}
    evidence = BN.log_evidence(test).mean().item()
    epochs = 12 if FAST else 30
    gaps, results = {}, {}
    for label, options in (
        ("one process", {}),
        ("two workers", {"strategy": "ddp", "devices": _workers(device)}),
    ):
        pyro.clear_param_store()
        guide = pgmdl.NaMIGuide(bn_model, hidden=(32,))
        results[label] = pgmdl.fit(
            bn_model,
            guide,
            train,
            epochs=epochs,
            batch_size=256,
            optim=pyro.optim.Adam({"lr": 0.02}),
            seed=0,
            progress=False,
            accelerator=_accelerator(device),
            **options,
        )
        guide.eval()
        with torch.no_grad():
            elbo = -Trace_ELBO(num_particles=10).loss(bn_model, guide, **test) / 2000
        gaps[label] = evidence - elbo
    print(f"gap to the exact evidence, nats per point: {gaps}")
    for label, gap in gaps.items():
        assert -0.01 < gap < 0.05, f"{label}: gap {gap:.4f}"
    two = results["two workers"]
    assert two.epochs == epochs and len(two.epoch_losses) == epochs
    assert two.steps == epochs * batches_per_epoch(8192, 256, _workers(device))
    assert len(two.losses) == two.steps and set(two.kl_bits[-1]) == {f"z{i}" for i in range(4)}
    # the loss is scaled to the whole data set: per point it estimates -ELBO / N
    assert two.epoch_losses[-1] == pytest.approx(results["one process"].epoch_losses[-1], abs=0.05)


def test_gradients_are_averaged_over_the_workers(device, one_thread):
    """One SGD step, each worker's minibatch its whole half of the data: the
    averaged scaled gradient is exactly the full-data gradient, so
    loc = lr * sum_i x_i after the step."""
    x = torch.linspace(-1.0, 3.0, 16, device=device)
    lr = 0.01
    pgmdl.fit(
        point_model,
        empty_guide,
        x,
        epochs=1,
        batch_size=8,
        optim=pyro.optim.SGD({"lr": lr}),
        seed=0,
        progress=False,
        kl_every=0,
        strategy="ddp",
        devices=2,
        accelerator="cpu",
    )
    expected = lr * x.sum().item()  # -d/dloc of sum_i -(x_i - loc)^2 / 2 at loc = 0
    assert pyro.param("loc").item() == pytest.approx(expected, rel=1e-5)


def test_resume_continues_exactly_like_the_uninterrupted_run(tmp_path, one_thread):
    x = torch.randn(400, generator=torch.Generator().manual_seed(0))

    def run(epochs, path=None, resume=False, encoder=None):
        encoder = encoder or Encoder()
        result = pgmdl.fit(
            conjugate_model,
            encoder,
            x,
            epochs=epochs,
            batch_size=50,
            optim=pyro.optim.Adam({"lr": 0.01}),
            seed=3,
            progress=False,
            kl_every=0,
            strategy="ddp",
            devices=2,
            accelerator="cpu",
            checkpoint=path,
            resume=resume,
        )
        return result, encoder

    torch.manual_seed(0)
    straight, encoder = run(3)
    expected = [p.detach().clone() for p in encoder.parameters()] + [pyro.param("loc").detach()]
    pyro.clear_param_store()
    torch.manual_seed(0)
    path = tmp_path / "run.ckpt"
    first, encoder = run(1, path)
    assert path.exists() and first.epochs == 1
    pyro.clear_param_store()
    torch.manual_seed(1)  # a different initialization: the checkpoint must overwrite it
    resumed, encoder = run(3, path, resume=True)
    got = [p.detach() for p in encoder.parameters()] + [pyro.param("loc").detach()]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b), (a, b)
    assert resumed.losses == straight.losses and resumed.epochs == 3


def test_a_user_trainer_drives_the_module(tmp_path, one_thread):
    """SVIModule with the user's own Trainer and CSV logger."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from pgmdl.lightning import SVIModule

    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    encoder = Encoder()
    module = SVIModule(conjugate_model, encoder, x, batch_size=50, seed=0, kl_every=0)
    trainer = pl.Trainer(
        strategy="ddp_fork",
        devices=2,
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )
    before = encoder.net.weight.detach().clone()
    trainer.fit(module)
    assert not torch.equal(before, encoder.net.weight)  # trained, back in the caller's module
    assert module.result().steps == 2 * 2
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "loss" in metrics.splitlines()[0]


# --------------------------------------------------------------------------- bad input


def test_more_workers_than_cores_is_refused():
    x = torch.randn(8)
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(ArgumentError, match=f"devices={too_many}.*CPU core"):
        pgmdl.fit(point_model, empty_guide, x, strategy="ddp", devices=too_many, accelerator="cpu")


def test_devices_without_a_strategy_is_refused():
    with pytest.raises(ArgumentError, match="strategy='ddp'"):
        pgmdl.fit(point_model, empty_guide, torch.randn(8), devices=2, progress=False)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (subsampling_model, "subsamples plate 'data' itself"),
        (plateless_model, "no plate of the model has the minibatch's length"),
        (stray_model, r"shape\(s\) \(\).*in no module.*pyro.param"),
    ],
)
def test_models_workers_could_not_share_are_refused(model, match):
    with pytest.raises(ArgumentError, match=match):
        pgmdl.fit(
            model,
            empty_guide,
            torch.randn(8),
            strategy="ddp",
            devices=2,
            accelerator="cpu",
            progress=False,
        )


def test_a_loss_without_differentiable_loss_is_refused():
    with pytest.raises(ArgumentTypeError, match="TraceGraph_ELBO has none"):
        pgmdl.fit(
            conjugate_model,
            Encoder(),
            torch.randn(8),
            loss=TraceGraph_ELBO(),
            strategy="ddp",
            devices=2,
            accelerator="cpu",
        )


def test_data_plates_follow_the_minibatch_length():
    def model(x, labels):
        with pyro.plate("classes", 8):  # a plate of its own size: not a data plate
            pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    x, labels = torch.randn(8), torch.zeros(8)
    plates = data_plates(model, ((x, labels), {}), ((x[:7], labels[:7]), {}))
    assert plates == {"data"}


def test_fit_without_a_strategy_imports_no_lightning():
    code = (
        "import sys, torch, pyro, pyro.distributions as dist, pgmdl\n"
        "def model(x):\n"
        "    with pyro.plate('data', len(x)):\n"
        "        pyro.sample('x', dist.Normal(pyro.param('m', torch.tensor(0.)), 1.), obs=x)\n"
        "pgmdl.fit(model, lambda x: None, torch.randn(8), epochs=1, progress=False)\n"
        "assert not any(m.startswith(('lightning', 'pytorch_lightning')) for m in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_conjugate_posterior_is_found_by_two_workers(one_thread):
    """The encoder of the conjugate model reaches the closed-form posterior
    q(z | x) = N(x / (1 + s^2), s^2 / (1 + s^2)) when trained data-parallel."""
    x = torch.randn(4096, generator=torch.Generator().manual_seed(2)) * math.sqrt(1 + SIGMA**2)
    torch.manual_seed(0)
    encoder = Encoder()
    pgmdl.fit(
        conjugate_model,
        encoder,
        x,
        epochs=30,
        batch_size=128,
        optim=pyro.optim.Adam({"lr": 0.03}),
        seed=0,
        progress=False,
        kl_every=0,
        strategy="ddp",
        devices=2,
        accelerator="cpu",
    )
    weight, bias = encoder.net.weight.detach(), encoder.net.bias.detach()
    assert weight[0, 0].item() == pytest.approx(1 / (1 + SIGMA**2), abs=0.05)
    assert bias[1].exp().item() == pytest.approx(math.sqrt(SIGMA**2 / (1 + SIGMA**2)), abs=0.05)


class Regression(pyro.nn.PyroModule):
    """A PyroModule model: a PyroModule[nn.Linear], a PyroParam, a global latent."""

    def __init__(self):
        super().__init__()
        self.linear = pyro.nn.PyroModule[nn.Linear](1, 1)
        self.log_noise = pyro.nn.PyroParam(torch.tensor(0.5))

    def forward(self, x, y):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            loc = self.linear(x[:, None]).squeeze(-1) + shift
            pyro.sample("y", dist.Normal(loc, self.log_noise.exp()), obs=y)


def test_pyro_module_and_autoguide_parameters_train_in_the_workers(one_thread):
    """PyroModule weights and a PyroParam, an AutoNormal whose parameters appear
    on its first call: all trained by two workers and back in the caller's objects."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, generator=generator)
    y = 2.0 * x + 0.7 + 0.3 * torch.randn(2048, generator=generator)
    torch.manual_seed(0)
    model = Regression()
    guide = pyro.infer.autoguide.AutoNormal(model)
    pgmdl.fit(
        model,
        guide,
        (x, y),
        epochs=25,
        batch_size=128,
        optim=pyro.optim.Adam({"lr": 0.03}),
        seed=0,
        progress=False,
        kl_every=0,
        strategy="ddp",
        devices=2,
        accelerator="cpu",
    )
    assert model.linear.weight.item() == pytest.approx(2.0, abs=0.05)
    assert model.log_noise.exp().item() == pytest.approx(0.3, abs=0.03)
    # the shift and the bias share the offset 0.7; their sum is identified
    offset = model.linear.bias.item() + guide.median()["shift"].item()
    assert offset == pytest.approx(0.7, abs=0.1)


def test_parameters_and_buffers_are_identical_on_every_worker(one_thread):
    """NaMIGuide's running normalizers (buffers) and every parameter agree
    across the two workers at the end of training (checked in the workers,
    by gathering a checksum of each tensor)."""
    import lightning.pytorch as pl

    from pgmdl.lightning import SVIModule

    class SameEverywhere(pl.Callback):
        def on_train_end(self, trainer, module):
            tensors = list(module.parameters()) + list(module.buffers())
            assert any(True for _ in module.buffers()), "the guide has no buffers to check"
            sums = torch.stack([t.detach().double().sum() for t in tensors])
            gathered = trainer.strategy.all_gather(sums)  # (workers, tensors)
            assert gathered.shape[0] == 2
            assert torch.equal(gathered[0], gathered[1]), gathered

    data = BN.sample(1024, generator=torch.Generator().manual_seed(0))
    guide = pgmdl.NaMIGuide(bn_model, hidden=(16,))
    module = SVIModule(bn_model, guide, data, batch_size=64, seed=0, kl_every=0)
    trainer = pl.Trainer(
        strategy="ddp_fork",
        devices=2,
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        callbacks=[SameEverywhere()],
    )
    trainer.fit(module)
    assert module.result().steps == 2 * 8
