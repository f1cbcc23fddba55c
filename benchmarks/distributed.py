"""Data-parallel training through Lightning: samples per second with 1 and 2
worker processes, and the communication cost of a step (issue 20).

Run it from the repository root::

    python benchmarks/distributed.py           # both models, 2 and 8 epochs per run
    python benchmarks/distributed.py --fast    # a smoke run (CI)

Two models, both trained by ``pgmdl.fit`` on SYNTHETIC data with Adam:

* ``chain``: the linear-Gaussian chain of 4 latents (``pgmdl.datasets.chain``),
  ``NaMIGuide(hidden=(32,))``, 16,384 points (small networks: the fixed cost of
  a step dominates);
* ``vae``: a Bernoulli VAE 64-400-20 on the 8x8 digits of scikit-learn
  (binarized, 1,797 images tiled to 14,376), hand-written encoder (larger
  gradients to average: ~85k parameters).

Each is trained three ways: ``fit`` in this process (no Lightning), and
``fit(strategy="ddp")`` with 1 and 2 worker processes (CPU, gloo, forked),
each worker taking ``--batch`` points per step. ``fit``'s callback stamps the
end of every epoch (in worker 0 under a strategy); an epoch's time is the
median over the epochs after the first, throughput the data set over it,
start-up the rest of the call (forking, process group, the guide's set-up,
the first epoch's excess). Communication: in two forked processes joined by gloo, the
median time of an all-reduce of a tensor with the model's number of
parameters (what the data-parallel wrapper does per step, in buckets) and of
the one-number all-reduce pgmdl adds per step (the non-finite flag).

On this 2-core machine two workers share the two cores with nothing left
for the parent process: the speed-up is bounded by 2, and the run is
sensitive to other load. It prints a table; it never asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pgmdl  # noqa: E402
from pgmdl.datasets import chain  # noqa: E402
from pgmdl.datasets.digits import load_digits  # noqa: E402

BN = chain(4, obs_scale=1.0)


def chain_model(**data):
    return BN.model(data)


class VAE(nn.Module):
    """A Bernoulli VAE with a hand-written Gaussian encoder."""

    def __init__(self, d: int = 64, h: int = 400, z: int = 20) -> None:
        super().__init__()
        self.z = z
        self.decoder = nn.Sequential(nn.Linear(z, h), nn.Softplus(), nn.Linear(h, d))
        self.encoder = nn.Sequential(nn.Linear(d, h), nn.Softplus(), nn.Linear(h, 2 * z))

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            zeros = x.new_zeros(len(x), self.z)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))


def setups(fast: bool) -> dict:
    n_chain = 4096 if fast else 16384
    chain_data = BN.sample(n_chain, generator=torch.Generator().manual_seed(0))
    digits = (torch.as_tensor(load_digits().data, dtype=torch.float32) > 7).float()
    reps = 2 if fast else 8
    images = digits.repeat(reps, 1)

    def chain_pair():
        return chain_model, pgmdl.NaMIGuide(chain_model, hidden=(32,))

    def vae_pair():
        vae = VAE()
        return vae.model, vae.guide

    return {"chain": (chain_pair, chain_data), "vae": (vae_pair, images)}


class EpochClock:
    """``fit``'s callback: the time at the end of every epoch, appended to a file
    (it runs in worker 0 under a strategy, whose memory the caller does not see)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def __call__(self, epoch: int, result: object) -> None:
        with self.path.open("a") as f:
            f.write(f"{time.perf_counter()}\n")

    def epoch_times(self) -> list[float]:
        stamps = [float(line) for line in self.path.read_text().split()]
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def timed_fit(pair, data, epochs: int, batch: int, options: dict, clock: EpochClock):
    """Wall time of the whole call, median time of an epoch after the first, steps."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = pair()
    clock.path.write_text("")
    start = time.perf_counter()
    result = pgmdl.fit(
        model,
        guide,
        data,
        epochs=epochs,
        batch_size=batch,
        optim=pyro.optim.Adam({"lr": 1e-3}),
        seed=0,
        progress=False,
        kl_every=0,
        callback=clock,
        **options,
    )
    total = time.perf_counter() - start
    times = sorted(clock.epoch_times())
    return total, times[len(times) // 2], result.steps // epochs


def _allreduce_worker(rank: int, port: int, numel: int, reps: int, out: dict) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for label, size in (("gradients", numel), ("flag", 1)):
        value = torch.ones(size)
        for _ in range(5):
            torch_dist.all_reduce(value)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            torch_dist.all_reduce(value)
            times.append(time.perf_counter() - start)
        results[label] = sorted(times)[len(times) // 2]
    if rank == 0:
        out.update(results)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


def allreduce_cost(numel: int, reps: int) -> dict:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.get_context("fork").Manager()
    out = manager.dict()
    mp.start_processes(
        _allreduce_worker, args=(port, numel, reps, out), nprocs=2, start_method="fork"
    )
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a smoke run (CI)")
    parser.add_argument("--batch", type=int, default=256, help="points per worker per step")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run")
    args = parser.parse_args()
    if args.fast:
        args.epochs = 3
    clock = EpochClock(Path(tempfile.mkdtemp()) / "epochs.txt")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, 1 thread per process")
    print(
        f"runs of {args.epochs} epochs, {args.batch} points per worker per step; an epoch: "
        "median of the epochs after the first; start-up: the rest of the call\n"
    )
    header = (
        f"{'model':6} {'training':22} {'params':>7} {'steps/epoch':>11} {'samples/s':>10} "
        f"{'vs in-process':>13} {'ms/step':>8} {'start-up (s)':>12}"
    )
    print(header)
    print("-" * len(header))
    numels = {}
    for name, (pair, data) in setups(args.fast).items():
        model, guide = pair()
        n = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
        base = None
        for label, options in (
            ("in-process fit", {}),
            ("ddp, 1 worker", {"strategy": "ddp", "devices": 1, "accelerator": "cpu"}),
            ("ddp, 2 workers", {"strategy": "ddp", "devices": 2, "accelerator": "cpu"}),
        ):
            total, per_epoch, steps = timed_fit(pair, data, args.epochs, args.batch, options, clock)
            rate = n / per_epoch
            base = base or rate
            startup = total - args.epochs * per_epoch
            params = sum(p.numel() for p in pyro.get_param_store().values())
            numels[name] = params
            print(
                f"{name:6} {label:22} {params:7d} {steps:11d} {rate:10.0f} "
                f"{rate / base:12.2f}x {1000 * per_epoch / steps:8.2f} {startup:12.2f}",
                flush=True,
            )
    print("\ncommunication, 2 processes, gloo (median of", 50 if args.fast else 500, "):")
    for name, numel in numels.items():
        cost = allreduce_cost(numel, 50 if args.fast else 500)
        print(
            f"  {name}: all-reduce of {numel} gradient numbers {1000 * cost['gradients']:.3f} ms; "
            f"non-finite flag {1000 * cost['flag']:.3f} ms per step"
        )


if __name__ == "__main__":
    main()
