"""How the graph compiler scales with the number of sites.

Run it from the repository root::

    python benchmarks/compile_scale.py                   # sizes 10 100 1000, best of 5
    python benchmarks/compile_scale.py --sizes 10 100 --repeats 3
    python benchmarks/compile_scale.py --fast            # sizes 10 100, 1 repeat (CI smoke run)

It compiles generated Pyro programs of 10, 100 and 1000 sites, in two families:

* ``scalar``: scalar sample sites forming a random DAG. Site ``s{i}`` is
  ``Normal(sum of its parents, 1)``, its parents being up to ``--max-parents``
  earlier sites drawn with a seeded :class:`random.Random`; the last ~10% of
  the sites are observed (``obs=data[k]``, ``data`` being the model's tensor
  argument).
* ``plated``: the same DAG, but every site is a vector of 64 inside one
  ``pyro.plate("data", 64)``: a plated site is still one site, so compiling
  should cost about the same as in the scalar family.

Before timing, each compiled graph is checked against the generated parent
sets: the ``parents`` column reads ``OK`` or ``MISMATCH`` (then the
differences are printed and the script exits with status 1). This checks the
benchmark's input, not the timings.

For each model it measures, with :func:`time.perf_counter`, the best (min) of
``--repeats`` runs after one warm-up run (at most 3 for models of 1000
sites or more, where Pyro's ``get_dependencies`` alone takes seconds):

* ``compile``: ``pgmdl.compile(model, data)`` (3 traces, the default), and the
  same time per site in microseconds;
* ``1-trace``: ``pgmdl.compile_model(model, model_args=(data,), num_traces=1)``;
* ``plain trace``: ``pyro.poutine.trace(model).get_trace(data)``, one plain run
  of the program: the floor that no tracing-based compiler can beat;
* ``get_dependencies``: ``pyro.infer.inspect.get_dependencies``, Pyro's own
  single-trace provenance inspection (it also computes posterior
  dependencies);

then the ratios ``compile / plain trace`` and ``1-trace / get_dependencies``,
and on the 1000-site rows whether the goal (compiling 1000 sites in under
1 s) is ``met`` or ``missed``.

This is a measurement, not a test: it never asserts on timings.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.inspect import get_dependencies

import pgmdl

PLATE_SIZE = 64
GOAL_SITES = 1000
GOAL_SECONDS = 1.0
LARGE_SITES = 1000  # from this size on, at most LARGE_REPEATS timed runs
LARGE_REPEATS = 3


@dataclass
class GeneratedModel:
    """A generated Pyro program with the structure it was generated from."""

    family: str
    model: Callable[..., Any]
    args: tuple
    parents: dict[str, frozenset[str]]  # site name -> expected parent site names

    @property
    def num_sites(self) -> int:
        return len(self.parents)

    @property
    def num_edges(self) -> int:
        return sum(len(p) for p in self.parents.values())


def _random_dag(num_sites: int, seed: int, max_parents: int) -> list[list[int]]:
    """Parents (indices of earlier sites) of each site, drawn with a seeded RNG."""
    rng = random.Random(seed)
    dag: list[list[int]] = []
    for i in range(num_sites):
        k = rng.randint(0, min(max_parents, i))
        dag.append(sorted(rng.sample(range(i), k)))
    return dag


def _num_observed(num_sites: int) -> int:
    return max(1, round(0.1 * num_sites))


def _build(
    family: str, num_sites: int, seed: int, max_parents: int, plate_size: int | None
) -> GeneratedModel:
    if num_sites < 1:
        raise ValueError(f"num_sites must be at least 1, got {num_sites}")
    dag = _random_dag(num_sites, seed, max_parents)
    names = [f"s{i}" for i in range(num_sites)]
    first_observed = num_sites - _num_observed(num_sites)
    generator = torch.Generator().manual_seed(seed)
    shape = (num_sites - first_observed,) + (() if plate_size is None else (plate_size,))
    data = torch.randn(shape, generator=generator)

    def sites(data: torch.Tensor) -> None:
        values: list[Any] = []
        for i, parents in enumerate(dag):
            loc: Any = 0.0
            for j in parents:
                loc = loc + values[j]
            obs = data[i - first_observed] if i >= first_observed else None
            values.append(pyro.sample(names[i], dist.Normal(loc, 1.0), obs=obs))

    if plate_size is None:
        model = sites
    else:

        def model(data: torch.Tensor) -> None:
            with pyro.plate("data", plate_size):
                sites(data)

    model.__name__ = model.__qualname__ = f"{family}_dag_{num_sites}"
    parents = {
        names[i]: frozenset(names[j] for j in parent_ids) for i, parent_ids in enumerate(dag)
    }
    return GeneratedModel(family, model, (data,), parents)


def make_model(num_sites: int, seed: int = 0, max_parents: int = 3) -> GeneratedModel:
    """A Pyro program of ``num_sites`` scalar sample sites forming a random DAG.

    Site ``s{i}`` is ``Normal(loc, 1)`` where ``loc`` is the sum of up to
    ``max_parents`` earlier sites (0 for a root); the last ~10% of the sites
    are observed with ``obs=data[k]``. Call it as ``result.model(*result.args)``;
    ``result.parents`` maps every site to the parent sites it was generated with.
    """
    return _build("scalar", num_sites, seed, max_parents, plate_size=None)


def make_plated_model(
    num_sites: int, seed: int = 0, max_parents: int = 3, plate_size: int = PLATE_SIZE
) -> GeneratedModel:
    """The DAG of :func:`make_model` with vector sites inside ``pyro.plate("data", plate_size)``."""
    return _build("plated", num_sites, seed, max_parents, plate_size=plate_size)


FAMILIES: dict[str, Callable[..., GeneratedModel]] = {
    "scalar": make_model,
    "plated": make_plated_model,
}


# --------------------------------------------------------------------------- checking


def check_parents(generated: GeneratedModel, graph: pgmdl.ModelGraph) -> list[str]:
    """The differences between the compiled graph's sites and parents and the
    generated ones (an empty list when they agree)."""
    problems = []
    if set(graph.sites) != set(generated.parents):
        missing = sorted(set(generated.parents) - set(graph.sites))
        extra = sorted(set(graph.sites) - set(generated.parents))
        problems.append(f"sites missing {missing[:5]}, unexpected {extra[:5]}")
    for name, expected in generated.parents.items():
        if name in graph and set(graph.parents(name)) != expected:
            problems.append(
                f"{name}: compiled parents {sorted(graph.parents(name))}, "
                f"generated {sorted(expected)}"
            )
    return [f"{generated.family} model of {generated.num_sites} sites: {p}" for p in problems]


# --------------------------------------------------------------------------- timing


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """The best (min) wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(generated: GeneratedModel, repeats: int) -> dict[str, Any]:
    model, args = generated.model, generated.args
    graph = pgmdl.compile(model, *args)
    problems = check_parents(generated, graph)
    row: dict[str, Any] = {
        "family": generated.family,
        "sites": generated.num_sites,
        "edges": graph.dag.number_of_edges(),
        "parents": "MISMATCH" if problems else "OK",
        "problems": problems,
    }
    row["compile"] = best_time(lambda: pgmdl.compile(model, *args), repeats)
    row["1-trace"] = best_time(
        lambda: pgmdl.compile_model(model, model_args=args, num_traces=1), repeats
    )
    row["plain"] = best_time(lambda: pyro.poutine.trace(model).get_trace(*args), repeats)
    row["get_dependencies"] = best_time(lambda: get_dependencies(model, args), repeats)
    return row


