"""The deep Markov model: its automatic guide against a hand-written structured inference network.

Run it from the repository root::

    python benchmarks/dmm_guides.py                  # 3 seeds, 1,000 steps, T up to 20
    python benchmarks/dmm_guides.py --seeds 5 --steps 3000
    python benchmarks/dmm_guides.py --per-step       # with the per-step NaMI reference
    python benchmarks/dmm_guides.py --fast           # a CI smoke run (every code path)

Issue 19 asks for this evidence: the deep Markov model (``models/dmm.py``,
Krishnan et al. 2017, written as a plain Pyro program) with its automatic
guide at least matches a hand-written structured inference network with the
same network budget, at equal steps. Guides:

* ``automatic``: ``pgmdl.NaMIGuide(dmm.model, order="reverse",
  time_shared=True)``, default options (``hidden=(64,)``): NaMI's reverse
  inverse of the unrolled chain is ``q(z_t | z_{t-1}, x_{t:T})``, built as
  one conditional shared by the steps (a backward GRU and a linear
  recurrence over ``x`` and the mask, a head reading the summary, ``x_t``
  and ``z_{t-1}``, a full-covariance Gaussian for ``z_t``;
  :mod:`pgmdl.guides.sequence`; ``time_shared=True`` is the default
  ``"auto"`` made explicit);
* ``hand ST-R, GRU``: :class:`StructuredInferenceNetwork` below, Krishnan et
  al.'s "ST-R" guide as Pyro's DMM example has it, written for this
  benchmark: a backward RNN over ``x`` (each padded sequence reversed
  within its own length, so padding changes nothing at real steps), a
  combiner ``h_t = (tanh(W z_{t-1} + b) + h_rnn_t) / 2`` and ``loc = L h_t``,
  ``scale = softplus(S h_t)``, a learned ``z_{-1}`` and initial RNN state;
  its RNN is a GRU (the cell of the automatic guide) whose width is chosen so
  that its parameter count is the nearest to the automatic guide's;
* ``hand ST-R, ReLU RNN``: the same with Pyro's cell (``nn.RNN``, ReLU),
  width matched alike;
* ``NaMI reverse, per step`` (a reference, run with ``--per-step`` and in
  ``--fast`` mode):
  ``NaMIGuide(dmm.model, order="reverse", time_shared=False)``, one network
  per step reading
  ``z_{t-1}`` and ``x_t .. x_{T-1}`` directly; it serves the padded length
  only and its parameter count is not matched (about 9x the budget at
  T = 20).

Data (SYNTHETIC): :func:`pgmdl.datasets.controlled_pendulum.pendulum` ring
images (16 pixels, noise 0.05, piecewise controls that the model does not
see), ``--train`` training and ``--test`` held-out sequences of length
``--length`` (``T``), each cut to a length drawn uniformly in ``T/2 .. T``:
the frames after it are zeroed and masked out (``dmm.model(x, mask)``).
The model is ``models.dmm.DMM()`` with its defaults (``z_dim`` 4, Normal
likelihood, emission and transition widths 32), no KL annealing.

Training: for each seed ``s`` (``0 .. --seeds - 1``), for each guide, Pyro's
random stream is set to ``s``, a fresh DMM is built (the same initial
weights for every guide at one seed), then the guide; model and guide are
trained together by ``pyro.infer.SVI`` with ``Trace_ELBO`` and
``pyro.optim.ClippedAdam`` (lr ``--lr``, clip norm 10) for ``--steps``
steps on minibatches of ``--batch`` sequences (the training set shuffled
each epoch by ``torch.Generator().manual_seed(s)``: the same minibatches in
the same order for every guide at one seed). All minibatches are padded to
``T``, so the per-step guide can serve them.

Reported, mean ± s.e. over seeds (s.e. = sample standard deviation /
sqrt(seeds)), nats per real (unpadded) time step:

1. the training -ELBO at the checkpoints ``--checkpoints``: the minibatch
   losses of the last ``--window`` steps before the checkpoint, summed, over
   the real steps of those minibatches;
2. the held-out -ELBO at the same checkpoints (``--particles``-particle
   ``Trace_ELBO``, no gradient, ``guide.eval()``), and at the end on
   ``--test`` sequences of twice the length (lengths ``T .. 2T``, never seen
   in training; the guides that serve any length only);
3. for every guide: its parameter count (the DMM's own are the same for all),
   the median SVI step time, the training time;
4. ``automatic - hand`` for each hand guide: the differences of the -ELBOs
   per step (paired by seed; negative: the automatic guide is better), and
   the ratio of the median step times. A ratio of -ELBOs would be
   meaningless: they are negative here (a density of images with little
   noise).

This is a measurement, not a test: it never asserts on losses or timings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pgmdl  # noqa: E402
from benchmarks.compile_scale import machine, print_table  # noqa: E402
from models.dmm import DMM  # noqa: E402
from pgmdl.datasets.controlled_pendulum import pendulum  # noqa: E402

AUTOMATIC = "automatic"
HAND_GRU = "hand ST-R, GRU"
HAND_RNN = "hand ST-R, ReLU RNN"
PER_STEP = "NaMI reverse, per step"
HANDS = (HAND_GRU, HAND_RNN)
AUTOMATIC_OPTIONS: dict[str, Any] = {"order": "reverse", "time_shared": True}
PER_STEP_OPTIONS: dict[str, Any] = {"order": "reverse", "time_shared": False}
CLIP_NORM = 10.0
WARMUP_STEPS = 3  # left out of the median step time


# --------------------------------------------------------------------------- the hand guide


class StructuredInferenceNetwork(nn.Module):
    r"""Krishnan et al.'s "ST-R" guide of the deep Markov model, written by hand:
    :math:`q(z_t \mid z_{t-1}, x_{t:T})` through a backward RNN over ``x``
    and a combiner.

    Args:
        x_dim, z_dim: the DMM's widths.
        rnn_dim: the RNN's width (also the combiner's).
        cell: ``"gru"`` (:class:`torch.nn.GRU`) or ``"rnn"``
            (:class:`torch.nn.RNN` with ReLU, Pyro's choice).
    """

    def __init__(self, x_dim: int, z_dim: int, rnn_dim: int, cell: str = "gru") -> None:
        super().__init__()
        if cell == "gru":
            self.rnn: nn.Module = nn.GRU(x_dim, rnn_dim, batch_first=True)
        elif cell == "rnn":
            self.rnn = nn.RNN(x_dim, rnn_dim, nonlinearity="relu", batch_first=True)
        else:
            raise ValueError(f"cell must be 'gru' or 'rnn', got {cell!r}")
        self.z_dim = z_dim
        self.h_0 = nn.Parameter(torch.zeros(rnn_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def summarize(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(N, T, rnn_dim)``: at step ``t`` the backward RNN's state after reading
        ``x_{T_n - 1} .. x_t`` of sequence ``n`` (its own length ``T_n``)."""
        n, steps = x.shape[:2]
        position = torch.arange(steps, device=x.device).expand(n, steps)
        if mask is None:
            order = steps - 1 - position
        else:  # reverse within each length: padding goes last and changes nothing before it
            lengths = mask.sum(-1, keepdim=True)
            order = torch.where(position < lengths, lengths - 1 - position, position)
        reversed_x = x.gather(1, order[..., None].expand(x.shape))
        h_0 = self.h_0.expand(1, n, self.h_0.shape[0]).contiguous()
        out, _ = self.rnn(reversed_x, h_0)
        return out.gather(1, order[..., None].expand(out.shape))

    def guide(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        annealing_factor: float = 1.0,
        **_: Any,
    ) -> None:
        """The guide of ``DMM.model(x, mask, annealing_factor)``: same sites, plate, masks."""
        pyro.module("structured_inference_network", self)
        n, steps = x.shape[:2]
        h_rnn = self.summarize(x, mask)
        z_prev = self.z_q_0.expand(n, self.z_dim)
        with pyro.plate("sequences", n):
            for t in pyro.markov(range(steps)):
                h = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_prev)) + h_rnn[:, t])
                loc = self.lin_hidden_to_loc(h)
                scale = nn.functional.softplus(self.lin_hidden_to_scale(h))
                with (
                    poutine.mask(mask=True if mask is None else mask[:, t]),
                    poutine.scale(scale=annealing_factor),
                ):
                    z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))

    def __call__(self, *args: Any, **kwargs: Any) -> None:  # Pyro calls the guide
        return self.guide(*args, **kwargs)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_width(target: int, x_dim: int, z_dim: int, cell: str) -> int:
    """The RNN width whose :class:`StructuredInferenceNetwork` has the parameter count
    nearest ``target``."""

    def size(width: int) -> int:
        return count(StructuredInferenceNetwork(x_dim, z_dim, width, cell))

    return min(range(4, 1025, 4), key=lambda w: abs(size(w) - target))


