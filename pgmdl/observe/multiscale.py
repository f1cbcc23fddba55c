r"""Hierarchical (multiscale, Laplacian-pyramid) quasi-deterministic observations.

Thesis §6.2.2, after LapCVAE (Dorta et al. 2017): the observation is generated
coarse to fine,

.. math::

    x_0 &= f_0(\mathbf z) + \epsilon_0, \\
    x_i &= \operatorname{upscale}(x_{i-1}) + f_i(x_{i-1}, \mathbf z) + \epsilon_i
    \qquad (i = 1 \dots L-1, \text{ eq. 6.3–6.4}),

each level a quasi-deterministic observation with its own noise scale, so a
diagonal Gaussian at each scale can still explain noise that is correlated
across pixels at the finer scales (§6.2.1–6.2.2). Training needs the data at
every scale: the coarse targets are made from the full-resolution
observation by average pooling (``downscale``), inside the model, so the
model takes only the full-resolution data. Upscaling repeats values
(nearest neighbour), the right inverse of average pooling:
``downscale(upscale(y)) == y``.

Each coarse site records how it derives from the full-resolution site
(``infer["derived_from"]``), so :class:`pgmdl.NaMIGuide` reads it from the
same argument, and :func:`pgmdl.render` shows the chain
``x_0 → x_1 → … → x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pgmdl.errors import ModelError
from pgmdl.observe.quasi_deterministic import QuasiDeterministic


def downscale(x: torch.Tensor, factor: int = 2, spatial_dims: int = 1) -> torch.Tensor:
    """Average-pool the last ``spatial_dims`` dimensions of ``x`` by ``factor``.

    Example:
        >>> downscale(torch.tensor([1.0, 3.0, 5.0, 7.0]))
        tensor([2., 6.])
    """
    _check_divisible(x, factor, spatial_dims)
    lead = x.shape[: x.dim() - spatial_dims]
    shape: list[int] = list(lead)
    for size in x.shape[x.dim() - spatial_dims :]:
        shape += [size // factor, factor]
    pooled = x.reshape(shape)
    dims = tuple(range(len(lead) + 1, len(shape), 2))
    return pooled.mean(dim=dims)


def upscale(x: torch.Tensor, factor: int = 2, spatial_dims: int = 1) -> torch.Tensor:
    """Repeat each value of the last ``spatial_dims`` dimensions ``factor`` times.

    Example:
        >>> upscale(torch.tensor([2.0, 6.0]))
        tensor([2., 2., 6., 6.])
    """
    for dim in range(x.dim() - spatial_dims, x.dim()):
        x = x.repeat_interleave(factor, dim=dim)
    return x


def _check_divisible(x: torch.Tensor, factor: int, spatial_dims: int) -> None:
    if x.dim() < spatial_dims:
        raise ModelError(
            f"a tensor of shape {tuple(x.shape)} has fewer than spatial_dims={spatial_dims} "
            "dimensions"
        )
    sizes = x.shape[x.dim() - spatial_dims :]
    if any(size % factor for size in sizes):
        raise ModelError(
            f"cannot downscale spatial size {tuple(sizes)} by {factor}: each spatial size must be "
            "divisible by factor**(levels - 1); pad or crop the data"
        )


class MultiscaleObservation(nn.Module):
    r"""A Laplacian-pyramid observation with ``levels`` scales (eq. 6.3–6.4).

    Args:
        levels: number of scales, the full resolution included (≥ 1).
        spatial_dims: 1 for curves (``(..., T)``), 2 for images (``(..., H, W)``).
        factor: the resolution ratio between consecutive scales.
        event_dim: dimensions of one observation (default ``spatial_dims``;
            ``3`` for ``C×H×W`` images with ``spatial_dims=2``).
        sigma, sigma_min, **noise_options: the
            :class:`~pgmdl.observe.QuasiDeterministic` noise of every level
            (one noise scale per level); or pass ``noises=`` (one per level,
            coarse to fine).

    Call it with the site name, the predictors and the context (the latents):
    ``pyramid("x", [f0, f1, f2], z, obs=x)``. ``f0(context)`` predicts the
    coarsest level; ``fi(previous, context)`` predicts the residual added to
    ``upscale(previous)``. The coarse sites are named ``"x_0"``, ``"x_1"``, …;
    the full-resolution site keeps the name ``"x"`` and its ``obs=`` is the
    model's argument.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyramid = MultiscaleObservation(3, sigma=0.1)
        >>> coarse = lambda z: z.repeat_interleave(2, -1)  # 2 → 4 values
        >>> detail = lambda previous, z: torch.zeros_like(upscale(previous))
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        ...         return pyramid("x", [coarse, detail, detail], z, obs=x)
        >>> trace = pyro.poutine.trace(model).get_trace(torch.randn(5, 16))
        >>> [tuple(trace.nodes[s]["value"].shape) for s in ("x_0", "x_1", "x")]
        [(5, 4), (5, 8), (5, 16)]
    """

    def __init__(
        self,
        levels: int,
        *,
        spatial_dims: int = 1,
        factor: int = 2,
        event_dim: int | None = None,
        sigma: str | float = "global",
        sigma_min: float = 1e-3,
        noises: Sequence[QuasiDeterministic] | None = None,
        **noise_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ModelError(f"levels={levels!r} must be an integer ≥ 1")
        if spatial_dims not in (1, 2):
            raise ModelError(f"spatial_dims={spatial_dims!r}: use 1 (curves) or 2 (images)")
        if not isinstance(factor, int) or factor < 2:
            raise ModelError(f"factor={factor!r} must be an integer ≥ 2")
        event_dim = spatial_dims if event_dim is None else event_dim
        if event_dim < spatial_dims:
            raise ModelError(f"event_dim={event_dim} must be ≥ spatial_dims={spatial_dims}")
        if noises is None:
            noises = [
                QuasiDeterministic(sigma, sigma_min=sigma_min, event_dim=event_dim, **noise_options)
                for _ in range(levels)
            ]
        elif len(noises) != levels:
            raise ModelError(f"noises= has {len(noises)} entries for levels={levels}")
        self.levels = levels
        self.spatial_dims = spatial_dims
        self.factor = factor
        self.event_dim = event_dim
        self.noises = nn.ModuleList(noises)

    def site_names(self, name: str) -> list[str]:
        """The sites' names, coarse to fine: ``["x_0", "x_1", ..., "x"]``."""
        return [f"{name}_{i}" for i in range(self.levels - 1)] + [name]

    def targets(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The training targets at every scale, coarse to fine (the last is ``x``)."""
        out = [x]
        for _ in range(self.levels - 1):
            out.append(downscale(out[-1], self.factor, self.spatial_dims))
        return out[::-1]

    def _derive(self, times: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def derive(x: torch.Tensor) -> torch.Tensor:
            for _ in range(times):
                x = downscale(x, self.factor, self.spatial_dims)
            return x

        return derive

    def forward(
        self,
        name: str,
        predictors: Sequence[Callable[..., torch.Tensor]],
        context: Any = None,
        obs: torch.Tensor | None = None,
        *,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Observe (or sample) every scale; returns the full-resolution value."""
        if len(predictors) != self.levels:
            raise ModelError(
                f"site {name!r}: {len(predictors)} predictors for {self.levels} levels; give "
                "f0(context) for the coarsest level and fi(previous, context) for each finer one"
            )
        targets: list[torch.Tensor | None] = [None] * self.levels
        if obs is not None:
            _check_divisible(obs, self.factor ** (self.levels - 1), self.spatial_dims)
            targets = list(self.targets(obs))
        names = self.site_names(name)
        previous = None
        for level, (site, predict, noise) in enumerate(
            zip(names, predictors, self.noises, strict=True)
        ):
            loc = predict(context) if level == 0 else predict(previous, context)
            base = None if level == 0 else upscale(previous, self.factor, self.spatial_dims)
            if targets[level] is not None:
                expected = targets[level].shape[targets[level].dim() - self.event_dim :]
            elif base is not None:
                expected = base.shape[base.dim() - self.event_dim :]
            else:
                expected = None
            if expected is not None and loc.shape[loc.dim() - self.event_dim :] != expected:
                raise ModelError(
                    f"site {site!r} (level {level}): the predictor returned shape "
                    f"{tuple(loc.shape)}, but one observation at this level has shape "
                    f"{tuple(expected)} (the full resolution downscaled "
                    f"{self.levels - 1 - level} times by {self.factor})"
                )
            if base is not None:
                loc = base + loc
            infer = {}
            if level < self.levels - 1:
                infer["derived_from"] = (name, self._derive(self.levels - 1 - level))
            previous = noise(site, loc, obs=targets[level], features=features, infer=infer)
        return previous
