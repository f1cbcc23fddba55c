"""The ``pgmdl`` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import pgmdl.cli
from pgmdl.cli import main
from pgmdl.errors import SpecError
from pgmdl.specs import load_model
from tests.conftest import ROOT, needs_dot

VAE = str(ROOT / "models" / "vae.py") + ":model"


def test_inspect_prints_the_site_table(capsys):
    assert main(["inspect", VAE]) == 0
    out = capsys.readouterr().out
    assert "VAE.model: 2 sites, 1 edges" in out
    assert "x     observed  Bernoulli" in out and "data   5" in out


def test_inspect_json(capsys):
    assert main(["inspect", VAE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in data["sites"]] == ["z", "x"]
    assert data["edges"] == [{"parent": "z", "child": "x", "kind": "data"}]


def test_model_name_defaults_to_model(capsys):
    assert main(["inspect", str(ROOT / "models" / "hvae.py")]) == 0
    assert "z2" in capsys.readouterr().out


@needs_dot
def test_render_writes_an_svg(tmp_path, capsys):
    out = tmp_path / "vae.svg"
    assert main(["render", VAE, "-o", str(out), "--distributions"]) == 0
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert f"wrote {out}" in capsys.readouterr().out


def test_render_gv_source(tmp_path):
    out = tmp_path / "vae.gv"
    assert main(["render", VAE, "-o", str(out)]) == 0
    assert "z -> x" in out.read_text()


def write_module(tmp_path, body: str):
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.py:model", "no such file: 'missing.py'"),
        ("no_such_package_xyz:model", "could not import 'no_such_package_xyz'"),
    ],
)
def test_unloadable_specs(spec, message, capsys):
    assert main(["inspect", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgmdl: error: ") and message in err and "Traceback" not in err


def test_the_spec_loader_is_library_code(tmp_path):
    # pgmdl.specs holds it (the demo and the tests use it too); the CLI re-exports it
    assert pgmdl.cli.load_model is load_model
    with pytest.raises(SpecError, match="no such file"):
        load_model(str(tmp_path / "missing.py") + ":model")


def test_missing_attribute_lists_the_callables(tmp_path, capsys):
    path = write_module(tmp_path, "def generative(x):\n    pass\n")
    assert main(["inspect", f"{path}:model"]) == 2
    assert "has no attribute 'model'; callables defined there: ['generative']" in (
        capsys.readouterr().err
    )


def test_module_that_fails_to_import(tmp_path, capsys):
    path = write_module(tmp_path, "import not_a_real_module_abc\n")
    assert main(["inspect", f"{path}:model"]) == 2
    assert "ModuleNotFoundError" in capsys.readouterr().err


def test_bad_example_args(tmp_path, capsys):
    path = write_module(
        tmp_path,
        """
        def model(x):
            pass
        def example_args():
            return [1, 2]
        """,
    )
    assert main(["inspect", f"{path}:model"]) == 2
    assert "must return (args_tuple, kwargs_dict), got list" in capsys.readouterr().err


def test_model_errors_exit_1_without_traceback(tmp_path, capsys):
    path = write_module(
        tmp_path,
        """
        import pyro, pyro.distributions as dist
        def model():
            pyro.sample("a", dist.Normal(0.0, 1.0))
            raise ValueError("bad shapes")
        """,
    )
    assert main(["inspect", f"{path}:model"]) == 1
    err = capsys.readouterr().err
    assert "raised ValueError after site 'a'" in err and "bad shapes" in err
    assert "--traceback" in err and "Traceback" not in err
    with pytest.raises(Exception, match="bad shapes"):
        main(["--traceback", "inspect", f"{path}:model"])


def test_structure_warnings_are_printed(tmp_path, capsys):
    path = write_module(
        tmp_path,
        """
        import pyro, pyro.distributions as dist
        def model():
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.item(), 1.0))
        """,
    )
    assert main(["inspect", f"{path}:model"]) == 0
    assert "pgmdl: warning: in model 'model', the value of site 'z'" in capsys.readouterr().err


def test_example_args_are_passed():
    loaded = load_model(str(ROOT / "models" / "cvae.py") + ":model")
    assert loaded.args[0].shape == (5, 10) and loaded.kwargs["x"].shape == (5, 64)


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "1797 real 8x8 digits" in out
    assert "parents of x: pgmdl ['y', 'z'], pyro.infer.inspect.get_dependencies ['z']" in out
    assert "guide: q(z1 | x)  q(z2 | z1)" in out
    assert "FitResult: 2 epochs, 30 steps" in out
    assert re.search(r"KL per site, bits per digit: z1 \d+\.\d\d, z2 \d+\.\d\d", out)
    assert re.search(r"trained ELBO: -\d+\.\d\d nats per digit", out)
    assert re.search(r"held-out ELBO: -\d+\.\d\d nats per digit on the 297 held-out", out)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "vae.svg" in written or "vae.gv" in written
    assert "loss.svg" in written and len(written) == 8
    assert (tmp_path / "loss.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_demo_needs_at_least_one_epoch(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "at least one epoch" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "pgmdl")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "inspect" in result.stdout and "demo" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "pgmdl", "inspect", "nope.py"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "pgmdl: error: no such file" in result.stderr


GMM = str(ROOT / "models" / "gmm.py") + ":model"
HVAE = str(ROOT / "models" / "hvae.py") + ":model"


def test_invert_prints_the_inverse_and_its_certificates(capsys):
    assert main(["invert", HVAE, "--order", "reverse"]) == 0
    out = capsys.readouterr().out
    assert "guide samples: z2 -> z1" in out
    assert "z1    x, z2" in out
    assert "faithful: all 6 guide conditionals hold in the model (plates unrolled to data=3)" in out
    assert "minimal: yes" in out


def test_invert_json_and_explicit_order(capsys):
    assert main(["invert", HVAE, "--order", "z1,z2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["strategy"] == "explicit" and data["order"] == ["z2", "z1"]
    assert data["faithful"] is True and data["minimal"] is True


def test_invert_bad_order_names_the_site(capsys):
    assert main(["invert", GMM, "--order", "weights,x"]) == 1
    err = capsys.readouterr().err
    assert "'x', an observed site" in err
    assert main(["invert", GMM, "--order", "natural"]) == 1
    assert "unknown order 'natural'" in capsys.readouterr().err


def test_render_with_the_nami_guide(tmp_path, capsys):
    out = tmp_path / "gmm.gv"
    assert main(["render", GMM, "-o", str(out), "--guide", "nami", "--order", "reverse"]) == 0
    source = out.read_text()
    assert "cluster_panel_model" in source and "cluster_panel_guide" in source
    assert "guide (NaMI, reverse)" in source
    assert "joint over components" in source


def test_audit_reports_and_sets_the_exit_status(tmp_path, capsys):
    guides = tmp_path / "guides.py"
    guides.write_text(
        textwrap.dedent(
            """
            import pyro, pyro.distributions as dist

            def model(x):
                a = pyro.sample("a", dist.Normal(0.0, 1.0))
                b = pyro.sample("b", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

            def mean_field(x):
                pyro.sample("a", dist.Normal(x, 1.0))
                pyro.sample("b", dist.Normal(x, 1.0))

            def faithful(x):
                a = pyro.sample("a", dist.Normal(x, 1.0))
                pyro.sample("b", dist.Normal(x - a, 1.0))

            def example_args():
                import torch
                return (torch.tensor(1.0),), {}
            """
        )
    )
    assert main(["audit", f"{guides}:model", f"{guides}:mean_field"]) == 1
    out = capsys.readouterr().out
    assert "CANNOT represent the posterior" in out and "active path: b -> x <- a" in out
    assert main(["audit", f"{guides}:model", f"{guides}:faithful"]) == 0
    assert "can represent the posterior" in capsys.readouterr().out
