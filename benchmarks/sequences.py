"""NaMIGuide on sequence models (``pyro.markov`` programs): per step and shared across steps.

Run it from the repository root::

    python benchmarks/sequences.py                     # T 5 10 20 / 10 25 50 100, 3 seeds
    python benchmarks/sequences.py --seeds 2 --steps 1000
    python benchmarks/sequences.py --threads 2
    python benchmarks/sequences.py --fast              # T 5 / 5 10, 20 steps (CI smoke run)

Issue 19 asks for NaMI guides of ``pyro.markov`` programs of any length. By
default :class:`pgmdl.NaMIGuide` shares one conditional across the steps of
every latent series of a loop that allows it (``time_shared="auto"``:
:mod:`pgmdl.guides.sequence`; a full-covariance Gaussian for a state of 2 to
16 dimensions); ``time_shared=False`` builds the unrolled guide, one network
per step, working at the length it was built for only. The test bed is
:class:`pgmdl.datasets.state_space.LinearGaussianSSM` with its defaults
(SYNTHETIC data: 2-D states, a damped rotation, 2-D observations), whose
log-evidence is exact by the Kalman filter. Five guides:

* ``NaMI min-fill, per step``: ``pgmdl.NaMIGuide(ssm.model, time_shared=False)``
  (default elimination order, one network per step);
* ``NaMI reverse, per step``: ``NaMIGuide(ssm.model, order="reverse",
  time_shared=False)`` (the guide tends to follow the model's direction);
* ``NaMI min-fill, shared (default)``: ``NaMIGuide(ssm.model)``: the same
  structure, one conditional for every step of ``z_t`` (a forward GRU and a
  linear recurrence summarize ``x_{0..t}``);
* ``NaMI reverse, shared``: ``NaMIGuide(ssm.model, order="reverse")``
  (a backward GRU and a linear recurrence summarize ``x_{t..T}``). A shared
  guide's parameters do not grow with T, its networks read O(1) inputs per
  step (the "parent reads" column counts, for it, the lagged latent, the
  summary and the step's own observation), and it plans the loop's first
  steps only (compile, invert and plan happen inside its ``setup``);
* ``mean-field``: ``NaMIGuide(ssm.model, structure="mean-field", time_shared=False)``, each
  ``z_t`` conditioned on the observations it depends on in the inverse and on
  no other latent (not faithful: a baseline).

1. **ELBO gap to the exact evidence.** For each T of ``--lengths`` (default 5,
   10, 20), ``--train`` sequences of length T (drawn with
   ``torch.Generator().manual_seed(1000 + T)``) train each guide with
   ``pyro.infer.SVI``, ``Trace_ELBO`` and ``pyro.optim.Adam`` at lr 1e-2 for
   ``--steps`` full-batch steps, the model having no parameter (the
   evidence is that of the true model). Then, on ``--test`` held-out
   sequences of the same T (seed ``2000 + T``), with no gradient and
   ``guide.eval()`` (NaMIGuide's running normalization statistics frozen):
   the ``-ELBO`` per sequence estimated with ``--particles`` particles
   (``Trace_ELBO(num_particles=...)``, not vectorized), the exact
   ``-log p(x)`` per sequence (``ssm.log_evidence``), and the gap
   ``(-ELBO) - (-log p(x))``, per sequence and per time step (nats; it is
   ``KL(q || p(z | x))`` plus Monte Carlo noise, so never negative in
   expectation). The data are the same for every seed; seed ``s`` (``0 ..
   --seeds - 1``) sets Pyro's random stream before the guide is built (its
   networks' initial weights, the ELBO's samples). Reported: mean ± s.e. over
   the seeds (the s.e. being the sample standard deviation / sqrt(seeds)),
   each guide's gap as a multiple of ``NaMI min-fill, per step``'s at the same T, the
   median ``SVI.step`` time and the training time (one seed).
2. **Cost vs T.** For each T of ``--cost-lengths`` (default 10, 25, 50, 100),
   on ``--cost-batch`` sequences, each guide's: wall time
   (:func:`time.perf_counter`, one run each, after a warm-up of every stage
   on T = 2) of ``pgmdl.compile(ssm.model, x)``, ``pgmdl.invert(graph,
   order)`` and ``pgmdl.guides.plan.plan_guide(graph, inverse, structure)``,
   each separately; of ``guide.setup(x)`` (which does all three again and
   builds the networks); the number of parent reads of the guide,
   ``sum(len(s.parents) for s in guide.plan.sites)``, and that number / T;
   the number of guide parameters; the median of ``--cost-steps`` SVI
   step times after 3 warm-up steps, and that / T; and the memory one step
   holds for its backward pass (the bytes of the tensors autograd saves
   while computing ``Trace_ELBO().differentiable_loss``). When a guide's whole
   measurement at some T takes more than ``--too-slow`` seconds (60), its
   rows at the larger T read ``not run (too slow)``. The NaMI inverse of the
   unrolled chain is exact but not time-shared: ``z_t`` reads ``x_0 .. x_t``
   and ``z_{t+1}`` (min-fill), so a guide makes ``T(T+1)/2 + T - 1`` parent
   reads (the mean-field guide ``T^2``) where a time-shared guide would make
   O(T), and its parameters grow alike (each network's input width grows
   with t).
3. **Lengths.** A guide built (``setup``) on 16 sequences of T = 8 is
   called on data of T = 6 and T = 10; what happens is printed (an
   exception's type and first line; what the guide samples and Pyro's
   warnings under ``Trace_ELBO`` otherwise). A guide with one network per
   step raises a ``GuideError`` at both (it used to run at T = 10, the model
   drawing ``z_8``, ``z_9`` from its prior); the time-shared guide
   (``time_shared=True``) samples every step at both. For comparison, one
   SVI step of a guide built on sequences padded to T = 8 with
   ``ssm.model(x, mask)`` (lengths 3 .. 8).
4. **Any length.** The time-shared reverse guide trained on minibatches
   whose length varies (T drawn in 5 .. 15 at every step, each sequence's
   length in T-4 .. T, padded, with the mask), then scored against the
   Kalman evidence at T = 5, 10, 15 (lengths it saw) and 40, 100 (longer).

This is a measurement, not a test: it never asserts on losses or timings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pgmdl  # noqa: E402
from benchmarks.compile_scale import machine, print_table  # noqa: E402
from pgmdl.datasets.state_space import LinearGaussianSSM  # noqa: E402
from pgmdl.guides.plan import plan_guide  # noqa: E402

LR = 1e-2
GUIDES: dict[str, dict[str, Any]] = {
    "NaMI min-fill, per step": {"time_shared": False},
    "NaMI reverse, per step": {"order": "reverse", "time_shared": False},
    "NaMI min-fill, shared (default)": {},
    "NaMI reverse, shared": {"order": "reverse"},
    "mean-field": {"structure": "mean-field", "time_shared": False},
}
REFERENCE = "NaMI min-fill, per step"
BUILT_LENGTH = 8  # part 3: the length the guide is built for
CALLED_LENGTHS = (6, 10)  # part 3: the lengths it is called with
WARMUP_STEPS = 3  # part 2: SVI steps left out of the step timing


def _svi(ssm: LinearGaussianSSM, guide: pgmdl.NaMIGuide) -> SVI:
    return SVI(ssm.model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def _pm(values: list[float], digits: int) -> str:
    mean, se = _mean_se(values)
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


# --------------------------------------------------------------------------- 1. ELBO gap


@dataclass
class GapRun:
    """One guide trained on one seed at one length."""

    neg_elbo: float  # held-out -ELBO per sequence
    step_ms: float  # median SVI step
    train_s: float  # training wall time


def train_and_score(
    ssm: LinearGaussianSSM,
    options: dict[str, Any],
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    seed: int,
    args: argparse.Namespace,
) -> GapRun:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = pgmdl.NaMIGuide(ssm.model, **options)
    svi = _svi(ssm, guide)
    times = []
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        svi.step(x_train)
        times.append(time.perf_counter() - t0)
    train_s = time.perf_counter() - start
    guide.eval()
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=args.particles).loss(ssm.model, guide, x_test)
    guide.train()
    return GapRun(loss / x_test.shape[0], 1e3 * statistics.median(times), train_s)


GAP_COLUMNS = [
    ("T", "T"),
    ("guide", "guide"),
    ("neg_elbo", "held-out -ELBO/seq"),
    ("exact", "exact -log p(x)/seq"),
    ("gap_seq", "gap/seq (nats)"),
    ("gap_step", "gap/step (nats)"),
    ("ratio", "gap vs min-fill"),
    ("step", "step (ms)"),
    ("train", "train (s)"),
]


def elbo_gap(ssm: LinearGaussianSSM, args: argparse.Namespace) -> list[dict[str, str]]:
    rows = []
    for steps in args.lengths:
        x_train = ssm.sample(args.train, steps, torch.Generator().manual_seed(1000 + steps)).x
        x_test = ssm.sample(args.test, steps, torch.Generator().manual_seed(2000 + steps)).x
        exact = -ssm.log_evidence(x_test).mean().item()
        runs = {
            name: [
                train_and_score(ssm, options, x_train, x_test, seed, args)
                for seed in range(args.seeds)
            ]
            for name, options in GUIDES.items()
        }
        reference = statistics.fmean(r.neg_elbo - exact for r in runs[REFERENCE])
        for name, guide_runs in runs.items():
            gaps = [r.neg_elbo - exact for r in guide_runs]
            ratio = statistics.fmean(gaps) / reference if reference > 0 else math.nan
            rows.append(
                {
                    "T": str(steps),
                    "guide": name,
                    "neg_elbo": _pm([r.neg_elbo for r in guide_runs], 2),
                    "exact": f"{exact:.2f}",
                    "gap_seq": _pm(gaps, 3),
                    "gap_step": _pm([g / steps for g in gaps], 4),
                    "ratio": f"{ratio:.2f}x",
                    "step": f"{statistics.fmean(r.step_ms for r in guide_runs):.1f}",
                    "train": f"{statistics.fmean(r.train_s for r in guide_runs):.1f}",
                }
            )
        print(f"  measured the ELBO gap at T = {steps}", file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- 2. cost vs T


COST_COLUMNS = [
    ("T", "T"),
    ("guide", "guide"),
    ("compile", "compile (s)"),
    ("invert", "invert (s)"),
    ("plan", "plan_guide (s)"),
    ("setup", "guide.setup (s)"),
    ("reads", "parent reads"),
    ("reads_per_T", "reads/T"),
    ("params", "guide params"),
    ("step", "SVI step (ms)"),
    ("step_per_T", "step/T (ms)"),
    ("saved", "saved for backward (MiB)"),
]


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure_cost(
    ssm: LinearGaussianSSM, options: dict[str, Any], steps: int, args: argparse.Namespace
) -> dict[str, Any]:
    order = options.get("order", "min-fill")
    structure = options.get("structure", "nami")
    x = ssm.sample(args.cost_batch, steps, torch.Generator().manual_seed(3000 + steps)).x
    shared = bool(options.get("time_shared"))
    t_compile = t_invert = t_plan = None
    if not shared:  # a time-shared guide plans a prototype of the loop: all in its set-up
        graph, t_compile = _timed(lambda: pgmdl.compile(ssm.model, x))
        inverse, t_invert = _timed(lambda: pgmdl.invert(graph, order=order))
        _, t_plan = _timed(lambda: plan_guide(graph, inverse, structure=structure))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pgmdl.NaMIGuide(ssm.model, **options)
    _, t_setup = _timed(lambda: guide.setup(x))
    svi = _svi(ssm, guide)
    times = []
    for i in range(WARMUP_STEPS + args.cost_steps):
        _, t = _timed(lambda: svi.step(x))
        if i >= WARMUP_STEPS:
            times.append(t)
    if shared:  # per step: the lagged latents read, the summary, the step's own inputs
        unrolled = guide.sequence.unroll_groups(steps).values()
        reads = sum(2 + sum(p is not None for p in roles.lagged.values()) for roles, _ in unrolled)
    else:
        reads = sum(len(s.parents) for s in guide.plan.sites)
    return {
        "compile": t_compile,
        "invert": t_invert,
        "plan": t_plan,
        "setup": t_setup,
        "reads": reads,
        "params": sum(p.numel() for p in guide.parameters()),
        "step": statistics.median(times),
        "saved": _saved_bytes(lambda: Trace_ELBO().differentiable_loss(ssm.model, guide, x)),
    }


def _saved_bytes(loss: Any) -> int:
    """Bytes of the tensors autograd saves to differentiate ``loss()``: the memory
    one SVI step holds for its backward pass."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss()
    return total


