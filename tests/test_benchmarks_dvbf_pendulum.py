"""benchmarks/dvbf_pendulum.py still runs (fast mode, in-process, the figure included); its
numbers are read, never asserted, except that they are finite."""

from __future__ import annotations

import math

import torch

from benchmarks import dvbf_pendulum


def _table(lines: list[str], title: str) -> tuple[str, list[list[str]]]:
    """The header line of the table with the column ``title``, and its rows (split on runs
    of two spaces or more) up to the next blank line."""
    start = next(i for i, line in enumerate(lines) if title in line and "  " in line)
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append([cell.strip() for cell in line.split("  ") if cell.strip()])
    return lines[start], rows


def _numbers(cell: str) -> list[float]:
    """``"0.0123 ± 0.0004"`` or ``"0.0123"``: the numbers in a cell."""
    return [float(part) for part in cell.split("±")]


def test_dvbf_pendulum_fast_mode_prints_every_table(capsys, tmp_path):
    threads = torch.get_num_threads()
    figure = tmp_path / "dvbf_pendulum.png"
    assert dvbf_pendulum.main(["--fast", "--figure", str(figure)]) == 0
    assert torch.get_num_threads() == threads  # --threads is undone on return
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and "torch threads: 1" in lines[0]
    assert "SYNTHETIC" in out

    header, rows = _table(lines, "held-out -ELBO/seq")
    titles = [title for _, title in dvbf_pendulum.TRAIN_COLUMNS]
    assert header.split() == " ".join(titles).split(), header
    assert [row[0] for row in rows] == list(dvbf_pendulum.MODELS), out
    for row in rows:
        assert len(row) == len(titles), row
        for cell in row[2:]:
            assert all(math.isfinite(v) for v in _numbers(cell)), row

    header, rows = _table(lines, "DVBF (off)")
    titles = [title for _, title in dvbf_pendulum.prediction_columns(dvbf_pendulum.MODELS)]
    for title in titles:
        assert title in header, header
    horizon = 3  # --fast: K = 3, rows k = 0 .. K
    assert [row[0] for row in rows] == [str(k) for k in range(horizon + 1)], out
    for row in rows:
        assert len(row) == len(titles), row
        assert all(v >= 0 and math.isfinite(v) for cell in row[1:] for v in _numbers(cell)), row
    last_frame = titles.index("last frame")
    assert float(rows[0][last_frame]) == 0.0  # the last frame reconstructs itself

    assert figure.exists() and figure.stat().st_size > 0
    assert f"figure: {figure}" in out
    assert "wall time:" in out


def test_dvbf_pendulum_fast_mode_without_figure_saves_none(capsys):
    args = dvbf_pendulum.parse_args(["--fast"])
    assert args.figure is None and args.seeds == 1
    assert dvbf_pendulum.parse_args([]).figure == dvbf_pendulum.DEFAULT_FIGURE
