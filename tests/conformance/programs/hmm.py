"""Hidden Markov model with enumerated states, as in Pyro's HMM example.

Global transition and emission probabilities; a ``sequences`` plate and a
``tones`` plate; ``for t in pyro.markov(range(max_length))`` with hidden
states ``x_{t}`` marked ``infer={"enumerate": "parallel"}`` and observations
``y_{t}`` (``obs=sequences[:, t]``), masked past each sequence's length. The
sizes come in an ``argparse.Namespace``. Trained with TraceEnum_ELBO.
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch import nn
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig, seeded

T = 4


def model(sequences, lengths, args):
    num_sequences, max_length, data_dim = sequences.shape
    probs_x = pyro.sample(
        "probs_x", dist.Dirichlet(0.9 * torch.eye(args.hidden_dim) + 0.1).to_event(1)
    )
    probs_y = pyro.sample(
        "probs_y", dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2)
    )
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, dim=-2):
        x = 0
        for t in pyro.markov(range(max_length)):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(
                    f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"}
                )
                with tones_plate:
                    pyro.sample(
                        f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=sequences[:, t]
                    )


def guide(sequences, lengths, args):
    """Free parameters for the globals; probs_y conditioned on probs_x (they explain
    the same observations, so the posterior couples them). The states are summed out."""
    hidden, data_dim = args.hidden_dim, sequences.shape[-1]
    concentration = pyro.param(
        "probs_x_concentration", lambda: torch.ones(hidden, hidden), constraints.positive
    )
    probs_x = pyro.sample("probs_x", dist.Dirichlet(concentration).to_event(1))
    a = pyro.param("probs_y_a", lambda: torch.zeros(hidden, data_dim))
    b = pyro.param("probs_y_b", lambda: torch.zeros(hidden, data_dim))
    coupling = pyro.param("probs_y_coupling", lambda: torch.zeros(hidden, data_dim))
    stay = probs_x.diagonal().unsqueeze(-1)
    pyro.sample(
        "probs_y",
        dist.Beta(
            nn.functional.softplus(a + coupling * stay) + 0.1,
            nn.functional.softplus(b - coupling * stay) + 0.1,
        ).to_event(2),
    )


def melodies(args, num_sequences: int, seed: int = 0):
    g = seeded(seed)
    trans = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    emit = torch.rand(args.hidden_dim, args.data_dim, generator=g)
    state = torch.randint(0, args.hidden_dim, (num_sequences,), generator=g)
    ys = []
    for _ in range(T):
        ys.append((torch.rand(num_sequences, args.data_dim, generator=g) < emit[state]).float())
        state = torch.multinomial(trans[state], 1, generator=g).squeeze(-1)
    lengths = torch.tensor([4, 3, 4, 2, 4, 4, 3, 4][:num_sequences])
    sequences = torch.stack(ys, 1) * (torch.arange(T) < lengths[:, None]).unsqueeze(-1)
    return sequences, lengths


def build() -> Program:
    args = argparse.Namespace(hidden_dim=3, data_dim=4)
    sequences, lengths = melodies(args, 8)
    ts = range(T)
    # x_t ~ Cat(probs_x[x_{t-1}]), y_t ~ Bernoulli(probs_y[x_t]); the mask reads lengths only
    parents = {"probs_x": set(), "probs_y": set(), "x_0": {"probs_x"}}  # x_0 ~ probs_x[0]
    parents |= {f"x_{t}": {"probs_x", f"x_{t - 1}"} for t in ts if t > 0}
    parents |= {f"y_{t}": {"probs_y", f"x_{t}"} for t in ts}
    enum = lambda: TraceEnum_ELBO(max_plate_nesting=2)  # noqa: E731
    calls = [((sequences, lengths, args), {})]
    return Program(
        name="hmm",
        model=model,
        guide=guide,
        call=((sequences, lengths, args), {}),
        parents=parents,
        latent={"probs_x", "probs_y"} | {f"x_{t}" for t in ts},
        observed={f"y_{t}" for t in ts},
        # lengths feeds every step through the mask
        inputs={"lengths": {f"x_{t}" for t in ts} | {f"y_{t}" for t in ts}},
        train=(TrainConfig("enum", lambda: calls, enum, steps=50),),
        hand_train=(enum, guide, calls),
    )
