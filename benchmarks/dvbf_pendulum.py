"""Does the DVBF identify the pendulum's dynamics where the fully probabilistic Markov model
fails (thesis §8.3, Karl et al. 2017)? k-step-ahead prediction error of both, several seeds.

Run it from the repository root::

    python benchmarks/dvbf_pendulum.py                  # 3 seeds, figure to docs/figures
    python benchmarks/dvbf_pendulum.py --seeds 5 --steps 3000
    python benchmarks/dvbf_pendulum.py --fast           # tiny, 1 seed (CI smoke run)

The claim (thesis §8.3.1-8.3.2, after M. Karl, M. Soelch, J. Bayer and P. van der
Smagt, "Deep Variational Bayes Filters", ICLR 2017, §5.1): trained by the ELBO on
sequences of observations and controls, a state-space model whose states are
latent *sample sites* (:class:`models.dvbf.FullyProbabilisticSSM`) stores in
``z_t`` what reconstructs ``x_t`` and misses the dynamics (the pendulum's
velocity, which one frame does not show); the DVBF (:class:`models.dvbf.DVBF`),
whose states are *deterministic* functions of an initial ``w`` and innovations
``beta_t``, is pushed to store in ``z_t`` what predicts ``z_{t+1}``, and so
identifies the dynamics. Both models share the locally linear transition and the
Gaussian emitter; each is given the guide ``pgmdl.NaMIGuide(net.model,
order=...)``, nothing hand-written.

Data (SYNTHETIC, :func:`pgmdl.datasets.controlled_pendulum.pendulum` with its
defaults: a damped pendulum, dt 0.1 s, piecewise-constant controls, a 16-pixel
ring image with noise 0.05): ``--train`` sequences of length ``--length`` (T)
drawn with ``torch.Generator().manual_seed(1000)``, and ``--test`` held-out
sequences of length T + ``--horizon`` (K) drawn with seed 2000. The data are the
same for every seed; seed ``s`` (``0 .. --seeds - 1``) sets Pyro's random
stream before the networks and the guide are built (their initial weights, the
ELBO's samples).

Training: ``pyro.infer.SVI`` with ``Trace_ELBO`` and ``pyro.optim.Adam`` (lr
``--lr``, 3e-3), model and guide parameters together, ``--steps`` full-batch
steps (a step costs about the same at 32 and at 256 sequences on one CPU
thread: the per-site overhead dominates). Guide orders: for the DVBF,
``"reverse"`` and the default ``"min-fill"`` give the same plan (``w`` reads
every frame and ``u``, then ``beta_t`` reads ``w``, ``beta_0 .. beta_{t-1}``,
``x_{t+1} ..`` and ``u``); for the Markov model ``"min-fill"`` (the default)
samples ``z_{T-1}`` first from ``x_0 .. x_{T-1}`` and runs backwards, ``"reverse"``
runs forwards from ``z_0``; both train alike (``--markov-order``), min-fill is
used. At lr 1e-2 the Markov model's training diverges (its guide's locations
blow up and float32 cancellation makes ``-log q`` enormous: a training loss
near -1e23) and the DVBF's does after some 6,000 steps.

1. **Training and identification.** Per model: the guide's order, the training
   time, the last training loss, the held-out ``-ELBO`` per sequence (first T
   steps of the held-out sequences, ``--particles`` particles, ``guide.eval()``:
   both models bound the same ``log p(x | u)``, so the numbers compare), and how
   well the true state is read linearly off the learned latent: ``z_t`` (one
   guide sample replayed through the model; for the DVBF the deterministic path
   ``z_t = f(z_{t-1}, u_{t-1}, beta_{t-1})``) regressed by least squares (with
   an intercept) onto ``cos theta``, ``sin theta`` and the angular velocity
   ``omega`` on the training sequences, R^2 measured on the held-out ones (the
   thesis's question: does ``z`` hold the velocity?).
2. **k-step-ahead prediction.** The guides are built for one length (T), so
   instead of masking a prefix the prediction starts at the LAST step of a
   window of exactly T steps, where the guide's marginal of ``z_{T-1}`` is a
   filtering distribution (it reads ``x_0 .. x_{T-1}`` and ``u`` only, no
   later frame). For every held-out sequence: ``--samples`` draws of the guide
   on the first T steps, each replayed through the model to get ``z_{T-1}``;
   from there the model's own transition ``net.transition`` is rolled forward
   k = 1 .. K steps with the TRUE controls ``u_{T-1} .. u_{T+K-2}`` and each
   state emitted (the emitter's mean). Two rollouts: innovations off (DVBF
   ``beta = 0``, Markov model the transition's mean) and innovations sampled
   (DVBF ``beta ~ N(0, I)``, Markov model ``z + softplus(scale) * eps``); the
   prediction is the mean over the draws. Error: mean squared error per pixel
   against the observed frame ``x_{T-1+k}`` (its noise alone gives
   ``noise^2 = 0.0025``); k = 0 is the reconstruction of ``x_{T-1}``. For
   scale, two predictors that know no dynamics: the last observed frame
   ``x_{T-1}`` and the mean frame of the training set. Mean ± s.e. over seeds
   (the sample standard deviation / sqrt(seeds)); a figure of the error vs k.

This is a measurement, not a test: it never asserts on losses, errors or timings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pgmdl  # noqa: E402
from benchmarks.compile_scale import machine, print_table  # noqa: E402
from models.dvbf import DVBF, FullyProbabilisticSSM  # noqa: E402
from pgmdl.datasets.controlled_pendulum import PendulumSample, pendulum  # noqa: E402

DEFAULT_FIGURE = ROOT / "docs" / "figures" / "dvbf_pendulum.png"
MODELS: dict[str, type[nn.Module]] = {
    "DVBF": DVBF,
    "Markov SSM": FullyProbabilisticSSM,
}
ROLLOUTS = ("off", "sampled")  # innovations during the k-step rollout
BASELINES = ("last frame", "mean frame")


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def _pm(values: list[float], digits: int) -> str:
    mean, se = _mean_se(values)
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    train: PendulumSample  # (n_train, T)
    test: PendulumSample  # (n_test, T + K)
    length: int  # T
    horizon: int  # K


def make_data(args: argparse.Namespace) -> Data:
    train = pendulum(args.train, args.length, generator=torch.Generator().manual_seed(1000))
    test = pendulum(
        args.test, args.length + args.horizon, generator=torch.Generator().manual_seed(2000)
    )
    return Data(train, test, args.length, args.horizon)


# --------------------------------------------------------------------------- training


@dataclass
class Run:
    """One model trained on one seed, and what was measured on it."""

    train_s: float
    last_loss: float  # training -ELBO per sequence, mean of the last 20 steps
    neg_elbo: float  # held-out -ELBO per sequence
    r2: dict[str, float]  # "cos", "sin", "omega"
    mse: dict[str, list[float]]  # rollout -> [k = 0 .. K]


def train(
    name: str, data: Data, seed: int, args: argparse.Namespace
) -> tuple[nn.Module, pgmdl.NaMIGuide, float, float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    net = MODELS[name]()
    guide = pgmdl.NaMIGuide(net.model, order=args.order[name])
    svi = SVI(net.model, guide, pyro.optim.Adam({"lr": args.lr}), Trace_ELBO())
    x, u = data.train.observations, data.train.controls
    losses = []
    start = time.perf_counter()
    for _ in range(args.steps):
        losses.append(svi.step(x, u) / x.shape[0])
    seconds = time.perf_counter() - start
    return net, guide, seconds, statistics.fmean(losses[-20:])


@torch.no_grad()
def latent_path(
    net: nn.Module, guide: pgmdl.NaMIGuide, x: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """``(N, T, z_dim)``: one draw of the guide replayed through the model (the
    DVBF's deterministic path from ``w`` and the ``beta``; the Markov model's
    sampled states)."""
    guide_trace = poutine.trace(guide).get_trace(x, u)
    return poutine.replay(net.model, trace=guide_trace)(x, u)


@torch.no_grad()
def rollout(net: nn.Module, z: torch.Tensor, u: torch.Tensor, innovations: str) -> torch.Tensor:
    """The emitter's means ``(N, k, x_dim)`` of the states after each control of
    ``u`` ``(N, k, u_dim)``, from ``z`` ``(N, z_dim)``, by the model's own transition."""
    frames = []
    for i in range(u.shape[1]):
        if isinstance(net, DVBF):
            beta = z.new_zeros(z.shape[0], net.beta_dim)
            if innovations == "sampled":
                beta = torch.randn_like(beta)
            z = net.transition(z, u[:, i], beta)
        else:
            z = net.transition(z, u[:, i])
            if innovations == "sampled":
                scale = nn.functional.softplus(net.transition_scale) + 1e-3  # as the model
                z = z + scale * torch.randn_like(z)
        frames.append(net.emitter(z).mean)
    return torch.stack(frames, dim=1)


