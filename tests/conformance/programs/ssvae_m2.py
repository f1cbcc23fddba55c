"""Semi-supervised VAE "M2" as Pyro's SS-VAE tutorial writes it.

``model(xs, ys=None)``: one ``pyro.plate("data")`` WITHOUT a size, the label
``ys = pyro.sample("y", OneHotCategorical(...), obs=ys)`` observed on
labelled batches and latent on unlabelled ones, ``z``, and ``x | y, z``. The
hand guide samples ``y`` only ``if ys is None``. One guide serves both kinds
of batch, under Trace_ELBO and TraceEnum_ELBO (``y`` enumerated).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate
from torch import nn

from tests.conformance.harness import Program, TrainConfig, seeded

X_DIM, Y_DIM, Z_DIM, HIDDEN = 64, 4, 3, 16


def broadcast_inputs(tensors):
    """Concatenate along the last dim, broadcasting the batch dims (y may be enumerated)."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(shape + t.shape[-1:]) for t in tensors], dim=-1)


class MLP(nn.Module):
    def __init__(self, n_in, n_out, out="none"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, n_out))
        self.out = out

    def forward(self, *inputs):
        h = self.net(broadcast_inputs(inputs))
        if self.out == "softmax":
            return torch.softmax(h, dim=-1)
        if self.out == "sigmoid":
            return torch.sigmoid(h)
        return h


class EncoderZ(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = MLP(X_DIM + Y_DIM, Z_DIM)
        self.log_scale = MLP(X_DIM + Y_DIM, Z_DIM)

    def forward(self, xs, ys):
        return self.loc(xs, ys), torch.exp(self.log_scale(xs, ys))


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary 64-pixel 'digits' of four classes (prototype + 10% flips), one-hot labels."""
    g = seeded(1000)
    protos = (torch.rand(Y_DIM, X_DIM, generator=g) < 0.5).float()
    g = seeded(seed)
    labels = torch.randint(0, Y_DIM, (n,), generator=g)
    flips = (torch.rand(n, X_DIM, generator=g) < 0.1).float()
    return (protos[labels] + flips) % 2, nn.functional.one_hot(labels, Y_DIM).float()


def build_model_and_guide():
    torch.manual_seed(0)
    decoder = MLP(Z_DIM + Y_DIM, X_DIM, out="sigmoid")
    encoder_y = MLP(X_DIM, Y_DIM, out="softmax")
    encoder_z = EncoderZ()

    def model(xs, ys=None):
        pyro.module("ss_vae", decoder)
        batch_size = xs.size(0)
        with pyro.plate("data"):
            alpha_prior = torch.ones(batch_size, Y_DIM) / (1.0 * Y_DIM)
            ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior), obs=ys)
            prior_loc = xs.new_zeros([batch_size, Z_DIM])
            prior_scale = xs.new_ones([batch_size, Z_DIM])
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            loc = decoder(zs, ys)
            pyro.sample("x", dist.Bernoulli(loc, validate_args=False).to_event(1), obs=xs)

    def guide(xs, ys=None):
        pyro.module("encoder_y", encoder_y)
        pyro.module("encoder_z", encoder_z)
        with pyro.plate("data"):
            if ys is None:
                alpha = encoder_y(xs)
                ys = pyro.sample("y", dist.OneHotCategorical(alpha))
            loc, scale = encoder_z(xs, ys)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide


def batches(labelled_first: bool):
    xs_l, ys_l = digits(32, seed=1)
    xs_u, _ = digits(32, seed=2)
    labelled, unlabelled = ((xs_l, ys_l), {}), ((xs_u,), {})
    return [labelled, unlabelled] if labelled_first else [unlabelled, labelled]


def _train_configs():
    enum = {"enumerate": "parallel"}
    return (
        TrainConfig("trace-unlabelled-first", lambda: batches(False), steps=60),
        TrainConfig("trace-labelled-first", lambda: batches(True), steps=60),
        TrainConfig(
            "enum-unlabelled-first",
            lambda: batches(False),
            lambda: TraceEnum_ELBO(max_plate_nesting=1),
            enum,
            steps=60,
        ),
        TrainConfig(
            "enum-labelled-first",
            lambda: batches(True),
            lambda: TraceEnum_ELBO(max_plate_nesting=1),
            enum,
            steps=60,
        ),
    )


def build_labelled() -> Program:
    model, guide = build_model_and_guide()
    xs, ys = digits(16, seed=3)
    return Program(
        name="ssvae_m2_labelled",
        model=model,
        guide=guide,
        call=((xs, ys), {}),
        # y ~ Cat (observed here), z ~ N(0, I), x ~ Bernoulli(decoder(z, y))
        parents={"y": set(), "z": set(), "x": {"y", "z"}},
        latent={"z"},
        observed={"y", "x"},
        inputs={},
        train=_train_configs(),
        hand_train=(Trace_ELBO, guide, batches(True)),
    )


def build_unlabelled() -> Program:
    model, guide = build_model_and_guide()
    xs, _ = digits(16, seed=3)
    return Program(
        name="ssvae_m2_unlabelled",
        model=model,
        guide=guide,
        call=((xs,), {}),
        parents={"y": set(), "z": set(), "x": {"y", "z"}},
        latent={"y", "z"},
        observed={"x"},
        inputs={},
        train=(),  # trained with the labelled program's configurations (they alternate)
        hand_train=(
            lambda: TraceEnum_ELBO(max_plate_nesting=1),
            config_enumerate(guide, "parallel"),
            batches(False),
        ),
    )
