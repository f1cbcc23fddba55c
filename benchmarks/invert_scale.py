"""How NaMI inversion scales with the number of sites.

Run it from the repository root::

    python benchmarks/invert_scale.py                 # sizes 10 100 1000, best of 5
    python benchmarks/invert_scale.py --fast          # sizes 10 100, 1 repeat (CI smoke run)

Model families (generated Pyro programs, compiled once with one trace):

* ``local``: a sparse random DAG of scalar sites: site ``s{i}`` is
  ``Normal(sum of its parents, 1)`` with up to 3 parents among the 10
  sites before it (seeded), and every 5th site is observed. This is the
  shape of deep hierarchical models: dependencies are local, so the moral
  graph has small treewidth and the inverse stays sparse.
* ``plated``: the ``local`` DAG with every site a vector inside
  ``pyro.plate("data", 64)``; inversion runs on the plate-level graph, so it
  should cost about the same.
* ``random``: the global random DAG of ``compile_scale.py`` (up to 3 parents
  among *all* earlier sites, the last 10% observed). Its moral graph has
  large treewidth, so any faithful inverse is dense (tens of thousands of
  edges at 1000 sites): a stress test, not a sparse model.

For each model it measures, best of ``--repeats`` after one warm-up
(:func:`time.perf_counter`):

* ``min-fill``, ``topological``, ``reverse``: :func:`pgmdl.invert` with that order;
* ``certify``: :func:`pgmdl.check_faithful` of the min-fill inverse (one
  d-separation query per latent);
* ``compile``: ``pgmdl.compile_model(model, model_args=args, num_traces=1)``, for the
  ratio ``min-fill / compile``;

and, on the 1000-site ``local`` row, whether the goal (min-fill inversion of
a 1000-site sparse model in under 1 s) is ``met`` or ``missed``. Every
min-fill inverse is certified faithful before it is timed (the script exits
with status 1 otherwise). It never asserts on timings.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch

import pgmdl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_scale import best_time, machine, make_model, print_table  # noqa: E402

PLATE_SIZE = 64
GOAL_SITES = 1000
GOAL_SECONDS = 1.0
WINDOW = 10
OBSERVE_EVERY = 5


def make_local_model(num_sites: int, seed: int = 0, plate_size: int | None = None):
    """A sparse DAG: up to 3 parents among the previous ``WINDOW`` sites."""
    rng = random.Random(seed)
    dag = []
    for i in range(num_sites):
        window = range(max(0, i - WINDOW), i)
        dag.append(sorted(rng.sample(window, rng.randint(0, min(3, len(window))))))
    observed = [i % OBSERVE_EVERY == OBSERVE_EVERY - 1 for i in range(num_sites)]
    shape = () if plate_size is None else (plate_size,)

    def sites() -> None:
        values: list[Any] = []
        for i, parents in enumerate(dag):
            loc: Any = torch.zeros(shape)
            for j in parents:
                loc = loc + values[j]
            obs = loc if observed[i] else None
            values.append(pyro.sample(f"s{i}", dist.Normal(loc, 1.0), obs=obs))

    if plate_size is None:
        model = sites
    else:

        def model() -> None:
            with pyro.plate("data", plate_size):
                sites()

    model.__name__ = f"local_{num_sites}"
    return model, ()


FAMILIES: dict[str, Callable[[int, int], tuple[Callable[..., Any], tuple]]] = {
    "local": lambda n, seed: make_local_model(n, seed),
    "plated": lambda n, seed: make_local_model(n, seed, plate_size=PLATE_SIZE),
    "random": lambda n, seed: (lambda g: (g.model, g.args))(make_model(n, seed=seed)),
}

COLUMNS = [
    ("family", "family"),
    ("sites", "sites"),
    ("latent", "latent"),
    ("model_edges", "model edges"),
    ("inverse_edges", "inverse edges"),
    ("fill_in", "fill-in"),
    ("min-fill", "min-fill s"),
    ("topological", "topological s"),
    ("reverse", "reverse s"),
    ("certify", "certify s"),
    ("ratio", "min-fill/compile"),
    ("goal", "goal"),
]


def measure(family: str, size: int, seed: int, repeats: int) -> dict[str, str]:
    model, args = FAMILIES[family](size, seed)
    graph = pgmdl.compile_model(model, model_args=args, num_traces=1)
    inverse = pgmdl.invert(graph)
    report = pgmdl.check_faithful(graph, inverse)
    if not report.ok:
        raise SystemExit(f"{family} {size}: the min-fill inverse is not faithful:\n{report}")
    times = {
        order: best_time(lambda order=order: pgmdl.invert(graph, order=order), repeats)
        for order in ("min-fill", "topological", "reverse")
    }
    certify = best_time(lambda: pgmdl.check_faithful(graph, inverse), max(1, repeats // 2))
    compile_time = best_time(
        lambda: pgmdl.compile_model(model, model_args=args, num_traces=1), repeats
    )
    goal = "-"
    if family == "local" and size == GOAL_SITES:
        goal = "met" if times["min-fill"] < GOAL_SECONDS else "missed"
    return {
        "family": family,
        "sites": str(len(graph)),
        "latent": str(len(graph.latent_sites)),
        "model_edges": str(graph.dag.number_of_edges()),
        "inverse_edges": str(inverse.num_edges),
        "fill_in": str(len(inverse.fill_in_edges)),
        **{order: f"{t:.4f}" for order, t in times.items()},
        "certify": f"{certify:.4f}",
        "ratio": f"{times['min-fill'] / compile_time:.2f}x",
        "goal": goal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time pgmdl.invert on generated models.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="sizes 10 100, 1 repeat (CI)")
    args = parser.parse_args(argv)
    if args.fast:
        args.sizes, args.repeats = [10, 100], 1
    print(machine())
    print(
        f"best of {args.repeats} run(s) after one warm-up; local/plated: up to 3 parents among "
        f"the previous {WINDOW} sites, every {OBSERVE_EVERY}th site observed; plated: "
        f"pyro.plate('data', {PLATE_SIZE})"
    )
    print()
    rows = []
    for family in args.families:
        for size in args.sizes:
            rows.append(measure(family, size, args.seed, args.repeats))
            print(f"  measured {family} {size}", file=sys.stderr, flush=True)
    print_table(rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
