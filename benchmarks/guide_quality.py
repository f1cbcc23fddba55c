"""Does NaMIGuide train at least as well as the ELBO baselines? Held-out -ELBO over seeds.

Run it from the repository root::

    python benchmarks/guide_quality.py                       # every program, 500 steps, 3 seeds
    python benchmarks/guide_quality.py --steps 1000 --seeds 5 --lr 1e-2
    python benchmarks/guide_quality.py --programs vae_reshape sparse_gamma_def
    python benchmarks/guide_quality.py --normalize scale     # NaMIGuide(normalize="scale")
    python benchmarks/guide_quality.py --fast                # 2 seeds, 10 steps (CI smoke run)

The programs are those of the conformance suite (``tests/conformance/programs/``,
registry ``BUILDERS``); every one of them has a hand-written guide. Each is
trained, for each seed ``0 .. --seeds - 1``, with three guides:

* ``hand``: the program's hand-written guide;
* ``NaMI``: ``pgmdl.NaMIGuide(model, **options)``;
* ``AutoNormal``: ``pyro.infer.autoguide.AutoNormal`` on the model with the
  sites it marks for enumeration hidden (``poutine.block``), as Pyro's
  enumeration examples do. Where it cannot run (a discrete latent the model
  does not enumerate, a plate without a size) its cells read ``n/a [k]``.

AutoDelta is left out: it is MAP, its loss is not an ELBO. Training is
exactly that of ``benchmarks/conformance.py`` (its :func:`train_all`, run once
per seed): the program's first training configuration (its batches, cycled;
its ELBO, ``Trace_ELBO`` or ``TraceEnum_ELBO``; its NaMIGuide options), a
fresh program per guide, ``pyro.optim.Adam`` at the same learning rate (the
program's own unless ``--lr`` is given), the same ``--steps`` and batches in
the same order, its own parameter store and random stream started from the
seed, the three guides interleaved in rotating blocks of ``--block`` steps.
The seed sets the random stream (the ELBO's samples, NaMIGuide's networks,
AutoNormal's initial values); the programs build their own networks (the
model's, and the hand guide's encoders) under ``torch.manual_seed(0)``, so
those start from the same weights on every seed.

Measured, per program and guide, over the seeds (``mean ± s.e.``, the standard
error being the sample standard deviation over seeds / sqrt(seeds)):

* ``held-out -ELBO``: after training, with the parameters fixed (no gradient,
  so NaMIGuide's running normalization statistics do not move), the mean over
  the HELD-OUT calls of the ``-ELBO`` estimated with ``--particles`` particles
  (the program's ELBO class and ``max_plate_nesting``, ``num_particles`` set to
  ``--particles``, ``vectorize_particles=False``; each guide's estimate from the
  same random seed). The held-out calls have the structure of the training
  calls (same number, sizes and non-data arguments) with data the program's
  data factory draws afresh from the same population: a different seed where
  the seed does not change the population, else the second half of a larger
  draw (each listed under the table as ``held-out data``). Three programs have
  no such factory (``eight_schools``: a fixed table; ``hmm``: its factory draws
  the emission probabilities from the seed and has lengths for 8 sequences
  only; ``inplace_loc``: data written inline); their cells read ``-`` and they
  are compared on the training -ELBO. A guide with free parameters per data
  point (AutoNormal when the model has a *local* latent: a latent, not
  enumerated, inside a plate of an observed site) has no posterior for new data
  points: its held-out cell reads ``per-point`` and it is compared on the
  training -ELBO. The hand-written guides and NaMIGuide have no per-point
  parameter (amortized encoders, or free parameters for global latents only).
  The model's own networks (decoders, prior networks) are trained with each
  guide, so the held-out -ELBO scores them too: a guide with which the model
  fits a small training set more closely can win on the training -ELBO and
  lose on the held-out one (overfitting, which grows with ``--steps``);
* ``train -ELBO``: the same estimate on the training calls;
* ``step (ms)``: the median wall time of one ``SVI.step`` after the first
  ``--warmup`` steps of a seed (:func:`time.perf_counter`), mean over seeds;
* ``NaMI at least as good``, on the NaMIGuide row: ``yes`` when, against every
  baseline, NaMIGuide's mean loss is at most the best baseline's mean plus two
  standard errors of the difference (``sqrt(se_NaMI^2 + se_best^2)``; with one
  seed, no margin), else ``no (+x nats)``, x the largest excess of NaMIGuide's
  mean over a best baseline's. The comparison is on the held-out -ELBO for the
  baselines that have one, on the training -ELBO for the others (columns
  ``NaMI - best`` and ``best, on``). A baseline that fails on every seed, or
  whose q scores entries the model masks out (its -ELBO is then no bound, as
  ``benchmarks/conformance.py`` checks after training), is not compared with.

A guide that fails or reaches a non-finite loss on a seed (in training or in
the evaluation) is summarized over its other seeds, with a footnote; NaMIGuide
failing on any seed is a ``no``. This is a measurement, not a test: it never
asserts on losses or timings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.compile_scale import machine, print_table  # noqa: E402
from benchmarks.conformance import (  # noqa: E402
    GUIDES,
    NAMI_OPTIONS,
    TITLES,
    Runner,
    enumerated,
    reason,
    setting,
    train_all,
)
from tests.conformance.harness import Call, Program  # noqa: E402
from tests.conformance.programs import (  # noqa: E402
    BUILDERS,
    air_mask,
    bayes_regression,
    capture_recapture,
    cvae_quadrants,
    dmm,
    lda,
    partial_pooling,
    sparse_gamma_def,
    ssvae_m2,
    structured_args,
    vae_reshape,
)

BASELINES = ("hand", "auto")


# --------------------------------------------------------------------------- held-out data


@dataclass(frozen=True)
class HeldOut:
    """How a program's held-out calls are drawn: ``calls(training_calls)``."""

    what: str
    calls: Callable[[Sequence[Call]], list[Call]]


