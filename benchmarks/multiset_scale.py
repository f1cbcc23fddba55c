"""How CompVAE's multiset machinery scales with the number of parts K: time and memory.

Run it from the repository root::

    python benchmarks/multiset_scale.py                   # K = 10 100 1000, best of 5 blocks
    python benchmarks/multiset_scale.py --fast            # K = 10 100, 1 block (CI smoke run)
    python benchmarks/multiset_scale.py --device cuda     # default: cuda if available, else cpu
    python benchmarks/multiset_scale.py --sizes 10 100 1000 3000

Every K uses a minibatch of B = 32 multisets of K part slots, part metadata of
L = 8 features (``labels``, random normal), a whole ``x`` of 336 values
(random normal), latents of w_dim = 4 per part and z_dim = 4, networks of
width 64. All sets are full except the last one of the batch, whose second
half is padding (``mask`` False, labels 0), so the masked paths run too. The
data are synthetic, for timing only (nothing is learned). What is timed, one
call being a forward and a backward pass:

* ``encoder``: the guide side of the parts, as :class:`~pgmdl.multiset.
  conditional.MultisetConditional` computes it: a
  :class:`~pgmdl.multiset.GraphSetEncoder` (2 message-passing layers, mean
  pooling, hidden (64,)) reads the parts' labels ``(B, K, L)``, the mask and
  ``x`` as its global context, and outputs ``(mu, sigma, nu)`` per part
  (sigma = softplus + 1e-4); a :class:`~pgmdl.multiset.CorrelatedMultisetNormal`
  draws ``w`` with ``rsample`` and scores it with ``log_prob``; then
  ``log_prob.sum().backward()``.
* ``decoder``: the generative side, CompVAE's own networks (``models/compvae.py``)
  called directly, not through Pyro (clean timing of the networks): the per-part
  prior ``p(w | label)`` on ``(B, K, L)``, ``w`` drawn with ``rsample``, the
  masked sum over the parts, the z prior, ``z`` drawn, the decoder to ``x``;
  the loss is ``log p(w) (masked) + log p(z) + log N(x; decoder, 0.1)``,
  then ``backward()`` (``torch.distributions.Normal``, ``validate_args=False``).
* ``SVI step``: one ``pyro.infer.SVI(CompVAE(...).model, pgmdl.NaMIGuide(model),
  Adam(lr 1e-3), Trace_ELBO()).step(labels, mask, x=x)``, the whole library
  path (NaMIGuide builds a MultisetConditional for ``w``; the script checks
  that it did). Pyro's default argument validation is left on.
* ``all-pairs encoder``: the quadratic reference, the same GraphSetEncoder
  (same weights) computed the naive way: the sum of the other parts' messages
  is a dense ``(B, K, K)`` adjacency (present parts, zero diagonal) times the
  messages, per layer, instead of the encoder's O(K) "total minus own" sum;
  then the same correlated Gaussian and backward. Before timing, the script
  checks that it gives the same ``(mu, sigma, nu)`` as the encoder (column
  ``same output``: ``OK`` or ``MISMATCH``, then exit status 1). It is skipped
  (``skipped (memory)``) where its K x K tensors would pass 2 GiB
  (estimated as 3 B K^2 floats).

Timing (:func:`time.perf_counter`, CUDA synchronized at both ends of a block):
after ``--warmup`` calls of each variant, ``--repeats`` rounds run, each timing
one block of ``--calls`` calls of every variant in turn (interleaved, so that a
busy machine hits all alike); a variant's time per call is its best block's
mean (at most 3 rounds from K = 1000 on). Torch's default thread count is used
unless ``--threads`` says otherwise (on a shared machine, ``--threads 1``
avoids OpenMP threads spinning against other processes, which can slow small
calls a hundredfold).

Memory, measured on one separate call after the timing:

* ``saved`` (every device): the bytes of the distinct storages of the tensors
  that autograd saves for backward during the forward
  (:func:`torch.autograd.graph.saved_tensors_hooks`), parameters excluded:
  the activation memory a backward pass keeps alive. It leaves out
  temporaries freed during the forward, gradients, and optimizer state.
* ``CUDA peak`` (on cuda only): ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus what was allocated before the call
  (parameters, their gradients, inputs): the call's own peak.

The tables give each figure and its ratio to the smallest K (``vs K=10``);
then, from the two largest K, each figure's growth and its log-log slope
(1: linear, 2: quadratic; fixed costs make small-K slopes lower), read as
``at most linear`` (slope <= 1.15), ``super-linear`` (<= 1.6) or
``quadratic-like``. This is a measurement, not a test: it never asserts on
timings.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from torch.distributions import Normal

import pgmdl
from pgmdl.multiset import CorrelatedMultisetNormal, GraphSetEncoder
from pgmdl.multiset.conditional import MultisetConditional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from compile_scale import machine, print_table  # noqa: E402

from models.compvae import CompVAE  # noqa: E402

BATCH = 32
LABEL_DIM = 8
X_DIM = 336
W_DIM = 4
Z_DIM = 4
HIDDEN = 64
LAYERS = 2  # MultisetConditional's default
NOISE = 0.1  # the decoder's observation scale
LR = 1e-3
QUADRATIC_CAP = 2 * 1024**3  # bytes: the all-pairs reference is skipped beyond this
LARGE_SIZE = 1000  # from this K on, at most LARGE_REPEATS timed rounds
LARGE_REPEATS = 3
MIB = 1024**2
VARIANTS = ("encoder", "decoder", "svi", "pairs")


# --------------------------------------------------------------------------- the problems


def make_data(k: int, device: torch.device) -> dict[str, torch.Tensor]:
    """B multisets of K slots, all full but the last (half padded); labels and x."""
    mask = torch.ones(BATCH, k, dtype=torch.bool, device=device)
    mask[-1, (k + 1) // 2 :] = False
    labels = torch.randn(BATCH, k, LABEL_DIM, device=device) * mask.unsqueeze(-1)
    x = torch.randn(BATCH, X_DIM, device=device)
    return {"labels": labels, "mask": mask, "x": x}


def make_encoder(device: torch.device) -> GraphSetEncoder:
    """The GraphNN of MultisetConditional: (mu, sigma, nu) per part, x as the context."""
    return GraphSetEncoder(
        LABEL_DIM,
        3 * W_DIM,
        context_features=X_DIM,
        width=HIDDEN,
        layers=LAYERS,
        hidden=(HIDDEN,),
    ).to(device)


def all_pairs_forward(
    encoder: GraphSetEncoder, parts: torch.Tensor, mask: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """``encoder(parts, mask, context)`` computed naively: the other parts' messages
    are summed by a dense ``(B, K, K)`` adjacency matmul, O(K^2) per layer."""
    if encoder.pool != "mean" or encoder.context is None:
        raise ValueError("the all-pairs reference mirrors mean pooling with a context")
    present = mask.unsqueeze(-1).to(parts.dtype)  # (B, K, 1)
    h = encoder.embed(parts) * present
    ctx = encoder.context(context).unsqueeze(-2).expand(*h.shape[:-1], -1)
    eye = torch.eye(mask.shape[-1], dtype=parts.dtype, device=parts.device)
    adjacency = present * present.transpose(-1, -2) * (1 - eye)  # j != i, both present
    others = adjacency.sum(-1, keepdim=True)
    for message, update in zip(encoder.messages, encoder.updates, strict=True):
        sent = message(torch.cat([h, ctx], -1)) * present
        pooled = adjacency @ sent  # sum over the other parts, K x K
        features = [h, ctx, pooled / others.clamp(min=1), torch.log1p(others)]
        h = (h + update(torch.cat(features, -1))) * present
    return encoder.out(h) * present


def correlated_loss(raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(mu, sigma, nu) -> CorrelatedMultisetNormal; log_prob of an rsample, summed."""
    loc, raw_scale, nu = raw.split(W_DIM, dim=-1)
    scale = nn.functional.softplus(raw_scale) + 1e-4
    q = CorrelatedMultisetNormal(loc, scale, nu, mask, validate_args=False)
    return q.log_prob(q.rsample()).sum()


