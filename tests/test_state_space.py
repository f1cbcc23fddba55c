"""The SYNTHETIC linear-Gaussian state-space model: its Kalman filter and RTS
smoother against brute-force Gaussian algebra on the stacked sequence, and its
Pyro program against the closed-form log joint."""

from __future__ import annotations

import doctest

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import MultivariateNormal

import pgmdl.datasets.state_space as state_space
from pgmdl.datasets.state_space import LinearGaussianSSM, SequenceSample, sequence_mask


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def brute_force_moments(ssm: LinearGaussianSSM, steps: int):
    """Mean and covariance of the stacked (z_0..z_{T-1}, x_0..x_{T-1}), float64.

    z = G e with e = (z_0 - mu0, w_1, .., w_{T-1}) ~ N(0, diag(S0, Q, .., Q)) and
    G[t, k] = A^{t-k} for k <= t, plus the mean A^t mu0; x = (I (x) C) z + v.
    """
    a, c = ssm.transition, ssm.emission
    dz = ssm.z_dim
    powers = [torch.eye(dz, dtype=torch.float64)]
    for _ in range(steps):
        powers.append(a @ powers[-1])
    g = torch.zeros(steps * dz, steps * dz, dtype=torch.float64)
    for t in range(steps):
        for k in range(t + 1):
            g[t * dz : (t + 1) * dz, k * dz : (k + 1) * dz] = powers[t - k]
    noise_var = torch.cat([ssm.initial_scale**2] + [ssm.transition_scale**2] * (steps - 1))
    cov_z = g @ torch.diag(noise_var) @ g.T
    mean_z = torch.cat([powers[t] @ ssm.initial_loc for t in range(steps)])
    big_c = torch.block_diag(*[c] * steps)
    cov_x = big_c @ cov_z @ big_c.T + torch.diag(torch.cat([ssm.emission_scale**2] * steps))
    cov_zx = cov_z @ big_c.T
    return mean_z, cov_z, big_c @ mean_z, cov_x, cov_zx


def _ssm(**kwargs) -> LinearGaussianSSM:
    return LinearGaussianSSM(**kwargs)


SSMS = {
    "default": dict(),
    "wide": dict(
        z_dim=3,
        x_dim=2,
        transition_scale=torch.tensor([0.2, 0.5, 0.4]),
        emission_scale=torch.tensor([0.3, 0.8]),
        initial_loc=torch.tensor([1.0, -0.5, 0.2]),
        initial_scale=torch.tensor([1.5, 0.7, 1.0]),
        seed=3,
    ),
    "tall": dict(z_dim=1, x_dim=3, damping=0.8),
}


@pytest.mark.parametrize("name", sorted(SSMS))
def test_kalman_log_evidence_equals_the_joint_gaussian_with_variable_lengths(name, device):
    ssm = _ssm(**SSMS[name])
    steps = 5
    data = ssm.sample(
        6, steps, torch.Generator().manual_seed(1), lengths=[5, 1, 3, 4, 5, 2], device=device
    )
    got = ssm.log_evidence(data.x, data.lengths)
    assert got.shape == (6,) and got.dtype == data.x.dtype and got.device == data.x.device
    got64 = ssm.log_evidence(data.x.double(), data.lengths)
    for i, n in enumerate(data.lengths.tolist()):
        _, _, mean_x, cov_x, _ = brute_force_moments(ssm, n)
        want = MultivariateNormal(mean_x, cov_x).log_prob(data.x[i, :n].double().cpu().reshape(-1))
        assert torch.allclose(got64[i].cpu(), want, atol=1e-5, rtol=0), (i, got64[i], want)
    assert torch.allclose(got.double(), got64, atol=1e-4)


def test_padded_steps_are_never_read(device):
    ssm = LinearGaussianSSM()
    data = ssm.sample(4, 6, torch.Generator().manual_seed(2), lengths=[6, 2, 4, 1])
    x = data.x.double().to(device)
    poisoned = torch.where(data.mask.to(device)[..., None], x, torch.nan)
    want = ssm.log_evidence(x, data.lengths)
    assert torch.equal(ssm.log_evidence(poisoned, data.lengths), want)
    smoothed, smoothed_poisoned = ssm.smooth(x, data.lengths), ssm.smooth(poisoned, data.lengths)
    assert torch.equal(smoothed.mean, smoothed_poisoned.mean)
    # and the evidence of a truncated sequence is that of the shorter sequence alone
    short = ssm.log_evidence(x[1:2, :2])
    assert torch.allclose(want[1], short[0], atol=1e-12)


