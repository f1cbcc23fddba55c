"""The missing-data benchmark on the real 8x8 digits runs (fast mode) and finds what it
reliably finds there; its other numbers are read, never asserted."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _rows(stdout: str, first: str) -> dict[tuple[str, str, str], list[str]]:
    """Table rows starting with ``first``, keyed by (case, model, method)."""
    rows = {}
    for line in stdout.splitlines():
        if not line.startswith(first):
            continue
        cells = line[len(first) :].split()
        if cells[1:3] == ["mean", "imputation"]:
            rows[first.strip(), "-", "mean imputation"] = cells[3:]
        else:
            rows[first.strip(), cells[0], cells[1]] = cells[2:]
    return rows


def test_missing_digits_benchmark(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "missing_digits.py"), "--fast",
         "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("(a) training", "(b) held-out log-likelihood", "(c) half of each",
                    "(d) 50% of pixels missing"):  # fmt: skip
        assert heading in out, out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "chain_traces.png",
        "imputations.png",
        "miwae.png",
    ]
    # (b): the IWAE estimate tightens with K (K=1 is the ELBO)
    ll = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) > 3 and cells[0] in ("VAE", "VAE+aug") and cells[1].isdigit():
            ll[cells[0], int(cells[1])] = float(cells[2])
    assert set(ll) == {(m, k) for m in ("VAE", "VAE+aug") for k in (1, 10, 100)}, out
    assert ll["VAE", 100] > ll["VAE", 1] and ll["VAE+aug", 100] > ll["VAE+aug", 1]
    # (c): every method for both halves; MWG's error (its column after steps/K: MSE) is
    # below mean imputation's with the noise-augmented VAE (it mixes: acceptance ~15%)
    for case in ("top", "bottom"):
        rows = _rows(out, f"{case} ")
        assert len(rows) == 7, rows
        mean_mse = float(rows[case, "-", "mean imputation"][1])
        mwg = rows[case, "VAE+aug", "mwg"]
        acceptance = float(mwg[5])
        assert 0.0 < acceptance < 1.0
        if case == "top":
            assert float(mwg[1]) < mean_mse, (mwg, mean_mse)
    # (d): MIWAE's importance imputation beats mean imputation under 50% MCAR
    rows = _rows(out, "50% MCAR ")
    assert len(rows) == 10, rows
    assert float(rows["50% MCAR", "MIWAE", "importance"][1]) < float(
        rows["50% MCAR", "-", "mean imputation"][1]
    )
