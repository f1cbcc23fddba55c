"""The extreme-consumption case study of BTGM (thesis §10.3.2) still runs (fast mode).

``benchmarks/btgm_households.py --fast`` trains a small VAE on SYNTHETIC household
curves and tunes it towards each criterion of eq. 10.24-10.26; its own consistency
checks decide its exit status. Timings and the quality of the fit are not asserted."""

import subprocess
import sys

from tests.conftest import ROOT

CRITERIA = ("peak", "sustained", "flexibility")


def test_btgm_households_fast_run_tunes_every_criterion(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "btgm_households.py"),
            "--fast",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("criterion "))
    titles = ("updates", "lambda", "KL reached", "E f base", "E f tuned", "E f rejection")
    for title in titles:
        assert title in lines[header], lines[header]
    starts = [lines[header].index(title) for title in ("E f base", "E f tuned", "E f rejection")]
    rows = {line.split()[0]: line for line in lines[header + 2 :] if line.split()[:1]}
    for name in CRITERIA:
        row = rows[name]
        assert "FAILED" not in row, row
        base, tuned, rejection = (float(row[s:].split()[0]) for s in starts)
        assert tuned > base, row
        assert rejection > base, row
        updates = int(row.split()[1])
        assert 1 <= updates <= 10, row
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "btgm_households_criteria.png",
        "btgm_households_curves.png",
    ]
