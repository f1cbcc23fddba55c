r"""MIWAE on real tabular data: the UCI protocol of Mattei & Frellsen (2019).

Run it from the repository root::

    python benchmarks/missing_uci.py            # full run (4 data sets, 3 seeds)
    python benchmarks/missing_uci.py --fast     # smoke run (< 1 min, used by the tests)

Data: REAL data sets shipped with scikit-learn -- breast cancer (Wisconsin
diagnostic, 569 x 30: the paper's "breast"), wine (178 x 13), diabetes
(442 x 10) and iris (150 x 4) -- each column standardized (mean 0, s.d. 1 over
the complete data). The missing values are SYNTHETIC: 50% of the entries are
removed completely at random (MCAR, an independent Bernoulli(0.5) mask per
seed; a row left with nothing observed gets one entry back at random).
As in the paper, every method sees the whole incomplete table and imputes its
own missing entries (no train/test split).

Metric: the mean squared error on the missing entries of the standardized
data (so column-mean imputation scores about 1), averaged over seeds, with its
standard error over seeds.

Model (a plain Pyro program): :math:`z \sim \mathcal N(0, I_{10})`; a decoder
MLP (two ReLU hidden layers of 128 units, He-initialized, as in the MIWAE
authors' notebook) gives per-dimension Student-t parameters: location, scale
(softplus + 0.001) and degrees of freedom (softplus + 3, as in the paper);
``StudentT(df, loc, scale).to_event(1)`` inside ``pyro.plate``. Training:
:func:`pgmdl.infer.missing.with_missing` (the observed entries only are scored)
+ :func:`~pgmdl.infer.missing.missing_guide` (a :class:`pgmdl.NaMIGuide`
encoder, ``hidden=(128, 128)``, ``fan_in_scaled=False``, reading the
zero-filled data) + ``RenyiELBO(alpha=0, num_particles=20)`` (the MIWAE bound
with K = 20), Adam (step size 2e-4), 500 epochs of minibatches of 32 rows
reshuffled every epoch (the authors' notebook: 9,000 steps on breast).
Imputation: :func:`pgmdl.impute` ``method="importance"`` (the self-normalized
importance estimate of :math:`\mathbb E[x_m \mid x_o]`) with 10,000 samples
(100 in ``--fast``).

Two MIWAE variants: ``miwae+mask``, the encoder reads the mask as an input
channel next to the zero-filled data (``missing_guide``'s default; the mask is
given in training and in imputation), and ``miwae``, the paper's encoder,
zero-filled data alone (``missing_guide(read_mask=False)``).

Baselines (scikit-learn): column mean (``SimpleImputer``), ``KNNImputer``
(5 neighbours) and missForest-style
``IterativeImputer(estimator=ExtraTreesRegressor(n_estimators=100), max_iter=10)``.

Published figure: the MIWAE authors' public notebook
(github.com/pamattei/miwae, ``Tensorflow 2 notebooks/MIWAE_UCI_single_multiple-
imputation.ipynb``) prints MIWAE's imputation MSE on breast cancer, on its own
mask (``np.random.seed(1234)``, exactly 50% missing: :func:`authors_mask`, used
for every seed with ``--authors-mask``): 0.2870 at epoch 501 and 0.2867 at
epoch 1001 (``AUTHORS_FIGURE``). The paper's own table was not available
offline.

What changed and why (breast, seed 0, MSE after training; scratch runs on this
CPU, 2,000 importance samples unless said): the earlier recipe here (tanh
decoder, one-layer encoder, 800 full-batch steps at lr 1e-3) gave 0.351 over
2 seeds, 5% worse than IterativeImputer. A hand-written
replica of the authors' notebook reached 0.292 after 500 epochs, so the data
was not the obstacle. Changing one thing at a time in pgmdl: the NaMIGuide
default ``fan_in_scaled=True`` was the cause -- the old recipe with only
``fan_in_scaled=False`` gives 0.264 against 0.322 with the default (10,000
importance samples); on the authors' schedule 0.367 after 500 epochs, against
0.275 without. In the
replica, a tanh decoder learns slower (0.317 against 0.292), a Gaussian
encoder instead of the notebook's Student-t does as well (0.275), and the
notebook's learned fill value for the missing entries changes nothing
(0.291).

This is a measurement: the script prints what it finds and asserts nothing
about it; it exits non-zero if a number is not finite.

Recorded results (2-core CPU shared with two other jobs, torch on 1 thread;
run as two processes, ``--datasets breast`` in 1393 s and ``--datasets wine
diabetes iris`` in 1354 s; ``--fast`` about 30 s). MSE on the missing entries,
mean ± s.e. over 3 seeds (MIWAE's ratio to IterativeImputer: breast 0.87 / 0.88, wine
0.87 / 0.87, diabetes 0.78 / 0.78, iris 0.75 / 0.75):

=========  ============  ============  ============  ============  ============
data set   mean          kNN           iterative     miwae+mask    miwae
=========  ============  ============  ============  ============  ============
breast     1.034 ± .005  0.569 ± .011  0.324 ± .011  0.281 ± .006  0.286 ± .004
wine       1.024 ± .014  0.828 ± .023  0.707 ± .016  0.616 ± .016  0.614 ± .017
diabetes   1.007 ± .011  0.991 ± .009  0.839 ± .021  0.651 ± .016  0.652 ± .015
iris       0.986 ± .018  0.431 ± .010  0.470 ± .058  0.354 ± .036  0.353 ± .041
=========  ============  ============  ============  ============  ============

MIWAE beats IterativeImputer on all four tables, by 12-25%.

On the authors' mask (``--datasets breast --authors-mask``, 840 s): IterativeImputer
0.3153, MIWAE 0.2877 ± 0.0036 (miwae+mask; 0.2893 without the mask channel) over 3
training seeds, against the 0.2867 the authors' notebook printed: equal within
noise. With 1000 epochs, as the notebook trained (``--epochs 1000``, miwae+mask,
seeds 0 / 1 / 2): 0.2809 / 0.2918 / 0.2742, mean 0.282 ± 0.005, 1.5% below the
published figure and within one s.e. of it: matched, not beaten. Training longer
over-fits: 2000 epochs, seed 0, 0.2926. On iris the earlier
recipe did better (0.299-0.305, 800 full-batch steps): 500 epochs of 150 rows
are only 2,500 steps at lr 2e-4. The mask channel makes no measurable
difference (every gap within about one s.e.): with MCAR masks the mask carries
no information about the values.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pgmdl  # noqa: E402
from pgmdl.infer.missing import missing_guide, with_missing  # noqa: E402

Z_DIM, HIDDEN, K_TRAIN = 10, 128, 20
BATCH_SIZE, LR = 32, 2e-4  # the MIWAE authors' UCI notebook
DATASETS = ("breast", "wine", "diabetes", "iris")
MIWAE_VARIANTS = {"miwae+mask": True, "miwae": False}  # name -> encoder reads the mask
BASELINES = ("mean", "knn", "iterative")
AUTHORS_FIGURE = {"breast": 0.286728}
"""MIWAE's imputation MSE printed by the authors' own notebook (pamattei/miwae,
``Tensorflow 2 notebooks/MIWAE_UCI_single_multiple-imputation.ipynb``: breast cancer,
their mask (:func:`authors_mask`), d = 10, h = 128, K = 20, L = 10,000, epoch 1001)."""


def load(name: str) -> np.ndarray:
    """The REAL data set ``name``, standardized column by column."""
    from sklearn import datasets

    loader = {
        "breast": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
        "iris": datasets.load_iris,
    }[name]
    x = np.asarray(loader().data, dtype=np.float64)
    return (x - x.mean(0)) / x.std(0)


def mcar_mask(shape: tuple[int, int], seed: int) -> np.ndarray:
    """True where observed: each entry missing with probability 0.5; every row
    keeps at least one observed entry."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) >= 0.5
    for row in np.flatnonzero(~mask.any(1)):
        mask[row, rng.integers(shape[1])] = True
    return mask


