"""The SYNTHETIC controlled pendulum: shapes, reproducibility, physics (damping
drains the energy; the step is RK4 of the stated equation) and the camera
(the brightest pixel is where the bob is)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import pgmdl.datasets.controlled_pendulum as pendulum_module
from pgmdl.datasets.controlled_pendulum import (
    PendulumDynamics,
    PendulumSample,
    pendulum,
    render_ring,
    wrap_angle,
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.mark.parametrize("control", ["piecewise", "smooth", "none"])
def test_shapes_dtype_device_and_consistency(control, device):
    data = pendulum(
        4, 7, control=control, generator=torch.Generator().manual_seed(0), device=device
    )
    assert isinstance(data, PendulumSample)
    assert data.observations.shape == (4, 7, 16)
    assert data.controls.shape == (4, 7, 1)
    assert data.states.shape == (4, 7, 2)
    for t in (data.observations, data.controls, data.states):
        assert t.dtype == torch.float32 and t.device.type == torch.device(device).type
    assert (data.states[..., 0] >= -math.pi).all() and (data.states[..., 0] < math.pi).all()
    # every transition is the true step driven by the control of its start
    nxt = data.true_step(data.states[:, :-1].double(), data.controls[:, :-1].double())
    diff = wrap_angle(nxt[..., 0] - data.states[:, 1:, 0].double())
    assert diff.abs().max() < 1e-5
    assert torch.allclose(nxt[..., 1], data.states[:, 1:, 1].double(), atol=1e-5)
    if control == "none":
        assert (data.controls == 0).all()
    else:
        assert data.controls.abs().max() <= 2.0 + 1e-6 and data.controls.abs().max() > 0


def test_piecewise_controls_hold_for_blocks():
    data = pendulum(3, 12, hold=4, generator=torch.Generator().manual_seed(1))
    u = data.controls[..., 0]
    for start in range(0, 12, 4):
        assert (u[:, start : start + 4] == u[:, start : start + 1]).all()
    assert not (u[:, 0] == u[:, 4]).all()


def test_determinism_with_a_generator():
    a = pendulum(3, 6, generator=torch.Generator().manual_seed(2))
    b = pendulum(3, 6, generator=torch.Generator().manual_seed(2))
    c = pendulum(3, 6, generator=torch.Generator().manual_seed(3))
    for name in ("observations", "controls", "states"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
    state = torch.random.get_rng_state()
    pendulum(2, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched


def test_energy_decays_without_control():
    data = pendulum(
        16, 120, control="none", generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    energy = data.energy()
    assert (energy[:, 1:] <= energy[:, :-1] + 1e-9).all()  # dE/dt = -b omega^2 <= 0
    assert (energy[:, -1] < 0.2 * energy[:, 0]).all()  # 12 s at b = 0.25: e^{-3} ~ 0.05
    # and without damping RK4 keeps it (to the integrator's accuracy)
    free = pendulum(
        4,
        50,
        control="none",
        damping=0.0,
        substeps=4,
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
    )
    e = free.energy()
    assert torch.allclose(e, e[:, :1].expand_as(e), rtol=1e-4, atol=1e-6)


def test_step_is_rk4_of_the_equation():
    dyn = PendulumDynamics(gravity_over_length=4.0, damping=0.5, dt=0.01, substeps=10)
    state = torch.tensor([[0.3, -1.0], [2.5, 0.7]], dtype=torch.float64)
    control = torch.tensor([[0.2], [-1.0]], dtype=torch.float64)
    # a fine explicit Euler integration of theta'' = -(g/l) sin theta - b theta' + u
    s = state.clone()
    for _ in range(10000):
        theta, omega = s[:, 0], s[:, 1]
        accel = -4.0 * torch.sin(theta) - 0.5 * omega + control[:, 0]
        s = torch.stack([theta + 1e-6 * omega, omega + 1e-6 * accel], dim=-1)
    assert torch.allclose(dyn.step(state, control), s, atol=1e-5)
    # an upright pendulum at rest stays there; a hanging one too
    rest = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(dyn.step(rest, torch.zeros(1, 1)), rest)
    # a control accelerates it
    assert dyn.step(rest, torch.ones(1, 1))[0, 1] > 0


def test_rollout_is_repeated_true_step():
    data = pendulum(2, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ahead = data.rollout(data.states[:, 0], data.controls[:, :7])
    assert ahead.shape == (2, 7, 2)
    assert torch.allclose(ahead, data.states[:, 1:], atol=1e-12)


def test_observation_peak_tracks_the_angle():
    data = pendulum(8, 30, noise=0.0, generator=torch.Generator().manual_seed(6))
    spacing = 2 * math.pi / 16
    peak = data.observations.argmax(-1).double() * spacing
    gap = wrap_angle(peak - data.states[..., 0].double()).abs()
    assert gap.max() <= spacing / 2 + 1e-5
    assert torch.allclose(data.observations, data.render(data.states), atol=1e-6)
    # with the default noise the peak is still within a pixel of the angle
    noisy = pendulum(8, 30, generator=torch.Generator().manual_seed(6))
    peak = noisy.observations.argmax(-1).double() * spacing
    gap = wrap_angle(peak - noisy.states[..., 0].double()).abs()
    assert gap.max() <= 1.5 * spacing
    residual = noisy.observations - noisy.render(noisy.states)
    assert 0.04 < residual.std() < 0.06


def test_one_frame_does_not_show_the_velocity():
    """The image is a function of the angle alone: states differing only in
    velocity give the same noiseless frame."""
    data = pendulum(1, 1, noise=0.0, generator=torch.Generator().manual_seed(7))
    other = data.states.clone()
    other[..., 1] += 3.0
    assert torch.equal(data.render(other), data.render(data.states))


def test_render_ring():
    image = render_ring(torch.tensor([0.0, math.pi / 2]), pixels=4, width=0.5)
    assert image.shape == (2, 4)
    assert image[0].argmax() == 0 and image[1].argmax() == 1
    assert torch.allclose(image.max(-1).values, torch.ones(2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_sequences=0), "num_sequences"),
        (dict(noise=-1.0), "noise"),
        (dict(control="random"), "control must be"),
        (dict(dt=0.0), "dt must be positive"),
        (dict(pixels=1), "pixels"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(num_sequences=2, length=3) | kwargs
    with pytest.raises(ValueError, match=match):
        pendulum(args.pop("num_sequences"), args.pop("length"), **args)


def test_docstring_example():
    result = doctest.testmod(pendulum_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