def predict(net: nn.Module, guide: pgmdl.NaMIGuide, data: Data, args: argparse.Namespace):
    """``{rollout: (N, K + 1, x_dim)}``: the mean over ``--samples`` draws of the
    reconstruction of ``x_{T-1}`` and of the predictions of ``x_{T-1+k}``."""
    steps, test = data.length, data.test
    x, u = test.observations[:, :steps], test.controls[:, :steps]
    future = test.controls[:, steps - 1 : steps - 1 + data.horizon]
    sums = {mode: 0.0 for mode in ROLLOUTS}
    for _ in range(args.samples):
        z = latent_path(net, guide, x, u)[:, -1]
        now = net.emitter(z).mean[:, None]
        for mode in ROLLOUTS:
            sums[mode] = sums[mode] + torch.cat([now, rollout(net, z, future, mode)], dim=1)
    return {mode: total / args.samples for mode, total in sums.items()}


def _targets(data: Data) -> torch.Tensor:
    """``(N, K + 1, x_dim)``: the observed frames ``x_{T-1} .. x_{T-1+K}``."""
    return data.test.observations[:, data.length - 1 : data.length + data.horizon]


def _mse_per_k(prediction: torch.Tensor, target: torch.Tensor) -> list[float]:
    return ((prediction - target) ** 2).mean(dim=(0, 2)).tolist()


