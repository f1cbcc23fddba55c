"""benchmarks/sequences.py still runs (fast mode, in-process); its numbers are read, never
asserted, except that the exact log-evidence it compares with is finite."""

from __future__ import annotations

import math

import torch

from benchmarks import sequences


def _table(lines: list[str], title: str) -> tuple[str, list[list[str]]]:
    """The header line of the table with the column ``title``, and its rows (split on runs
    of two spaces or more) up to the next blank line."""
    start = next(i for i, line in enumerate(lines) if line.startswith("T ") and title in line)
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append([cell.strip() for cell in line.split("  ") if cell.strip()])
    return lines[start], rows


def test_sequences_fast_mode_prints_every_table(capsys):
    threads = torch.get_num_threads()
    assert sequences.main(["--fast"]) == 0
    assert torch.get_num_threads() == threads  # --threads is undone on return
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and "torch threads: 1" in lines[0]

    header, rows = _table(lines, "held-out -ELBO/seq")
    for title in ("held-out -ELBO/seq", "exact -log p(x)/seq", "gap/step (nats)"):
        assert title in header, header
    assert [row[1] for row in rows] == list(sequences.GUIDES), out
    exact_column = [title for _, title in sequences.GAP_COLUMNS].index("exact -log p(x)/seq")
    assert all(math.isfinite(float(row[exact_column])) for row in rows), out

    header, rows = _table(lines, "parent reads")
    for title in ("compile (s)", "invert (s)", "plan_guide (s)", "parent reads", "SVI step (ms)"):
        assert title in header, header
    assert [(row[0], row[1]) for row in rows] == [
        (str(t), name) for t in (5, 10) for name in sequences.GUIDES
    ], out
    # the NaMI inverse of the unrolled chain: T(T+1)/2 + T - 1 parent reads (min-fill)
    reads = [title for _, title in sequences.COST_COLUMNS].index("parent reads")
    assert [row[reads] for row in rows if row[1] == "NaMI min-fill, per step"] == ["19", "64"], out

    assert "3. Lengths" in out
    assert "time-shared, built at T=8, called with T=10: works: the guide samples 10 of 10" in out
    header, rows = _table(lines, "length seen in training")
    assert [row[0] for row in rows] == ["5", "10", "15", "40", "100"], out
    assert "built at T=8, called with T=6" in out and "GuideError" in out
    assert "called with T=10: GuideError" in out  # no longer left to the prior
    assert "wall time:" in out
