"""``pgmdl demo``: the main job end to end, on embedded real data, no download.

Today (the graph compiler): compile the model zoo's VAE and semi-supervised
M2 on the 8x8 digits bundled with scikit-learn, print their graphs, show the
edge Pyro's own inspection misses, and draw every zoo model. The demo grows
as capabilities land (inversion, guides, training).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pyro.infer.inspect import get_dependencies

from pgmdl.cli import load_model
from pgmdl.datasets import load_digits
from pgmdl.errors import CLIError
from pgmdl.graph import ModelGraph, compile
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

    print("\n== The model zoo ==")
    for name in ZOO:
        loaded = load_model(f"{zoo / (name + '.py')}:model")
        graph = compile(loaded.model, *loaded.args, **loaded.kwargs)
        print(
            f"  {name:5s} {len(graph)} sites, {graph.dag.number_of_edges()} edges, "
            f"latent {list(graph.latent_sites)}, plates {list(graph.plates)}"
        )
        written.append(_draw(graph, out / f"zoo_{name}.svg"))
    print(f"\nwrote {len(written)} drawings: " + ", ".join(str(p) for p in written))
    return written


def _draw(graph: ModelGraph, path: Path) -> Path:
    return write(render(graph, show_distributions=True), path)