def authors_mask(shape: tuple[int, int]) -> np.ndarray:
    """The mask of the MIWAE authors' UCI notebook: ``np.random.seed(1234)``, then
    exactly half of the entries drawn without replacement are missing. A row left
    with nothing observed (iris has a few; breast none) gets its first entry back:
    importance imputation has nothing to condition on there."""
    n, p = shape
    rng = np.random.RandomState(1234)  # the draws of np.random.seed(1234), global state untouched
    missing = rng.choice(n * p, int(np.floor(n * p * 0.5)), replace=False)
    mask = np.ones(n * p, dtype=bool)
    mask[missing] = False
    mask = mask.reshape(shape)
    mask[~mask.any(1), 0] = True
    return mask


def mse(imputed: np.ndarray, x: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared error on the missing entries."""
    return float(((imputed - x)[~mask] ** 2).mean())


# ----------------------------------------------------------------------------- baselines


def baseline(name: str, x_nan: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    if name == "mean":
        imputer = SimpleImputer(strategy="mean")
    elif name == "knn":
        imputer = KNNImputer(n_neighbors=5)
    else:
        imputer = IterativeImputer(
            estimator=ExtraTreesRegressor(n_estimators=100, random_state=seed, n_jobs=1),
            max_iter=10,
            random_state=seed,
        )
    return imputer.fit_transform(x_nan)


# ----------------------------------------------------------------------------- MIWAE


class Decoder(nn.Module):
    """z -> Student-t parameters of every column: two ReLU hidden layers of 128
    units, He-initialized (the MIWAE authors' notebook; the paper used tanh,
    which learns slower here: 0.317 against 0.292 on breast, seed 0, in a
    hand-written replica)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(Z_DIM, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 3 * dim),
        )
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor):
        loc, scale, df = self.net(z).chunk(3, dim=-1)
        return loc, nn.functional.softplus(scale) + 1e-3, nn.functional.softplus(df) + 3.0


def make_model(decoder: Decoder):
    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), 1.0).to_event(1))
            loc, scale, df = decoder(z)
            pyro.sample("x", dist.StudentT(df, loc, scale).to_event(1), obs=x)

    return model


