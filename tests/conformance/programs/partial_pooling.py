"""Partial pooling of batting averages, after Pyro's baseball example (Efron & Morris 1975).

Each player's chance of a hit ``phi`` is Beta with a population mean ``m``
and concentration ``kappa`` (hyperpriors); ``obs`` is Binomial(at_bats, phi)
with ``obs=hits``. The hand guide is conjugacy-shaped: each phi from
Beta(m kappa + hits, (1 - m) kappa + misses) corrected by learned offsets.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig, seeded


def partially_pooled(at_bats, hits=None):
    num_players = at_bats.shape[0]
    m = pyro.sample("m", dist.Uniform(0.0, 1.0))
    kappa = pyro.sample("kappa", dist.Pareto(1.0, 1.5))
    with pyro.plate("num_players", num_players):
        phi = pyro.sample("phi", dist.Beta(m * kappa, (1 - m) * kappa))
        return pyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)


def guide(at_bats, hits=None):
    positive = constraints.positive
    m_a = pyro.param("m_a", lambda: torch.tensor(2.0), positive)
    m_b = pyro.param("m_b", lambda: torch.tensor(5.0), positive)
    m = pyro.sample("m", dist.Beta(m_a, m_b))
    k_alpha = pyro.param("kappa_alpha", lambda: torch.tensor(0.5))
    k_on_m = pyro.param("kappa_on_m", lambda: torch.tensor(0.0))
    alpha = torch.nn.functional.softplus(k_alpha + k_on_m * m) + 0.1
    kappa = pyro.sample("kappa", dist.Pareto(1.0, alpha))
    extra_a = pyro.param("phi_extra_a", lambda: torch.tensor(1.0), positive)
    extra_b = pyro.param("phi_extra_b", lambda: torch.tensor(1.0), positive)
    with pyro.plate("num_players", at_bats.shape[0]):
        pyro.sample(
            "phi",
            dist.Beta(m * kappa + hits + extra_a, (1 - m) * kappa + at_bats - hits + extra_b),
        )


def season(num_players: int = 18, seed: int = 0):
    g = seeded(seed)
    at_bats = torch.full((num_players,), 45.0)
    phi = 0.2 + 0.1 * torch.rand(num_players, generator=g)
    hits = torch.binomial(at_bats, phi, generator=g)
    return at_bats, hits


def build() -> Program:
    at_bats, hits = season()
    calls = [((at_bats, hits), {})]
    return Program(
        name="partial_pooling",
        model=partially_pooled,
        guide=guide,
        call=((at_bats, hits), {}),
        # phi ~ Beta(m kappa, (1 - m) kappa); obs ~ Binomial(at_bats, phi)
        parents={"m": set(), "kappa": set(), "phi": {"m", "kappa"}, "obs": {"phi"}},
        latent={"m", "kappa", "phi"},
        observed={"obs"},
        inputs={"at_bats": {"obs"}},  # the Binomial's total_count
        train=(TrainConfig("trace", lambda: calls, steps=60, lr=5e-2),),
    )