def encoder_call(encoder: GraphSetEncoder, data: dict[str, torch.Tensor], pairs: bool) -> None:
    labels, mask, x = data["labels"], data["mask"], data["x"]
    raw = all_pairs_forward(encoder, labels, mask, x) if pairs else encoder(labels, mask, x)
    correlated_loss(raw, mask).backward()


def decoder_call(compvae: CompVAE, data: dict[str, torch.Tensor]) -> None:
    """CompVAE's generative networks, called directly: log p(x, z, w | labels), backward."""
    labels, mask, x = data["labels"], data["mask"], data["x"]
    present = mask.unsqueeze(-1).to(labels.dtype)
    p_w = Normal(*compvae.part_prior(labels), validate_args=False)
    w = p_w.rsample()
    w_tilde = (w * present).sum(-2)  # the masked sum over the parts
    p_z = Normal(*compvae.z_prior(w_tilde), validate_args=False)
    z = p_z.rsample()
    p_x = Normal(compvae.decoder(torch.cat([z, w_tilde], -1)), NOISE, validate_args=False)
    loss = (p_w.log_prob(w) * present).sum() + p_z.log_prob(z).sum() + p_x.log_prob(x).sum()
    loss.backward()


def quadratic_bytes(k: int) -> int:
    """The all-pairs reference's K x K tensors, estimated as 3 B K^2 floats."""
    return 3 * BATCH * k * k * 4


