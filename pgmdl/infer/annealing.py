r"""KL warm-up: the latent terms of the ELBO weighted by a factor that grows to 1.

Early in training a flexible learned prior can match the guide before the
decoder has learned to use the latents, and the posterior collapses onto the
prior (Bowman et al. 2016, "Generating sentences from a continuous space";
Sønderby et al. 2016, "Ladder variational autoencoders", §2.3, who call the
cure *warm-up*). Warm-up maximizes, at step :math:`t`,

.. math::

    \mathcal L_{\beta_t} = \mathbb E_q\big[\log p(x \mid v)\big]
        - \beta_t\, \mathbb E_q\big[\log q(v \mid x) - \log p(v)\big],
    \qquad \beta_t = \beta_0 + (1 - \beta_0) \min(1, t / T),

which is the ELBO again from step :math:`T` on. In a Pyro program the latent
terms are the log-densities of the unobserved sample sites, in the model and in
the guide alike; :class:`KLWarmup` multiplies their ``scale`` by
:math:`\beta_t` through an effect handler, so neither program changes.

>>> import pyro, pyro.distributions as dist, torch
>>> def model(x):
...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
...     pyro.sample("x", dist.Normal(z, 1.0), obs=x)
>>> warmup = KLWarmup(steps=4)
>>> trace = pyro.poutine.trace(warmup.wrap(model)).get_trace(torch.tensor(0.5))
>>> trace.nodes["z"]["scale"], trace.nodes["x"]["scale"]
(0.0, 1.0)
>>> for _ in range(2):
...     warmup.advance()
>>> warmup.beta
0.5
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from pyro.poutine.messenger import Messenger

from pgmdl.errors import ArgumentError


class _LatentScale(Messenger):
    """Multiplies the ``scale`` of every unobserved sample site by the warm-up's β."""

    def __init__(self, warmup: KLWarmup) -> None:
        super().__init__()
        self.warmup = warmup

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.warmup.beta


class KLWarmup:
    r"""A linear KL warm-up schedule and the handler that applies it.

    ``wrap`` the model and the guide with the same ``KLWarmup``, give them to
    :class:`pyro.infer.SVI`, and call :meth:`advance` after every step
    (the zoo's ``models.compvae.train_compvae`` does it with ``kl_warmup=T``)::

        warmup = KLWarmup(steps=1000)
        svi = SVI(warmup.wrap(model), warmup.wrap(guide), optim, Trace_ELBO())
        for batch in batches:
            svi.step(batch)
            warmup.advance()

    The losses SVI returns while :math:`\beta_t < 1` are those of
    :math:`\mathcal L_{\beta_t}`, not of the ELBO.

    Args:
        steps: :math:`T`, the steps over which β grows linearly to 1 (0: no
            warm-up, β = 1 from the start).
        start: :math:`\beta_0`, the weight at step 0, in [0, 1].
    """

    def __init__(self, steps: int, start: float = 0.0) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ArgumentError(
                f"KLWarmup: steps={steps!r}; it takes the number of warm-up steps, an int >= 0"
            )
        if not (isinstance(start, int | float) and math.isfinite(start) and 0 <= start <= 1):
            raise ArgumentError(f"KLWarmup: start={start!r}; the first weight must be in [0, 1]")
        self.steps, self.start = steps, float(start)
        self.step = 0

    @property
    def beta(self) -> float:
        """:math:`\\beta_t` at the current step."""
        if self.step >= self.steps:
            return 1.0
        return self.start + (1.0 - self.start) * self.step / self.steps

    def advance(self, steps: int = 1) -> None:
        """Move the schedule on by ``steps`` optimizer steps."""
        self.step += steps

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a model or a guide) with its latent sites weighted by β."""

        @functools.wraps(fn)
        def weighted(*args: Any, **kwargs: Any) -> Any:
            with _LatentScale(self):
                return fn(*args, **kwargs)

        return weighted