def test_smoother_marginals_equal_the_brute_force_posterior(device):
    ssm = LinearGaussianSSM(**SSMS["wide"])
    steps = 5
    data = ssm.sample(3, steps, torch.Generator().manual_seed(4), lengths=[5, 3, 4], device=device)
    x = data.x.double()
    smoothed = ssm.smooth(x, data.lengths)
    filtered = ssm.filter(x, data.lengths)
    dz = ssm.z_dim
    for i, n in enumerate(data.lengths.tolist()):
        mean_z, cov_z, mean_x, cov_x, cov_zx = brute_force_moments(ssm, steps)
        obs = slice(0, n * ssm.x_dim)
        # condition on x_{0:n-1} only (padded steps unobserved): Bishop eqs. 2.81-2.82
        solve = torch.linalg.solve(cov_x[obs, obs], cov_zx[:, obs].T).T
        resid = x[i, :n].cpu().reshape(-1) - mean_x[obs]
        post_mean = mean_z + solve @ resid
        post_cov = cov_z - solve @ cov_zx[:, obs].T
        for t in range(steps):
            block = slice(t * dz, (t + 1) * dz)
            assert torch.allclose(smoothed.mean[i, t].cpu(), post_mean[block], atol=1e-6)
            assert torch.allclose(
                smoothed.covariance[i, t].cpu(), post_cov[block, block], atol=1e-6
            )
        # the last observed step's filtered marginal is the smoothed one
        assert torch.allclose(filtered.mean[i, n - 1], smoothed.mean[i, n - 1], atol=1e-9)
        # a filtered marginal conditions on x_{0:t} only
        t = 1 if n > 1 else 0
        obs = slice(0, (t + 1) * ssm.x_dim)
        solve = torch.linalg.solve(cov_x[obs, obs], cov_zx[:, obs].T).T
        resid = x[i, : t + 1].cpu().reshape(-1) - mean_x[obs]
        block = slice(t * dz, (t + 1) * dz)
        want = (mean_z + solve @ resid)[block]
        assert torch.allclose(filtered.mean[i, t].cpu(), want, atol=1e-6)


def _trace(ssm, x, z, mask=None):
    conditioned = poutine.condition(ssm.model, data={f"z_{t}": z[:, t] for t in range(x.shape[1])})
    return poutine.trace(conditioned).get_trace(x, mask)


def test_pyro_log_joint_equals_the_analytic_log_joint(device):
    ssm = LinearGaussianSSM(**SSMS["wide"])
    data = ssm.sample(5, 4, torch.Generator().manual_seed(5), device=device, dtype=torch.float64)
    z = data.z + 0.3 * torch.randn(data.z.shape, generator=torch.Generator().manual_seed(6)).to(
        data.z
    )
    trace = _trace(ssm, data.x, z)
    assert torch.allclose(trace.log_prob_sum(), ssm.log_joint(data.x, z).sum(), atol=1e-9, rtol=0)
    # per sequence: the sites' batch log-densities sum to the closed form
    trace.compute_log_prob()
    per_sequence = sum(
        trace.nodes[name]["log_prob"] for name in trace.stochastic_nodes + trace.observation_nodes
    )
    assert torch.allclose(per_sequence, ssm.log_joint(data.x, z), atol=1e-9)


def test_pyro_model_sites_plate_and_mask(device):
    ssm = LinearGaussianSSM()
    data = ssm.sample(4, 5, torch.Generator().manual_seed(7), lengths=[5, 2, 3, 1], device=device)
    trace = poutine.trace(ssm.model).get_trace(data.x, data.mask)
    assert [n for n in trace.nodes if n.startswith(("z_", "x_"))] == [
        name for t in range(5) for name in (f"z_{t}", f"x_{t}")
    ]
    for t in range(5):
        assert trace.nodes[f"x_{t}"]["is_observed"]
        assert trace.nodes[f"x_{t}"]["value"] is not None
        assert torch.equal(trace.nodes[f"x_{t}"]["value"], data.x[:, t])
        assert not trace.nodes[f"z_{t}"]["is_observed"]
        assert trace.nodes[f"z_{t}"]["value"].shape == (4, 2)
        assert [f.name for f in trace.nodes[f"z_{t}"]["cond_indep_stack"]] == ["sequences"]
        assert torch.equal(trace.nodes[f"z_{t}"]["mask"], data.mask[:, t])
    # the masked log joint is the closed form over each sequence's own steps
    z = torch.stack([trace.nodes[f"z_{t}"]["value"] for t in range(5)], dim=1)
    masked = _trace(ssm, data.x, z, data.mask)
    want = ssm.log_joint(data.x.double(), z.double(), data.lengths).sum()
    assert torch.allclose(masked.log_prob_sum().double(), want, atol=1e-4)


def test_mask_makes_padded_steps_contribute_nothing(device):
    ssm = LinearGaussianSSM()
    data = ssm.sample(4, 5, torch.Generator().manual_seed(8), lengths=[5, 2, 3, 1], device=device)
    g = torch.Generator().manual_seed(9)
    z = torch.randn(4, 5, 2, generator=g).to(data.x)
    base = _trace(ssm, data.x, z, data.mask).log_prob_sum()
    padded = ~data.mask
    x2 = torch.where(
        padded[..., None], 100.0 * torch.randn(data.x.shape, generator=g).to(data.x), data.x
    )
    z2 = torch.where(padded[..., None], 100.0 + z, z)
    assert torch.equal(_trace(ssm, x2, z2, data.mask).log_prob_sum(), base)
    # without the mask they do count
    assert not torch.allclose(_trace(ssm, x2, z2).log_prob_sum(), base)


