r"""A SYNTHETIC damped pendulum with controls, seen through a ring of noisy pixels.

The data made here is SYNTHETIC: simulated, not measured. It is the test bed
of the thesis's §8.3 (combining probabilistic and deterministic latent
variables) and of the Deep Variational Bayes Filter (M. Karl, M. Soelch,
J. Bayer and P. van der Smagt, "Deep Variational Bayes Filters: Unsupervised
Learning of State Space Models from Raw Data", ICLR 2017, §5.1, the pendulum
experiment): learn the dynamics of a controlled system from its observations
and controls alone, then predict several steps ahead.

Dynamics. The state is ``s = (theta, omega)``, angle (0 hanging straight
down, wrapped to ``[-pi, pi)``) and angular velocity, and

    theta'' = -(g / l) sin(theta) - b theta' + u,

integrated over each step of ``dt`` seconds by ``substeps`` classical
Runge-Kutta (RK4) steps with the control held constant: ``s_{t+1} =
step(s_t, u_t)``. Without control the energy per unit ``m l^2``,
``E = omega^2 / 2 + (g / l) (1 - cos theta)``, decays: ``dE/dt = -b omega^2``.

Controls. ``u_t`` is the angular acceleration applied from ``t`` to
``t + 1`` (the last one drives the step after the sequence):

* ``"piecewise"`` (default): constant over blocks of ``hold`` steps, each
  block's value uniform in ``[-control_scale, control_scale]``;
* ``"smooth"``: ``control_scale`` times the mean of two sinusoids of random
  frequency (uniform in ``[0.05, 0.5]`` cycles per second) and phase;
* ``"none"``: zero.

Observations. A 1-D "image": ``pixels`` sensors evenly spaced on a ring
around the pivot, sensor ``k`` at angle ``phi_k = 2 pi k / pixels`` (sensor 0
straight down). Each reads the bob's proximity,
``exp((cos(theta - phi_k) - 1) / width^2)`` (about a Gaussian blob of standard
deviation ``width`` radians around the angle), plus Gaussian noise of
standard deviation ``noise``. One frame shows where the pendulum is, not how
fast it moves: the velocity has to be inferred from several frames, which is
what makes identifying the dynamics a question (Karl et al.'s images play the
same role).

Example (the values are synthetic):

>>> import torch
>>> from pgmdl.datasets.controlled_pendulum import pendulum
>>> data = pendulum(3, 5, generator=torch.Generator().manual_seed(0))
>>> data.observations.shape, data.controls.shape, data.states.shape
(torch.Size([3, 5, 16]), torch.Size([3, 5, 1]), torch.Size([3, 5, 2]))
>>> nxt = data.true_step(data.states[:, 0], data.controls[:, 0])
>>> torch.allclose(nxt, data.states[:, 1])
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["PendulumDynamics", "PendulumSample", "pendulum", "render_ring"]

Control = Literal["piecewise", "smooth", "none"]


@dataclass(frozen=True)
class PendulumDynamics:
    """``theta'' = -(g/l) sin theta - b theta' + u``, integrated by RK4.

    Attributes:
        gravity_over_length: ``g / l`` in s^-2 (a 1 m pendulum: 9.81).
        damping: ``b`` in s^-1.
        dt: seconds per step.
        substeps: RK4 steps per ``dt``.
    """

    gravity_over_length: float = 9.81
    damping: float = 0.25
    dt: float = 0.1
    substeps: int = 1

    def __post_init__(self) -> None:
        for what in ("gravity_over_length", "dt"):
            value = getattr(self, what)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{what} must be positive and finite, got {value!r}")
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise ValueError(f"damping must be non-negative and finite, got {self.damping!r}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {self.substeps!r}")

    def derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """``d(theta, omega)/dt`` for states ``(..., 2)`` and controls ``(...)``."""
        theta, omega = state[..., 0], state[..., 1]
        accel = -self.gravity_over_length * torch.sin(theta) - self.damping * omega + control
        return torch.stack([omega, accel], dim=-1)

    def step(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """The state ``dt`` seconds later, the control held; the angle wrapped to ``[-pi, pi)``.

        Args:
            state: ``(..., 2)``, (angle, angular velocity).
            control: ``(..., 1)`` (or ``(...)``), broadcast against the state.

        Returns:
            ``(..., 2)`` in the dtype and on the device of ``state`` (computed in float64).
        """
        state = torch.as_tensor(state)
        out = state.dtype if state.dtype.is_floating_point else torch.float64
        control = torch.as_tensor(control, device=state.device).to(torch.float64)
        state = state.to(torch.float64)
        if control.dim() == state.dim() and control.shape[-1] == 1:
            control = control[..., 0]
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            k1 = self.derivative(state, control)
            k2 = self.derivative(state + 0.5 * h * k1, control)
            k3 = self.derivative(state + 0.5 * h * k2, control)
            k4 = self.derivative(state + h * k3, control)
            state = state + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        return torch.stack([wrap_angle(state[..., 0]), state[..., 1]], dim=-1).to(out)

    def rollout(self, state: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """``k`` steps ahead: ``(..., 2)`` and controls ``(..., k, 1)`` give ``(..., k, 2)``,
        the states after each control (the ground truth of k-step-ahead prediction)."""
        out = []
        for i in range(controls.shape[-2]):
            state = self.step(state, controls[..., i, :])
            out.append(state)
        return torch.stack(out, dim=-2)

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """``omega^2 / 2 + (g/l)(1 - cos theta)`` of states ``(..., 2)``: ``(...)``."""
        theta, omega = states[..., 0], states[..., 1]
        return 0.5 * omega**2 + self.gravity_over_length * (1 - torch.cos(theta))


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """The angle in ``[-pi, pi)``."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def render_ring(theta: torch.Tensor, pixels: int = 16, width: float = 0.4) -> torch.Tensor:
    """The noiseless ring image of angles ``(...)``: ``(..., pixels)`` in ``(0, 1]``.

    Sensor ``k`` at ``phi_k = 2 pi k / pixels`` reads
    ``exp((cos(theta - phi_k) - 1) / width^2)``.
    """
    theta = torch.as_tensor(theta)
    phi = torch.arange(pixels, dtype=theta.dtype, device=theta.device) * (2 * math.pi / pixels)
    return torch.exp((torch.cos(theta[..., None] - phi) - 1) / width**2)


