"""NaMIGuide against each conformance program's hand-written guide and AutoNormal.

Run it from the repository root::

    python benchmarks/conformance.py                        # every program, 500 steps
    python benchmarks/conformance.py --steps 2000 --lr 1e-2
    python benchmarks/conformance.py --programs hmm dmm lda
    python benchmarks/conformance.py --fast                 # 20 steps (CI smoke run)

The programs are those of the conformance suite (``tests/conformance/programs/``,
registry ``BUILDERS``): Pyro programs written the way Pyro users write them
(image VAE with a reshape, semi-supervised M2, DMM, LDA, sparse gamma DEF,
HMM, eight schools, capture-recapture, CVAE, Bayesian regression, partial
pooling, AIR-like, ...), each with its hand-written guide and its data. A
program is trained as its FIRST training configuration says (its batches,
cycled; its ELBO, ``Trace_ELBO`` or ``TraceEnum_ELBO``; the NaMIGuide options
it passes; its learning rate unless ``--lr`` is given); a program without one
(``ssvae_m2_unlabelled``) as its ``hand_train`` says (its ELBO, its guide, its
batches), NaMIGuide then enumerating its discrete sites
(``enumerate="parallel"``) when that ELBO is ``TraceEnum_ELBO``, at the
harness's default learning rate.

One row per program:

* ``compile``: :func:`pgmdl.compile` on the program's example call, and
  ``NaMI setup``: ``pgmdl.NaMIGuide(model, **options).setup(*args, **kwargs)``
  on the same call (compile, invert, plan, build the networks); each the best
  (min) of ``--repeats`` runs after one warm-up compile, in a throw-away
  parameter store;
* ``loss``: the mean loss (-ELBO estimate, one particle) of the last 10% of
  ``--steps`` SVI steps for three guides: the program's hand-written guide
  (``hand``), ``pgmdl.NaMIGuide(model, **options)`` (``NaMI``) and
  ``pyro.infer.autoguide.AutoNormal(model)`` (``AutoNormal``: mean field, free
  parameters per data point, so not amortized). As in Pyro's enumeration
  examples, the sites that the model marks for enumeration are hidden from
  AutoNormal with ``poutine.block``; nothing else is changed. Where a guide
  cannot run (AutoNormal on a discrete latent site that the model does not
  enumerate, on a plate without a size, ...), fails later or reaches a
  non-finite loss, its cells read ``n/a [k]`` and footnote ``k`` under the
  table gives the exception. Then ``NaMI/hand`` (a ratio of losses, shown
  only when both are positive) and ``NaMI-hand`` (their difference, in nats:
  negative means NaMIGuide reached a better ELBO than the hand guide).
  After training, each guide is traced once (on the first batch) and the model
  replayed on it: a guide that scores entries of a latent site that the model
  masks out (``poutine.mask``, ``Distribution.mask``: padded time steps,
  absent objects) reports a -ELBO that is not a bound (q's entropy on those
  entries is free to grow), so its loss gets a footnote and no ratio or
  difference is computed from it;
* ``step``: the time of one ``SVI.step`` (:func:`time.perf_counter`), the
  median over the steps after the first ``--warmup`` (which include each
  guide's set-up on its first call), and ``NaMI/hand``.

Every guide trains on a freshly built program (fresh networks: the model's
own networks start from the same weights for all three), in its own Pyro
parameter store, with ``pyro.optim.Adam`` at the same learning rate, the same
number of steps, the same batches in the same order and its own random stream
started from the same ``--seed`` (saved and restored around each block, so
that interleaving does not change what a guide draws). The guides run
interleaved, in blocks of ``--block`` steps, the order rotating every round,
so that a busy machine or drift hits all three alike. Pyro's argument
validation and torch's thread count are left as they are (``--threads``
sets the latter). This is a measurement, not a test: it never asserts on
losses or timings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.elbo import ELBO
from pyro.util import get_rng_state, set_rng_state

import pgmdl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.compile_scale import machine, print_table  # noqa: E402
from tests.conformance.harness import Call, Program, TrainConfig  # noqa: E402
from tests.conformance.programs import BUILDERS  # noqa: E402

GUIDES = ("hand", "nami", "auto")
TITLES = {"hand": "hand", "nami": "NaMIGuide", "auto": "AutoNormal"}


@dataclass(frozen=True)
class Setting:
    """How one program is trained: what its configuration (or ``hand_train``) says."""

    config: str
    elbo: Callable[[], ELBO]
    calls: Sequence[Call]
    hand_guide: Callable[..., Any]
    nami_kwargs: Mapping[str, Any]
    lr: float
    allowed_warnings: tuple[type[Warning], ...] = ()


def setting(program: Program) -> Setting:
    """The program's first training configuration, else its ``hand_train``."""
    if program.train:
        cfg = program.train[0]
        return Setting(
            cfg.name,
            cfg.elbo,
            cfg.batches(),
            program.guide,
            dict(cfg.nami_kwargs),
            cfg.lr,
            tuple(cfg.allowed_warnings),
        )
    if program.hand_train is None:
        raise ValueError(f"{program.name}: neither a training configuration nor hand_train")
    elbo, guide, calls = program.hand_train
    enumerate_ = isinstance(elbo(), TraceEnum_ELBO)
    return Setting(
        "hand_train",
        elbo,
        calls,
        guide,
        {"enumerate": "parallel"} if enumerate_ else {},
        TrainConfig.lr,  # the harness's default
    )


