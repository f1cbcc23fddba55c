r"""CompVAE: a generative model of a whole from a multiset of parts (thesis ch. 9, eq. 9.1).

Each instance :math:`n` of a minibatch is a multiset of :math:`K_n` parts with
metadata :math:`\ell_{n,1}, \dots, \ell_{n,K_n}` (a frequency, a coloured anchor,
a household's contract), an optional global input :math:`c_n` (the week's
temperature) and a whole :math:`x_n` (a curve, an image):

.. math::

    w_i \mid \ell_i &\sim \mathcal N\big(\mu_\theta(\ell_i),
        \operatorname{diag}\sigma^2_\theta(\ell_i)\big)
        \qquad i = 1, \dots, K \\
    \widetilde w &= \Psi(\{w_i\}) = \textstyle\sum_i w_i
        \quad\text{or}\quad \chi\big(\sum_i w_i\big),\ \ \chi(s) = \frac{s}{1+\gamma|s|}
        \qquad (9.2,\ 9.16\text{–}9.17) \\
    z \mid c, \widetilde w &\sim \mathcal N\big(\mu_\theta(c, \widetilde w),
        \operatorname{diag}\sigma^2_\theta(c, \widetilde w)\big) \\
    x \mid z, \widetilde w &\sim \mathcal N\big(f_\theta(z, \widetilde w), \sigma^2 I\big)

so that :math:`p(x, z, \{w_i\} \mid c, \{\ell_i\}) = p(x \mid z, \widetilde w)\,
p(z \mid c, \widetilde w) \prod_i p(w_i \mid \ell_i)` (eq. 9.1). The parts live in a
:func:`pgmdl.multiset.multiset_plate`: sets of any size (0 included) share a
padded minibatch, and the whole is invariant to the parts' order because it
reads them only through the masked sum. The observation is a
:class:`pgmdl.QuasiDeterministic` with one learned :math:`\sigma` (ch. 7), or
with ``sigma="local"`` a learned :math:`\sigma(z, \widetilde w)` per output
point, read from the decoder's last hidden layer (the reference implementation
of the CompVAE authors does this; it matters when the wholes' scale varies with
the set size, as the households' curves do).

With ReLU-like networks the amplitude of :math:`\widetilde w`, hence of
:math:`x`, grows with :math:`K` (§9.1.2): right for consumption curves, where
the whole is a sum; with ``saturate=True`` the sum goes through :math:`\chi`
(learned :math:`\gamma`), for wholes whose range does not grow with :math:`K`
(images, §9.3.2).

``z_reads_parts=False`` drops :math:`\widetilde w` from :math:`z`'s prior:
:math:`p(z \mid c)`, or :math:`\mathcal N(0, I)` without a global input. A change to
eq. 9.1, and the households of §9.3.3 need it: there, the learned
:math:`p(z \mid c, \widetilde w)` maps the parts' sum steeply to :math:`z`, and the
few weeks whose :math:`\widetilde w` from the guide lands off that map cost up to
:math:`10^8` bits each, on training weeks as on held-out ones; with
:math:`p(z \mid c)` the latent bits' means stay near their medians and the lesion
study of Table 9.1 shows the thesis' direction on every seed
(``benchmarks/compvae_evidence.py``; README, "Multiset plates and CompVAE").

``count_parts=True`` makes :math:`\Psi` return the number of parts next to their
sum, :math:`\widetilde w = (\sum_i w_i, K)`: still order-invariant and aware of
multiplicity, as eq. 9.2 asks of :math:`\Psi`. The sines' whole (eq. 9.15) is
:math:`K \tanh(\frac{\lambda}{K} \sum_i p_i)`, not a function of the parts' sum
alone, and a decoder that reads only :math:`\sum_i w_i` must guess :math:`K` from
it. With the count, the partial wholes generated from 2-4 parts correlate
0.93 / 0.91 / 0.90 with their composition after 40 000 steps (0.89 / 0.85 / 0.82
without it after 20 000, 0.94 / 0.89 / 0.88 after 60 000). The count comes from
the multiset plate's mask, which every guide of the plate reads already.

The guide. Inverting this model (:func:`pgmdl.invert`) couples every
:math:`w_i` with every other one (they are co-parents of :math:`x` and
:math:`z`), so the inverse needs a joint conditional over the parts plate:
:class:`pgmdl.NaMIGuide` gives it the correlated Gaussian of §9.2.2
(:class:`pgmdl.multiset.CorrelatedMultisetNormal`, which can make
:math:`\sum_i w_i` sharp while each :math:`w_i` stays loose) computed by a
GraphNN over the parts (:class:`pgmdl.multiset.GraphSetEncoder`, eq.
9.12–9.14), and :math:`q(z \mid x, c, \{w_i\})` reads the parts through a set
encoder (the thesis' eq. 9.3 orders them the other way, :math:`q(z \mid c, x)`
first; both are faithful inverses).

Reference: V. Berger and M. Sebag, "Variational Auto-Encoder: not all failures
are equal" / "CompVAE", 2020; V. Berger, PhD thesis, 2021, ch. 9.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import pgmdl
from pgmdl.datasets import MultisetSample
from pgmdl.errors import ArgumentError
from pgmdl.infer.annealing import KLWarmup
from pgmdl.multiset import SaturatingSum, multiset_plate
from pgmdl.observe import QuasiDeterministic


def _mlp(in_features: int, out_features: int, hidden: int, layers: int = 2) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = in_features
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ELU()]
        width = hidden
    modules.append(nn.Linear(width, out_features))
    return nn.Sequential(*modules)


class GaussianHead(nn.Module):
    """An MLP to the loc and (softplus) scale of a diagonal Gaussian."""

    def __init__(self, in_features: int, out_features: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(in_features, 2 * out_features, hidden)
        self.out_features = out_features

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(h).split(self.out_features, dim=-1)
        return loc, nn.functional.softplus(raw) + 1e-3


class CompVAE(nn.Module):
    """The CompVAE generative model (eq. 9.1) as a Pyro program.

    Args:
        label_dim: features per part's metadata :math:`\\ell_i`.
        x_dim: size of the (flattened) whole :math:`x`.
        context_dim: size of the global input :math:`c` (0: none).
        w_dim: latent size per part.
        z_dim: size of the global latent.
        hidden: width of the networks.
        saturate: aggregate with :math:`\\chi(\\sum_i w_i)` (learned
            :math:`\\gamma`) instead of the plain sum.
        sigma: the observation's noise scale mode (:class:`pgmdl.QuasiDeterministic`);
            ``"local"``: :math:`\\sigma` per output point, from the decoder's last
            hidden layer.
        z_reads_parts: the prior of :math:`z` reads :math:`\\widetilde w` (eq. 9.1:
            :math:`p(z \\mid c, \\widetilde w)`); False: :math:`p(z \\mid c)`, or
            :math:`\\mathcal N(0, I)` without a global input.
        count_parts: :math:`\\Psi` also returns the number of parts,
            :math:`\\widetilde w = \\big(\\sum_i w_i, K\\big)` (still order-invariant and
            aware of multiplicity, as eq. 9.2 asks); for wholes that depend on
            :math:`K` beyond the parts' sum, as eq. 9.15's :math:`K \\tanh(\\lambda/K
            \\cdot)` does.
    """

    def __init__(
        self,
        label_dim: int,
        x_dim: int,
        context_dim: int = 0,
        w_dim: int = 4,
        z_dim: int = 4,
        hidden: int = 64,
        saturate: bool = False,
        sigma: float | str = "global",
        z_reads_parts: bool = True,
        count_parts: bool = False,
    ) -> None:
        super().__init__()
        self.label_dim, self.x_dim, self.context_dim = label_dim, x_dim, context_dim
        self.w_dim, self.z_dim = w_dim, z_dim
        self.part_prior = GaussianHead(label_dim, w_dim, hidden)
        self.aggregate = SaturatingSum() if saturate else None
        self.z_reads_parts = z_reads_parts
        self.count_parts = count_parts
        psi_dim = w_dim + int(count_parts)
        z_inputs = (psi_dim if z_reads_parts else 0) + context_dim
        self.z_prior = GaussianHead(z_inputs, z_dim, hidden) if z_inputs else None
        self.decoder = _mlp(z_dim + psi_dim, x_dim, hidden)
        self.noise = QuasiDeterministic(sigma)
        self.local_sigma = sigma == "local"

    def whole(self, w: torch.Tensor, parts) -> torch.Tensor:  # noqa: ANN001
        """:math:`\\widetilde w`: the (saturated) masked sum of the parts' latents, and
        their number with ``count_parts``."""
        return self.psi(parts.sum(w, event_dim=1), parts.sizes)

    def psi(self, total: torch.Tensor, count: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\widetilde w` from the parts' latents' sum ``total`` ``(..., w_dim)``
        and their number ``count`` (``(...)``, broadcastable; read only with
        ``count_parts``, where it is required)."""
        w_tilde = total if self.aggregate is None else self.aggregate.saturate(total)
        if not self.count_parts:
            return w_tilde
        if count is None:
            raise ArgumentError(
                "CompVAE: this model reads the number of parts (count_parts=True); pass "
                "count=, the number of parts whose latents sum to total"
            )
        count = torch.as_tensor(count, dtype=w_tilde.dtype, device=w_tilde.device)
        count = count.expand(w_tilde.shape[:-1]).unsqueeze(-1)
        return torch.cat([w_tilde, count], -1)

    def z_distribution(
        self, w_tilde: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loc and scale of :math:`p(z \\mid c, \\widetilde w)` (or of
        :math:`p(z \\mid c)`, :math:`\\mathcal N(0, I)`: ``z_reads_parts``)."""
        if self.z_prior is None:
            if c is not None:
                raise ArgumentError(
                    "CompVAE: site 'z' has the prior N(0, I) (context_dim=0, z_reads_parts=False), "
                    "but a global input c was given; build the model with context_dim=c.shape[-1] "
                    "or pass c=None"
                )
            loc = w_tilde.new_zeros(*w_tilde.shape[:-1], self.z_dim)
            return loc, torch.ones_like(loc)
        inputs = [w_tilde] if self.z_reads_parts else []
        if c is not None:
            inputs.append(c.expand(*w_tilde.shape[:-1], -1))
        return self.z_prior(torch.cat(inputs, -1))

    def model(
        self,
        labels: torch.Tensor,
        mask: torch.Tensor,
        c: torch.Tensor | None = None,
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``labels`` ``(N, K, L)``, ``mask`` ``(N, K)``, the global input ``c`` ``(N, C)``
        or None, ``x`` ``(N, x_dim)`` observed (or None to generate). (The global input
        is not called ``context``: Pyro's handlers take a keyword of that name.)"""
        pyro.module("compvae", self)
        n = labels.shape[0]
        with pyro.plate("data", n, dim=-1):
            with multiset_plate("parts", mask, dim=-2) as parts:
                w_loc, w_scale = self.part_prior(parts.align(labels, event_dim=1))
                w = pyro.sample("w", dist.Normal(w_loc, w_scale).to_event(1))
            w_tilde = self.whole(w, parts)
            z_loc, z_scale = self.z_distribution(w_tilde, c)
            z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            h = self.decoder[:-1](torch.cat([z, w_tilde], -1))
            loc = self.decoder[-1](h)
            features = h if self.local_sigma else None
            return self.noise("x", loc, obs=x, features=features)

    @torch.no_grad()
    def decode(
        self,
        total: torch.Tensor,
        c: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
        count: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        r"""The decoded mean :math:`f_\theta(z, \widetilde w)` of a whole whose parts'
        latents sum to ``total`` ``(..., w_dim)``, with
        :math:`z = \mu_\theta(c, \widetilde w) + \sigma_\theta(c, \widetilde w)\,\epsilon`
        (``eps`` None: :math:`\epsilon = 0`, the prior's mean); ``c`` ``(..., C)`` or None;
        ``count``: how many parts make ``total`` (required with ``count_parts``,
        ignored otherwise)."""
        w_tilde = self.psi(total, count)
        z_loc, z_scale = self.z_distribution(w_tilde, c)
        z = z_loc if eps is None else z_loc + z_scale * eps
        return self.decoder(torch.cat([z, w_tilde], -1))

    @torch.no_grad()
    def compose(
        self, labels: torch.Tensor, c: torch.Tensor | None = None, *, seed: int = 0
    ) -> torch.Tensor:
        r"""Compositional generation (Figs 9.6, 9.10): draw every part's
        :math:`w_i \sim p(w \mid \ell_i)` once, then decode the whole from the
        partial sums :math:`w_1`, :math:`w_1 + w_2`, ... with one shared
        :math:`z` noise. ``labels`` ``(K, L)`` (one multiset), ``c`` ``(C,)`` or
        None; returns the decoded means ``(K, x_dim)``, row ``j`` from the first
        ``j + 1`` parts."""
        g = torch.Generator(device=labels.device).manual_seed(seed)
        loc, scale = self.part_prior(labels)
        w = loc + scale * torch.randn(loc.shape, generator=g, device=loc.device)
        eps = torch.randn(self.z_dim, generator=g, device=loc.device)
        count = torch.arange(1, len(w) + 1, device=w.device)
        return self.decode(w.cumsum(0), c, eps, count)  # row j: w_1 + ... + w_{j+1}


@dataclass
class TrainedCompVAE:
    """A trained CompVAE, its guide, and how training went."""

    model: CompVAE
    guide: pgmdl.NaMIGuide
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    param_state: dict | None = None

    def scope(self):  # noqa: ANN201 - a context manager
        """Enter this model's param store (its parameters by name); with no
        ``param_state`` (during training), the current store is the model's."""
        if self.param_state is None:
            return contextlib.nullcontext()
        return pyro.get_param_store().scope(self.param_state)


def arguments(sample: MultisetSample, scale: float = 1.0, with_context: bool = True) -> tuple:
    """``(args, kwargs)`` of :meth:`CompVAE.model` for a batch, the whole
    flattened and divided by ``scale``."""
    x = sample.x.reshape(len(sample), -1) / scale
    c = sample.context if with_context else None
    return (sample.labels, sample.mask), {"c": c, "x": x}


def size_curriculum(
    draw: Callable[[int, torch.Generator, int], MultisetSample],
    *,
    k_max: int,
    steps_per_part: int,
    k_start: int = 2,
) -> Callable[[int, torch.Generator], MultisetSample]:
    r"""A set-size curriculum for :func:`train_compvae`: the ``s``-th batch holds
    multisets of at most :math:`\min(k_{\max}, \max(k_{start}, 1 + s //
    \text{steps\_per\_part}))` parts, padded to ``k_max`` slots
    (:meth:`pgmdl.datasets.MultisetSample.padded`) so the shapes never change.

    ``draw(n, generator, k)`` draws ``n`` multisets of at most ``k`` parts. Few
    parts first make each part's :math:`w_i` carry its own part: on the sines
    of §9.3.1 (seed 0, 6000 steps) a part decoded alone from the guide's
    :math:`w_1` correlates 0.78 with the true one, against 0.49 when every batch
    has 1..8 parts from the start (``benchmarks/compvae_evidence.py``).
    """
    if steps_per_part < 1 or k_start < 1 or k_max < k_start:
        raise ArgumentError(
            f"size_curriculum: needs steps_per_part >= 1 and 1 <= k_start <= k_max, got "
            f"steps_per_part={steps_per_part!r}, k_start={k_start!r}, k_max={k_max!r}"
        )
    calls = 0

    def draw_batch(n: int, generator: torch.Generator) -> MultisetSample:
        nonlocal calls
        k = min(k_max, max(k_start, 1 + calls // steps_per_part))
        calls += 1
        return draw(n, generator, k).padded(k_max)

    return draw_batch


def train_compvae(
    draw: Callable[[int, torch.Generator], MultisetSample],
    *,
    steps: int,
    batch_size: int = 64,
    scale: float = 1.0,
    with_context: bool = True,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    callback: Callable[[int, TrainedCompVAE], None] | None = None,
    every: int = 1000,
    guide_hidden: tuple[int, ...] = (64,),
    kl_warmup: int = 0,
    **model_options: object,
) -> TrainedCompVAE:
    r"""Train a CompVAE and its :class:`pgmdl.NaMIGuide` on fresh batches.

    As in the thesis (§9.3.3, "the training data is virtually infinite"), each
    step draws a new batch ``draw(batch_size, generator)``; the loss is
    ``Trace_ELBO`` (``TraceMeanField_ELBO``'s closed-form KLs would be biased
    here: the guide samples :math:`z` before the parts, while the model's
    :math:`p(z \mid \widetilde w)` depends on them). The
    parameters live in a param store of their own (``TrainedCompVAE.scope()``),
    so several models can be trained side by side. ``callback(step, trained)``
    runs after every ``every`` steps (learning curves: evaluate ``trained``
    there, under ``trained.scope()``). ``guide_hidden``: the hidden widths of the
    guide's networks (:class:`pgmdl.NaMIGuide`'s ``hidden``).
    """
    g = torch.Generator().manual_seed(seed)
    first = draw(batch_size, g).to(device) if device is not None else draw(batch_size, g)
    args, kwargs = arguments(first, scale, with_context)
    context_dim = 0 if kwargs["c"] is None else kwargs["c"].shape[-1]
    torch.manual_seed(seed)
    net = CompVAE(first.labels.shape[-1], kwargs["x"].shape[-1], context_dim, **model_options).to(
        first.x.device
    )
    guide = pgmdl.NaMIGuide(net.model, hidden=guide_hidden)
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / max(steps, 1)), "clip_norm": 10})
    warmup = KLWarmup(kl_warmup)
    svi = SVI(warmup.wrap(net.model), warmup.wrap(guide), optim, Trace_ELBO())
    losses = []
    start = time.perf_counter()
    with pyro.get_param_store().scope() as state:
        for step in range(steps):
            batch = first if step == 0 else draw(batch_size, g)
            if device is not None:
                batch = batch.to(device)
            args, kwargs = arguments(batch, scale, with_context)
            losses.append(svi.step(*args, **kwargs) / batch_size)
            warmup.advance()
            if callback is not None and (step + 1) % every == 0 and step + 1 < steps:
                seconds = time.perf_counter() - start
                callback(step + 1, TrainedCompVAE(net, guide, list(losses), seconds, None))
    return TrainedCompVAE(net, guide, losses, time.perf_counter() - start, state)


@torch.no_grad()
def latent_bits_per_instance(
    trained: TrainedCompVAE,
    sample: MultisetSample,
    scale: float = 1.0,
    with_context: bool = True,
    particles: int = 8,
) -> dict[str, torch.Tensor]:
    r"""The latent part of the loss of every instance, in bits, per latent site (Table 9.1):
    :math:`E_q[\log q(v \mid \cdot) - \log p(v \mid \cdot)] / \ln 2` for ``w``
    (all parts together) and ``z``, their sum ``total``, and the reconstruction
    term :math:`-E_q \log p(x \mid z, \widetilde w)` in nats (``x``); each a tensor
    ``(N,)`` on the CPU, averaged over ``particles`` draws of the guide."""
    args, kwargs = arguments(sample, scale, with_context)
    n = len(sample)
    per_instance = {site: torch.zeros(n) for site in ("w", "z", "x")}
    with trained.scope():
        for _ in range(particles):
            guide_trace = poutine.trace(trained.guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(trained.model.model, guide_trace)).get_trace(
                *args, **kwargs
            )
            guide_trace.compute_log_prob()
            model_trace.compute_log_prob()
            for site in ("w", "z"):
                kl = guide_trace.nodes[site]["log_prob"] - model_trace.nodes[site]["log_prob"]
                kl = kl.reshape(-1, n).sum(0)  # w: (K_max, N), the parts summed
                per_instance[site] += kl.cpu() / math.log(2) / particles
            per_instance["x"] -= model_trace.nodes["x"]["log_prob"].reshape(n).cpu() / particles
    per_instance["total"] = per_instance["w"] + per_instance["z"]
    return per_instance


def latent_bits(
    trained: TrainedCompVAE,
    sample: MultisetSample,
    scale: float = 1.0,
    with_context: bool = True,
    particles: int = 8,
) -> dict[str, float]:
    r"""The latent part of the loss per instance, in bits (Table 9.1;
    :func:`latent_bits_per_instance`): means over the instances (``w_bits``,
    ``z_bits``, ``total_bits``, ``reconstruction_nats``) and the median over the
    instances of the latent bits (``median_total_bits``: a learned prior that is
    nearly deterministic on a few held-out instances can make the mean
    arbitrarily large)."""
    bits = latent_bits_per_instance(trained, sample, scale, with_context, particles)
    return {
        "w_bits": float(bits["w"].mean()),
        "z_bits": float(bits["z"].mean()),
        "total_bits": float(bits["total"].mean()),
        "median_total_bits": float(bits["total"].median()),
        "reconstruction_nats": float(bits["x"].mean()),
    }


def paired_lesion(
    without: torch.Tensor, with_: torch.Tensor, *, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    r"""The lesion study (Table 9.1) paired over held-out instances: the latent bits
    of each instance without the global input minus with it, :math:`d_n`. Returns
    the median of :math:`d_n` with a 95 % bootstrap interval (``median``, ``low``,
    ``high``: percentile bootstrap over the instances) and the share of instances
    where the global input saves bits (``share_saved``, :math:`d_n > 0`). Medians,
    because a few instances far in the tail of a learned prior can cost millions
    of bits and swing a mean either way."""
    if without.shape != with_.shape or without.dim() != 1:
        raise ArgumentError(
            f"paired_lesion: needs two (N,) tensors of the same instances, got "
            f"{tuple(without.shape)} and {tuple(with_.shape)}"
        )
    d = without - with_
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(len(d), (resamples, len(d)), generator=g)
    medians = d[index].median(dim=1).values
    return {
        "median": float(d.median()),
        "low": float(medians.quantile(0.025)),
        "high": float(medians.quantile(0.975)),
        "share_saved": float((d > 0).float().mean()),
    }


@torch.no_grad()
def generate(
    trained: TrainedCompVAE,
    sample: MultisetSample,
    scale: float = 1.0,
    with_context: bool = True,
    mean: bool = True,
) -> torch.Tensor:
    """Wholes generated for the multisets (and contexts) of ``sample``, in the data's
    units: the decoder's mean (``mean=True``) or a draw with the learned noise."""
    args, kwargs = arguments(sample, scale, with_context)
    kwargs["x"] = None
    with trained.scope():
        trace = poutine.trace(trained.model.model).get_trace(*args, **kwargs)
    node = trace.nodes["x"]
    out = node["fn"].mean if mean else node["value"]
    return out.reshape(sample.x.shape) * scale


compvae = CompVAE(label_dim=3, x_dim=8, context_dim=2, w_dim=2, z_dim=2, hidden=16)
model = compvae.model


def example_args() -> tuple[tuple, dict]:
    """Four multisets of 3, 1, 0 and 2 parts (padded to 3) with a context and a whole."""
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([3, 1, 0, 2])
    mask = sizes[:, None] > torch.arange(3)
    labels = torch.randn(4, 3, 3, generator=g) * mask[..., None]
    c = torch.randn(4, 2, generator=g)
    x = torch.randn(4, 8, generator=g)
    return (labels, mask), {"c": c, "x": x}