def _physical(states: torch.Tensor) -> torch.Tensor:
    """``(..., 3)``: ``cos theta``, ``sin theta``, ``omega``."""
    theta, omega = states[..., 0], states[..., 1]
    return torch.stack([torch.cos(theta), torch.sin(theta), omega], dim=-1)


@torch.no_grad()
def latent_r2(net: nn.Module, guide: pgmdl.NaMIGuide, data: Data) -> dict[str, float]:
    """R^2 on the held-out sequences of the least-squares map (fit on the
    training sequences) from ``[z_t, 1]`` to ``cos theta, sin theta, omega``."""
    steps = data.length

    def design(sample: PendulumSample) -> tuple[torch.Tensor, torch.Tensor]:
        x, u = sample.observations[:, :steps], sample.controls[:, :steps]
        z = latent_path(net, guide, x, u).reshape(-1, net.z_dim).double()
        features = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)
        return features, _physical(sample.states[:, :steps]).reshape(-1, 3).double()

    a_train, y_train = design(data.train)
    a_test, y_test = design(data.test)
    coef = torch.linalg.lstsq(a_train, y_train).solution
    residual = ((a_test @ coef - y_test) ** 2).sum(0)
    total = ((y_test - y_test.mean(0)) ** 2).sum(0)
    r2 = (1 - residual / total).tolist()
    return dict(zip(("cos", "sin", "omega"), r2, strict=True))


def run_one(name: str, data: Data, seed: int, args: argparse.Namespace) -> Run:
    net, guide, seconds, last_loss = train(name, data, seed, args)
    guide.eval()
    steps = data.length
    x, u = data.test.observations[:, :steps], data.test.controls[:, :steps]
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=args.particles).loss(net.model, guide, x, u)
    target = _targets(data)
    predictions = predict(net, guide, data, args)
    return Run(
        train_s=seconds,
        last_loss=last_loss,
        neg_elbo=loss / x.shape[0],
        r2=latent_r2(net, guide, data),
        mse={mode: _mse_per_k(p, target) for mode, p in predictions.items()},
    )


