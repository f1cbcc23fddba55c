"""The cost of one SVI step with NaMIGuide, a hand-written Pyro guide, FastSVI,
plain PyTorch and (when installed) NumPyro.

Run it from the repository root::

    python benchmarks/step_overhead.py                  # both sizes, 15 blocks of 20 steps
    python benchmarks/step_overhead.py --fast           # a few steps, no compilation (CI smoke run)
    python benchmarks/step_overhead.py --no-compile     # without the torch.compile'd FastSVI
    python benchmarks/step_overhead.py --device cuda    # default: cuda if available, else cpu

The model is the zoo's Bernoulli VAE (as in ``models/vae.py``, rebuilt here at two sizes)::

    z ~ Normal(0, I_Z),  x ~ Bernoulli(logits=decoder(z)).to_event(1)

inside ``pyro.plate("data", batch)``, the decoder being ``Linear(Z, H) ->
Softplus -> Linear(H, D)`` registered with ``pyro.module("decoder", ...)``.
Two sizes D-H-Z: 784-400-20 at batch 128 (MNIST-like) and 16-32-4 at batch 64
(small: the fixed cost per step dominates). The data are random binary tensors:
synthetic, for timing only (nothing is learned or evaluated).

One training step of the same VAE is timed three ways, all with Adam (lr 1e-3):

* ``torch``: a plain PyTorch step, no Pyro: encode, ``rsample`` z, compute
  ``-ELBO = -(log p(x|z) + log p(z) - log q(z|x)).sum()`` with
  ``torch.distributions``, ``loss.backward()``, ``torch.optim.Adam.step()``,
  ``zero_grad()`` and ``loss.item()`` (``SVI.step`` returns the loss as a
  float too);
* ``hand-written Pyro``: ``SVI(model, guide, Adam, Trace_ELBO()).step(x)`` with a
  hand-written guide using the very networks NaMIGuide builds for ``z`` given
  ``x``: a :class:`~pgmdl.guides.conditional.ParentFeatures` (running
  normalization of ``x``), a :class:`~pgmdl.nn.ResidualMLP` with one
  hidden layer of H units, and a :class:`~pgmdl.guides.families.NormalFamily`
  (``Normal(loc, scale).to_event(1)``), registered with
  ``pyro.module("encoder", ...)`` inside ``pyro.plate("data", batch)``;
* ``NaMIGuide``: the same SVI step with ``pgmdl.NaMIGuide(model, hidden=(H,))``;
* ``FastSVI``: the NaMIGuide step with :class:`pgmdl.FastSVI` instead of
  ``SVI`` (the step traced once into a handler-free graph, then replayed);
* ``FastSVI compiled``: the same with ``compile=True`` (the graph compiled by
  ``torch.compile``); its compilation time (the first steps, tracing
  included) is reported separately, and it is skipped with ``--no-compile``
  and ``--fast``;
* ``NumPyro`` (only when ``numpyro`` and ``jax`` import; they are not pgmdl
  dependencies): the same VAE written in NumPyro with a plain JAX MLP encoder
  (Linear-ELU-Linear, as NaMIGuide's network without its skip layer and
  input normalization), ``numpyro.infer.SVI`` with ``Trace_ELBO`` and
  ``numpyro.optim.Adam``, its ``update`` step jitted
  (``jax.block_until_ready`` at the end of a block); its jit time is
  reported separately. JAX's own thread pool is left as it is.

The torch step uses the same encoder and decoder networks (and the same raw
output to ``Normal(loc, softplus(.) + 1e-4)`` mapping). All three start from
the same weights (NaMIGuide's encoder is loaded with the hand-written one's),
and the script checks, before timing, that the two guides have the same number
of parameters and give the same ``q(z | x)`` on a batch (it exits with status
1 otherwise). Each Pyro variant keeps its own parameter store
(``ParamStoreDict.scope``), entered once per timed block, not once per step.

Timing (:func:`time.perf_counter`, CUDA synchronized at the end of a block):
after ``--warmup`` steps of each variant, ``--repeats`` rounds run, each
timing one block of ``--steps`` steps of every variant in turn (interleaved,
so that drift or a busy machine hits all variants alike); the table gives
each variant's best block (time per step) and, in a second table, the median
block. Pyro's and torch's default argument validation is left on, as are
torch's autograd settings; torch runs on ``--threads`` threads (1 by
default, as in the other benchmarks of small models). The ratios
``Pyro/torch``, ``NaMI/torch``, ``NaMI/hand-written``, ``Fast/torch``
(FastSVI with NaMIGuide over plain torch) and the compiled and NumPyro ones
follow, and whether the goals (NaMIGuide at most 1.10x the hand-written Pyro
guide; FastSVI at most 1.0x plain torch, issue 22) are ``met`` or
``missed`` on each row. This is a measurement, not a test: it never asserts
on timings.

Measured on this 2-core CPU with one thread (see the README):
FastSVI 1.02x / 0.90x a plain torch step (best block; 784-400-20 / 16-32-4),
compiled 0.73x / 0.37x.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import pgmdl
from pgmdl.guides.conditional import ParentFeatures
from pgmdl.guides.families import MIN_SCALE, NormalFamily
from pgmdl.nn import ResidualMLP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_scale import machine, print_table  # noqa: E402

#: (D, H, Z, batch): data width, hidden width, latent width, batch size
SIZES = ((784, 400, 20, 128), (16, 32, 4, 64))
LR = 1e-3
GOAL = 1.10  # NaMIGuide / hand-written Pyro guide, per step
FAST_GOAL = 1.0  # FastSVI (NaMIGuide) / plain torch, per step (issue 22)
#: the issue's reference on this machine: Pyro (hand-written guide) / plain torch
REFERENCE = {(784, 400, 20, 128): 1.41, (16, 32, 4, 64): 3.1}
VARIANTS = ("torch", "hand", "nami", "fast", "compiled", "numpyro")


class Encoder(nn.Module):
    """What NaMIGuide builds for ``z`` given ``x``, written out by hand."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.features = ParentFeatures((x_dim,))
        self.family = NormalFamily(torch.Size([z_dim]), constraints.real)
        init = self.family.init_bias(torch.zeros(z_dim))  # the prior's mean, unit scale
        self.net = ResidualMLP(x_dim, self.family.num_params, (hidden,), init_bias=init)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x))

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        return self.family(self.raw(x))


