"""Theorem 6.1 (collapse on a hypersphere) and the unbounded Gaussian likelihood
of Mattei & Frellsen (2018), checked against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from pgmdl.errors import ModelError
from pgmdl.observe.theory import (
    collapse_threshold,
    gaussian_likelihood_bound,
    mattei_frellsen_parameters,
    one_unit_decoder_log_likelihood,
    optimal_radius,
    sphere_objective,
)
from tests.conftest import test_device

F64 = torch.float64
LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------
# sphere_objective (eq. 6.5)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("D", [2, 3, 4, 7])
def test_sphere_objective_matches_plain_trapezoid(D):
    R, sigma = 1.3, 0.8
    r = torch.tensor([0.0, 0.2, 0.9, 2.5], dtype=F64)
    theta = torch.linspace(0.0, math.pi, 200001, dtype=F64)
    integrand = torch.exp(R * r[:, None] * torch.cos(theta) / sigma**2) * torch.sin(theta) ** (
        D - 2
    )
    plain = torch.exp(-(r**2) / (2 * sigma**2)) * torch.trapezoid(integrand, theta, dim=-1)
    value = sphere_objective(r, R, sigma, D)
    assert value.dtype == F64 and value.shape == r.shape
    torch.testing.assert_close(value, torch.log(plain), rtol=0, atol=1e-9)


def test_sphere_objective_closed_form_d3():
    # int_0^pi exp(c cos t) sin t dt = 2 sinh(c) / c, in log space for large c
    R, sigma = 4.0, 0.5
    r = torch.tensor([0.01, 0.3, 1.0, 5.0, 40.0], dtype=F64)
    c = R * r / sigma**2
    log_integral = c + torch.log1p(-torch.exp(-2 * c)) - torch.log(c)  # log(2 sinh(c)/c)
    expected = -(r**2) / (2 * sigma**2) + log_integral
    torch.testing.assert_close(sphere_objective(r, R, sigma, 3), expected, rtol=1e-12, atol=1e-8)


@pytest.mark.parametrize("D", [2, 3, 6])
def test_sphere_objective_at_zero(D):
    # l(0) = int sin^(D-2) = sqrt(pi) Gamma((D-1)/2) / Gamma(D/2)
    expected = 0.5 * math.log(math.pi) + math.lgamma((D - 1) / 2) - math.lgamma(D / 2)
    value = sphere_objective(0.0, 2.0, 1.0, D)
    assert value.shape == ()
    assert math.isclose(value.item(), expected, abs_tol=1e-12)


def test_sphere_objective_no_overflow():
    value = sphere_objective(torch.tensor([300.0]), 300.0, 1.0, 10)  # c = 90000
    assert torch.isfinite(value).all()


# ---------------------------------------------------------------------------
# optimal_radius and collapse_threshold (Theorem 6.1)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("D", [2, 3, 5, 10])
def test_optimal_radius_is_zero_below_theorem_bound(D):
    for factor in (0.0, 0.5, 0.99, 1.0):
        assert optimal_radius(factor * math.sqrt(D - 1), D) == 0.0


@pytest.mark.parametrize("D", [2, 3, 5, 10])
def test_optimal_radius_positive_above_sqrt_d(D):
    r_star = optimal_radius(1.1 * math.sqrt(D), D)
    assert r_star > 0.1
    # and r = 0 is no better than the returned radius
    values = sphere_objective(torch.tensor([0.0, r_star], dtype=F64), 1.1 * math.sqrt(D), 1.0, D)
    assert values[1] > values[0]


@pytest.mark.parametrize("D", [2, 3, 5, 10])
def test_optimal_radius_tends_to_data_radius(D):
    R = 30.0
    r_star = optimal_radius(R, D)
    assert abs(r_star - R) < 0.05 * R
    # asymptotics r* = R - (D - 1) / (2 R) + O(R^-3), from I_{nu+1}/I_nu ~ 1 - (2 nu + 1)/(2x)
    assert abs(r_star - (R - (D - 1) / (2 * R))) < 5e-3


@pytest.mark.parametrize("D", [2, 10])
def test_optimal_radius_square_root_onset(D):
    # fourth-order expansion: r*^2 ~ (D + 2)(R^2/D - 1) just above the threshold
    R = 1.001 * math.sqrt(D)
    r_star = optimal_radius(R, D)
    expected = math.sqrt((D + 2) * (R**2 / D - 1))
    assert r_star == pytest.approx(expected, rel=0.02)


def test_optimal_radius_is_global_maximum():
    R, D = 5.0, 4
    r_star = optimal_radius(R, D)
    grid = torch.linspace(0.0, 12.0, 2001, dtype=F64)
    best = sphere_objective(torch.tensor(r_star, dtype=F64), R, 1.0, D)
    assert (sphere_objective(grid, R, 1.0, D) <= best + 1e-12).all()


@pytest.mark.parametrize("D", [2, 3, 5, 10])
def test_collapse_threshold_is_sqrt_d(D):
    threshold = collapse_threshold(D)
    assert threshold > math.sqrt(D - 1)  # consistent with the theorem
    assert threshold == pytest.approx(math.sqrt(D), rel=0.02)
    # the bisection is much sharper than the 2% asked: the threshold is exactly sqrt(D)
    assert threshold == pytest.approx(math.sqrt(D), rel=2e-3)


# ---------------------------------------------------------------------------
# Mattei & Frellsen: unbounded likelihood
# ---------------------------------------------------------------------------

N, P, LATENT = 20, 5, 2
INDEX = 3
ALPHAS = (5.0, 10.0, 20.0, 40.0)


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1234)
    return torch.randn(N, P, generator=generator, dtype=F64).to(test_device())


@pytest.fixture(scope="module")
def direction():
    return torch.tensor([0.6, -0.8], dtype=F64)


@pytest.fixture(scope="module")
def per_point(data, direction):
    """Per-point log-likelihoods along the Mattei-Frellsen sequence, without floor."""
    return {
        alpha: one_unit_decoder_log_likelihood(
            data, *mattei_frellsen_parameters(data, INDEX, direction, alpha), reduce=False
        )
        for alpha in ALPHAS
    }


def test_mattei_frellsen_parameters_shape(data, direction):
    W, a, V, b, alpha, beta = mattei_frellsen_parameters(data, INDEX, direction, 7.0)
    torch.testing.assert_close(W, 7.0 * direction)
    assert a.item() == 0.0 and alpha.item() == 7.0 and beta.item() == -7.0
    torch.testing.assert_close(V, torch.zeros(P, dtype=F64))
    torch.testing.assert_close(b, data[INDEX])
    assert all(t.dtype == F64 for t in (W, a, V, b, alpha, beta))


def test_likelihood_increases_without_bound(per_point):
    totals = [per_point[alpha].sum().item() for alpha in ALPHAS]
    assert all(later > earlier for earlier, later in zip(totals[:-1], totals[1:], strict=True))
    slope = (totals[-1] - totals[-2]) / (ALPHAS[-1] - ALPHAS[-2])
    assert slope == pytest.approx(P, rel=0.02)


def test_centred_point_explodes_like_p_alpha(per_point):
    # half of the prior mass has variance exp(-2 alpha):
    # log p(x_i) ~ log 1/2 - (p/2) log 2pi + p alpha
    for alpha in (20.0, 40.0):
        expected = math.log(0.5) - 0.5 * P * LOG_2PI + P * alpha
        assert per_point[alpha][INDEX].item() == pytest.approx(expected, abs=0.2)


def test_other_points_stay_bounded(data, per_point):
    others = {alpha: per_point[alpha].sum() - per_point[alpha][INDEX] for alpha in ALPHAS}
    # limit: on w^T z > 0 the variance tends to 1, on w^T z < 0 the density vanishes
    dist2 = ((data - data[INDEX]) ** 2).sum(-1)
    dist2 = torch.cat([dist2[:INDEX], dist2[INDEX + 1 :]])
    limit = (math.log(0.5) - 0.5 * P * LOG_2PI - 0.5 * dist2).sum().item()
    for alpha in ALPHAS:
        assert limit - 10.0 < others[alpha].item() <= limit + 1e-9
    change_i = (per_point[40.0][INDEX] - per_point[20.0][INDEX]).item()
    change_others = abs((others[40.0] - others[20.0]).item())
    assert change_i > 90.0
    assert change_others < 0.02 * change_i


def test_reduction_to_one_dimension_matches_2d_quadrature(data):
    # a generic smooth decoder: compare the 1-D reduction with a 2-D grid over z
    W = torch.tensor([0.9, -1.2], dtype=F64)
    V = torch.linspace(-1.0, 1.5, P, dtype=F64)
    b = torch.linspace(0.3, -0.2, P, dtype=F64)
    a, alpha, beta = 0.4, 1.5, -0.5
    x = data[:4]
    got = one_unit_decoder_log_likelihood(x, W, a, V, b, alpha, beta, reduce=False)

    axis = torch.linspace(-9.0, 9.0, 361, dtype=F64)
    z1, z2 = torch.meshgrid(axis, axis, indexing="ij")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1)
    hidden = torch.tanh(z @ W + a)
    mean = hidden[:, None] * V + b
    log_var = alpha * hidden + beta
    log_prior = -0.5 * (z**2).sum(-1) - LOG_2PI
    step = (axis[1] - axis[0]).item()
    for j in range(x.shape[0]):
        sq = ((x[j] - mean) ** 2).sum(-1)
        log_lik = -0.5 * (P * LOG_2PI + P * log_var + sq * torch.exp(-log_var))
        reference = torch.logsumexp(log_lik + log_prior, dim=0) + 2 * math.log(step)
        assert got[j].item() == pytest.approx(reference.item(), abs=1e-8)


def test_variance_floor_bounds_the_sequence(data, direction):
    xi = 1e-2
    bound = gaussian_likelihood_bound(N, P, xi)
    point_bound = gaussian_likelihood_bound(1, P, xi)
    for alpha in ALPHAS:
        theta = mattei_frellsen_parameters(data, INDEX, direction, alpha)
        values = one_unit_decoder_log_likelihood(data, *theta, variance_floor=xi, reduce=False)
        assert values.sum().item() < bound
        assert (values <= point_bound + 1e-9).all()
    # the centred point saturates: its variance tends to xi on half the mass
    assert values[INDEX].item() == pytest.approx(point_bound + math.log(0.5), abs=0.05)


def test_variance_floor_bounds_random_decoders(data):
    xi = 1e-2
    bound = gaussian_likelihood_bound(N, P, xi)
    point_bound = gaussian_likelihood_bound(1, P, xi)
    generator = torch.Generator().manual_seed(99)
    for _ in range(50):
        W = 30.0 * torch.randn(LATENT, generator=generator, dtype=F64)
        a = 5.0 * torch.randn((), generator=generator, dtype=F64)
        V = 10.0 * torch.randn(P, generator=generator, dtype=F64)
        b = 3.0 * torch.randn(P, generator=generator, dtype=F64)
        alpha = 50.0 * torch.randn((), generator=generator, dtype=F64)
        beta = -50.0 * torch.rand((), generator=generator, dtype=F64)
        values = one_unit_decoder_log_likelihood(
            data, W, a, V, b, alpha, beta, variance_floor=xi, num_points=4001, reduce=False
        )
        assert torch.isfinite(values).all()
        assert values.sum().item() < bound
        assert (values <= point_bound + 1e-9).all()


def test_floor_bound_is_attained_by_one_point(data):
    # w = 0: the integrand is constant in z; Sigma = exp(-700) + xi ~ xi, mu = x_j
    xi, j = 0.05, 7
    W, V = torch.zeros(LATENT, dtype=F64), torch.zeros(P, dtype=F64)
    values = one_unit_decoder_log_likelihood(
        data, W, 0.0, V, data[j], 0.0, -700.0, variance_floor=xi, reduce=False
    )
    assert values[j].item() == pytest.approx(-0.5 * P * math.log(2 * math.pi * xi), rel=1e-14)
    assert values[j].item() == pytest.approx(gaussian_likelihood_bound(1, P, xi), rel=1e-14)
    single = one_unit_decoder_log_likelihood(
        data[j : j + 1], W, 0.0, V, data[j], 0.0, -700.0, variance_floor=xi
    )
    assert single.item() == pytest.approx(gaussian_likelihood_bound(1, P, xi), rel=1e-14)


def test_zero_direction_is_closed_form(data):
    # W = 0 gives a plain Gaussian N(V tanh(a) + b, exp(alpha tanh(a) + beta) I)
    W = torch.zeros(LATENT, dtype=F64)
    V = torch.ones(P, dtype=F64)
    b = torch.zeros(P, dtype=F64)
    a, alpha, beta, xi = 0.3, 2.0, -1.0, 0.1
    mean = math.tanh(a) * V + b
    var = math.exp(alpha * math.tanh(a) + beta) + xi
    expected = (-0.5 * (P * math.log(2 * math.pi * var) + ((data - mean) ** 2).sum(-1) / var)).sum()
    got = one_unit_decoder_log_likelihood(data, W, a, V, b, alpha, beta, variance_floor=xi)
    assert got.item() == pytest.approx(expected.item(), rel=1e-13)


def test_bound_discrepancy_with_the_talk():
    # the talk's -np log sqrt(pi xi) is larger than the sharp -(np/2) log(2 pi xi) by (np/2) log 2
    n, p, xi = 7, 3, 0.2
    talk = -n * p * math.log(math.sqrt(math.pi * xi))
    sharp = gaussian_likelihood_bound(n, p, xi)
    assert sharp == pytest.approx(-(n * p / 2) * math.log(2 * math.pi * xi))
    assert talk - sharp == pytest.approx(0.5 * n * p * math.log(2.0))
    assert gaussian_likelihood_bound(n, p, 0.0) == math.inf


# ---------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: sphere_objective(1.0, 1.0, 0.0, 3),
        lambda: sphere_objective(1.0, 1.0, -1.0, 3),
        lambda: sphere_objective(1.0, -1.0, 1.0, 3),
        lambda: sphere_objective(1.0, 1.0, 1.0, 1),
        lambda: sphere_objective(1.0, 1.0, 1.0, 2.5),
        lambda: sphere_objective(-1.0, 1.0, 1.0, 3),
        lambda: sphere_objective(float("nan"), 1.0, 1.0, 3),
        lambda: optimal_radius(-1.0, 3),
        lambda: optimal_radius(2.0, 0),
        lambda: collapse_threshold(1),
        lambda: collapse_threshold(3, rtol=0.0),
        lambda: gaussian_likelihood_bound(10, 3, -1e-3),
        lambda: gaussian_likelihood_bound(0, 3, 1e-3),
        lambda: gaussian_likelihood_bound(10, True, 1e-3),
    ],
)
def test_bad_scalar_inputs_raise(call):
    with pytest.raises(ModelError):
        call()


def _decoder(p=P, d=LATENT):
    return (
        torch.ones(d, dtype=F64),
        0.0,
        torch.zeros(p, dtype=F64),
        torch.zeros(p, dtype=F64),
        1.0,
        0.0,
    )


@pytest.mark.parametrize(
    ("data", "theta", "kwargs", "match"),
    [
        (torch.zeros(P, dtype=F64), _decoder(), {}, "2-D"),
        (torch.zeros(3, P, 1, dtype=F64), _decoder(), {}, "2-D"),
        (torch.zeros(3, P, dtype=F64), _decoder(), {"variance_floor": -1e-3}, "variance_floor"),
        (torch.zeros(3, P, dtype=F64), _decoder(p=P + 1), {}, "length"),
        (torch.zeros(3, P, dtype=F64), (torch.ones(2, 2),) + _decoder()[1:], {}, "W"),
        (torch.zeros(3, P, dtype=F64), _decoder()[:4] + (float("inf"), 0.0), {}, "alpha"),
        (torch.full((3, P), float("nan"), dtype=F64), _decoder(), {}, "finite"),
    ],
)
def test_bad_decoder_inputs_raise(data, theta, kwargs, match):
    with pytest.raises(ModelError, match=match):
        one_unit_decoder_log_likelihood(data, *theta, **kwargs)


def test_bad_mattei_frellsen_inputs_raise(data, direction):
    with pytest.raises(ModelError, match="index"):
        mattei_frellsen_parameters(data, N, direction, 1.0)
    with pytest.raises(ModelError, match="alpha"):
        mattei_frellsen_parameters(data, 0, direction, -1.0)
    with pytest.raises(ModelError, match="1-D"):
        mattei_frellsen_parameters(data, 0, direction[None], 1.0)