def miwae(
    x: np.ndarray,
    mask: np.ndarray,
    *,
    read_mask: bool,
    epochs: int,
    particles: int,
    seed: int,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    fan_in_scaled: bool = False,
) -> np.ndarray:
    """Train MIWAE on the zero-filled table (minibatches of ``batch_size`` rows,
    reshuffled every epoch) and impute its missing entries."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    xt = torch.as_tensor(np.where(mask, x, 0.0), dtype=torch.float32)
    mt = torch.as_tensor(mask)
    model = with_missing(make_model(Decoder(x.shape[1])))
    guide = missing_guide(
        model, hidden=(HIDDEN, HIDDEN), read_mask=read_mask, fan_in_scaled=fan_in_scaled
    )
    loss = pyro.infer.RenyiELBO(
        alpha=0, num_particles=K_TRAIN, vectorize_particles=True, max_plate_nesting=1
    )
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss)
    for _ in range(epochs):
        for rows in torch.randperm(len(xt)).split(batch_size):
            svi.step(xt[rows], mask=mt[rows])
    guide.eval()
    # rows in chunks: particles x rows x columns stays near 4M numbers
    chunk = max(1, 4_000_000 // (particles * x.shape[1]))
    out = []
    for start in range(0, len(xt), chunk):
        rows = slice(start, start + chunk)
        with torch.no_grad():
            imp = pgmdl.impute(
                model,
                guide,
                xt[rows],
                mt[rows],
                method="importance",
                num_particles=particles,
                model_kwargs={"mask": mt[rows]},
            )
        out.append(imp.mean)
    return torch.cat(out).double().numpy()


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="smoke run (< 1 min)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (full 3, fast 1)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (full 500)")
    parser.add_argument(
        "--fan-in-scaled",
        action="store_true",
        help="NaMIGuide's default fan-in-scaled encoder layers (slower here; see the docstring)",
    )
    parser.add_argument("--particles", type=int, default=None, help="imputation samples")
    parser.add_argument("--datasets", nargs="+", default=None, choices=DATASETS)
    parser.add_argument(
        "--authors-mask",
        action="store_true",
        help="the MIWAE authors' notebook mask (seed 1234, exactly 50%%) for every seed; "
        "the seeds then vary the training only",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = args.seeds or (1 if args.fast else 3)
    epochs = args.epochs or (40 if args.fast else 500)
    particles = args.particles or (100 if args.fast else 10_000)
    names = args.datasets or (["iris", "wine"] if args.fast else list(DATASETS))
    print(
        f"MIWAE UCI protocol: {seeds} seed(s), {epochs} epochs of minibatches of {BATCH_SIZE} "
        f"(K = {K_TRAIN}, lr {LR}, fan-in-scaled encoder: {args.fan_in_scaled}), "
        f"{particles} importance samples, torch {args.threads} thread(s)"
    )
    methods = [*BASELINES, *MIWAE_VARIANTS]
    results: dict[tuple[str, str], list[float]] = {}
    seconds: dict[tuple[str, str], float] = {}
    for name in names:
        x = load(name)
        for seed in range(seeds):
            mask = authors_mask(x.shape) if args.authors_mask else mcar_mask(x.shape, seed)
            x_nan = np.where(mask, x, np.nan)
            for method in methods:
                start = time.perf_counter()
                if method in MIWAE_VARIANTS:
                    imputed = miwae(
                        x,
                        mask,
                        read_mask=MIWAE_VARIANTS[method],
                        epochs=epochs,
                        fan_in_scaled=args.fan_in_scaled,
                        particles=particles,
                        seed=seed,
                    )
                else:
                    imputed = baseline(method, x_nan, seed)
                seconds[name, method] = seconds.get((name, method), 0.0) + (
                    time.perf_counter() - start
                )
                results.setdefault((name, method), []).append(mse(imputed, x, mask))
        print(f"  {name} done ({sum(v for (n, _), v in seconds.items() if n == name):.0f} s)")

    header = f"{'data set':<10} {'method':<12} {'MSE':>7} {'s.e.':>7} {'/iterative':>10} {'s':>7}"
    print(header)
    print("-" * len(header))
    finite = True
    for name in names:
        ref = float(np.mean(results[name, "iterative"]))
        for method in methods:
            values = np.asarray(results[name, method])
            mean = float(values.mean())
            se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
            finite &= math.isfinite(mean)
            print(
                f"{name:<10} {method:<12} {mean:7.4f} {se:7.4f} {mean / ref:10.3f} "
                f"{seconds[name, method]:7.1f}"
            )
    for name in names:
        if name in AUTHORS_FIGURE:
            best = min(float(np.mean(results[name, m])) for m in MIWAE_VARIANTS)
            print(
                f"{name}: the MIWAE authors' notebook printed {AUTHORS_FIGURE[name]:.4f} on "
                f"its own mask; best MIWAE here {best:.4f} ({best / AUTHORS_FIGURE[name]:.3f} of it"
                + (", same mask)" if args.authors_mask else ", other masks: --authors-mask)")
            )
    if not finite:
        print("a number is not finite")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