def build(k: int, device: torch.device, seed: int) -> dict[str, Any]:
    """The calls of every variant at K, their parameters, and the checks' problems."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    data = make_data(k, device)
    encoder = make_encoder(device)
    compvae = CompVAE(LABEL_DIM, X_DIM, w_dim=W_DIM, z_dim=Z_DIM, hidden=HIDDEN).to(device)
    calls: dict[str, Callable[[], Any]] = {
        "encoder": partial(encoder_call, encoder, data, False),
        "decoder": partial(decoder_call, compvae, data),
    }
    params: dict[str, list[torch.Tensor]] = {
        "encoder": list(encoder.parameters()),
        "decoder": list(compvae.parameters()),
        "pairs": list(encoder.parameters()),
    }
    problems, same = [], "-"
    if quadratic_bytes(k) <= QUADRATIC_CAP:
        calls["pairs"] = partial(encoder_call, encoder, data, True)
        with torch.no_grad():
            linear = encoder(data["labels"], data["mask"], data["x"])
            naive = all_pairs_forward(encoder, data["labels"], data["mask"], data["x"])
        same = "OK" if torch.allclose(linear, naive, rtol=1e-4, atol=1e-4) else "MISMATCH"
        if same != "OK":
            error = (linear - naive).abs().max().item()
            problems.append(f"K={k}: all-pairs encoder differs from the encoder by {error:.2e}")

    model = CompVAE(LABEL_DIM, X_DIM, w_dim=W_DIM, z_dim=Z_DIM, hidden=HIDDEN).to(device).model
    args, kwargs = (data["labels"], data["mask"]), {"x": data["x"]}
    guide = pgmdl.NaMIGuide(model, hidden=(HIDDEN,)).setup(*args, **kwargs)
    if not isinstance(guide.conditional("w"), MultisetConditional):
        kind = type(guide.conditional("w")).__name__
        problems.append(f"K={k}: NaMIGuide built a {kind} for w, not a MultisetConditional")
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    calls["svi"] = partial(svi.step, *args, **kwargs)
    svi.step(*args, **kwargs)  # creates every parameter (and Adam's state)
    store = [p for _, p in pyro.get_param_store().named_parameters()]  # unconstrained
    params["svi"] = store + list(guide.parameters())
    return {
        "calls": calls,
        "params": params,
        "parts": int(data["mask"].sum()),
        "same": same,
        "problems": problems,
    }


# --------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_times(
    calls: dict[str, Callable[[], Any]],
    warmup: int,
    num_calls: int,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Seconds per call of each variant: the best of ``repeats`` interleaved blocks."""

    def block(call: Callable[[], Any], n: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            call()
        sync(device)
        return (time.perf_counter() - start) / max(n, 1)

    for call in calls.values():
        block(call, warmup)
    best = {name: math.inf for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            best[name] = min(best[name], block(call, num_calls))
    return best


def saved_bytes(call: Callable[[], Any], params: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward in one call,
    the parameters' storages excluded."""
    excluded = {p.untyped_storage().data_ptr() for p in params}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        call()
    return sum(storages.values())


def cuda_peak(call: Callable[[], Any], device: torch.device) -> int:
    """The call's peak CUDA allocation above what was allocated before it."""
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def measure_memory(built: dict[str, Any], device: torch.device) -> dict[str, dict[str, float]]:
    memory: dict[str, dict[str, float]] = {"saved": {}, "peak": {}}
    for name, call in built["calls"].items():
        memory["saved"][name] = saved_bytes(call, built["params"][name]) / MIB
        if device.type == "cuda":
            memory["peak"][name] = cuda_peak(call, device) / MIB
    return memory


# --------------------------------------------------------------------------- report

TITLES = {
    "encoder": "encoder",
    "decoder": "decoder",
    "svi": "SVI step",
    "pairs": "all-pairs encoder",
}


def _ratio(value: float | None, first: float | None) -> str:
    if value is None or first is None or first <= 0:
        return "-"
    return f"{value / first:.1f}x"


def table(
    results: list[dict[str, Any]], key: str, unit: str, scale: float, digits: int
) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """Rows and columns of one table: every variant's figure and its ratio to the first K."""
    k0 = results[0]["k"]
    columns = [("k", "K"), ("parts", "parts (B x K)")]
    for name in VARIANTS:
        columns += [(name, f"{TITLES[name]} ({unit})"), (f"{name}_r", f"vs K={k0}")]
    if key == "time":
        columns += [("pairs_lin", "all-pairs/encoder"), ("same", "same output")]
    rows = []
    for result in results:
        figures, first = result[key], results[0][key]
        row = {"k": str(result["k"]), "parts": str(result["parts"])}
        for name in VARIANTS:
            value = figures.get(name)
            if value is None:
                row[name] = "skipped (memory)" if name == "pairs" else "-"
            else:
                row[name] = f"{value * scale:.{digits}f}"
            row[f"{name}_r"] = _ratio(value, first.get(name))
        if key == "time":
            row["pairs_lin"] = _ratio(figures.get("pairs"), figures.get("encoder"))
            row["same"] = result["same"]
        rows.append(row)
    return rows, columns


def growth_lines(results: list[dict[str, Any]], key: str, what: str) -> list[str]:
    """Each variant's growth between the two largest K, and its log-log slope."""
    if len(results) < 2:
        return []
    a, b = results[-2], results[-1]
    factor = b["k"] / a["k"]
    lines = [
        f"{what} growth from K={a['k']} to K={b['k']} ({factor:g}x the parts; linear "
        f"{factor:g}x, quadratic {factor**2:g}x):"
    ]
    for name in VARIANTS:
        va, vb = a[key].get(name), b[key].get(name)
        if va is None or vb is None or va <= 0 or vb <= 0:
            lines.append(f"  {TITLES[name]}: -")
            continue
        slope = math.log(vb / va) / math.log(factor)
        verdict = "quadratic-like"
        if slope <= 1.6:
            verdict = "at most linear" if slope <= 1.15 else "super-linear"
        lines.append(f"  {TITLES[name]}: {vb / va:.1f}x, log-log slope {slope:.2f}: {verdict}")
    return lines


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time and memory of CompVAE's multiset encoder, decoder and SVI step vs K."
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10, 100, 1000], help="numbers of parts K"
    )
    parser.add_argument("--calls", type=int, default=5, help="calls per timed block")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed blocks per variant (best is kept)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant")
    parser.add_argument(
        "--device", default=default_device(), help="torch device (default: cuda if available)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)"
    )
    parser.add_argument(
        "--fast", action="store_true", help="K = 10 100, 1 warm-up and 1 block of 2 calls (CI)"
    )
    args = parser.parse_args(argv)
    if args.fast:
        args.sizes, args.warmup, args.calls, args.repeats = [10, 100], 1, 2, 1
    if min(args.calls, args.repeats, *args.sizes) < 1 or min(args.warmup, args.threads) < 0:
        parser.error(
            "--sizes, --calls and --repeats must be at least 1, --warmup and --threads at least 0"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    if device.type != "cpu":
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        info = info.replace("device: cpu", f"device: {device} ({name})")
    print(info)
    print(
        f"B={BATCH} multisets (the last half padded), label dim {LABEL_DIM}, x dim {X_DIM}, "
        f"w dim {W_DIM}, z dim {Z_DIM}, width {HIDDEN}, {LAYERS} message-passing layers; "
        f"{args.warmup} warm-up call(s) per variant, then best of {args.repeats} interleaved "
        f"block(s) of {args.calls} call(s) (at most {LARGE_REPEATS} from K={LARGE_SIZE}); "
        "one call = forward + backward"
    )
    print()
    results, problems = [], []
    sizes = sorted(set(args.sizes))
    for k in sizes:
        built = build(k, device, args.seed)
        problems += built["problems"]
        repeats = min(args.repeats, LARGE_REPEATS) if k >= LARGE_SIZE else args.repeats
        times = measure_times(built["calls"], args.warmup, args.calls, repeats, device)
        memory = measure_memory(built, device)
        results.append(
            {
                "k": k,
                "parts": built["parts"],
                "same": built["same"],
                "time": times,
                "saved": memory["saved"],
                "peak": memory["peak"],
            }
        )
        print(f"  measured K={k} (best of {repeats})", file=sys.stderr, flush=True)

    print("time per call (ms):")
    print_table(*table(results, "time", "ms", 1e3, 2))
    print()
    print("memory saved for backward (MiB; parameters excluded):")
    print_table(*table(results, "saved", "MiB", 1, 2))
    if device.type == "cuda":
        print()
        print("CUDA peak allocation above the baseline (MiB):")
        print_table(*table(results, "peak", "MiB", 1, 2))
    print()
    lines = growth_lines(results, "time", "time")
    lines += growth_lines(results, "saved", "saved memory")
    if device.type == "cuda":
        lines += growth_lines(results, "peak", "CUDA peak")
    print("\n".join(lines))
    if problems:
        print("\nproblems:", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
