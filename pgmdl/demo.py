"""``pgmdl demo``: the main job end to end, on embedded real data, no download.

On the 8x8 digits bundled with scikit-learn:

1. compile the model zoo's VAE and semi-supervised M2, print their graphs,
   and show the edge Pyro's own inspection misses;
2. invert M2 and the hierarchical VAE with NaMI and certify the inverses;
3. audit a hand-written M2 guide that forgets the label;
4. draw every zoo model beside its NaMI guide;
5. train the hierarchical VAE with its :class:`~pgmdl.NaMIGuide` by
   :func:`~pgmdl.fit` on 1500 digits (with a progress bar), print the KL
   each latent site carries in bits per digit and the ELBO per digit of the
   297 held-out digits, and plot the training loss (``loss.svg``, with
   matplotlib from the ``data`` extra).

Drawings are written into the output folder (DOT source ``.gv`` instead of
SVG when Graphviz's ``dot`` is missing). ``epochs`` (``pgmdl demo
--epochs N``) sets the length of the training run.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.inspect import get_dependencies

from pgmdl.datasets import load_digits
from pgmdl.errors import CLIError
from pgmdl.graph import ModelGraph, audit_guide, check_faithful, compile, invert, is_minimal
from pgmdl.guides import NaMIGuide
from pgmdl.infer import FitResult, fit
from pgmdl.render import render, write
from pgmdl.specs import load_model

ZOO = ("vae", "hvae", "gmm", "m2", "cvae")

#: epochs of the demo's training run (``pgmdl demo --epochs``)
DEFAULT_EPOCHS = 30
NUM_TRAIN = 1500  # the first 1500 digits train, the last 297 are held out


def zoo_dir() -> Path:
    """The model zoo folder (``models/`` beside the package in a source checkout)."""
    folder = Path(__file__).resolve().parent.parent / "models"
    if not folder.is_dir():
        raise CLIError(
            f"the model zoo was not found at {folder}: run the demo from a source checkout "
            "of pgmdl (pip install -e .)."
        )
    return folder


def run_demo(out: Path, batch_size: int = 64, epochs: int | None = None) -> list[Path]:
    """Run the demo, writing drawings and the loss plot into ``out``; returns
    the files written.

    Args:
        out: the output folder (created if needed).
        batch_size: the number of digits the graphs are compiled with.
        epochs: passes over the 1500 training digits (15 steps each);
            ``None`` for :data:`DEFAULT_EPOCHS`.
    """
    if epochs is None:
        epochs = DEFAULT_EPOCHS
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise CLIError(f"the demo trains for at least one epoch; got epochs={epochs!r}")
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

    print("\n== Training the hierarchical VAE with its NaMI guide (drawn in zoo_hvae) ==")
    plot = _train_hvae(hvae.module, images, epochs, out / "loss.svg")
    if plot is not None:
        written.append(plot)
    print(f"\nwrote {len(written)} files: " + ", ".join(str(p) for p in written))
    return written


def _train_hvae(module: ModuleType, images: torch.Tensor, epochs: int, plot: Path) -> Path | None:
    """Train a fresh hierarchical VAE of the zoo ``module`` with a NaMIGuide; print
    the per-site KL and the held-out ELBO; plot the loss into ``plot``."""
    x_train, x_test = images[:NUM_TRAIN], images[NUM_TRAIN:]
    threads = torch.get_num_threads()
    # Small networks: one thread is faster than several (and much faster when
    # other programs keep the cores busy).
    torch.set_num_threads(1)
    try:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)  # the networks' initial weights: the same run every time
        hvae = module.HierarchicalVAE()
        guide = NaMIGuide(hvae.model)
        guide.setup(x=x_train[:2])
        print("guide: " + "  ".join(f"q({s} | {', '.join(guide.parents(s))})" for s in guide.sites))
        print(f"training on {len(x_train)} digits, minibatches of 100, {epochs} epochs")
        start = time.perf_counter()
        result = fit(
            hvae.model,
            guide,
            {"x": x_train},
            epochs=epochs,
            batch_size=100,
            optim=pyro.optim.Adam({"lr": 1e-3}),
            seed=0,
            progress=True,
        )
        seconds = time.perf_counter() - start
        with torch.no_grad():
            elbo = -Trace_ELBO(num_particles=10).loss(hvae.model, guide, x=x_test) / len(x_test)
    finally:
        torch.set_num_threads(threads)
    print(result.summary(max_rows=5))
    print(f"trained in {seconds:.1f} s")
    print(
        "KL per site, bits per digit: "
        + ", ".join(f"{site} {bits:.2f}" for site, bits in result.kl_bits[-1].items())
    )
    print(
        f"trained ELBO: {-result.epoch_losses[-1]:.2f} nats per digit on the training digits, "
        f"held-out ELBO: {elbo:.2f} nats per digit on the {len(x_test)} held-out digits"
    )
    return _plot_losses(result, plot)


def _plot_losses(result: FitResult, path: Path) -> Path | None:
    """The loss per digit, per step and per epoch, drawn with matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError:
        print('no loss plot: it needs matplotlib (pip install "pgmdl[data]")')
        return None
    steps_per_epoch = result.steps / result.epochs
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(range(1, result.steps + 1), result.losses, lw=0.7, alpha=0.6, label="minibatch")
    epoch_ends = [steps_per_epoch * (e + 1) for e in range(result.epochs)]
    axes.plot(epoch_ends, result.epoch_losses, "o-", ms=3, label="epoch")
    axes.set_xlabel("step")
    axes.set_ylabel("loss per digit (nats) = -ELBO")
    axes.set_title("Hierarchical VAE with its NaMI guide, 8x8 digits")
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"loss plot: {path}")
    return path


def _draw(graph: ModelGraph, path: Path) -> Path:
    return write(render(graph, show_distributions=True), path)