def cost_vs_length(ssm: LinearGaussianSSM, args: argparse.Namespace) -> list[dict[str, str]]:
    for options in GUIDES.values():  # warm every stage up on a short chain
        measure_cost(ssm, options, 2, argparse.Namespace(**{**vars(args), "cost_steps": 1}))
    rows, too_slow = [], set()
    for steps in args.cost_lengths:
        for name, options in GUIDES.items():
            row = {"T": str(steps), "guide": name}
            if name in too_slow:
                rows.append({**row, **{key: "" for key, _ in COST_COLUMNS[2:]}})
                rows[-1]["compile"] = "not run (too slow)"
                continue
            t0 = time.perf_counter()
            cost = measure_cost(ssm, options, steps, args)
            total = time.perf_counter() - t0
            if total > args.too_slow:
                too_slow.add(name)
            rows.append(
                {
                    **row,
                    "compile": "in set-up" if cost["compile"] is None else f"{cost['compile']:.3f}",
                    "invert": "in set-up" if cost["invert"] is None else f"{cost['invert']:.3f}",
                    "plan": "in set-up" if cost["plan"] is None else f"{cost['plan']:.4f}",
                    "setup": f"{cost['setup']:.3f}",
                    "reads": str(cost["reads"]),
                    "reads_per_T": f"{cost['reads'] / steps:.1f}",
                    "params": str(cost["params"]),
                    "step": f"{1e3 * cost['step']:.1f}",
                    "step_per_T": f"{1e3 * cost['step'] / steps:.2f}",
                    "saved": f"{cost['saved'] / 2**20:.1f}",
                }
            )
        print(f"  measured the cost at T = {steps}", file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- 3. lengths


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def known_limits(ssm: LinearGaussianSSM) -> list[dict[str, str]]:
    generator = torch.Generator().manual_seed(4000)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x_built = ssm.sample(16, BUILT_LENGTH, generator).x
    guide = pgmdl.NaMIGuide(ssm.model, time_shared=False).setup(x_built)
    rows = []
    for steps in CALLED_LENGTHS:
        x = ssm.sample(16, steps, generator).x
        row = {"case": f"built at T={BUILT_LENGTH}, called with T={steps}"}
        try:
            with torch.no_grad():
                sampled = [name for name in guide(x) if name.startswith("z_")]
            with warnings.catch_warnings(record=True) as caught, torch.no_grad():
                warnings.simplefilter("always")
                Trace_ELBO().loss(ssm.model, guide, x)
        except Exception as err:  # noqa: BLE001 - what happens is what is reported
            row["what"] = _first_line(err)
        else:
            said = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
            row["what"] = (
                f"no error: the guide samples {len(sampled)} of {steps} z sites "
                f"(reads x_0..x_{BUILT_LENGTH - 1} only)"
                + (f"; Pyro warns {'; '.join(said)}" if said else "; no warning")
            )
        rows.append(row)
    pyro.clear_param_store()
    shared = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True).setup(x_built)
    for steps in CALLED_LENGTHS:
        x = ssm.sample(16, steps, generator).x
        row = {"case": f"time-shared, built at T={BUILT_LENGTH}, called with T={steps}"}
        try:
            with torch.no_grad():
                sampled = [name for name in shared(x) if name.startswith("z_")]
                loss = Trace_ELBO().loss(ssm.model, shared, x)
            row["what"] = (
                f"works: the guide samples {len(sampled)} of {steps} z sites, "
                f"loss finite: {math.isfinite(loss)}"
            )
        except Exception as err:  # noqa: BLE001
            row["what"] = _first_line(err)
        rows.append(row)
    padded = ssm.sample(16, BUILT_LENGTH, generator, min_length=3)
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(ssm.model, time_shared=False)
    row = {"case": f"padded to T={BUILT_LENGTH} with mask (lengths 3..{BUILT_LENGTH})"}
    try:
        loss = _svi(ssm, guide).step(padded.x, padded.mask)
        row["what"] = f"works: one SVI step, loss {loss:.1f} (finite: {math.isfinite(loss)})"
    except Exception as err:  # noqa: BLE001
        row["what"] = _first_line(err)
    rows.append(row)
    return rows


