"""BTGM case studies on the 8x8 digits (benchmarks/btgm_digits.py) run in fast mode."""

import subprocess
import sys

from tests.conftest import ROOT

FIGURES = [
    "digits_conditioning_lambda.png",
    "digits_conditioning_pareto.png",
    "digits_conditioning_samples.png",
    "digits_gradient_norms.png",
    "digits_refinement.png",
    "digits_refinement_gradient_norms.png",
    "digits_refinement_plain.png",
]


def test_btgm_digits_fast_run_conditions_on_the_class_and_writes_its_figures(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "btgm_digits.py"), "--fast",
         "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for heading in ("(a) conditioning on y = 4", "gradient norms ||grad_z f||",
                    "lambda sweeps", "max |KL achieved - KL theory|", "eq. 10.21 at lambda = 1",
                    "(c) refinement with a discriminator", "checks: OK"):  # fmt: skip
        assert heading in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == FIGURES

    # the sweep table of log c(4|x): one row per lambda, the share of 4s grows to lambda = 1
    table = table_after(out, "share 4 theory")
    shares = {
        float(r["lambda"]): float(r["share 4"]) for r in table if r["criterion"] == "log c(4|x)"
    }
    assert sorted(shares) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25], out
    assert shares[1.0] > shares[0.0] + 0.2, shares


def table_after(out: str, marker: str) -> list[dict[str, str]]:
    """The rows of the first printed table whose header contains ``marker``, by
    column title (columns are read from the dashes under the header)."""
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if marker in line)
    header, dashes = lines[i], lines[i + 1]
    spans, start = [], 0
    for run in dashes.split("  "):
        spans.append((start, start + len(run)))
        start += len(run) + 2
    titles = [header[a:b].strip() for a, b in spans]
    rows = []
    for line in lines[i + 2 :]:
        if not line.strip() or any(line[b : b + 2].strip() for _, b in spans[:-1]):
            break  # a blank line, or text across the gaps between columns: the table ended
        rows.append({t: line[a:b].strip() for t, (a, b) in zip(titles, spans, strict=True)})
    return rows
