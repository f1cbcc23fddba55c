r"""Closed-form and numerical facts about Gaussian observation models.

Two results bound what maximum likelihood can do with a Gaussian observation
model ``p(x | z) = N(x | mu(z), Sigma(z))``. This module computes both
numerically, in ``torch.float64``, so that they can be checked and plotted.

Collapse on a hypersphere (thesis, Section 6.3.1, Theorem 6.1)
--------------------------------------------------------------
Data uniform on the sphere of radius ``R`` in ``R^D``; an isotropic Gaussian
observation model with *fixed* standard deviation ``sigma``; an exact
inference model and a decoder of infinite capacity. The proof (Appendix 6.A)
shows that at the optimum the decoder mean ``mu = f(z)`` is uniform on a
sphere of radius ``r`` that maximizes (eq. 6.5 = eq. 6.11)::

    l(r) = exp(-r^2 / (2 sigma^2)) * int_0^pi exp(R r cos(t) / sigma^2) sin(t)^(D-2) dt

The thesis proves ``r* = 0`` (the decoder collapses to the constant 0) when
``R / sigma <= sqrt(D - 1)`` and observes in Fig. 6.5 that the actual
threshold is near ``sqrt(D)``. It is *exactly* ``sqrt(D)``:

* With ``nu = D/2 - 1`` the integral is a modified Bessel function,
  ``int_0^pi exp(x cos t) sin(t)^(2 nu) dt = sqrt(pi) Gamma(nu + 1/2) (2/x)^nu I_nu(x)``,
  so with ``sigma = 1`` and ``x = R r``,
  ``d log l / dr = -r + R A(R r) = r R^2 (A(x)/x - 1/R^2)`` where
  ``A = I_{nu+1} / I_nu``.
* ``A(x)/x`` decreases strictly on ``(0, inf)`` (a classical property of
  Bessel-function ratios for ``nu > -1``) from ``1 / (2 nu + 2) = 1 / D`` at
  ``x -> 0`` to 0. Hence ``log l`` is unimodal in ``r``; its maximum is at
  ``r = 0`` iff ``R^2 <= D``, and for ``R^2 > D`` at the unique root of
  ``A(x)/x = 1/R^2``.
* Equivalently, a fourth-order expansion at ``r = 0`` (using
  ``E[cos^2 t] = 1/D`` under the weight ``sin(t)^(D-2)``) gives::

      log l(r) - log l(0) = (r^2 / 2)(R^2/D - 1) - R^4 r^4 / (4 D^2 (D + 2)) + O(r^6)

  so ``r = 0`` stops being a local maximum exactly at ``R = sqrt(D)`` and,
  just above it, ``r*^2 ~ (D + 2)(R^2/D - 1)``: the transition is continuous
  (``r*`` grows like a square root, no jump), which is why the threshold of
  the *global* maximizer coincides with the local one.

:func:`collapse_threshold` finds the threshold by bisection on
:func:`optimal_radius` without using this argument; it returns ``sqrt(D)``
to within its tolerance for every ``D`` tried (2, 3, 5, 10, 50; to ``2e-7``
with ``rtol = 1e-7``).
As ``R / sigma`` grows, ``r*`` tends to ``R`` (``r* ~ R - (D - 1)/(2R)``).

Unbounded likelihood of Gaussian DLVMs (Mattei & Frellsen, 2018)
----------------------------------------------------------------
A deep latent variable model with ``z ~ N(0, I_d)`` and a ``p``-variate
Gaussian output whose mean and covariance come from a one-hidden-unit MLP::

    mu(z)    = V tanh(w^T z + a) + b
    Sigma(z) = exp(alpha tanh(w^T z + a) + beta) I_p

has log-likelihood ``l(theta) = sum_j log int N(x_j | mu(z), Sigma(z)) N(z; 0, I) dz``.
The subfamily ``theta_k = (alpha_k w^T, 0, 0, x_i, alpha_k, -alpha_k)`` has
``mu(z) = x_i`` and ``Sigma(z) = exp(alpha_k tanh(alpha_k w^T z) - alpha_k) I_p``:
on the half-space ``w^T z < 0`` the variance tends to ``exp(-2 alpha_k)``, so
``log p(x_i) ~ log(1/2) - (p/2) log(2 pi) + p alpha_k -> inf`` while the
other terms stay bounded: ``l(theta_k) -> inf``. Adding ``xi I_p`` to
``Sigma`` (``xi > 0``) bounds the likelihood by ``-(n p / 2) log(2 pi xi)``
(:func:`gaussian_likelihood_bound`).
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from pgmdl.errors import ModelError

__all__ = [
    "collapse_threshold",
    "gaussian_likelihood_bound",
    "mattei_frellsen_parameters",
    "one_unit_decoder_log_likelihood",
    "optimal_radius",
    "sphere_objective",
]

_DTYPE = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _real(value: object, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite Python float, at least (or above) ``minimum``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ModelError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ModelError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ModelError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if strict and value <= minimum:
            raise ModelError(f"{name} must be > {minimum}, got {value}")
        if not strict and value < minimum:
            raise ModelError(f"{name} must be >= {minimum}, got {value}")
    return value


def _integer(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ModelError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _dimension(D: object) -> int:
    return _integer(D, "D (the dimension of the ambient space)", minimum=2)


def _vector(value: object, name: str, length: int | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=_DTYPE)
    if tensor.dim() != 1:
        raise ModelError(f"{name} must be a 1-D tensor, got shape {tuple(tensor.shape)}")
    if length is not None and tensor.shape[0] != length:
        raise ModelError(
            f"{name} must have length {length} (the data dimension p), got {tensor.shape[0]}"
        )
    if tensor.shape[0] == 0:
        raise ModelError(f"{name} must not be empty")
    if not torch.isfinite(tensor).all():
        raise ModelError(f"{name} must be finite")
    return tensor


def _data(data: object) -> torch.Tensor:
    tensor = torch.as_tensor(data, dtype=_DTYPE)
    if tensor.dim() != 2:
        raise ModelError(
            f"data must be a 2-D tensor of shape (n, p), got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ModelError(
            f"data must have at least one row and one column, got {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise ModelError("data must be finite (it contains NaN or infinite values)")
    return tensor


# ---------------------------------------------------------------------------
# Theorem 6.1: modelling a hypersphere
# ---------------------------------------------------------------------------


def _simpson_log_weights(num_points: int, step: float) -> torch.Tensor:
    """Log of composite Simpson weights on ``num_points`` (odd) equispaced nodes."""
    weights = torch.ones(num_points, dtype=_DTYPE)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    return torch.log(weights * (step / 3.0))


def sphere_objective(
    r: torch.Tensor | float,
    R: float,
    sigma: float,
    D: int,
    *,
    num_points: int = 4001,
) -> torch.Tensor:
    r"""Log of the radius objective ``l(r)`` of Theorem 6.1 (thesis eq. 6.5 / 6.11).

    ::

        l(r) = exp(-r^2 / (2 sigma^2)) * int_0^pi exp(R r cos(t) / sigma^2) sin(t)^(D-2) dt

    is the quantity the optimal decoder of a Gaussian VAE with fixed
    ``sigma`` maximizes over the radius ``r`` of the sphere its mean lies on,
    when the data are uniform on the sphere of radius ``R`` in ``R^D``.

    The integral is computed in log space: composite Simpson's rule on
    ``num_points`` nodes of ``[0, pi]`` with a ``logsumexp`` over
    ``R r cos(t) / sigma^2 + (D - 2) log sin(t) + log(weight)``, so large
    ``R r / sigma^2`` does not overflow. With the default 4001 nodes and
    ``c = R r / sigma^2``, the absolute error of ``log l`` (checked against
    the Bessel closed form ``sqrt(pi) Gamma(nu + 1/2) (2/c)^nu I_nu(c)``,
    ``nu = D/2 - 1``) is at rounding level (``1e-14``) for even ``D``, where
    the integrand extends to a smooth periodic function; for odd ``D`` it is
    ``O(h^4)``: about ``1e-11`` at ``c = 50``, ``5e-9`` at ``c = 900`` and
    ``2e-7`` at ``c = 5000``. ``l`` is even in ``r`` and ``log l(0) =
    log(sqrt(pi) Gamma((D-1)/2) / Gamma(D/2))``; for ``D = 3`` the integral
    is ``2 sinh(c) / c``.

    Args:
        r: radius or radii (``>= 0``); any shape, vectorized.
        R: radius of the data sphere (``>= 0``).
        sigma: standard deviation of the observation noise (``> 0``).
        D: dimension of the ambient space (integer ``>= 2``).
        num_points: number of quadrature nodes (odd, ``>= 3``; even is rounded up).

    Returns:
        ``log l(r)`` as a float64 tensor of the shape of ``r``.

    Raises:
        ModelError: on ``sigma <= 0``, ``R < 0``, ``D < 2``, a negative or
            non-finite ``r``, or too few nodes.

    >>> import math, torch
    >>> c = 2.0
    >>> value = sphere_objective(torch.tensor([1.0]), R=2.0, sigma=1.0, D=3)
    >>> exact = -0.5 + math.log(2 * math.sinh(c) / c)
    >>> print(round(value.item(), 10) == round(exact, 10))
    True
    """
    R = _real(R, "R (the radius of the data sphere)", minimum=0.0)
    sigma = _real(sigma, "sigma (the observation noise scale)", minimum=0.0, strict=True)
    D = _dimension(D)
    num_points = _integer(num_points, "num_points", minimum=3)
    if num_points % 2 == 0:
        num_points += 1
    r = torch.as_tensor(r, dtype=_DTYPE)
    if not torch.isfinite(r).all():
        raise ModelError("r must be finite")
    if (r < 0).any():
        raise ModelError("r (a radius) must be >= 0")

    theta = torch.linspace(0.0, math.pi, num_points, dtype=_DTYPE)
    step = math.pi / (num_points - 1)
    # (D - 2) log sin(t), with 0 * log 0 = 0 when D = 2 (xlogy) and -inf at the ends otherwise
    log_weight = torch.special.xlogy(
        torch.tensor(float(D - 2), dtype=_DTYPE), torch.sin(theta).clamp_min(0.0)
    )
    log_weight = log_weight + _simpson_log_weights(num_points, step)
    c = (R / sigma**2) * r.reshape(-1, 1)
    log_integral = torch.logsumexp(c * torch.cos(theta) + log_weight, dim=-1)
    out = -(r.reshape(-1) ** 2) / (2.0 * sigma**2) + log_integral
    return out.reshape(r.shape)


def _golden_section_max(fn, lo: float, hi: float, *, iterations: int = 80) -> float:
    """Maximizer of a unimodal scalar ``fn`` on ``[lo, hi]``."""
    x1 = hi - _GOLDEN * (hi - lo)
    x2 = lo + _GOLDEN * (hi - lo)
    f1, f2 = fn(x1), fn(x2)
    for _ in range(iterations):
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            break
        if f1 < f2:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + _GOLDEN * (hi - lo)
            f2 = fn(x2)
        else:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - _GOLDEN * (hi - lo)
            f1 = fn(x1)
    return 0.5 * (lo + hi)


def optimal_radius(
    R_over_sigma: float,
    D: int,
    *,
    num_grid: int = 401,
    num_points: int = 4001,
) -> float:
    r"""The maximizer ``r* / sigma`` of the radius objective ``l(r)`` (eq. 6.5).

    Works with ``sigma = 1``, so the argument and the result are both in units
    of ``sigma``. A grid search over ``r`` in ``[0, 1.5 R + 3]``
    (``num_grid`` points) brackets the maximum, which golden-section search
    then refines to about ``1e-8``. ``log l`` is unimodal in ``r`` (see the
    module docstring), so the bracket holds the global maximum. Returns
    exactly ``0.0`` when no radius in the bracket beats ``r = 0`` (the
    collapsed decoder of Theorem 6.1).

    Theorem 6.1 proves ``r* = 0`` for ``R / sigma <= sqrt(D - 1)``; in fact
    ``r* = 0`` iff ``R / sigma <= sqrt(D)`` (see :func:`collapse_threshold`),
    and ``r* -> R`` as ``R / sigma -> inf``.

    Args:
        R_over_sigma: ``R / sigma`` (``>= 0``).
        D: dimension of the ambient space (integer ``>= 2``).
        num_grid: points of the coarse grid.
        num_points: quadrature nodes of :func:`sphere_objective`.

    Returns:
        ``r* / sigma`` as a Python float.

    >>> optimal_radius(1.0, D=2)
    0.0
    >>> r = optimal_radius(30.0, D=3)
    >>> print(round(r, 3))
    29.967
    """
    R = _real(R_over_sigma, "R_over_sigma", minimum=0.0)
    D = _dimension(D)
    num_grid = _integer(num_grid, "num_grid", minimum=3)
    if R == 0.0:
        return 0.0

    def objective(values: torch.Tensor) -> torch.Tensor:
        return sphere_objective(values, R, 1.0, D, num_points=num_points)

    grid = torch.linspace(0.0, 1.5 * R + 3.0, num_grid, dtype=_DTYPE)
    values = objective(grid)
    best = int(torch.argmax(values))
    lo = grid[max(best - 1, 0)].item()
    hi = grid[min(best + 1, num_grid - 1)].item()
    r_star = _golden_section_max(lambda x: objective(torch.tensor(x, dtype=_DTYPE)).item(), lo, hi)
    at_zero = values[0].item()
    gain = objective(torch.tensor(r_star, dtype=_DTYPE)).item() - at_zero
    # a gain at the rounding level of log l is no evidence that r* > 0
    if gain <= 1e-13 * max(1.0, abs(at_zero)):
        return 0.0
    return r_star


def collapse_threshold(D: int, *, rtol: float = 1e-3, num_points: int = 4001) -> float:
    r"""The smallest ``R / sigma`` at which the optimal radius ``r*`` is positive.

    Below it, the maximum-likelihood decoder of Theorem 6.1 is the constant
    0: the VAE learns nothing of a sphere of radius ``R`` in ``R^D``.
    Found numerically by bisection on ``R / sigma`` with :func:`optimal_radius`
    (relative tolerance ``rtol``), starting from the bracket
    ``[sqrt(D - 1), 2 sqrt(D) + 1]``.

    *What the theory says.* The thesis proves ``r* = 0`` for
    ``R / sigma <= sqrt(D - 1)`` (Theorem 6.1, eq. 6.13) and observes the
    threshold near ``sqrt(D)`` (Fig. 6.5, footnote 7). A second-order
    expansion at ``r = 0``, with ``E[cos^2 t] = 1/D`` under the weight
    ``sin(t)^(D-2)``, gives::

        l(r) / l(0) ~ 1 + (r^2 / (2 sigma^2)) (R^2 / (D sigma^2) - 1)

    so ``r = 0`` stops being a local maximum exactly at ``R / sigma = sqrt(D)``.

    *What the numerics show.* The transition is continuous: just above the
    threshold ``r*^2 / sigma^2 ~ (D + 2)(R^2 / (D sigma^2) - 1)`` (e.g.
    ``r* ~ 0.09 sigma`` at ``R = 1.001 sqrt(2) sigma``, ``D = 2``), with no
    jump of the global maximizer, and the bisection returns ``sqrt(D)`` to
    within ``rtol`` for ``D`` = 2, 3, 5, 10 and 50: relative deviations of
    ``-4e-4, 6e-5, 2e-4, -2e-4, -2e-4`` with the default ``rtol = 1e-3``,
    and below ``2e-7`` with ``rtol = 1e-7``. The exact statement ``r* = 0 iff R / sigma <= sqrt(D)``
    follows from the monotonicity of the Bessel ratio
    ``I_{D/2}(x) / (x I_{D/2-1}(x))`` (module docstring).

    Args:
        D: dimension of the ambient space (integer ``>= 2``).
        rtol: relative width of the final bracket (``> 0``).
        num_points: quadrature nodes of :func:`sphere_objective`.

    Returns:
        The threshold on ``R / sigma`` (midpoint of the final bracket).

    >>> import math
    >>> t = collapse_threshold(3, rtol=1e-2)
    >>> print(abs(t / math.sqrt(3) - 1) < 1e-2)
    True
    """
    D = _dimension(D)
    rtol = _real(rtol, "rtol", minimum=0.0, strict=True)
    lo = math.sqrt(D - 1)
    hi = 2.0 * math.sqrt(D) + 1.0
    if optimal_radius(lo, D, num_points=num_points) > 0.0:
        raise ModelError(  # pragma: no cover - would contradict Theorem 6.1
            f"numerical optimum r* > 0 at R/sigma = sqrt(D - 1) = {lo} for D = {D}: "
            "increase num_points"
        )
    while optimal_radius(hi, D, num_points=num_points) == 0.0:  # pragma: no cover
        lo, hi = hi, 2.0 * hi
    while (hi - lo) > rtol * hi:
        mid = 0.5 * (lo + hi)
        if optimal_radius(mid, D, num_points=num_points) > 0.0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------
# Mattei & Frellsen (2018): the unbounded Gaussian likelihood
# ---------------------------------------------------------------------------


def one_unit_decoder_log_likelihood(
    data: torch.Tensor,
    W: torch.Tensor,
    a: float | torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    alpha: float | torch.Tensor,
    beta: float | torch.Tensor,
    *,
    variance_floor: float = 0.0,
    num_points: int = 20001,
    reduce: bool = True,
) -> torch.Tensor:
    r"""Exact log-likelihood of a Gaussian DLVM with a one-hidden-unit MLP decoder.

    The model (Mattei & Frellsen, 2018, with ``h = 1`` hidden unit) is
    ``z ~ N(0, I_d)``, ``x | z ~ N(mu(z), Sigma(z) + xi I_p)`` with::

        mu(z)    = V tanh(W^T z + a) + b
        Sigma(z) = exp(alpha tanh(W^T z + a) + beta) I_p

    and ``xi = variance_floor`` (the talk's fix "adding ``xi I_p`` to
    ``Sigma_theta(z)``"). The log-likelihood of ``data = (x_1, ..., x_n)`` is::

        l(theta) = sum_j log int N(x_j | mu(z), Sigma(z) + xi I_p) N(z; 0, I_d) dz.

    Everything depends on ``z`` through ``W^T z = |W| s`` only, with
    ``s ~ N(0, 1)``, so each term is the 1-D integral
    ``log int N(x_j | mu(s), v(s) I_p) phi(s) ds`` with
    ``u(s) = |W| s + a``, ``mu(s) = V tanh(u(s)) + b`` and
    ``v(s) = exp(alpha tanh(u(s)) + beta) + xi``. It is computed on a uniform
    grid of ``num_points`` nodes over ``s in [-12, 12]`` with the trapezoid
    rule in log space (``logsumexp`` of log-density + ``log phi(s)`` + log
    weight; the weights of ``phi`` are normalized to sum to 1, the mass
    outside ``[-12, 12]`` being ``4e-33``). Gauss–Hermite quadrature is not
    used: it cannot resolve ``tanh(alpha |W| s)`` for large ``alpha |W|``.
    The grid step is ``24 / (num_points - 1)`` (``1.2e-3`` by default): keep
    ``alpha |W|`` well below ``1 / step``. When ``W = 0`` the integrand does
    not depend on ``z`` and the term is computed in closed form.

    Args:
        data: ``(n, p)`` observations.
        W: ``(d,)`` input weights of the hidden unit.
        a: bias of the hidden unit (scalar).
        V: ``(p,)`` output weights of the mean.
        b: ``(p,)`` output bias of the mean.
        alpha: weight of the hidden unit in the log-variance (scalar).
        beta: bias of the log-variance (scalar).
        variance_floor: ``xi >= 0`` added to every variance.
        num_points: nodes of the ``s`` grid (``>= 3``).
        reduce: sum over the data points (default) or return the ``(n,)``
            per-point log-likelihoods ``log p(x_j)``.

    Returns:
        A float64 scalar tensor ``l(theta)``, or an ``(n,)`` tensor when
        ``reduce=False``.

    Raises:
        ModelError: on data that is not a finite 2-D tensor, parameters of
            the wrong shape or non-finite, or ``variance_floor < 0``.

    >>> import torch
    >>> x = torch.zeros(1, 2, dtype=torch.float64)
    >>> W, V, b = torch.zeros(1), torch.zeros(2), torch.zeros(2)
    >>> ll = one_unit_decoder_log_likelihood(x, W, 0.0, V, b, 0.0, 0.0)
    >>> print(round(ll.item(), 6))  # log N(0 | 0, I_2) = -log(2 pi)
    -1.837877
    """
    data = _data(data)
    n, p = data.shape
    W = _vector(W, "W (input weights of the hidden unit, shape (d,))")
    V = _vector(V, "V (output weights of the mean, shape (p,))", p)
    b = _vector(b, "b (output bias of the mean, shape (p,))", p)
    a = _real(a, "a (bias of the hidden unit)")
    alpha = _real(alpha, "alpha (log-variance weight)")
    beta = _real(beta, "beta (log-variance bias)")
    xi = _real(variance_floor, "variance_floor", minimum=0.0)
    num_points = _integer(num_points, "num_points", minimum=3)
    log_xi = math.log(xi) if xi > 0 else -math.inf
    device = data.device  # computed where the data lives
    W, V, b = W.to(device), V.to(device), b.to(device)

    def log_normal(t: torch.Tensor) -> torch.Tensor:
        """``log N(x_j | V t + b, v(t) I_p)`` for hidden activations ``t``: shape (n, len(t))."""
        floor = torch.tensor(log_xi, dtype=_DTYPE, device=device)
        log_var = torch.logaddexp(alpha * t + beta, floor)
        out = torch.empty(n, t.shape[0], dtype=_DTYPE, device=device)
        # chunk the rows to keep the (rows, S, p) residuals near 32 MB
        rows = max(1, 4_000_000 // max(1, t.shape[0] * p))
        for start in range(0, n, rows):
            x = data[start : start + rows]
            resid = (x - b)[:, None, :] - t[None, :, None] * V
            sq = (resid**2).sum(-1)
            # sq / v with 0 / v = 0 even when v underflows (exp(log 0 - lv) = 0)
            quad = torch.exp(torch.log(sq) - log_var)
            out[start : start + rows] = -0.5 * (p * _LOG_2PI + p * log_var + quad)
        return out

    norm_w = float(torch.linalg.vector_norm(W))
    if norm_w == 0.0:
        per_point = log_normal(torch.tensor([math.tanh(a)], dtype=_DTYPE, device=device))[:, 0]
    else:
        s = torch.linspace(-12.0, 12.0, num_points, dtype=_DTYPE, device=device)
        log_w = -0.5 * s**2
        log_w[0] -= math.log(2.0)
        log_w[-1] -= math.log(2.0)
        log_w = log_w - torch.logsumexp(log_w, dim=0)  # trapezoid weights of phi, summing to 1
        t = torch.tanh(norm_w * s + a)
        per_point = torch.logsumexp(log_normal(t) + log_w, dim=-1)
    return per_point.sum() if reduce else per_point


def mattei_frellsen_parameters(
    data: torch.Tensor,
    i: int,
    w: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The parameters ``theta_k^{(i, w)} = (alpha_k w^T, 0, 0, x_i, alpha_k, -alpha_k)``.

    With them the one-hidden-unit decoder of
    :func:`one_unit_decoder_log_likelihood` has ``mu(z) = x_i`` and
    ``Sigma(z) = exp(alpha_k tanh(alpha_k w^T z) - alpha_k) I_p``. Mattei &
    Frellsen (2018) prove ``l(theta_k) -> inf`` as ``alpha_k -> inf`` for
    every ``i`` and ``w != 0``: on ``w^T z < 0`` (half of the prior mass)
    the variance tends to ``exp(-2 alpha_k)``, so
    ``log p(x_i) = log(1/2) - (p/2) log(2 pi) + p alpha_k + o(1)``, while the
    other points keep a bounded contribution (the half ``w^T z > 0``, where
    the variance tends to 1).

    Args:
        data: ``(n, p)`` observations.
        i: index of the data point the decoder centres on.
        w: ``(d,)`` direction in latent space.
        alpha: ``alpha_k >= 0``.

    Returns:
        ``(W, a, V, b, alpha, beta)`` as float64 tensors, ready for
        ``one_unit_decoder_log_likelihood(data, *theta)``.

    >>> import torch
    >>> x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    >>> W, a, V, b, alpha, beta = mattei_frellsen_parameters(x, 0, torch.ones(3), 5.0)
    >>> print(W.tolist(), b.tolist(), alpha.item(), beta.item())
    [5.0, 5.0, 5.0] [1.0, 2.0] 5.0 -5.0
    """
    data = _data(data)
    n, p = data.shape
    i = _integer(i, "i (index of a data point)", minimum=-n)
    if i >= n:
        raise ModelError(f"i must index one of the n = {n} data points, got {i}")
    w = _vector(w, "w (direction in latent space, shape (d,))")
    alpha = _real(alpha, "alpha (alpha_k)", minimum=0.0)
    return (
        alpha * w,
        torch.zeros((), dtype=_DTYPE),
        torch.zeros(p, dtype=_DTYPE),
        data[i].clone(),
        torch.tensor(alpha, dtype=_DTYPE),
        torch.tensor(-alpha, dtype=_DTYPE),
    )


def gaussian_likelihood_bound(n: int, p: int, variance_floor: float) -> float:
    r"""Upper bound ``-(n p / 2) log(2 pi xi)`` on a Gaussian log-likelihood with ``Sigma >= xi I``.

    If every covariance the decoder outputs satisfies ``Sigma(z) >= xi I_p``
    (e.g. ``xi I_p`` is added to it), every density is below its value at the
    mode: ``N(x | mu, Sigma) <= det(2 pi Sigma)^(-1/2) <= (2 pi xi)^(-p/2)``,
    hence ``p(x_j) = E_z[N(x_j | mu(z), Sigma(z))] <= (2 pi xi)^(-p/2)`` and,
    for ``n`` points, ``l(theta) <= -(n p / 2) log(2 pi xi)``. A single term
    reaches its bound when ``Sigma = xi I_p`` and ``mu = x_j``.

    *Discrepancy with the talk.* The slides (Mattei & Frellsen) state the
    bound as ``-n p log sqrt(pi xi) = -(n p / 2) log(pi xi)``, which exceeds
    the value here by ``(n p / 2) log 2``. It is still an upper bound, but not
    the sharp one: the Gaussian normalizer is ``(2 pi xi)^(-p/2)``, not
    ``(pi xi)^(-p/2)``. This function returns the sharp bound.

    Args:
        n: number of data points (``>= 1``).
        p: data dimension (``>= 1``).
        variance_floor: ``xi >= 0``; ``xi = 0`` gives ``inf`` (no bound: the
            likelihood is unbounded, Mattei & Frellsen's theorem).

    Returns:
        The bound as a Python float.

    >>> import math
    >>> bound = gaussian_likelihood_bound(10, 3, 1e-2)
    >>> print(math.isclose(bound, -15 * math.log(2 * math.pi * 1e-2)))
    True
    """
    n = _integer(n, "n (number of data points)", minimum=1)
    p = _integer(p, "p (data dimension)", minimum=1)
    xi = _real(variance_floor, "variance_floor", minimum=0.0)
    if xi == 0.0:
        return math.inf
    return -0.5 * n * p * math.log(2.0 * math.pi * xi)
