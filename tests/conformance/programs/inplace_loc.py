"""A model that assembles a distribution parameter by in-place writes.

``loc = torch.zeros(n, 2); loc[:, 0] = a; loc[:, 1] = b`` is common in user
code; the edges ``a -> x`` and ``b -> x`` must exist.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig, seeded


def model(data):
    n = data.shape[0]
    a = pyro.sample("a", dist.Normal(0.0, 2.0))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    loc = torch.zeros(n, 2)
    loc[:, 0] = a
    loc[:, 1] = b
    with pyro.plate("data", n):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=data)


def guide(data):
    positive = constraints.positive
    a_loc = pyro.param("a_loc", lambda: torch.tensor(0.0))
    a_scale = pyro.param("a_scale", lambda: torch.tensor(1.0), positive)
    a = pyro.sample("a", dist.Normal(a_loc, a_scale))
    b_loc = pyro.param("b_loc", lambda: torch.tensor(0.0))
    b_on_a = pyro.param("b_on_a", lambda: torch.tensor(0.0))
    b_scale = pyro.param("b_scale", lambda: torch.tensor(1.0), positive)
    pyro.sample("b", dist.Normal(b_loc + b_on_a * a, b_scale))


def build() -> Program:
    g = seeded(0)
    data = torch.tensor([1.0, -1.0]) + torch.randn(30, 2, generator=g)
    calls = [((data,), {})]
    return Program(
        name="inplace_loc",
        model=model,
        guide=guide,
        call=((data,), {}),
        # loc[:, 0] = a and loc[:, 1] = b write both into x's loc
        parents={"a": set(), "b": set(), "x": {"a", "b"}},
        latent={"a", "b"},
        observed={"x"},
        inputs={},
        train=(TrainConfig("trace", lambda: calls, steps=60, lr=5e-2),),
    )