NAMI_OPTIONS: dict[str, Any] = {}
"""NaMIGuide options added to every program's own (``guide_quality.py --normalize``)."""


def make_guide(kind: str, program: Program, train: Setting) -> Callable[..., Any]:
    if kind == "hand":
        return train.hand_guide
    if kind == "nami":
        return pgmdl.NaMIGuide(program.model, **{**train.nami_kwargs, **NAMI_OPTIONS})
    # as Pyro's enumeration examples do: the sites the MODEL enumerates are summed
    # out by TraceEnum_ELBO, so they are hidden from the autoguide
    return AutoNormal(poutine.block(program.model, hide_fn=enumerated))


def enumerated(msg: dict) -> bool:
    """Whether a site is marked for enumeration (``infer={"enumerate": ...}``)."""
    return (msg.get("infer") or {}).get("enumerate") is not None


def reason(err: BaseException) -> str:
    """A short, one-line account of an exception."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= 160 else line[:157] + "..."


@dataclass
class Runner:
    """One guide's SVI run on its own fresh program, param store and random stream."""

    kind: str
    name: str
    lr: float
    seed: int
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failure: str | None = None
    unmasked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        with pyro.get_param_store().scope() as self.state:
            program = BUILDERS[self.name]()  # fresh networks, deterministic data
            train = setting(program)
            self.calls = train.calls
            self.allowed = train.allowed_warnings
            pyro.set_rng_seed(self.seed)
            try:
                with _Filter(self.allowed):
                    guide = make_guide(self.kind, program, train)
                self.svi = SVI(program.model, guide, pyro.optim.Adam({"lr": self.lr}), train.elbo())
            except Exception as err:  # reported in the table
                self.failure = f"construction: {reason(err)}"
            self.rng = get_rng_state()

    def run(self, count: int) -> None:
        """``count`` more steps (nothing once failed)."""
        if self.failure is not None:
            return
        with pyro.get_param_store().scope(self.state), _Filter(self.allowed):
            set_rng_state(self.rng)
            try:
                for _ in range(count):
                    args, kwargs = self.calls[len(self.losses) % len(self.calls)]
                    start = time.perf_counter()
                    loss = float(self.svi.step(*args, **kwargs))
                    self.seconds.append(time.perf_counter() - start)
                    self.losses.append(loss)
                    if not math.isfinite(loss):
                        self.failure = f"step {len(self.losses)}: non-finite loss {loss}"
                        break
            except Exception as err:  # reported in the table
                self.failure = f"step {len(self.losses) + 1}: {reason(err)}"
            finally:
                self.rng = get_rng_state()

    @contextmanager
    def context(self) -> Iterator[None]:
        """This guide's parameter store and warning filters (to use it after training)."""
        with pyro.get_param_store().scope(self.state), _Filter(self.allowed):
            yield

    def check_masks(self) -> None:
        """After training: the sites where the guide scores entries the model masks out."""
        if self.failure is not None:
            return
        args, kwargs = self.calls[0]
        with self.context(), torch.no_grad():
            try:
                guide_trace = poutine.trace(self.svi.guide).get_trace(*args, **kwargs)
                replayed = poutine.replay(self.svi.model, trace=guide_trace)
                model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
                self.unmasked = scores_masked_entries(model_trace, guide_trace)
            except Exception as err:  # a check that cannot run says so
                self.unmasked = [f"(check failed: {reason(err)})"]

    def final_loss(self, steps: int) -> float | None:
        if self.failure is not None or len(self.losses) < steps:
            return None
        tail = self.losses[-max(1, math.ceil(0.1 * steps)) :]
        return sum(tail) / len(tail)

    def step_time(self, warmup: int) -> float | None:
        if self.failure is not None:
            return None
        timed = self.seconds[warmup:] or self.seconds[-1:]
        return statistics.median(timed) if timed else None


