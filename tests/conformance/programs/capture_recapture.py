"""Capture-recapture (Cormack-Jolly-Seber), after Pyro's CJS example (model 1).

``capture_history`` is (N animals, T occasions); the model loops over the
occasions with ``obs=capture_history[:, t]``, masks each occasion to the
animals first captured before it (a mask computed from the EARLIER columns),
and sums out the alive states ``z_t`` by parallel enumeration. phi (survival)
and rho (recapture) are globals.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig, seeded

N, T = 24, 4


def model(capture_history):
    N, T = capture_history.shape
    phi = pyro.sample("phi", dist.Uniform(0.0, 1.0))
    rho = pyro.sample("rho", dist.Uniform(0.0, 1.0))
    with pyro.plate("animals", N, dim=-1):
        z = torch.ones(N)
        for t in pyro.markov(range(T)):
            # only animals seen before occasion t contribute (they are known to exist)
            seen = capture_history[:, :t].sum(-1) > 0
            with poutine.mask(mask=seen):
                alive_prob = seen.float() * phi * z + (1 - seen.float())
                z = pyro.sample(
                    f"z_{t}", dist.Bernoulli(alive_prob), infer={"enumerate": "parallel"}
                )
                pyro.sample(f"y_{t}", dist.Bernoulli(rho * z), obs=capture_history[:, t])


def guide(capture_history):
    """phi and rho coupled in the posterior (alive-but-missed vs dead): rho reads phi."""
    phi_a = pyro.param("phi_a", lambda: torch.tensor(2.0), constraints.positive)
    phi_b = pyro.param("phi_b", lambda: torch.tensor(2.0), constraints.positive)
    phi = pyro.sample("phi", dist.Beta(phi_a, phi_b))
    rho_a = pyro.param("rho_a", lambda: torch.tensor(0.0))
    rho_b = pyro.param("rho_b", lambda: torch.tensor(0.0))
    coupling = pyro.param("rho_coupling", lambda: torch.tensor(0.0))
    softplus = torch.nn.functional.softplus
    pyro.sample("rho", dist.Beta(softplus(rho_a + coupling * phi) + 0.5, softplus(rho_b) + 0.5))


def history(seed: int = 0) -> torch.Tensor:
    g = seeded(seed)
    first = torch.randint(0, T - 1, (N,), generator=g)
    alive = torch.ones(N)
    rows = []
    for t in range(T):
        after = (t > first).float()
        alive = alive * torch.where(after > 0, (torch.rand(N, generator=g) < 0.8).float(), 1.0)
        seen = torch.where(
            t == first, 1.0, after * alive * (torch.rand(N, generator=g) < 0.6).float()
        )
        rows.append(seen)
    return torch.stack(rows, -1)


def build() -> Program:
    data = history()
    ts = range(T)
    # The mask of occasion t reads columns 0..t-1 of capture_history, which ARE the
    # observed values of y_0..y_{t-1}: the masked factors of z_t and y_t depend on
    # them, so y_s -> z_t and y_s -> y_t for s < t. alive_prob reads phi (and z_{t-1}
    # for t > 0, z_{-1} being the constant 1); y_t reads rho and z_t.
    earlier = lambda t: {f"y_{s}" for s in range(t)}  # noqa: E731
    parents = {"phi": set(), "rho": set()}
    parents |= {f"z_{t}": {"phi"} | ({f"z_{t - 1}"} if t else set()) | earlier(t) for t in ts}
    parents |= {f"y_{t}": {"rho", f"z_{t}"} | earlier(t) for t in ts}
    enum = lambda: TraceEnum_ELBO(max_plate_nesting=1)  # noqa: E731
    calls = [((data,), {})]
    return Program(
        name="capture_recapture",
        model=model,
        guide=guide,
        call=((data,), {}),
        parents=parents,
        latent={"phi", "rho"} | {f"z_{t}" for t in ts},
        observed={f"y_{t}" for t in ts},
        inputs=None,  # capture_history[:, :0] (an empty read) may or may not be listed
        train=(TrainConfig("enum", lambda: calls, enum, steps=60, lr=5e-2),),
        hand_train=(enum, guide, calls),
    )
