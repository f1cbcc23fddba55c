"""Bayesian linear regression written as a ``PyroModule``, as in Pyro's regression tutorial.

``PyroModule[nn.Linear]`` with ``PyroSample`` priors on its weight and bias
(sites ``linear.weight`` and ``linear.bias``), a noise scale ``sigma``, and
``pyro.plate("data", N)`` around the observation. The hand guide has free
parameters, each coefficient conditioned on those sampled before it (the
posterior couples them all).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.distributions import constraints

from tests.conformance.harness import Program, TrainConfig, seeded

P = 3


class BayesianRegression(PyroModule):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(
            dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
        )
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def guide(x, y=None):
    positive = constraints.positive
    s_loc = pyro.param("sigma_loc", lambda: torch.tensor(0.0))
    s_scale = pyro.param("sigma_scale", lambda: torch.tensor(0.3), positive)
    sigma = pyro.sample("sigma", dist.LogNormal(s_loc, s_scale))
    w_loc = pyro.param("weight_loc", lambda: torch.zeros(1, P))
    w_sigma = pyro.param("weight_on_sigma", lambda: torch.zeros(1, P))
    w_scale = pyro.param("weight_scale", lambda: 0.1 * torch.ones(1, P), positive)
    weight = pyro.sample(
        "linear.weight", dist.Normal(w_loc + w_sigma * sigma.log(), w_scale).to_event(2)
    )
    b_loc = pyro.param("bias_loc", lambda: torch.zeros(1))
    b_weight = pyro.param("bias_on_weight", lambda: torch.zeros(1, P))
    b_sigma = pyro.param("bias_on_sigma", lambda: torch.zeros(1))
    b_scale = pyro.param("bias_scale", lambda: 0.1 * torch.ones(1), positive)
    loc = b_loc + (b_weight * weight).sum(-1) + b_sigma * sigma.log()
    pyro.sample("linear.bias", dist.Normal(loc, b_scale).to_event(1))


def dataset(n: int = 50, seed: int = 0):
    g = seeded(seed)
    x = torch.randn(n, P, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.7 + 0.5 * torch.randn(n, generator=g)
    return x, y


def build() -> Program:
    torch.manual_seed(0)
    regression = BayesianRegression(P, 1)
    x, y = dataset()
    calls = [((x, y), {})]
    return Program(
        name="bayes_regression",
        model=regression,
        guide=guide,
        call=((x, y), {}),
        # the PyroSample priors are constants; obs ~ N(linear(x; weight, bias), sigma)
        parents={
            "sigma": set(),
            "linear.weight": set(),
            "linear.bias": set(),
            "obs": {"sigma", "linear.weight", "linear.bias"},
        },
        latent={"sigma", "linear.weight", "linear.bias"},
        observed={"obs"},
        inputs={"x": {"obs"}},  # the covariates
        train=(TrainConfig("trace", lambda: calls, steps=60, lr=5e-2),),
    )