def rows_like(train_calls: Sequence[Call], data: torch.Tensor) -> list[Call]:
    """The training calls with fresh data: call i gets the next rows of ``data``, as
    many as its first argument has; its other arguments are kept."""
    out, start = [], 0
    for args, kwargs in train_calls:
        n = args[0].shape[0]
        out.append(((data[start : start + n], *args[1:]), dict(kwargs)))
        start += n
    if start > data.shape[0]:
        raise ValueError(f"held-out data has {data.shape[0]} rows, the calls need {start}")
    return out


def _ssvae(train_calls: Sequence[Call]) -> list[Call]:
    # digits(n, seed): the class prototypes come from a fixed seed (1000); the
    # training batches are seeds 1 (labelled) and 2 (unlabelled), the example call 3
    out = []
    for args, kwargs in train_calls:
        if len(args) == 2:  # labelled: (xs, ys)
            out.append((ssvae_m2.digits(args[0].shape[0], seed=4), dict(kwargs)))
        else:
            out.append(((ssvae_m2.digits(args[0].shape[0], seed=5)[0],), dict(kwargs)))
    return out


def _lda(train_calls: Sequence[Call]) -> list[Call]:
    # corpus() draws the topics, then each document's topic proportions, from the
    # global RNG that build() seeds with 0: the same seed and twice the documents
    # give the same topics, and the second half of the documents are new ones
    (data, args), kwargs = train_calls[0]
    twice = argparse.Namespace(**{**vars(args), "num_docs": 2 * args.num_docs})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        words = lda.corpus(twice, seed=1)[:, args.num_docs :].contiguous()
    return [((words, args), dict(kwargs)) for _ in train_calls]


def _fresh(factory: Callable[[int], tuple]) -> Callable[[Sequence[Call]], list[Call]]:
    """Each training call's data arguments replaced by ``factory(i)`` (i = its index)."""

    def calls(train_calls: Sequence[Call]) -> list[Call]:
        out = []
        for i, (args, kwargs) in enumerate(train_calls):
            new = factory(i)
            out.append(((*new, *args[len(new) :]), dict(kwargs)))
        return out

    return calls


