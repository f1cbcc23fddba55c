"""Benchmarks still run (fast mode); their timings are read, never asserted."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_compile_scale_runs_and_checks_its_graphs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compile_scale.py"), "--fast"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("scalar", "plated"))]
    assert len(rows) == 4 and all(" OK " in row for row in rows)


def test_invert_scale_runs_and_certifies_its_inverses():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "invert_scale.py"), "--fast"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("local", "plated"))]
    assert len(rows) == 4


def test_step_overhead_runs_and_times_both_sizes():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "step_overhead.py"),
            "--fast",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # table rows (size right-aligned): size, batch, then times in ms; not the "batch 128:" lines
    row = re.compile(r"^\s*(784-400-20|16-32-4)\s+\d+\s+\d+\.\d+\s")
    rows = [line for line in result.stdout.splitlines() if row.match(line)]
    assert len(rows) == 4, result.stdout  # best and median blocks
    assert "FastSVI (ms)" in result.stdout and "Fast/torch" in result.stdout
    assert "FastSVI first 3 steps" in result.stdout  # set-up time, reported separately


def test_variance_learning_runs_every_experiment(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "variance_learning.py"), "--fast",
         "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for heading in ("(a) fixed sigma sweep", "(b) learned global sigma", "(c) learned local",
                    "(d) sigma learned by gradient descent"):  # fmt: skip
        assert heading in result.stdout
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "lesion_learned_vs_fixed.png",
        "local_vs_global.png",
        "manifold_sigma_sweep.png",
        "sigma_trajectories.png",
    ]


def test_multiset_scale_runs_and_checks_the_all_pairs_reference():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "multiset_scale.py"),
            "--fast",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("K "))
    for title in ("encoder (ms)", "decoder (ms)", "SVI step (ms)", "all-pairs encoder (ms)"):
        assert title in header, header
    # time table rows: K, parts, then times in ms; ends with the all-pairs check
    row = re.compile(r"^\s*(10|100)\s+\d+\s+\d+\.\d+\s")
    timed = [line for line in lines if row.match(line) and line.rstrip().endswith(" OK")]
    assert [line.split()[0] for line in timed] == ["10", "100"], result.stdout
    assert "memory saved for backward" in result.stdout


def test_compvae_evidence_runs_every_experiment(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "compvae_evidence.py"),
            "--fast",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in (
        "sines (eq. 9.15)",
        "colour anchors",
        "households, without c",
        "households, with c",
        "weekly peak",
        "top-8h",
        "flexibility/T",
    ):
        assert row in out, out
    # the generated whole does not depend on the order of the parts
    gaps = [
        float(line.split("whole")[1].split()[0])
        for line in out.splitlines()
        if "permutation" in line
    ]
    assert len(gaps) == 4 and max(gaps) < 1e-3, gaps
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "anchors_composition.png",
        "households_metrics.png",
        "sines_composition.png",
    ]


def test_btgm_overhead_times_both_sizes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "btgm_overhead.py"), "--fast"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("z=")]
    assert len(rows) == 2 and all(line.rstrip().endswith("x") for line in rows), result.stdout


def test_conformance_runs_every_program():
    from tests.conformance.programs import NAMES

    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "conformance.py"),
            "--fast",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("program "))
    for title in ("loss hand", "loss NaMI", "loss AutoNormal", "step NaMI/hand"):
        assert title in header, header
    rows = [line.split()[0] for line in lines if line.split()[:1] and line.split()[0] in NAMES]
    assert rows == list(NAMES), result.stdout


def test_guide_quality_runs_every_program_with_a_verdict():
    from tests.conformance.programs import NAMES

    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "guide_quality.py"),
            "--fast",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("program "))
    for title in ("held-out -ELBO", "train -ELBO", "step (ms)", "NaMI at least as good"):
        assert title in header, header
    # one NaMIGuide row per program, with a verdict
    nami = [line.split() for line in lines if line.split()[1:2] == ["NaMIGuide"]]
    assert [row[0] for row in nami] == list(NAMES), result.stdout
    assert all(" yes" in line or " no (" in line for line in lines if " NaMIGuide " in line)
    assert "NaMIGuide at least as good as the best baseline within noise on" in result.stdout


def test_distributed_benchmark_runs_every_configuration():
    pytest.importorskip("lightning")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "distributed.py"), "--fast"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    for model in ("chain", "vae"):
        labels = [" ".join(r[1:3]) for r in rows if r[:1] == [model]]
        assert labels == ["in-process fit", "ddp, 1", "ddp, 2"], result.stdout
    assert "non-finite flag" in result.stdout