def _unmasked(fn: Any) -> Any:
    """``fn`` without its ``.mask(...)`` (through ``.to_event``)."""
    if isinstance(fn, dist.MaskedDistribution):
        return _unmasked(fn.base_dist)
    if isinstance(fn, torch.distributions.Independent):
        return dist.Independent(_unmasked(fn.base_dist), fn.reinterpreted_batch_ndims)
    return fn


def _is_masked(fn: Any) -> bool:
    if isinstance(fn, dist.MaskedDistribution):
        return True
    return isinstance(fn, torch.distributions.Independent) and _is_masked(fn.base_dist)


def scores_masked_entries(model_trace: Any, guide_trace: Any) -> list[str]:
    """The guide's sites with a non-zero log q where the model's log p is masked out.

    A model masks a latent's entries with ``poutine.mask`` or ``Distribution.mask``
    (a padded time step, an absent object): they cost nothing under p. A guide that
    still scores them adds ``-log q`` there, whose expectation (q's entropy) grows
    without bound as q widens: the -ELBO it reports is then not a bound, and its
    loss cannot be compared with the other guides'.
    """
    sites = []
    for name, g in guide_trace.nodes.items():
        m = model_trace.nodes.get(name)
        if g["type"] != "sample" or g["is_observed"] or m is None or m["is_observed"]:
            continue
        if m["mask"] is None and not _is_masked(m["fn"]):
            continue
        value = m["value"]
        log_p = scale_and_mask(m["fn"].log_prob(value), mask=m["mask"])
        free = _unmasked(m["fn"]).log_prob(value)
        log_q = scale_and_mask(g["fn"].log_prob(value), mask=g["mask"])
        masked_out = (free != 0) & (log_p == 0)
        if (masked_out & (log_q != 0)).any():
            sites.append(name)
    return sites


class _Filter(warnings.catch_warnings):
    """Ignore the warnings a configuration declares legitimate (each explained there),
    and TraceEnum_ELBO's note that a batch has nothing to enumerate (a labelled
    batch of the semi-supervised programs, where the label is observed)."""

    def __init__(self, categories: tuple[type[Warning], ...]) -> None:
        super().__init__()
        self.categories = categories

    def __enter__(self):
        result = super().__enter__()
        for category in self.categories:
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
        return result


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """The best (min) wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_compile_and_setup(name: str, repeats: int, seed: int) -> dict[str, Any]:
    """Compile and NaMIGuide set-up times on the program's example call."""
    out: dict[str, Any] = {"compile": None, "setup": None, "failures": {}}
    with pyro.get_param_store().scope():  # nothing of this reaches the training runs
        program = BUILDERS[name]()
        train = setting(program)
        args, kwargs = program.call
        pyro.set_rng_seed(seed)
        with _Filter(train.allowed_warnings):
            try:
                pgmdl.compile(program.model, *args, **kwargs)  # warm-up
                out["compile"] = best_time(
                    lambda: pgmdl.compile(program.model, *args, **kwargs), repeats
                )
            except Exception as err:  # reported in the table
                out["failures"]["compile"] = reason(err)
            try:
                out["setup"] = best_time(
                    lambda: pgmdl.NaMIGuide(program.model, **train.nami_kwargs).setup(
                        *args, **kwargs
                    ),
                    repeats,
                )
            except Exception as err:  # reported in the table
                out["failures"]["setup"] = reason(err)
    out["config"] = train.config
    out["elbo"] = type(train.elbo()).__name__
    out["lr"] = train.lr
    return out


def train_all(name: str, args: argparse.Namespace) -> dict[str, Runner]:
    """The three guides trained side by side, interleaved in rotating blocks."""
    lr = args.lr if args.lr is not None else setting(BUILDERS[name]()).lr
    runners = {kind: Runner(kind, name, lr, args.seed) for kind in GUIDES}
    order = list(GUIDES)
    done, round_ = 0, 0
    while done < args.steps:
        count = min(args.block, args.steps - done)
        shift = round_ % len(order)
        for kind in order[shift:] + order[:shift]:
            runners[kind].run(count)
        done += count
        round_ += 1
    for runner in runners.values():
        runner.check_masks()
    return runners


# --------------------------------------------------------------------------- report