def test_model_generates_without_data():
    ssm = LinearGaussianSSM(z_dim=3, x_dim=4)
    trace = poutine.trace(ssm.model).get_trace(num_sequences=2, length=3)
    assert trace.nodes["x_2"]["value"].shape == (2, 4)
    assert not trace.nodes["x_2"]["is_observed"]
    assert trace.nodes["_RETURN"]["value"].shape == (2, 3, 3)


def test_sample_shapes_lengths_and_reproducibility(device):
    ssm = LinearGaussianSSM(z_dim=3, x_dim=4)
    a = ssm.sample(7, 6, torch.Generator().manual_seed(10), min_length=2, device=device)
    b = ssm.sample(7, 6, torch.Generator().manual_seed(10), min_length=2, device=device)
    c = ssm.sample(7, 6, torch.Generator().manual_seed(11), min_length=2, device=device)
    assert isinstance(a, SequenceSample)
    assert a.x.shape == (7, 6, 4) and a.z.shape == (7, 6, 3) and a.lengths.shape == (7,)
    assert a.x.dtype == torch.float32 and a.lengths.dtype == torch.long
    assert a.x.device.type == torch.device(device).type
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.x, c.x)
    assert ((a.lengths >= 2) & (a.lengths <= 6)).all()
    assert a.mask.shape == (7, 6) and torch.equal(a.mask.sum(1), a.lengths)
    assert torch.equal(a.mask, ssm.mask(a.lengths, 6))
    assert (a.x[~a.mask] == 0).all() and (a.z[~a.mask] == 0).all()
    full = ssm.sample(3, 4, torch.Generator().manual_seed(0))
    assert full.lengths.tolist() == [4, 4, 4] and full.mask.all()
    # the same noise, shorter lengths: the observed prefix is unchanged
    cut = ssm.sample(3, 4, torch.Generator().manual_seed(0), lengths=[4, 2, 1])
    assert torch.equal(cut.x[cut.mask], full.x[cut.mask])


def test_sample_statistics_match_the_model():
    """Many draws: the empirical covariance of (x_0, x_1) is the exact one."""
    ssm = LinearGaussianSSM()
    data = ssm.sample(20000, 2, torch.Generator().manual_seed(12), dtype=torch.float64)
    _, _, mean_x, cov_x, _ = brute_force_moments(ssm, 2)
    flat = data.x.reshape(20000, -1)
    assert torch.allclose(flat.mean(0), mean_x, atol=0.05)
    assert torch.allclose(torch.cov(flat.T), cov_x, atol=0.08)


def test_default_transition_is_a_stable_damped_rotation():
    ssm = LinearGaussianSSM(z_dim=3)
    eig = torch.linalg.eigvals(ssm.transition)
    assert torch.allclose(eig.abs(), torch.full((3,), 0.95, dtype=torch.float64))
    assert (eig.imag.abs() > 0.1).sum() == 2  # one rotating pair


def test_sequence_mask():
    assert sequence_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(z_dim=0), "z_dim"),
        (dict(transition=torch.eye(3)), "transition must have shape"),
        (dict(emission_scale=-1.0), "emission_scale must be positive"),
        (dict(initial_loc=torch.tensor([float("nan"), 0.0])), "finite"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearGaussianSSM(**kwargs)


def test_bad_lengths_and_shapes():
    ssm = LinearGaussianSSM()
    x = torch.zeros(2, 3, 2)
    with pytest.raises(ValueError, match="lengths must be in"):
        ssm.log_evidence(x, [4, 1])
    with pytest.raises(ValueError, match="lengths must have shape"):
        ssm.log_evidence(x, [3])
    with pytest.raises(ValueError, match="x must have shape"):
        ssm.log_evidence(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="min_length"):
        ssm.sample(2, 3, min_length=4)
    with pytest.raises(ValueError, match="lengths must be in"):
        ssm.sample(2, 3, lengths=[0, 3])


def test_to_sets_the_default_device(device):
    ssm = LinearGaussianSSM().to(device)
    assert ssm.sample(2, 3).x.device.type == torch.device(device).type
    trace = poutine.trace(ssm.model).get_trace(num_sequences=2, length=2)
    assert trace.nodes["z_1"]["value"].device.type == torch.device(device).type


def test_docstring_example():
    result = doctest.testmod(state_space, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_compiles_to_a_markov_chain():
    import pgmdl

    ssm = LinearGaussianSSM()
    data = ssm.sample(3, 4, torch.Generator().manual_seed(0), lengths=[4, 2, 3])
    pyro.clear_param_store()
    graph = pgmdl.compile(ssm.model, data.x, data.mask)
    print(graph.summary())
    assert set(graph.latent_sites) == {f"z_{t}" for t in range(4)}
    assert set(graph.observed_sites) == {f"x_{t}" for t in range(4)}
    assert set(graph.parents("z_0")) == set()
    for t in range(1, 4):
        assert set(graph.parents(f"z_{t}")) == {f"z_{t - 1}"}
    for t in range(4):
        assert set(graph.parents(f"x_{t}")) == {f"z_{t}"}