def baselines(data: Data) -> dict[str, list[float]]:
    target = _targets(data)
    last = data.test.observations[:, data.length - 1 : data.length].expand_as(target)
    mean = data.train.observations.mean(dim=(0, 1)).expand_as(target)
    return {"last frame": _mse_per_k(last, target), "mean frame": _mse_per_k(mean, target)}


# --------------------------------------------------------------------------- tables


TRAIN_COLUMNS = [
    ("model", "model"),
    ("order", "guide order"),
    ("train", "train (s)"),
    ("loss", "last train -ELBO/seq"),
    ("elbo", "held-out -ELBO/seq"),
    ("cos", "R^2 cos theta"),
    ("sin", "R^2 sin theta"),
    ("omega", "R^2 omega"),
]


def train_rows(runs: dict[str, list[Run]], args: argparse.Namespace) -> list[dict[str, str]]:
    return [
        {
            "model": name,
            "order": str(args.order[name]),
            "train": f"{statistics.fmean(r.train_s for r in model_runs):.0f}",
            "loss": _pm([r.last_loss for r in model_runs], 1),
            "elbo": _pm([r.neg_elbo for r in model_runs], 1),
            **{key: _pm([r.r2[key] for r in model_runs], 2) for key in ("cos", "sin", "omega")},
        }
        for name, model_runs in runs.items()
    ]


def _series(
    runs: dict[str, list[Run]], base: dict[str, list[float]]
) -> dict[str, list[list[float]]]:
    """``{column title: [per k: values over seeds]}``."""
    out = {}
    for name, model_runs in runs.items():
        for mode in ROLLOUTS:
            label = f"{name}, innovations {mode}"
            out[label] = [
                [r.mse[mode][k] for r in model_runs] for k in range(len(base[BASELINES[0]]))
            ]
    for name in BASELINES:
        out[name] = [[value] for value in base[name]]
    return out


def prediction_columns(runs: dict[str, list[Run]]) -> list[tuple[str, str]]:
    columns = [("k", "k")]
    for name in runs:
        columns += [(f"{name}, innovations {mode}", f"{name} ({mode})") for mode in ROLLOUTS]
    return columns + [(name, name) for name in BASELINES]


def prediction_rows(series: dict[str, list[list[float]]]) -> list[dict[str, str]]:
    horizon = len(next(iter(series.values())))
    return [
        {"k": str(k), **{label: _pm(values[k], 4) for label, values in series.items()}}
        for k in range(horizon)
    ]