def make_decoder(x_dim: int, hidden: int, z_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim))


def make_model(decoder: nn.Module, z_dim: int) -> Callable[[torch.Tensor], None]:
    def model(x: torch.Tensor) -> None:
        pyro.module("decoder", decoder)
        n = x.shape[0]
        with pyro.plate("data", n):
            loc, scale = x.new_zeros((n, z_dim)), x.new_ones((n, z_dim))
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    return model


def make_guide(encoder: Encoder) -> Callable[[torch.Tensor], None]:
    def guide(x: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", encoder(x))

    return guide


def torch_step_fn(encoder: Encoder, decoder: nn.Module, x: torch.Tensor) -> Callable[[], float]:
    """One plain PyTorch training step of the VAE (no Pyro machinery)."""
    params = list(encoder.parameters()) + list(decoder.parameters())
    optim = torch.optim.Adam(params, lr=LR)
    z_dim = encoder.z_dim
    normal, bernoulli = torch.distributions.Normal, torch.distributions.Bernoulli

    def step() -> float:
        raw = encoder.raw(x)
        q = normal(raw[..., :z_dim], nn.functional.softplus(raw[..., z_dim:]) + MIN_SCALE)
        z = q.rsample()
        log_q = q.log_prob(z).sum(-1)
        log_pz = normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
        log_px = bernoulli(logits=decoder(z)).log_prob(x).sum(-1)
        loss = -(log_px + log_pz - log_q).sum()
        loss.backward()
        optim.step()
        optim.zero_grad()
        return loss.item()

    return step


def scope(state: dict | None) -> AbstractContextManager:
    """The variant's own Pyro parameter store (nothing for plain torch)."""
    return nullcontext() if state is None else pyro.get_param_store().scope(state)


def build(
    size: tuple[int, int, int, int], device: torch.device, seed: int, compiled: bool = False
) -> dict[str, Any]:
    """The step functions of one size, with their parameter counts, checked;
    ``compiled``: also FastSVI with ``compile=True``."""
    x_dim, hidden, z_dim, batch = size
    pyro.clear_param_store()
    torch.manual_seed(seed)
    x = torch.bernoulli(torch.full((batch, x_dim), 0.5, device=device))
    decoder = make_decoder(x_dim, hidden, z_dim).to(device)
    encoder = Encoder(x_dim, z_dim, hidden).to(device)
    decoders = {v: copy.deepcopy(decoder) for v in VARIANTS if v != "numpyro"}
    encoders = {v: copy.deepcopy(encoder) for v in ("torch", "hand")}

    # variant -> (step function, its Pyro parameter store state or None)
    steps: dict[str, tuple[Callable[[], float], dict | None]] = {
        "torch": (torch_step_fn(encoders["torch"], decoders["torch"], x), None)
    }
    with pyro.get_param_store().scope() as hand_state:
        model = make_model(decoders["hand"], z_dim)
        guide = make_guide(encoders["hand"])
        svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
        steps["hand"] = (partial(svi.step, x), hand_state)
    with pyro.get_param_store().scope() as nami_state:
        model = make_model(decoders["nami"], z_dim)
        nami = pgmdl.NaMIGuide(model, hidden=(hidden,)).setup(x)
        conditional = nami.conditional("z")
        conditional.net.load_state_dict(encoders["hand"].net.state_dict())
        svi = SVI(model, nami, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
        steps["nami"] = (partial(svi.step, x), nami_state)
    for variant in ("fast", "compiled") if compiled else ("fast",):
        with pyro.get_param_store().scope() as fast_state:
            fast_model = make_model(decoders[variant], z_dim)
            fast_nami = pgmdl.NaMIGuide(fast_model, hidden=(hidden,)).setup(x)
            fast_nami.conditional("z").net.load_state_dict(encoders["hand"].net.state_dict())
            fast = pgmdl.FastSVI(
                fast_model,
                fast_nami,
                pyro.optim.Adam({"lr": LR}),
                Trace_ELBO(),
                compile=variant == "compiled",
            )
            steps[variant] = (partial(fast.step, x), fast_state)

    problems = []
    counts = {
        "hand": sum(p.numel() for p in encoders["hand"].parameters()),
        "nami": sum(p.numel() for p in nami.parameters()),
    }
    if counts["hand"] != counts["nami"]:
        problems.append(f"parameter counts differ: {counts}")
    if nami.parents("z") != ("x",):
        problems.append(f"NaMIGuide conditions z on {nami.parents('z')}, not ('x',)")
    # the same q(z | x) from both guides (no_grad: running statistics left untouched)
    with torch.no_grad(), pyro.get_param_store().scope(nami_state):
        q_nami = pyro.poutine.trace(nami).get_trace(x).nodes["z"]["fn"]
    with torch.no_grad():
        q_hand = encoders["hand"](x)
    for what in ("loc", "scale"):
        a, b = getattr(q_nami.base_dist, what), getattr(q_hand.base_dist, what)
        if a.shape != b.shape or not torch.allclose(a, b):
            problems.append(f"the guides' q(z | x) differ in {what}")
    return {"steps": steps, "params": counts, "problems": problems}


def numpyro_step(size: tuple[int, int, int, int], seed: int) -> dict[str, Any] | None:
    """NumPyro's jitted SVI step of the same VAE, or ``None`` when NumPyro or
    JAX does not import (they are optional, not pgmdl dependencies)."""
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as ndist
        from numpyro.infer import SVI as NSVI
        from numpyro.infer import Trace_ELBO as NTrace_ELBO
    except Exception:  # noqa: BLE001 (any import failure: no NumPyro column)
        return None
    x_dim, hidden, z_dim, batch = size
    key = jax.random.PRNGKey(seed)
    x = jax.random.bernoulli(key, 0.5, (batch, x_dim)).astype(jnp.float32)

    def linear(name: str, n_in: int, n_out: int, h: Any) -> Any:
        bound = 1.0 / math.sqrt(n_in)
        w = numpyro.param(
            f"{name}.w", lambda k: jax.random.uniform(k, (n_in, n_out), minval=-bound, maxval=bound)
        )
        b = numpyro.param(f"{name}.b", jnp.zeros(n_out))
        return h @ w + b

    def model(x: Any) -> None:
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", ndist.Normal(jnp.zeros(z_dim), 1.0).to_event(1))
            h = jax.nn.softplus(linear("dec1", z_dim, hidden, z))
            logits = linear("dec2", hidden, x_dim, h)
            numpyro.sample("x", ndist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x: Any) -> None:
        h = jax.nn.elu(linear("enc1", x_dim, hidden, x))
        raw = linear("enc2", hidden, 2 * z_dim, h)
        loc, scale = raw[..., :z_dim], jax.nn.softplus(raw[..., z_dim:]) + MIN_SCALE
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", ndist.Normal(loc, scale).to_event(1))

    svi = NSVI(model, guide, numpyro.optim.Adam(LR), NTrace_ELBO())
    state = svi.init(key, x)
    update = jax.jit(svi.update)
    start = time.perf_counter()
    state, loss = update(state, x)
    jax.block_until_ready(loss)
    jit_seconds = time.perf_counter() - start
    holder = {"state": state, "loss": loss}

    def step() -> None:
        holder["state"], holder["loss"] = update(holder["state"], x)

    def sync() -> None:
        jax.block_until_ready(holder["loss"])

    return {"step": step, "sync": sync, "setup": jit_seconds}


def measure(
    steps: dict[str, tuple[Callable[[], Any], dict | None]],
    warmup: int,
    num_steps: int,
    repeats: int,
    device: torch.device,
    syncs: dict[str, Callable[[], None]] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per step of each variant in each of ``repeats`` interleaved
    blocks, and the seconds of each variant's first three steps (for FastSVI:
    an ordinary step, two traced ones and, compiled, the compilation)."""
    syncs = syncs or {}

    def sync(name: str) -> None:
        if name in syncs:
            syncs[name]()
        elif device.type == "cuda":
            torch.cuda.synchronize(device)

    def block(name: str, n: int) -> float:
        step, state = steps[name]
        with scope(state):
            sync(name)
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync(name)
            return (time.perf_counter() - start) / max(n, 1)

    first = {}
    for name in steps:
        first[name] = block(name, 3) * 3
        block(name, warmup)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name in steps:
            times[name].append(block(name, num_steps))
    return times, first


COLUMNS = [
    ("size", "size D-H-Z"),
    ("batch", "batch"),
    ("torch", "torch step (ms)"),
    ("hand", "hand-written Pyro (ms)"),
    ("nami", "NaMIGuide (ms)"),
    ("fast", "FastSVI (ms)"),
    ("compiled", "FastSVI compiled (ms)"),
    ("numpyro", "NumPyro (ms)"),
    ("pyro_torch", "Pyro/torch"),
    ("nami_torch", "NaMI/torch"),
    ("nami_hand", "NaMI/hand-written"),
    ("fast_torch", "Fast/torch"),
    ("compiled_torch", "compiled/torch"),
    ("numpyro_torch", "NumPyro/torch"),
    ("goal", f"goal NaMI/hand <= {GOAL:.2f}"),
    ("fast_goal", f"goal Fast/torch <= {FAST_GOAL:.1f}"),
]


def format_row(size: tuple[int, int, int, int], t: dict[str, float]) -> dict[str, str]:
    x_dim, hidden, z_dim, batch = size
    ratio = t["nami"] / t["hand"]
    fast = t["fast"] / t["torch"]

    def ms(name: str) -> str:
        return f"{t[name] * 1e3:.3f}" if name in t else "-"

    def over_torch(name: str) -> str:
        return f"{t[name] / t['torch']:.2f}x" if name in t else "-"

    return {
        "size": f"{x_dim}-{hidden}-{z_dim}",
        "batch": str(batch),
        **{name: ms(name) for name in VARIANTS},
        "pyro_torch": over_torch("hand"),
        "nami_torch": over_torch("nami"),
        "nami_hand": f"{ratio:.2f}x",
        "fast_torch": f"{fast:.2f}x",
        "compiled_torch": over_torch("compiled"),
        "numpyro_torch": over_torch("numpyro"),
        "goal": "met" if ratio <= GOAL else "missed",
        "fast_goal": "met" if fast <= FAST_GOAL else "missed",
    }


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one SVI step of a VAE: NaMIGuide, a hand-written guide, plain torch."
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per variant")
    parser.add_argument(
        "--device", default=default_device(), help="torch device (default: cuda if available)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="2 warm-up and 3 timed steps, 1 block, no compilation (CI smoke run)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile'd FastSVI column"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)"
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.warmup, args.steps, args.repeats = 2, 3, 1
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # small networks: threads only add overhead
    device = torch.device(args.device)
    info = machine()
    if device.type != "cpu":
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        info = info.replace("device: cpu", f"device: {device} ({name})")
    print(info)
    print(
        f"synthetic random binary data (timing only); Adam lr {LR}; {args.warmup} warm-up "
        f"steps per variant, then {args.repeats} interleaved block(s) of "
        f"{args.steps} step(s); time per step in ms"
    )
    print()
    compiled = not (args.fast or args.no_compile)
    best_rows, median_rows, problems, setup_lines = [], [], [], []
    for size in SIZES:
        label = "-".join(map(str, size[:3]))
        built = build(size, device, args.seed, compiled=compiled)
        problems += [f"{label}: {p}" for p in built["problems"]]
        counts = built["params"]
        same = "equal" if counts["hand"] == counts["nami"] else "DIFFERENT"
        print(
            f"{label} batch {size[3]}: encoder parameters: hand-written {counts['hand']:,}, "
            f"NaMIGuide {counts['nami']:,} ({same})",
            flush=True,
        )
        steps, syncs, setup = dict(built["steps"]), {}, {}
        numpyro = numpyro_step(size, args.seed) if device.type == "cpu" else None
        if numpyro is not None:
            steps["numpyro"] = (numpyro["step"], None)
            syncs["numpyro"] = numpyro["sync"]
            setup["NumPyro jit"] = numpyro["setup"]
        times, first = measure(steps, args.warmup, args.steps, args.repeats, device, syncs)
        setup["FastSVI first 3 steps (1 ordinary, 2 traced)"] = first["fast"]
        if "compiled" in first:
            setup["FastSVI compiled first 3 steps (+ torch.compile)"] = first["compiled"]
        setup_lines.append(
            f"{label} batch {size[3]}: "
            + "; ".join(f"{what} {seconds:.2f} s" for what, seconds in setup.items())
        )
        best_rows.append(format_row(size, {k: min(v) for k, v in times.items()}))
        median_rows.append(format_row(size, {k: statistics.median(v) for k, v in times.items()}))
        print(f"  measured {label} batch {size[3]}", file=sys.stderr, flush=True)
    print()
    print("best block:")
    print_table(best_rows, COLUMNS)
    print()
    print("median block:")
    print_table(median_rows, COLUMNS)
    print()
    print("set-up (not in the step times):")
    print("\n".join(f"  {line}" for line in setup_lines))
    if not compiled:
        print("  (FastSVI compiled not run: --fast or --no-compile)")
    if not any("numpyro" in row and row["numpyro"] != "-" for row in best_rows):
        print("  (NumPyro not run: numpyro and jax do not import, or the device is not cpu)")
    print()
    print(
        "reference (the issue, this machine): Pyro/torch "
        + ", ".join(
            f"{r:.2f}x at {'-'.join(map(str, s[:3]))} batch {s[3]}" for s, r in REFERENCE.items()
        )
    )
    for row in best_rows:
        print(
            f"{row['size']} batch {row['batch']}: goal NaMI/hand <= {GOAL:.2f}: {row['goal']}; "
            f"goal FastSVI/torch <= {FAST_GOAL:.1f}: {row['fast_goal']} (best block)"
        )
    if problems:
        print("\nthe guides are not the same networks:", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