@dataclass(frozen=True)
class PendulumSample:
    """SYNTHETIC pendulum sequences: what is observed, the controls, the true states.

    Attributes:
        observations: ``(N, T, pixels)`` noisy ring images.
        controls: ``(N, T, 1)``; ``controls[:, t]`` drives ``t -> t + 1``.
        states: ``(N, T, 2)`` (angle in ``[-pi, pi)``, angular velocity).
        dynamics: the :class:`PendulumDynamics` that made them.
        pixels, width, noise: the camera (see :func:`render_ring`).
    """

    observations: torch.Tensor
    controls: torch.Tensor
    states: torch.Tensor
    dynamics: PendulumDynamics
    pixels: int
    width: float
    noise: float

    def true_step(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """The true next state (:meth:`PendulumDynamics.step`)."""
        return self.dynamics.step(state, control)

    def rollout(self, state: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """The true states after each of ``controls`` (:meth:`PendulumDynamics.rollout`)."""
        return self.dynamics.rollout(state, controls)

    def render(self, states: torch.Tensor) -> torch.Tensor:
        """Noiseless images ``(..., pixels)`` of states ``(..., 2)``."""
        return render_ring(states[..., 0], self.pixels, self.width)

    def energy(self) -> torch.Tensor:
        """``(N, T)``: the energy of every true state."""
        return self.dynamics.energy(self.states)


def pendulum(
    num_sequences: int,
    length: int,
    *,
    dt: float = 0.1,
    noise: float = 0.05,
    pixels: int = 16,
    width: float = 0.4,
    gravity_over_length: float = 9.81,
    damping: float = 0.25,
    substeps: int = 1,
    control: Control = "piecewise",
    control_scale: float = 2.0,
    hold: int = 5,
    max_velocity: float = 2.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> PendulumSample:
    """Simulate ``num_sequences`` SYNTHETIC controlled pendulum sequences.

    Initial states: angle uniform in ``[-pi, pi)``, angular velocity uniform
    in ``[-max_velocity, max_velocity]``. Simulated in float64; see the module
    docstring for the dynamics, the controls and the observations.

    Args:
        num_sequences, length: ``N`` and ``T``.
        dt, gravity_over_length, damping, substeps: the :class:`PendulumDynamics`.
        noise: standard deviation of the pixel noise (``0`` for clean images).
        pixels, width: the ring camera (:func:`render_ring`).
        control: ``"piecewise"``, ``"smooth"`` or ``"none"``.
        control_scale: the controls' largest magnitude.
        hold: steps per constant block (``"piecewise"``).
        max_velocity: bound of the initial angular velocity.
        generator: a :class:`torch.Generator` for reproducible draws (drawn
            on its device, moved to ``device``); default torch's global RNG.
        device, dtype: of the result.

    Returns:
        a :class:`PendulumSample`.
    """
    for value, what in ((num_sequences, "num_sequences"), (length, "length"), (hold, "hold")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if not isinstance(pixels, int) or pixels < 2:
        raise ValueError(f"pixels must be an integer of at least 2, got {pixels!r}")
    for value, what in ((noise, "noise"), (control_scale, "control_scale")):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{what} must be non-negative and finite, got {value!r}")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be positive and finite, got {width!r}")
    if control not in ("piecewise", "smooth", "none"):
        raise ValueError(f"control must be 'piecewise', 'smooth' or 'none', got {control!r}")
    dynamics = PendulumDynamics(gravity_over_length, damping, dt, substeps)
    n, steps = num_sequences, length
    draw_on = generator.device if generator is not None else device
    f64 = dict(dtype=torch.float64, device=draw_on)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, **f64)

    theta = (2 * uniform(n) - 1) * math.pi
    omega = (2 * uniform(n) - 1) * max_velocity
    if control == "piecewise":
        blocks = (2 * uniform(n, -(-steps // hold)) - 1) * control_scale
        u = blocks.repeat_interleave(hold, dim=1)[:, :steps]
    elif control == "smooth":
        freq = 0.05 + 0.45 * uniform(n, 2, 1)
        phase = 2 * math.pi * uniform(n, 2, 1)
        time = torch.arange(steps, **f64) * dt
        u = control_scale * torch.sin(2 * math.pi * freq * time + phase).mean(1)
    else:
        u = torch.zeros(n, steps, **f64)
    eps = torch.randn(n, steps, pixels, generator=generator, **f64)

    state = torch.stack([wrap_angle(theta), omega], dim=-1)
    states = [state]
    for t in range(steps - 1):
        state = dynamics.step(state, u[:, t])
        states.append(state)
    states = torch.stack(states, dim=1)
    images = render_ring(states[..., 0], pixels, width) + noise * eps
    return PendulumSample(
        observations=images.to(device=device, dtype=dtype),
        controls=u[..., None].to(device=device, dtype=dtype),
        states=states.to(device=device, dtype=dtype),
        dynamics=dynamics,
        pixels=pixels,
        width=float(width),
        noise=float(noise),
    )
