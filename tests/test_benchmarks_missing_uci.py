"""benchmarks/missing_uci.py still runs (fast mode); its timings are read, never asserted."""

import math
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_missing_uci_runs_and_prints_every_method():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "missing_uci.py"), "--fast"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] in ("iris", "wine"):
            rows[fields[0], fields[1]] = float(fields[2])
    methods = ("mean", "knn", "iterative", "miwae+mask", "miwae")
    assert set(rows) == {(d, m) for d in ("iris", "wine") for m in methods}, result.stdout
    assert all(math.isfinite(v) for v in rows.values())
    # standardized columns: imputing the column mean scores about 1 on the missing entries
    for data in ("iris", "wine"):
        assert 0.8 < rows[data, "mean"] < 1.25, rows