COLUMNS = [
    ("program", "program"),
    ("elbo", "ELBO"),
    ("lr", "lr"),
    ("compile", "compile (s)"),
    ("setup", "NaMI setup (s)"),
    ("loss_hand", "loss hand"),
    ("loss_nami", "loss NaMI"),
    ("loss_auto", "loss AutoNormal"),
    ("loss_ratio", "loss NaMI/hand"),
    ("loss_delta", "NaMI-hand"),
    ("ms_hand", "step hand (ms)"),
    ("ms_nami", "step NaMI (ms)"),
    ("ms_auto", "step AutoNormal (ms)"),
    ("ms_ratio", "step NaMI/hand"),
]


def format_row(
    name: str,
    timed: dict[str, Any],
    runners: dict[str, Runner],
    args: argparse.Namespace,
    notes: list[str],
) -> dict[str, str]:
    """The table row; what is ``n/a`` in it is explained in ``notes`` (appended to)."""

    def na(what: str, why: str) -> str:
        notes.append(f"{name}, {what}: {why}")
        return f"n/a [{len(notes)}]"

    row = {
        "program": name,
        "elbo": timed["elbo"].replace("_ELBO", ""),
        "lr": f"{runners['hand'].lr:g}",
    }
    for key in ("compile", "setup"):
        value = timed[key]
        row[key] = na(key, timed["failures"][key]) if value is None else f"{value:.3f}"
    loss = {k: r.final_loss(args.steps) for k, r in runners.items()}
    step = {k: r.step_time(args.warmup) for k, r in runners.items()}
    for kind, runner in runners.items():
        if runner.failure is not None:
            label = na(TITLES[kind], runner.failure)
            row[f"loss_{kind}"] = row[f"ms_{kind}"] = label
        else:
            row[f"loss_{kind}"] = f"{loss[kind]:.2f}"
            row[f"ms_{kind}"] = f"{step[kind] * 1e3:.2f}"
            if runner.unmasked:
                why = (
                    f"q scores entries of {', '.join(runner.unmasked)} that the model masks "
                    "out, so its -ELBO is not a bound: loss not comparable"
                )
                row[f"loss_{kind}"] += " " + na(TITLES[kind], why)[4:]
    hand, nami = loss["hand"], loss["nami"]
    if runners["hand"].unmasked or runners["nami"].unmasked:
        row["loss_ratio"] = row["loss_delta"] = "-"
        row["ms_ratio"] = f"{step['nami'] / step['hand']:.2f}x"
    elif hand is None or nami is None:
        row["loss_ratio"] = row["loss_delta"] = row["ms_ratio"] = "-"
    else:
        row["loss_ratio"] = f"{nami / hand:.3f}" if hand > 0 and nami > 0 else "-"
        row["loss_delta"] = f"{nami - hand:+.2f}"
        row["ms_ratio"] = f"{step['nami'] / step['hand']:.2f}x"
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="NaMIGuide vs hand-written guides vs AutoNormal on the conformance programs."
    )
    parser.add_argument("--steps", type=int, default=500, help="SVI steps per guide")
    parser.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: each program's)"
    )
    parser.add_argument(
        "--programs", nargs="+", choices=list(BUILDERS), default=list(BUILDERS), metavar="NAME"
    )
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the timing")
    parser.add_argument("--block", type=int, default=10, help="steps per interleaved block")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed compiles and set-ups (best is kept)"
    )
    parser.add_argument("--seed", type=int, default=0, help="every guide's random seed")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--fast", action="store_true", help="20 steps, 1 repeat (a CI smoke run)")
    args = parser.parse_args(argv)
    if args.fast:
        args.steps, args.warmup, args.block, args.repeats = 20, 4, 5, 1
    if args.steps < 1 or args.block < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps, --block and --repeats must be at least 1, --warmup at least 0")
    if args.warmup >= args.steps:
        parser.error("--warmup must be below --steps")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(machine())
    lr = "each program's (1e-2 or 5e-2)" if args.lr is None else f"{args.lr:g}"
    tail = max(1, math.ceil(0.1 * args.steps))
    print(
        f"{args.steps} SVI steps per guide, Adam lr {lr}, seed {args.seed}; loss: mean "
        f"-ELBO of the last {tail} steps; step: median after {args.warmup} warm-up steps, "
        f"guides interleaved in rotating blocks of {args.block}; compile and set-up: "
        f"best of {args.repeats}"
    )
    print()
    rows, notes = [], []
    for name in args.programs:
        timed = time_compile_and_setup(name, args.repeats, args.seed)
        runners = train_all(name, args)
        rows.append(format_row(name, timed, runners, args, notes))
        print(f"  measured {name} ({timed['config']})", file=sys.stderr, flush=True)
    print_table(rows, COLUMNS)
    if notes:
        print()
        for i, note in enumerate(notes, 1):
            print(f"[{i}] {note}")
    print(f"\nwall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
