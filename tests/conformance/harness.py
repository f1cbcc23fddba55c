"""Shared machinery of the conformance suite.

Each program under :mod:`tests.conformance.programs` is a Pyro program written
the way Pyro users write them (the structure of Pyro's examples and
tutorials), with its hand-written guide. pgmdl must take it AS WRITTEN: no
``bindings=``, no ``create_plates=``, no rewrite. A module builds a fresh
:class:`Program` (fresh networks, deterministic data) with ``build()``; the
expected graph in it is derived by hand from the program text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.elbo import ELBO

Call = tuple[tuple, dict]
"""The positional and keyword arguments of one call of a model."""


@dataclass(frozen=True)
class TrainConfig:
    """How a NaMIGuide is trained on a program.

    ``batches()`` returns the calls an SVI loop cycles through (e.g. labelled
    and unlabelled batches alternately).
    """

    name: str
    batches: Callable[[], Sequence[Call]]
    elbo: Callable[[], ELBO] = Trace_ELBO
    nami_kwargs: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 50
    lr: float = 1e-2
    allowed_warnings: tuple[type[Warning], ...] = ()
    """Warnings this configuration may legitimately raise (each explained where set)."""


@dataclass(frozen=True)
class Program:
    """A conformance program, its hand-written guide and what pgmdl must find.

    Attributes:
        name: identifier (also the pytest id).
        model, guide: the Pyro program and its hand-written guide.
        call: the example call ``(args, kwargs)`` used to compile.
        parents: expected parents of *every* site (derived by hand).
        latent, observed: expected latent and observed sites.
        inputs: expected model inputs: argument name -> the sites it feeds
            (an input whose path is ``"data[:, 1]"`` or ``"batch.x"`` counts
            for argument ``data`` / ``batch``); ``None`` when not checked.
        audit: ``None`` when ``audit_guide(model, guide).ok`` must hold,
            else a function asserting the known, legitimate report.
        train: NaMIGuide training configurations.
        hand_train: ``(elbo factory, guide, calls)`` to check that the
            program and its hand guide are valid Pyro (no pgmdl involved).
    """

    name: str
    model: Callable[..., Any]
    guide: Callable[..., Any]
    call: Call
    parents: Mapping[str, frozenset[str] | set[str] | tuple[str, ...]]
    latent: frozenset[str] | set[str]
    observed: frozenset[str] | set[str]
    inputs: Mapping[str, set[str]] | None
    train: tuple[TrainConfig, ...]
    audit: Callable[[Any], None] | None = None
    hand_train: tuple[Callable[[], ELBO], Callable[..., Any], Sequence[Call]] | None = None

    def __repr__(self) -> str:
        return f"Program({self.name})"


def argument_root(path: str) -> str:
    """``"data[:, 1]"`` -> ``"data"``, ``"batch.labels"`` -> ``"batch"``."""
    for i, ch in enumerate(path):
        if ch in "[.( ":
            return path[:i]
    return path


def inputs_by_argument(inputs: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Group a graph's inputs by the argument they come from."""
    grouped: dict[str, set[str]] = {}
    for path, sites in inputs.items():
        grouped.setdefault(argument_root(path), set()).update(sites)
    return grouped


def parent_mismatches(graph, expected: Mapping[str, Any]) -> list[str]:
    """Every site whose compiled parents differ from the expected ones."""
    lines = []
    for site, want in expected.items():
        if site not in graph:
            lines.append(f"{site}: missing from the graph")
            continue
        got = set(graph.parents(site))
        if got != set(want):
            extra, missing = sorted(got - set(want)), sorted(set(want) - got)
            lines.append(f"{site}: parents {sorted(got)}; extra {extra}, missing {missing}")
    return lines


def run_svi(model, guide, elbo: ELBO, calls: Sequence[Call], steps: int, lr: float = 1e-2):
    """``steps`` SVI steps cycling through ``calls``; returns the losses."""
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    losses = []
    for step in range(steps):
        args, kwargs = calls[step % len(calls)]
        losses.append(float(svi.step(*args, **kwargs)))
    return losses


def assert_decreasing(losses: Sequence[float], window: int = 10) -> None:
    """Finite losses, and the mean of the last ``window`` below that of the first."""
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    assert not bad, f"non-finite losses at steps {bad[:10]}: {[losses[i] for i in bad[:5]]}"
    first = sum(losses[:window]) / window
    last = sum(losses[-window:]) / window
    assert last < first, f"loss did not decrease: first {window} mean {first:.3f}, last {last:.3f}"


def seeded(seed: int = 0) -> torch.Generator:
    """A generator for deterministic example data."""
    return torch.Generator().manual_seed(seed)