# --------------------------------------------------------------------------- report


COLUMNS = (
    ("family", "family"),
    ("sites", "sites"),
    ("edges", "edges"),
    ("parents", "parents"),
    ("compile", "pgmdl compile (s)"),
    ("per_site", "per site (µs)"),
    ("1-trace", "1-trace compile (s)"),
    ("plain", "plain trace (s)"),
    ("get_dependencies", "pyro get_dependencies (s)"),
    ("ratio_plain", "compile/plain trace"),
    ("ratio_deps", "1-trace/get_dependencies"),
    ("goal", "goal (1000 sites < 1 s)"),
)


def format_row(row: dict[str, Any]) -> dict[str, str]:
    goal = "-"
    if row["sites"] == GOAL_SITES:
        goal = "met" if row["compile"] < GOAL_SECONDS else "missed"
    return {
        "family": row["family"],
        "sites": str(row["sites"]),
        "edges": str(row["edges"]),
        "parents": row["parents"],
        "compile": f"{row['compile']:.4f}",
        "per_site": f"{row['compile'] / row['sites'] * 1e6:.0f}",
        "1-trace": f"{row['1-trace']:.4f}",
        "plain": f"{row['plain']:.4f}",
        "get_dependencies": f"{row['get_dependencies']:.4f}",
        "ratio_plain": f"{row['compile'] / row['plain']:.1f}x",
        "ratio_deps": f"{row['1-trace'] / row['get_dependencies']:.2f}x",
        "goal": goal,
    }


def print_table(rows: list[dict[str, str]], columns: list[tuple[str, str]] | None = None) -> None:
    """Print ``rows`` under ``columns`` (``(key, title)`` pairs; default: this
    script's); numbers (signed or not) right-aligned, words left-aligned.
    The other benchmarks print their tables with it."""
    columns = COLUMNS if columns is None else columns
    headers = [title for _, title in columns]
    cells = [[row[key] for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in [headers, *cells]) for i in range(len(headers))]

    def numeric(c: str) -> bool:
        return c[:1].isdigit() or (c[:1] in "-+" and c[1:2].isdigit())

    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print(
            "  ".join(
                c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(line, widths, strict=True)
            ).rstrip()
        )


def machine() -> str:
    return (
        f"machine: {platform.platform()} ({platform.machine()}), "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, pgmdl {pgmdl.__version__}, device: cpu, "
        f"torch threads: {torch.get_num_threads()}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time pgmdl.compile on generated Pyro models of growing size."
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10, 100, 1000], help="numbers of sites"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (best is kept)"
    )
    parser.add_argument(
        "--families",
        nargs="+",
        choices=sorted(FAMILIES),
        default=list(FAMILIES),
        help="model families to compile",
    )
    parser.add_argument("--max-parents", type=int, default=3, help="parents per site, at most")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated DAGs")
    parser.add_argument(
        "--fast", action="store_true", help="sizes 10 100 and 1 repeat (a CI smoke run)"
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.sizes, args.repeats = [10, 100], 1
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine())
    print(
        f"best of {args.repeats} run(s) after one warm-up (at most {LARGE_REPEATS} from "
        f"{LARGE_SITES} sites); plated family: "
        f"vector sites in pyro.plate('data', {PLATE_SIZE}); max parents {args.max_parents}"
    )
    print()
    rows, problems = [], []
    for family in args.families:
        for size in args.sizes:
            generated = FAMILIES[family](size, seed=args.seed, max_parents=args.max_parents)
            repeats = min(args.repeats, LARGE_REPEATS) if size >= LARGE_SITES else args.repeats
            row = measure(generated, repeats)
            rows.append(format_row(row))
            problems += row["problems"]
            print(f"  measured {family} {size} (best of {repeats})", file=sys.stderr, flush=True)
    print_table(rows)
    if problems:
        print("\nMISMATCH between compiled and generated parents:", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