HELD_OUT: dict[str, HeldOut] = {
    "vae_reshape": HeldOut(
        "images(128)[64:]: new images of the training set's two prototypes",
        lambda calls: rows_like(calls, vae_reshape.images(128)[64:]),
    ),
    "ssvae_m2_labelled": HeldOut(
        "digits(32, seed=4) labelled, digits(32, seed=5) unlabelled (training: seeds 1, 2)",
        _ssvae,
    ),
    "ssvae_m2_unlabelled": HeldOut(
        "digits(32, seed=4) labelled, digits(32, seed=5) unlabelled (training: seeds 1, 2)",
        _ssvae,
    ),
    "dmm": HeldOut(
        "mini_batch(2), mini_batch(3) (training: 0, 1)",
        _fresh(lambda i: dmm.mini_batch(2 + i)),
    ),
    "lda": HeldOut(
        "documents 10-19 of corpus(20 documents, seed=1): the training topics, new documents",
        _lda,
    ),
    "sparse_gamma_def": HeldOut(
        "counts(80)[40:]: new rows of the training set's rates",
        lambda calls: rows_like(calls, sparse_gamma_def.counts(80)[40:]),
    ),
    "capture_recapture": HeldOut(
        "history(seed=1) (training: seed 0)",
        _fresh(lambda i: (capture_recapture.history(seed=1 + i),)),
    ),
    "cvae_quadrants": HeldOut(
        "images(64, seed=1) (training: seed 0)",
        lambda calls: rows_like(calls, cvae_quadrants.images(64, seed=1)),
    ),
    "bayes_regression": HeldOut(
        "dataset(50, seed=1) (training: seed 0; same coefficients)",
        _fresh(lambda i: bayes_regression.dataset(50, seed=1 + i)),
    ),
    "partial_pooling": HeldOut(
        "season(18, seed=1): 18 new players (training: seed 0)",
        _fresh(lambda i: partial_pooling.season(18, seed=1 + i)),
    ),
    "air_mask": HeldOut(
        "scenes(64, seed=1) (training: seed 0)",
        lambda calls: rows_like(calls, air_mask.scenes(64, seed=1)),
    ),
    "structured_args": HeldOut(
        "make_batch(32, 2), make_batch(32, 3) (training: 0, 1; each batch draws its "
        "own class means)",
        _fresh(lambda i: (structured_args.make_batch(32, 2 + i),)),
    ),
}
"""Held-out data per program; a program not listed has none (compared on training)."""


def local_latents(program: Program) -> list[str]:
    """Latents (not enumerated) inside a plate of an observed site: per data point."""
    args, kwargs = program.call
    with pyro.get_param_store().scope(), torch.no_grad():
        trace = poutine.trace(program.model).get_trace(*args, **kwargs)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]
    data_plates = {
        f.name for s in sites if s["is_observed"] for f in s["cond_indep_stack"] if f.vectorized
    }
    return sorted(
        s["name"]
        for s in sites
        if not s["is_observed"]
        and not enumerated(s)
        and any(f.vectorized and f.name in data_plates for f in s["cond_indep_stack"])
    )


# --------------------------------------------------------------------------- measurement


@dataclass
class Scores:
    """One guide's measurements on one program, a list entry per successful seed."""

    heldout: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (seed, why)
    unmasked: set[str] = field(default_factory=set)


def neg_elbo(runner: Runner, elbo, calls: Sequence[Call], seed: int) -> float:
    """The mean over ``calls`` of ``elbo.loss`` for the runner's trained guide."""
    with runner.context(), torch.no_grad():
        pyro.set_rng_seed(seed)
        losses = [elbo.loss(runner.svi.model, runner.svi.guide, *a, **k) for a, k in calls]
    return sum(losses) / len(losses)


def measure(name: str, args: argparse.Namespace) -> tuple[dict[str, Scores], dict]:
    """Every guide trained and evaluated on every seed."""
    with pyro.get_param_store().scope():
        program = BUILDERS[name]()
        train = setting(program)
        local = local_latents(program)
    held = HELD_OUT.get(name)
    heldout_calls = held.calls(train.calls) if held is not None else None
    scores = {kind: Scores() for kind in GUIDES}
    for seed in range(args.seeds):
        runners = train_all(name, argparse.Namespace(**{**vars(args), "seed": seed}))
        for kind, runner in runners.items():
            s = scores[kind]
            if runner.failure is not None:
                s.failures.append((seed, runner.failure))
                continue
            s.unmasked.update(runner.unmasked)
            elbo = train.elbo()
            assert not elbo.vectorize_particles
            elbo.num_particles = args.particles
            try:
                train_loss = neg_elbo(runner, elbo, runner.calls, 10_000 + seed)
                held_loss = None
                if heldout_calls is not None and not (kind == "auto" and local):
                    held_loss = neg_elbo(runner, elbo, heldout_calls, 20_000 + seed)
            except Exception as err:  # reported in the table
                s.failures.append((seed, f"evaluation: {reason(err)}"))
                continue
            values = [train_loss] + ([] if held_loss is None else [held_loss])
            if not all(math.isfinite(v) for v in values):
                s.failures.append((seed, f"evaluation: non-finite -ELBO {values}"))
                continue
            s.train.append(train_loss)
            if held_loss is not None:
                s.heldout.append(held_loss)
            s.ms.append(runner.step_time(args.warmup) * 1e3)
    info = {
        "elbo": type(train.elbo()).__name__.replace("_ELBO", ""),
        "lr": args.lr if args.lr is not None else train.lr,
        "local": local,
        "held": held,
        "config": train.config,
    }
    return scores, info


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (0 with one value)."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


