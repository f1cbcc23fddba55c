"""Cost of one BTGM inner step: ``pgmdl.boltzmann_tune`` against a hand-written loop.

The hand-written loop is what one would write with zuko and PyTorch for a
VAE latent z ~ N(0, I) and a criterion on the decoder's output: draw base
samples, push them through the same zuko spline flow, score both densities,
and step Adam on ``-(λ f(dec(g(x))) - log p̂(g(x)) + log p(g(x)))``.
``boltzmann_tune`` does the same through the Pyro program (particle plate,
effect handler, ``ZukoToPyro`` with its cached log-density, per-site KL
bookkeeping). Per-step time is the difference between a run with ``steps``
inner steps and one with none, divided by ``steps``, so the set-up and the
Monte-Carlo estimates (identical in both runs) cancel.

Usage: ``python benchmarks/btgm_overhead.py [--fast] [--threads 1] [--device cpu]``.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch

import pgmdl
from pgmdl.boltzmann.flows import spline_flow

try:
    from benchmarks.compile_scale import machine, print_table
except ImportError:  # run as a script
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.compile_scale import machine, print_table


def make_decoder(z_dim: int, x_dim: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(z_dim, 64), torch.nn.Softplus(), torch.nn.Linear(64, x_dim)
    ).to(device)


def pgmdl_seconds(decoder, z_dim, particles, steps, device) -> float:
    def model(batch_size=1):
        with pyro.plate("data", batch_size):
            z = pyro.sample(
                "z", dist.Normal(torch.zeros(batch_size, z_dim, device=device), 1.0).to_event(1)
            )
            pyro.deterministic("curve", decoder(z), event_dim=1)

    def peak(values):
        return values["curve"].amax(-1)

    def run(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pgmdl.boltzmann_tune(
            model,
            peak,
            "z",
            lam=1.0,
            steps=n,
            num_particles=particles,
            num_eval=particles,
            num_base=particles,
            context=None,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(2)  # warm-up
    return (run(steps) - run(0)) / steps


def hand_seconds(decoder, z_dim, particles, steps, device) -> float:
    flow = spline_flow(z_dim).to(device)
    params = list(flow.parameters())
    opt = torch.optim.Adam(params, lr=5e-3)
    base = torch.distributions.Normal(torch.zeros(z_dim, device=device), 1.0)

    def step():
        x = base.sample((particles,))
        y, ladj = flow().call_and_ladj(x)
        ratio = base.log_prob(x).sum(-1) - ladj - base.log_prob(y).sum(-1)
        f = decoder(y).amax(-1)
        loss = -(1.0 * f - ratio).mean()
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()

    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="few steps (the test suite)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = 10 if args.fast else 200
    sizes = [(8, 336, 256), (32, 336, 1024)]
    rows = []
    for z_dim, x_dim, particles in sizes:
        decoder = make_decoder(z_dim, x_dim, device)
        hand = hand_seconds(decoder, z_dim, particles, steps, device)
        ours = pgmdl_seconds(decoder, z_dim, particles, steps, device)
        rows.append(
            {
                "size": f"z={z_dim} x={x_dim} S={particles}",
                "hand": f"{1e3 * hand:.2f}",
                "ours": f"{1e3 * ours:.2f}",
                "ratio": f"{ours / hand:.2f}x",
            }
        )
    print(f"BTGM inner step, {steps} steps per timing; {machine()} (run on {device})")
    columns = [
        ("size", "size"),
        ("hand", "hand-written (ms)"),
        ("ours", "boltzmann_tune (ms)"),
        ("ratio", "ratio"),
    ]
    print_table(rows, columns)


if __name__ == "__main__":
    main()