# --------------------------------------------------------------------------- 4. any length


def any_length(ssm: LinearGaussianSSM, args: argparse.Namespace) -> list[dict[str, str]]:
    """The time-shared reverse guide trained on minibatches of 32 sequences whose
    length varies (T drawn in 5..15 per step, lengths T-4..T, padded, with the
    mask), then scored at lengths it saw and at longer ones."""
    generator = torch.Generator().manual_seed(5000)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True)
    optim = pyro.optim.ClippedAdam({"lr": LR, "lrd": 0.1 ** (1 / args.any_length_steps)})
    svi = SVI(ssm.model, guide, optim, Trace_ELBO())
    start = time.perf_counter()
    for _ in range(args.any_length_steps):
        steps = int(torch.randint(5, 16, (), generator=generator))
        batch = ssm.sample(32, steps, generator, min_length=max(1, steps - 4))
        svi.step(batch.x, batch.mask)
    seconds = time.perf_counter() - start
    guide.eval()
    rows = []
    for steps in (5, 10, 15, 40, 100):
        test = ssm.sample(args.test, steps, torch.Generator().manual_seed(6000 + steps))
        with torch.no_grad():
            loss = Trace_ELBO(num_particles=args.particles, vectorize_particles=False).loss(
                ssm.model, guide, test.x, test.mask
            )
        exact = -ssm.log_evidence(test.x).sum().item()
        rows.append(
            {
                "T": str(steps),
                "seen": "yes" if steps <= 15 else "no (longer)",
                "gap": f"{(loss - exact) / (args.test * steps):.3f}",
                "train": f"{seconds:.0f}",
            }
        )
    return rows