def cell(values: Sequence[float]) -> str:
    mean, se = mean_se(values)
    return f"{mean:.2f} ± {se:.2f}" if len(values) > 1 else f"{mean:.2f}"


@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: nothing to compare with
    text: str
    margin: str = ""
    against: str = ""


def verdict(scores: dict[str, Scores], seeds: int, has_heldout: bool) -> Verdict:
    """NaMIGuide against the best baseline on each metric (see the module docstring)."""
    nami = scores["nami"]
    if nami.failures:
        return Verdict(False, f"no (failed on {len(nami.failures)}/{seeds} seeds)")
    if nami.unmasked:
        return Verdict(False, "no (not a bound)")
    by_metric: dict[str, list[tuple[str, list[float]]]] = {}
    for kind in BASELINES:
        s = scores[kind]
        if not s.train or s.unmasked:
            continue
        metric = "held-out" if has_heldout and s.heldout else "train"
        by_metric.setdefault(metric, []).append((kind, s.heldout if s.heldout else s.train))
    if not by_metric:
        return Verdict(None, "- (no baseline)")
    worst: tuple[float, str, str, bool] | None = None  # (excess, margin, against, ok)
    for metric, candidates in by_metric.items():
        kind, values = min(candidates, key=lambda c: statistics.fmean(c[1]))
        mine = nami.heldout if metric == "held-out" else nami.train
        (m_n, se_n), (m_b, se_b) = mean_se(mine), mean_se(values)
        diff, se = m_n - m_b, math.hypot(se_n, se_b)
        ok = diff <= 2 * se
        entry = (diff, f"{diff:+.2f} ± {se:.2f}", f"{TITLES[kind]}, {metric}", ok)
        if worst is None or (not ok, diff) > (not worst[3], worst[0]):
            worst = entry
    diff, margin, against, ok = worst
    return Verdict(ok, "yes" if ok else f"no (+{diff:.2f} nats)", margin, against)


# --------------------------------------------------------------------------- report


COLUMNS = [
    ("program", "program"),
    ("guide", "guide"),
    ("elbo", "ELBO"),
    ("lr", "lr"),
    ("heldout", "held-out -ELBO"),
    ("train", "train -ELBO"),
    ("ms", "step (ms)"),
    ("verdict", "NaMI at least as good"),
    ("margin", "NaMI - best"),
    ("against", "best, on"),
]


def failures(entries: Sequence[tuple[int, str]]) -> str:
    """``seeds 0, 1: why; seed 2: other`` (seeds with the same failure grouped)."""
    grouped: dict[str, list[int]] = {}
    for seed, why in entries:
        grouped.setdefault(why, []).append(seed)
    return "; ".join(
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {why}"
        for why, seeds in grouped.items()
    )