# --------------------------------------------------------------------------- data


@dataclass
class Sequences:
    """Ring images ``x`` ``(N, T, 16)`` zeroed after each sequence's length, ``mask`` ``(N, T)``."""

    x: torch.Tensor
    mask: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.mask.sum())


def make_data(num: int, length: int, shortest: int, seed: int) -> Sequences:
    generator = torch.Generator().manual_seed(seed)
    observations = pendulum(num, length, generator=generator).observations
    lengths = torch.randint(shortest, length + 1, (num,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return Sequences(observations * mask[..., None], mask)


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One guide trained on one seed."""

    params: int
    train: list[float]  # -ELBO per real step at each checkpoint (training window)
    test: list[float]  # held-out -ELBO per real step at each checkpoint
    longer: float  # held-out -ELBO per real step at lengths T .. 2T (nan: not served)
    step_ms: float
    train_s: float
    notes: list[str] = field(default_factory=list)


def make_guide(name: str, dmm: DMM, args: argparse.Namespace) -> Callable[..., Any]:
    if name == AUTOMATIC:
        return pgmdl.NaMIGuide(dmm.model, **AUTOMATIC_OPTIONS)
    if name == PER_STEP:
        return pgmdl.NaMIGuide(dmm.model, **PER_STEP_OPTIONS)
    cell = "gru" if name == HAND_GRU else "rnn"
    return StructuredInferenceNetwork(dmm.x_dim, dmm.z_dim, args.widths[name], cell)


def held_out(dmm: DMM, guide: Any, data: Sequences, particles: int) -> float:
    guide.eval()
    try:
        with torch.no_grad():
            elbo = Trace_ELBO(num_particles=particles, vectorize_particles=False)
            loss = elbo.loss(dmm.model, guide, data.x, data.mask)
    finally:
        guide.train()
    return loss / data.steps


def train_one(
    name: str,
    seed: int,
    data: dict[str, Sequences],
    args: argparse.Namespace,
) -> Run:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    dmm = DMM()
    guide = make_guide(name, dmm, args)
    train = data["train"]
    if isinstance(guide, pgmdl.NaMIGuide):
        guide.setup(train.x[: args.batch], train.mask[: args.batch])
    params = count(guide)
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "clip_norm": CLIP_NORM})
    svi = SVI(dmm.model, guide, optim, Trace_ELBO())
    shuffle = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    losses, real_steps, times = [], [], []
    run = Run(params, [], [], math.nan, math.nan, 0.0)
    checkpoints = set(args.checkpoints)
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = torch.randperm(train.x.shape[0], generator=shuffle)
        index, order = order[: args.batch], order[args.batch :]
        x, mask = train.x[index], train.mask[index]
        t0 = time.perf_counter()
        loss = svi.step(x, mask)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        real_steps.append(int(mask.sum()))
        if step in checkpoints:
            window = min(args.window, step)
            run.train.append(sum(losses[-window:]) / sum(real_steps[-window:]))
            run.test.append(held_out(dmm, guide, data["test"], args.particles))
    run.train_s = sum(times)
    run.step_ms = 1e3 * statistics.median(times[WARMUP_STEPS:] or times)
    if name != PER_STEP:
        run.longer = held_out(dmm, guide, data["longer"], args.particles)
    if not all(math.isfinite(v) for v in run.train + run.test):
        run.notes.append("non-finite loss")
    return run


# --------------------------------------------------------------------------- tables


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def _pm(values: list[float], digits: int) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean, se = _mean_se(values)
    return f"{mean:+.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def checkpoint_columns(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("guide", "guide")] + [(f"c{c}", f"step {c}") for c in args.checkpoints]


def elbo_table(
    runs: dict[str, list[Run]], args: argparse.Namespace, what: str
) -> list[dict[str, str]]:
    rows = []
    for name, guide_runs in runs.items():
        row = {"guide": name}
        for i, c in enumerate(args.checkpoints):
            row[f"c{c}"] = _pm([getattr(r, what)[i] for r in guide_runs], 2)
        rows.append(row)
    for hand in HANDS:
        if hand not in runs:
            continue
        row = {"guide": f"automatic - {hand}"}
        for i, c in enumerate(args.checkpoints):
            diffs = [
                getattr(a, what)[i] - getattr(h, what)[i]
                for a, h in zip(runs[AUTOMATIC], runs[hand], strict=True)
            ]
            row[f"c{c}"] = _pm(diffs, 2)
        rows.append(row)
    return rows


SUMMARY_COLUMNS = [
    ("guide", "guide"),
    ("params", "guide params"),
    ("budget", "params / automatic"),
    ("final", "held-out -ELBO/step"),
    ("longer", "held-out, T..2T"),
    ("step", "SVI step (ms)"),
    ("train", "train (s)"),
]


def summary_table(runs: dict[str, list[Run]]) -> list[dict[str, str]]:
    rows = []
    automatic_params = runs[AUTOMATIC][0].params
    for name, guide_runs in runs.items():
        params = guide_runs[0].params
        rows.append(
            {
                "guide": name,
                "params": str(params),
                "budget": f"{params / automatic_params:.2f}",
                "final": _pm([r.test[-1] for r in guide_runs], 2),
                "longer": _pm([r.longer for r in guide_runs], 2),
                "step": f"{statistics.fmean(r.step_ms for r in guide_runs):.1f}",
                "train": f"{statistics.fmean(r.train_s for r in guide_runs):.1f}",
            }
        )
    return rows


RATIO_COLUMNS = [
    ("pair", "pair"),
    ("final", "held-out -ELBO/step, difference"),
    ("longer", "held-out T..2T, difference"),
    ("train", "training -ELBO/step, difference"),
    ("step", "SVI step time ratio"),
]


def ratio_table(runs: dict[str, list[Run]]) -> list[dict[str, str]]:
    rows = []
    auto = runs[AUTOMATIC]
    for hand in HANDS:
        if hand not in runs:
            continue
        other = runs[hand]
        pairs = list(zip(auto, other, strict=True))
        ratio = statistics.fmean(a.step_ms for a in auto) / statistics.fmean(
            h.step_ms for h in other
        )
        rows.append(
            {
                "pair": f"automatic - {hand}",
                "final": _pm([a.test[-1] - h.test[-1] for a, h in pairs], 3),
                "longer": _pm([a.longer - h.longer for a, h in pairs], 3),
                "train": _pm([a.train[-1] - h.train[-1] for a, h in pairs], 3),
                "step": f"{ratio:.2f}x",
            }
        )
    return rows


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The DMM trained with its automatic NaMI guide and with a hand-written "
        "structured inference network of the same parameter budget, at equal steps."
    )
    parser.add_argument("--steps", type=int, default=1000, help="SVI steps per guide and seed")
    parser.add_argument(
        "--checkpoints",
        type=int,
        nargs="+",
        default=None,
        help="steps at which the -ELBOs are read (default: steps/8, /4, /2, steps)",
    )
    parser.add_argument("--window", type=int, default=50, help="minibatches per training -ELBO")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--length", type=int, default=20, help="T: the padded length")
    parser.add_argument("--train", type=int, default=512, help="training sequences")
    parser.add_argument("--test", type=int, default=128, help="held-out sequences")
    parser.add_argument("--batch", type=int, default=32, help="sequences per minibatch")
    parser.add_argument("--lr", type=float, default=3e-3, help="ClippedAdam's learning rate")
    parser.add_argument("--particles", type=int, default=10, help="particles of a held-out -ELBO")
    parser.add_argument(
        "--per-step", action="store_true", help="also train the per-step NaMI reference"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="T 8, 24 steps, 2 seeds, 2 particles, small sets, --per-step (a CI smoke run)",
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.steps, args.seeds, args.particles, args.window = 24, 2, 2, 8
        args.length, args.train, args.test, args.batch = 8, 48, 16, 16
        args.checkpoints, args.per_step = None, True
    if args.checkpoints is None:
        args.checkpoints = sorted({max(1, args.steps // k) for k in (8, 4, 2, 1)})
    positive = ("steps", "seeds", "threads", "train", "test", "batch", "particles", "window")
    if min(getattr(args, name) for name in positive) < 1:
        parser.error("--steps, --seeds, --threads, --window and the sizes must be at least 1")
    if args.length < 2:
        parser.error("--length must be at least 2")
    if not all(1 <= c <= args.steps for c in args.checkpoints):
        parser.error("checkpoints must lie in 1 .. --steps")
    args.checkpoints = sorted(set(args.checkpoints))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    shortest = max(1, args.length // 2)
    data = {
        "train": make_data(args.train, args.length, shortest, 1000),
        "test": make_data(args.test, args.length, shortest, 2000),
        "longer": make_data(args.test, 2 * args.length, args.length, 3000),
    }
    probe = DMM()
    pyro.clear_param_store()
    automatic = pgmdl.NaMIGuide(probe.model, **AUTOMATIC_OPTIONS)
    automatic.setup(data["train"].x[:2], data["train"].mask[:2])
    budget = count(automatic)
    args.widths = {
        HAND_GRU: matched_width(budget, probe.x_dim, probe.z_dim, "gru"),
        HAND_RNN: matched_width(budget, probe.x_dim, probe.z_dim, "rnn"),
    }
    guides = [AUTOMATIC, *HANDS] + ([PER_STEP] if args.per_step else [])

    print(machine())
    print(f"threads: torch.set_num_threads({args.threads})")
    print(
        f"data: SYNTHETIC pendulum ring images (16 pixels, noise 0.05); {args.train} training "
        f"and {args.test} held-out sequences padded to T = {args.length} (lengths "
        f"{shortest}..{args.length}, masked), {args.test} longer held-out sequences "
        f"(T = {2 * args.length}, lengths {args.length}..{2 * args.length})"
    )
    print(
        f"model: models.dmm.DMM() (z_dim {probe.z_dim}, Normal likelihood), "
        f"{count(probe)} parameters, trained with the guide; no KL annealing"
    )
    print(
        f"guides: {AUTOMATIC} = NaMIGuide(dmm.model, **{AUTOMATIC_OPTIONS}); "
        f"{HAND_GRU} = StructuredInferenceNetwork(rnn_dim={args.widths[HAND_GRU]}, cell='gru'); "
        f"{HAND_RNN} = StructuredInferenceNetwork(rnn_dim={args.widths[HAND_RNN]}, cell='rnn')"
        + (f"; {PER_STEP} = NaMIGuide(dmm.model, **{PER_STEP_OPTIONS})" if args.per_step else "")
    )
    print(
        f"training: SVI, Trace_ELBO, ClippedAdam lr {args.lr:g} clip {CLIP_NORM:g}, "
        f"{args.steps} steps on minibatches of {args.batch}, seeds 0..{args.seeds - 1} (the same "
        "minibatches for every guide at one seed); mean ± s.e. over seeds; nats per real step"
    )
    runs: dict[str, list[Run]] = {name: [] for name in guides}
    for seed in range(args.seeds):
        for name in guides:
            runs[name].append(train_one(name, seed, data, args))
        print(f"  trained every guide on seed {seed}", file=sys.stderr, flush=True)
    print()
    print(
        f"1. Training -ELBO per step at equal steps (the last {args.window} minibatches "
        "before each checkpoint); 'automatic - hand': paired by seed, negative = automatic better"
    )
    print_table(elbo_table(runs, args, "train"), checkpoint_columns(args))
    print()
    print(
        f"2. Held-out -ELBO per step at equal steps ({args.test} sequences, "
        f"{args.particles}-particle Trace_ELBO, guide.eval())"
    )
    print_table(elbo_table(runs, args, "test"), checkpoint_columns(args))
    print()
    print(
        f"3. Budget, final held-out -ELBO per step (step {args.steps}; 'T..2T': the longer "
        "held-out set, lengths never seen in training; n/a: the guide serves one length only), "
        f"median SVI step time (after {WARMUP_STEPS} warm-up steps), training time"
    )
    print_table(summary_table(runs), SUMMARY_COLUMNS)
    print()
    print(
        f"4. Automatic vs hand at step {args.steps}: differences of -ELBO per step (paired by "
        "seed, mean ± s.e.; negative = automatic better), ratio of median step times"
    )
    print_table(ratio_table(runs), RATIO_COLUMNS)
    notes = [
        f"{n} seed {s}: {note}"
        for n, rs in runs.items()
        for s, r in enumerate(rs)
        for note in r.notes
    ]
    for note in notes:
        print(f"note: {note}")
    print(f"\nwall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
