"""Eight schools (Rubin 1981) from ONE data matrix, centered parameterization.

``data`` is the (8, 2) table of estimated effects and their standard errors;
the model reads ``obs=data[:, 0]`` and ``scale=data[:, 1]``. The hand guide:
free parameters for mu and tau (LogNormal for the HalfCauchy tau), and each
school's effect from the precision-weighted combination of its estimate with
mu and tau.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig

DATA = torch.tensor(
    [
        [28.0, 15.0],
        [8.0, 10.0],
        [-3.0, 16.0],
        [7.0, 11.0],
        [-1.0, 9.0],
        [1.0, 11.0],
        [18.0, 10.0],
        [12.0, 18.0],
    ]
)


def model(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", data.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, data[:, 1]), obs=data[:, 0])


def guide(data):
    mu_loc = pyro.param("mu_loc", lambda: torch.tensor(0.0))
    mu_scale = pyro.param("mu_scale", lambda: torch.tensor(1.0), constraints.positive)
    mu = pyro.sample("mu", dist.Normal(mu_loc, mu_scale))
    tau_loc = pyro.param("tau_loc", lambda: torch.tensor(1.0))
    tau_coupling = pyro.param("tau_coupling", lambda: torch.tensor(0.0))
    tau_scale = pyro.param("tau_scale", lambda: torch.tensor(0.5), constraints.positive)
    tau = pyro.sample("tau", dist.LogNormal(tau_loc + tau_coupling * mu, tau_scale))
    y, sigma = data[:, 0], data[:, 1]
    shrink = pyro.param("theta_shrink", lambda: torch.tensor(1.0), constraints.positive)
    with pyro.plate("schools", data.shape[0]):
        precision = 1.0 / sigma**2 + shrink / tau**2
        loc = (y / sigma**2 + shrink * mu / tau**2) / precision
        pyro.sample("theta", dist.Normal(loc, precision.rsqrt()))


def build() -> Program:
    calls = [((DATA,), {})]
    return Program(
        name="eight_schools",
        model=model,
        guide=guide,
        call=((DATA,), {}),
        # theta ~ N(mu, tau); obs ~ N(theta, data[:, 1]) with data[:, 1] an input
        parents={"mu": set(), "tau": set(), "theta": {"mu", "tau"}, "obs": {"theta"}},
        latent={"mu", "tau", "theta"},
        observed={"obs"},
        # data[:, 1] (the standard errors) feeds obs; data[:, 0] IS obs
        inputs={"data": {"obs"}},
        train=(TrainConfig("trace", lambda: calls, steps=60, lr=5e-2),),
    )