ANY_LENGTH_COLUMNS = [
    ("T", "T"),
    ("seen", "length seen in training"),
    ("gap", "gap/step (nats)"),
    ("train", "training (s)"),
]


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="NaMIGuide on a linear-Gaussian state-space model: ELBO gap to the exact "
        "(Kalman) evidence, cost vs sequence length, lengths, any length."
    )
    parser.add_argument("--steps", type=int, default=400, help="SVI steps per guide and seed")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[5, 10, 20], help="T of the ELBO gap"
    )
    parser.add_argument(
        "--cost-lengths", type=int, nargs="+", default=[10, 25, 50, 100], help="T of the cost"
    )
    parser.add_argument("--train", type=int, default=128, help="training sequences")
    parser.add_argument("--test", type=int, default=256, help="held-out sequences")
    parser.add_argument("--particles", type=int, default=100, help="particles of the -ELBO")
    parser.add_argument("--cost-batch", type=int, default=64, help="sequences of the cost runs")
    parser.add_argument("--cost-steps", type=int, default=5, help="timed SVI steps (cost)")
    parser.add_argument(
        "--too-slow", type=float, default=60.0, help="seconds after which T stops growing"
    )
    parser.add_argument("--any-length-steps", type=int, default=4000, help="SVI steps of section 4")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="T 5 (gap) and 5 10 (cost), 20 steps, 2 seeds, 10 particles (a CI smoke run)",
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.lengths, args.cost_lengths = [5], [5, 10]
        args.steps, args.seeds, args.particles = 20, 2, 10
        args.train, args.test, args.cost_batch, args.cost_steps = 32, 64, 32, 3
        args.any_length_steps = 10
    positive = ("steps", "seeds", "threads", "train", "test", "particles", "cost_batch")
    if min(getattr(args, name) for name in (*positive, "cost_steps")) < 1:
        parser.error("--steps, --seeds, --threads and the sizes must be at least 1")
    if min(args.lengths + args.cost_lengths) < 1:
        parser.error("lengths must be at least 1")
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
    ssm = LinearGaussianSSM()
    print(machine())
    print(f"threads: torch.set_num_threads({args.threads})")
    print(
        "data: LinearGaussianSSM() (SYNTHETIC: d_z = d_x = 2, damped rotation rho 0.95, "
        "q 0.3, r 0.5, s0 1); exact -log p(x) by the Kalman filter"
    )
    print(f"guides: {', '.join(f'{n} = NaMIGuide(ssm.model, **{o})' for n, o in GUIDES.items())}")
    print()
    print(
        f"1. ELBO gap to the exact evidence: {args.train} training sequences, {args.steps} "
        f"full-batch SVI steps (Trace_ELBO, Adam lr {LR:g}), seeds 0..{args.seeds - 1}; "
        f"held-out: {args.test} sequences, {args.particles}-particle -ELBO, guide.eval(); "
        "mean ± s.e. over seeds; gap vs min-fill: mean gap / min-fill's mean gap; step: median, "
        "mean over seeds; train: mean over seeds"
    )
    print_table(elbo_gap(ssm, args), GAP_COLUMNS)
    print()
    print(
        f"2. Cost vs T: {args.cost_batch} sequences; one timed run of each stage; SVI step: "
        f"median of {args.cost_steps} after {WARMUP_STEPS} warm-up steps; a guide whose whole "
        f"measurement takes over {args.too_slow:g} s is not run at larger T. Parent reads: "
        "NaMI T(T+1)/2 + T - 1, mean-field T^2 (a time-shared guide: O(T))"
    )
    print_table(cost_vs_length(ssm, args), COST_COLUMNS)
    print()
    print(
        "3. Lengths: a guide with one network per step works at the length it was built "
        "for only; a time-shared guide at any length"
    )
    for row in known_limits(ssm):
        print(f"- {row['case']}: {row['what']}")
    print()
    print(
        f"4. Any length: NaMI reverse, shared, {args.any_length_steps} SVI steps on "
        "minibatches of 32 padded sequences (T drawn in 5..15 per step, lengths T-4..T, "
        f"mask), Adam lr {LR:g} decayed 10x; held-out {args.test} sequences per T, "
        f"{args.particles}-particle -ELBO"
    )
    print_table(any_length(ssm, args), ANY_LENGTH_COLUMNS)
    print(f"\nwall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
