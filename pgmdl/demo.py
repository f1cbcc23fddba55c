"""``pgmdl demo``: the main job end to end, on embedded real data, no download.

Today (graph compiler and NaMI): compile the model zoo's VAE and
semi-supervised M2 on the 8x8 digits bundled with scikit-learn, print their
graphs, show the edge Pyro's own inspection misses, invert M2 and the
hierarchical VAE with NaMI and certify the inverses, audit a hand-written M2
guide that forgets the label, and draw every zoo model beside its NaMI guide.
The demo grows as capabilities land (guides, training).
"""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.inspect import get_dependencies

from pgmdl.cli import load_model
from pgmdl.datasets import load_digits
from pgmdl.errors import CLIError
from pgmdl.graph import ModelGraph, audit_guide, check_faithful, compile, invert, is_minimal
from pgmdl.render import render, write

ZOO = ("vae", "hvae", "gmm", "m2", "cvae")


def zoo_dir() -> Path:
    """The model zoo folder (``models/`` beside the package in a source checkout)."""
    folder = Path(__file__).resolve().parent.parent / "models"
    if not folder.is_dir():
        raise CLIError(
            f"the model zoo was not found at {folder}: run the demo from a source checkout "
            "of pgmdl (pip install -e .)."
        )
    return folder


def run_demo(out: Path, batch_size: int = 64) -> list[Path]:
    """Run the demo, writing drawings into ``out``; returns the files written."""
    zoo = zoo_dir()
    images, labels = load_digits(return_labels=True)
    x = images[:batch_size]
    y = torch.nn.functional.one_hot(labels[:batch_size], 10).to(x.dtype)
    print(f"data: {len(images)} real 8x8 digits (scikit-learn's bundled UCI set); batch {len(x)}")

    written = []
    vae = load_model(f"{zoo / 'vae.py'}:model")
    graph = compile(vae.model, x=x)
    print("\n== VAE on real digits ==")
    print(graph.summary())
    written.append(_draw(graph, out / "vae.svg"))

    m2 = load_model(f"{zoo / 'm2.py'}:model")
    graph = compile(m2.model, x=x, y=y)
    print("\n== Semi-supervised M2 with observed labels ==")
    print(graph.summary())
    pyro_parents = sorted(
        set(get_dependencies(m2.model, (), {"x": x, "y": y})["prior_dependencies"]["x"]) - {"x"}
    )
    print(
        f"\nparents of x: pgmdl {list(graph.parents('x'))}, "
        f"pyro.infer.inspect.get_dependencies {pyro_parents}"
    )
    written.append(_draw(graph, out / "m2.svg"))

    print("\n== NaMI inverses (the structure of a faithful amortized guide) ==")
    inverse = invert(graph)
    print(inverse.summary())
    print(check_faithful(graph, inverse), "| minimal:", is_minimal(graph, inverse))
    hvae = load_model(f"{zoo / 'hvae.py'}:model")
    hgraph = compile(hvae.model, x=x)
    for order in ("min-fill", "reverse"):
        hinverse = invert(hgraph, order=order)
        print()
        print(hinverse.summary())
        print(check_faithful(hgraph, hinverse), "| minimal:", is_minimal(hgraph, hinverse))

    print("\n== Audit of a hand-written M2 guide that forgets the label ==")
    encoder = torch.nn.Linear(x.shape[1], 16)

    def guide_without_label(x=None, y=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    print(audit_guide(m2.model, guide_without_label, x=x, y=y).report())

    print("\n== The model zoo (model and NaMI guide side by side) ==")
    for name in ZOO:
        loaded = load_model(f"{zoo / (name + '.py')}:model")
        graph = compile(loaded.model, *loaded.args, **loaded.kwargs)
        print(
            f"  {name:5s} {len(graph)} sites, {graph.dag.number_of_edges()} edges, "
            f"latent {list(graph.latent_sites)}, plates {list(graph.plates)}"
        )
        order = "reverse" if name == "gmm" else "min-fill"
        dot = render(graph, show_distributions=True, guide="nami", order=order)
        written.append(write(dot, out / f"zoo_{name}.svg"))
    print(f"\nwrote {len(written)} drawings: " + ", ".join(str(p) for p in written))
    return written


def _draw(graph: ModelGraph, path: Path) -> Path:
    return write(render(graph, show_distributions=True), path)