def save_figure(series: dict[str, list[list[float]]], noise: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"DVBF": "tab:blue", "Markov SSM": "tab:red"}
    for label, values in series.items():
        ks = list(range(len(values)))
        means = [_mean_se(v)[0] for v in values]
        ses = [_mean_se(v)[1] or 0.0 for v in values]
        model = label.split(",")[0]
        if model in styles:
            dashed = label.endswith("sampled")
            ax.errorbar(
                ks,
                means,
                yerr=ses,
                color=styles[model],
                linestyle="--" if dashed else "-",
                marker="o",
                markersize=3,
                capsize=2,
                label=label.replace("innovations", "innov."),
            )
        else:
            ax.plot(  # from k = 1: the last frame reconstructs itself (0 on a log scale)
                ks[1:],
                means[1:],
                color="grey",
                linestyle=":" if "mean" in label else "-.",
                label=label,
            )
    ax.axhline(noise**2, color="black", linewidth=0.8, label=f"pixel noise² ({noise**2:g})")
    ax.set_yscale("log")
    ax.set_xticks(range(len(next(iter(series.values())))))
    ax.set_xlabel("k (steps ahead of the last observed frame; 0: reconstruction)")
    ax.set_ylabel("MSE per pixel (held-out)")
    ax.set_title("SYNTHETIC pendulum: k-step-ahead prediction (mean ± s.e. over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="DVBF vs the fully probabilistic Markov state-space model on the SYNTHETIC "
        "pendulum: k-step-ahead prediction error and latent identification."
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=2000, help="full-batch SVI steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--train", type=int, default=256, help="training sequences")
    parser.add_argument("--test", type=int, default=256, help="held-out sequences")
    parser.add_argument("--length", type=int, default=15, help="T, the training length")
    parser.add_argument("--horizon", type=int, default=10, help="K, the largest k")
    parser.add_argument("--samples", type=int, default=16, help="guide draws per prediction")
    parser.add_argument("--particles", type=int, default=16, help="particles of the -ELBO")
    parser.add_argument(
        "--dvbf-order", default="reverse", help="NaMIGuide order of the DVBF's guide"
    )
    parser.add_argument(
        "--markov-order", default="min-fill", help="NaMIGuide order of the Markov SSM's guide"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--figure",
        type=Path,
        default=None,
        help=f"where to save the figure (default "
        f"{DEFAULT_FIGURE.relative_to(ROOT)}, none with --fast)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="T 6, K 3, 16/8 sequences, 5 steps, 1 seed, 2 draws (a CI smoke run)",
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.seeds, args.steps, args.train, args.test = 1, 5, 16, 8
        args.length, args.horizon, args.samples, args.particles = 6, 3, 2, 2
    elif args.figure is None:
        args.figure = DEFAULT_FIGURE
    sizes = ("seeds", "steps", "train", "test", "horizon", "samples", "particles", "threads")
    if min(getattr(args, name) for name in sizes) < 1 or args.length < 2:
        parser.error("the sizes must be at least 1 and --length at least 2")
    args.order = {"DVBF": args.dvbf_order, "Markov SSM": args.markov_order}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    data = make_data(args)
    print(machine())
    print(f"threads: torch.set_num_threads({args.threads})")
    print(
        f"data: SYNTHETIC pendulum (pgmdl.datasets.controlled_pendulum.pendulum defaults: "
        f"dt {data.train.dynamics.dt:g} s, damping {data.train.dynamics.damping:g}, "
        f"{data.train.pixels} pixels, noise {data.train.noise:g}, piecewise controls); "
        f"{args.train} training sequences of T = {args.length} (seed 1000), {args.test} "
        f"held-out of T + K = {args.length + args.horizon} (seed 2000)"
    )
    print(
        "models: models.dvbf.DVBF() and FullyProbabilisticSSM() (z_dim 3, 4 linear systems); "
        "guides: pgmdl.NaMIGuide(net.model, order=...)"
    )
    print(
        f"training: {args.steps} full-batch SVI steps, Trace_ELBO, Adam lr {args.lr:g} (model "
        f"and guide together), seeds 0..{args.seeds - 1}"
    )
    print()
    runs: dict[str, list[Run]] = {}
    for name in MODELS:
        runs[name] = []
        for seed in range(args.seeds):
            runs[name].append(run_one(name, data, seed, args))
            print(f"  trained {name}, seed {seed}", file=sys.stderr, flush=True)
    print(
        f"1. Training and identification: held-out -ELBO per sequence ({args.particles} "
        f"particles, first {args.length} steps); R^2 of a linear map from z_t to the true "
        "state (fit on the training sequences, measured on the held-out ones); mean ± s.e. "
        "over seeds; train: mean over seeds"
    )
    print_table(train_rows(runs, args), TRAIN_COLUMNS)
    print()
    base = baselines(data)
    series = _series(runs, base)
    print(
        f"2. k-step-ahead prediction: MSE per pixel against the observed frame x_(T-1+k) "
        f"(T = {args.length}; k = 0: reconstruction of x_(T-1)); z_(T-1) from {args.samples} "
        "guide draws on the first T steps, rolled forward with the true controls, innovations "
        "off (DVBF beta = 0, Markov mean transition) or sampled; prediction = mean over the "
        f"draws; mean ± s.e. over seeds. Pixel noise alone: {data.test.noise**2:g}"
    )
    print_table(prediction_rows(series), prediction_columns(runs))
    if args.figure is not None:
        save_figure(series, data.test.noise, args.figure)
        print(f"\nfigure: {args.figure}")
    print(f"\nwall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
