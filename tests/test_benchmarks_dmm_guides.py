"""benchmarks/dmm_guides.py still runs (fast mode, in-process): every table prints, with the
expected rows and finite numbers; the numbers themselves are read, never asserted."""

from __future__ import annotations

import math

import torch

from benchmarks import dmm_guides

GUIDES = [dmm_guides.AUTOMATIC, *dmm_guides.HANDS, dmm_guides.PER_STEP]
DIFFERENCES = [f"automatic - {hand}" for hand in dmm_guides.HANDS]


def _table(lines: list[str], title: str) -> tuple[str, list[list[str]]]:
    """The header line of the first table after the line starting with ``title``, and its
    rows (split on runs of two spaces or more) up to the next blank line."""
    at = next(i for i, line in enumerate(lines) if line.startswith(title))
    start = next(i for i in range(at + 1, len(lines)) if lines[i + 1].startswith("---"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append([cell.strip() for cell in line.split("  ") if cell.strip()])
    return lines[start], rows


def _numbers(cell: str) -> list[float]:
    """The numbers of a cell: ``+1.23 ± 0.04``, ``32500``, ``1.28x``."""
    return [float(part.rstrip("x")) for part in cell.split(" ± ")]


def _finite(cells: list[str]) -> bool:
    return all(math.isfinite(v) for cell in cells for v in _numbers(cell))


def test_dmm_guides_fast_mode_prints_every_table(capsys):
    threads = torch.get_num_threads()
    assert dmm_guides.main(["--fast"]) == 0
    assert torch.get_num_threads() == threads  # --threads is undone on return
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and "torch threads: 1" in lines[0]
    assert "SYNTHETIC" in out
    checkpoints = [f"step {c}" for c in (3, 6, 12, 24)]  # --fast: 24 steps, /8 /4 /2 /1

    for title in ("1. Training -ELBO", "2. Held-out -ELBO"):
        header, rows = _table(lines, title)
        assert all(c in header for c in checkpoints), header
        assert [row[0] for row in rows] == GUIDES + DIFFERENCES, out
        assert all(len(row) == 1 + len(checkpoints) and _finite(row[1:]) for row in rows), out

    header, rows = _table(lines, "3. Budget")
    for title in ("guide params", "params / automatic", "held-out, T..2T", "SVI step (ms)"):
        assert title in header, header
    assert [row[0] for row in rows] == GUIDES, out
    for row in rows:
        cells = row[1:]
        if row[0] == dmm_guides.PER_STEP:  # serves the padded length only
            assert cells[3] == "n/a", row
            cells = cells[:3] + cells[4:]
        assert _finite(cells), row
    budget = {row[0]: float(row[2]) for row in rows}
    # the hand guides' widths are chosen to match the automatic guide's parameter count
    assert budget[dmm_guides.AUTOMATIC] == 1.0
    assert all(0.75 <= budget[hand] <= 1.25 for hand in dmm_guides.HANDS), budget

    header, rows = _table(lines, "4. Automatic vs hand")
    assert "SVI step time ratio" in header, header
    assert [row[0] for row in rows] == DIFFERENCES, out
    assert all(len(row) == 5 and _finite(row[1:]) for row in rows), out
    assert "note:" not in out  # no non-finite loss
    assert "wall time:" in out


def test_hand_guide_ignores_padding():
    """The hand-written guide's backward RNN reads each sequence from its own last real step:
    the values at padded steps change nothing at real steps."""
    data = dmm_guides.make_data(6, 8, 4, seed=0)
    noisy = data.x.clone()
    noisy[~data.mask] = 3.0
    for cell in ("gru", "rnn"):
        guide = dmm_guides.StructuredInferenceNetwork(16, 4, 12, cell)
        with torch.no_grad():
            clean, padded = guide.summarize(data.x, data.mask), guide.summarize(noisy, data.mask)
        assert torch.equal(clean[data.mask], padded[data.mask])
        assert not torch.equal(clean, padded)
