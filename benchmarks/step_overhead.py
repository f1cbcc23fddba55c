"""The cost of one SVI step with NaMIGuide, a hand-written Pyro guide, and plain PyTorch.

Run it from the repository root::

    python benchmarks/step_overhead.py                  # both sizes, best of 15 blocks of 20 steps
    python benchmarks/step_overhead.py --fast           # a few steps (CI smoke run)
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
* ``NaMIGuide``: the same SVI step with ``pgmdl.NaMIGuide(model, hidden=(H,))``.

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
so that drift or a busy machine hits all three alike); a variant's time per
step is its best block's mean. Pyro's and torch's default argument
validation is left on, as are torch's default thread count and autograd
settings. The ratios ``Pyro/torch``, ``NaMI/torch`` and ``NaMI/hand-written``
follow, and whether the goal (NaMIGuide at most 1.10x the hand-written Pyro
guide) is ``met`` or ``missed`` on each row. This is a measurement, not a
test: it never asserts on timings.
"""

from __future__ import annotations

import argparse
import copy
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
#: the issue's reference on this machine: Pyro (hand-written guide) / plain torch
REFERENCE = {(784, 400, 20, 128): 1.41, (16, 32, 4, 64): 3.1}
VARIANTS = ("torch", "hand", "nami")


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


def build(size: tuple[int, int, int, int], device: torch.device, seed: int) -> dict[str, Any]:
    """The three step functions of one size, with their parameter counts, checked."""
    x_dim, hidden, z_dim, batch = size
    pyro.clear_param_store()
    torch.manual_seed(seed)
    x = torch.bernoulli(torch.full((batch, x_dim), 0.5, device=device))
    decoder = make_decoder(x_dim, hidden, z_dim).to(device)
    encoder = Encoder(x_dim, z_dim, hidden).to(device)
    decoders = {v: copy.deepcopy(decoder) for v in VARIANTS}
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


def measure(
    steps: dict[str, tuple[Callable[[], float], dict | None]],
    warmup: int,
    num_steps: int,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Seconds per step of each variant: the best of ``repeats`` interleaved blocks."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def block(step: Callable[[], float], state: dict | None, n: int) -> float:
        with scope(state):
            sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            return (time.perf_counter() - start) / n

    for step, state in steps.values():
        block(step, state, warmup)
    best = {name: float("inf") for name in steps}
    for _ in range(repeats):
        for name, (step, state) in steps.items():
            best[name] = min(best[name], block(step, state, num_steps))
    return best


COLUMNS = [
    ("size", "size D-H-Z"),
    ("batch", "batch"),
    ("torch", "torch step (ms)"),
    ("hand", "hand-written Pyro (ms)"),
    ("nami", "NaMIGuide (ms)"),
    ("pyro_torch", "Pyro/torch"),
    ("nami_torch", "NaMI/torch"),
    ("nami_hand", "NaMI/hand-written"),
    ("goal", f"goal NaMI/hand <= {GOAL:.2f}"),
]


def format_row(size: tuple[int, int, int, int], t: dict[str, float]) -> dict[str, str]:
    x_dim, hidden, z_dim, batch = size
    ratio = t["nami"] / t["hand"]
    return {
        "size": f"{x_dim}-{hidden}-{z_dim}",
        "batch": str(batch),
        "torch": f"{t['torch'] * 1e3:.3f}",
        "hand": f"{t['hand'] * 1e3:.3f}",
        "nami": f"{t['nami'] * 1e3:.3f}",
        "pyro_torch": f"{t['hand'] / t['torch']:.2f}x",
        "nami_torch": f"{t['nami'] / t['torch']:.2f}x",
        "nami_hand": f"{ratio:.2f}x",
        "goal": "met" if ratio <= GOAL else "missed",
    }


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one SVI step of a VAE: NaMIGuide, a hand-written guide, plain torch."
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument(
        "--repeats", type=int, default=15, help="timed blocks per variant (best is kept)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per variant")
    parser.add_argument(
        "--device", default=default_device(), help="torch device (default: cuda if available)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    parser.add_argument(
        "--fast", action="store_true", help="2 warm-up and 3 timed steps, 1 block (CI smoke run)"
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.warmup, args.steps, args.repeats = 2, 3, 1
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    info = machine()
    if device.type != "cpu":
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        info = info.replace("device: cpu", f"device: {device} ({name})")
    print(info)
    print(
        f"synthetic random binary data (timing only); Adam lr {LR}; {args.warmup} warm-up "
        f"steps per variant, then best of {args.repeats} interleaved block(s) of "
        f"{args.steps} step(s); time per step in ms"
    )
    print()
    rows, problems = [], []
    for size in SIZES:
        label = "-".join(map(str, size[:3]))
        built = build(size, device, args.seed)
        problems += [f"{label}: {p}" for p in built["problems"]]
        counts = built["params"]
        same = "equal" if counts["hand"] == counts["nami"] else "DIFFERENT"
        print(
            f"{label} batch {size[3]}: encoder parameters: hand-written {counts['hand']:,}, "
            f"NaMIGuide {counts['nami']:,} ({same})",
            flush=True,
        )
        times = measure(built["steps"], args.warmup, args.steps, args.repeats, device)
        rows.append(format_row(size, times))
        print(f"  measured {label} batch {size[3]}", file=sys.stderr, flush=True)
    print()
    print_table(rows, COLUMNS)
    print()
    print(
        "reference (the issue, this machine): Pyro/torch "
        + ", ".join(
            f"{r:.2f}x at {'-'.join(map(str, s[:3]))} batch {s[3]}" for s, r in REFERENCE.items()
        )
    )
    for row in rows:
        print(f"{row['size']} batch {row['batch']}: goal NaMI/hand <= {GOAL:.2f}: {row['goal']}")
    if problems:
        print("\nthe guides are not the same networks:", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