def format_rows(
    name: str,
    scores: dict[str, Scores],
    info: dict,
    args: argparse.Namespace,
    notes: list[str],
) -> tuple[list[dict[str, str]], Verdict]:
    """Three rows (hand, NaMI, AutoNormal); what is ``n/a`` is explained in ``notes``."""

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    has_heldout = info["held"] is not None
    v = verdict(scores, args.seeds, has_heldout)
    rows = []
    for kind in ("hand", "nami", "auto"):
        s = scores[kind]
        row = {
            "program": name,
            "guide": TITLES[kind],
            "elbo": info["elbo"],
            "lr": f"{info['lr']:g}",
            "verdict": "",
            "margin": "",
            "against": "",
        }
        if not s.train:
            label = "n/a " + note(f"{name}, {TITLES[kind]}: {failures(s.failures)}")
            row["heldout"] = row["train"] = row["ms"] = label
        else:
            mark = ""
            if s.failures:
                why = failures(s.failures)
                mark = f" ({len(s.train)}/{args.seeds}) " + note(f"{name}, {TITLES[kind]}: {why}")
            if s.unmasked:
                mark += " " + note(
                    f"{name}, {TITLES[kind]}: q scores entries of {', '.join(sorted(s.unmasked))} "
                    "that the model masks out: its -ELBO is not a bound (not compared)"
                )
            row["train"] = cell(s.train) + mark
            row["ms"] = f"{statistics.fmean(s.ms):.2f}"
            if not has_heldout:
                row["heldout"] = "-"
            elif s.heldout:
                row["heldout"] = cell(s.heldout) + mark
            else:
                row["heldout"] = "per-point " + note(
                    f"{name}, {TITLES[kind]}: free parameters per data point for the local "
                    f"latent sites ({', '.join(info['local'])}): no held-out loss; compared on "
                    "the training -ELBO"
                )
        if kind == "nami":
            row["verdict"], row["margin"], row["against"] = v.text, v.margin, v.against
        rows.append(row)
    return rows, v


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="NaMIGuide vs the ELBO baselines (hand-written guide, AutoNormal) on the "
        "conformance programs: held-out -ELBO over seeds."
    )
    parser.add_argument("--steps", type=int, default=500, help="SVI steps per guide and seed")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: each program's)"
    )
    parser.add_argument(
        "--programs", nargs="+", choices=list(BUILDERS), default=list(BUILDERS), metavar="NAME"
    )
    parser.add_argument(
        "--particles", type=int, default=20, help="particles of the final -ELBO estimates"
    )
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the timing")
    parser.add_argument("--block", type=int, default=10, help="steps per interleaved block")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--normalize",
        choices=("standardize", "scale"),
        default=None,
        help="NaMIGuide(normalize=...) for every program (default: NaMIGuide's)",
    )
    parser.add_argument(
        "--fast", action="store_true", help="2 seeds, 10 steps, 2 particles (a CI smoke run)"
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.seeds, args.steps, args.particles, args.warmup, args.block = 2, 10, 2, 2, 5
    if min(args.steps, args.seeds, args.particles, args.block) < 1 or args.warmup < 0:
        parser.error("--steps, --seeds, --particles and --block must be at least 1")
    if args.warmup >= args.steps:
        parser.error("--warmup must be below --steps")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.normalize is not None:
        NAMI_OPTIONS["normalize"] = args.normalize
    start = time.perf_counter()
    print(machine())
    normalize = args.normalize or "standardize (NaMIGuide's default)"
    print(f"NaMIGuide(normalize={normalize!r})")
    lr = "each program's (1e-2 or 5e-2)" if args.lr is None else f"{args.lr:g}"
    print(
        f"{args.steps} SVI steps per guide and seed, seeds 0..{args.seeds - 1}, Adam lr {lr}; "
        f"-ELBO: {args.particles}-particle estimate after training, mean over the calls "
        f"(held-out or training); mean ± s.e. over seeds; step: median after {args.warmup} "
        f"warm-up steps, mean over seeds, guides interleaved in rotating blocks of {args.block}"
    )
    print()
    rows, notes, verdicts = [], [], {}
    for name in args.programs:
        t0 = time.perf_counter()
        scores, info = measure(name, args)
        program_rows, verdicts[name] = format_rows(name, scores, info, args, notes)
        rows.extend(program_rows)
        print(
            f"  measured {name} ({info['config']}) in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    print_table(rows, COLUMNS)
    if notes:
        print()
        for i, text in enumerate(notes, 1):
            print(f"[{i}] {text}")
    print("\nheld-out data (factories of tests/conformance/programs/):")
    for name in args.programs:
        held = HELD_OUT.get(name)
        print(f"  {name}: {held.what if held else 'none (compared on the training -ELBO)'}")
    good = [n for n, v in verdicts.items() if v.ok]
    bad = [n for n, v in verdicts.items() if v.ok is False]
    print(
        f"\nNaMIGuide at least as good as the best baseline within noise on {len(good)} of "
        f"{len(verdicts)} programs" + (f"; not on: {', '.join(bad)}" if bad else "")
    )
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
