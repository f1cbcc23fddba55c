"""Conditionals shared across the steps of a pyro.markov loop
(:mod:`pgmdl.guides.sequence`, ``NaMIGuide(time_shared=True)``)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.utils.rnn as nn_rnn
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

import pgmdl
from pgmdl.datasets import LinearGaussianSSM
from pgmdl.guides.sequence import Parents, StepConditional, TimeSharedSeries, read_once


def sample(length: int, n: int = 32, seed: int = 0):
    return LinearGaussianSSM().sample(n, length, generator=torch.Generator().manual_seed(seed))


def parameters(guide) -> int:  # noqa: ANN001
    return sum(p.numel() for p in guide.parameters())


@pytest.mark.parametrize("order, direction", [("reverse", "future"), ("min-fill", "past")])
def test_every_step_shares_one_conditional_whose_size_does_not_grow(order, direction):
    ssm = LinearGaussianSSM()
    sizes = {}
    for length in (5, 9):
        pyro.clear_param_store()
        guide = pgmdl.NaMIGuide(ssm.model, order=order, time_shared=True).setup(sample(length).x)
        steps = [guide.conditional(f"z_{t}") for t in range(length)]
        assert all(isinstance(s, StepConditional) for s in steps)
        shared = {id(s.shared) for s in steps}
        assert len(shared) == 1 and steps[0].shared.direction == direction
        assert isinstance(steps[0].shared, TimeSharedSeries)
        assert sum(s.first for s in steps) == 1  # one GRU run per call
        sizes[length] = parameters(guide)
    assert sizes[5] == sizes[9]
    pyro.clear_param_store()
    per_step = [
        parameters(pgmdl.NaMIGuide(ssm.model, order=order, time_shared=False).setup(sample(n).x))
        for n in (5, 9)
    ]
    assert per_step[1] > per_step[0]  # one network per step, reading O(T) inputs


def test_the_shared_guide_trains_toward_the_exact_evidence():
    ssm = LinearGaussianSSM()
    train, test = sample(6, 64, seed=1), sample(6, 128, seed=2)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True)
    svi = SVI(ssm.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(train.x) for _ in range(300)]
    guide.eval()
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=20).loss(ssm.model, guide, test.x) / 128
    exact = -ssm.log_evidence(test.x).mean().item()
    gap = (loss - exact) / 6
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    assert 0.0 < gap < 0.6, f"gap per step {gap:.3f}"


def test_a_series_that_does_not_fit_keeps_its_own_conditionals():
    """Observations of one step only (a filtering structure forced by a model
    whose latents do not chain): nothing grows, nothing is shared."""

    def independent(x):
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", dist.Normal(0.0, 1.0))
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])

    guide = pgmdl.NaMIGuide(independent, time_shared=True).setup(torch.zeros(3, 4))
    assert not isinstance(guide.conditional("z_2"), StepConditional)
    assert guide.parents("z_2") == ("x_2",)


# ---------------------------------------------------------------- any length per call


def _controlled(x, u, mask=None):  # noqa: ANN001, ANN202 - a first-order SSM with controls, as users write it
    n, steps = x.shape[0], x.shape[1]
    z = x.new_zeros(n, 2)
    with pyro.plate("sequences", n):
        for t in pyro.markov(range(steps)):
            loc = 0.9 * z + u[:, t] if t else z
            with poutine.mask(mask=True if mask is None else mask[:, t]):
                z = pyro.sample(f"z_{t}", dist.Normal(loc, 0.5).to_event(1))
                pyro.sample(
                    f"x_{t}", dist.Normal(z.sum(-1, keepdim=True), 0.3).to_event(1), obs=x[:, t]
                )


def _controlled_args(length: int, n: int = 3):  # noqa: ANN202
    x, u = torch.randn(n, length, 1), torch.randn(n, length, 2)
    mask = torch.arange(length)[None, :] < torch.tensor([length, max(length - 2, 1), 1])[:, None]
    return x, u, mask


def _from_one(x):  # noqa: ANN001, ANN202 - Pyro's DMM numbers its steps 1..T
    z = x.new_zeros(x.shape[0], 2)
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(1, x.shape[1] + 1)):
            z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, 1.0).to_event(1))
            pyro.sample(f"obs_x_{t}", dist.Normal(z, 1.0).to_event(1), obs=x[:, t - 1, :])


@pytest.mark.parametrize("order", ["reverse", "min-fill", "topological"])
@pytest.mark.parametrize("case", ["ssm", "controlled", "from one"])
def test_the_slice_unrolls_to_nami_on_the_unrolled_model_at_every_length(order, case):
    """The guide built at one length, unrolled to others, is NaMI's inverse of the
    model compiled at those lengths: same sites, same order, same parents."""
    if case == "ssm":
        model, args = LinearGaussianSSM().model, lambda n: (sample(n, n=4).x,)
    elif case == "from one":
        model, args = _from_one, lambda n: (torch.randn(3, n, 2),)
    else:
        model, args = _controlled, _controlled_args
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(model, order=order, time_shared=True).setup(*args(5))
    pattern = guide.sequence
    assert pattern is not None and pattern.problem is None
    time_inputs = set(pattern.time_inputs)
    assert time_inputs == ({"u", "mask"} if case == "controlled" else set())
    for length in range(2, 9):
        inverse = pgmdl.invert(pgmdl.compile(model, *args(length)), order=order)
        assert pattern.order(length) == list(inverse.order), length
        for site, (_, parents) in pattern.unroll(length).items():
            assert set(parents) == set(inverse.parents(site)) - time_inputs, (length, site)


def test_one_guide_serves_sequences_of_any_length():
    ssm = LinearGaussianSSM()
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True).setup(sample(5).x)
    size = parameters(guide)
    for length in (2, 5, 11):
        x = sample(length, n=4).x
        trace = poutine.trace(guide).get_trace(x)
        latent = {n for n, m in trace.nodes.items() if m["type"] == "sample"} - {"sequences"}
        assert latent == {f"z_{t}" for t in range(length)}
        assert torch.isfinite(torch.tensor(Trace_ELBO().loss(ssm.model, guide, x)))
    assert parameters(guide) == size  # no module was added for the new lengths


def test_a_guide_that_cannot_share_refuses_another_length_saying_why():
    """The DVBF's innovations read every earlier innovation (its state is a
    deterministic function of them all): no fixed lag, so no shared slice."""
    from models import dvbf

    x, u, mask = dvbf.example_args()[0]
    guide = pgmdl.NaMIGuide(dvbf.model, order="reverse", time_shared=True).setup(x, u, mask)
    assert guide.sequence is not None and "beta_{t}" in guide.sequence.problem
    with pytest.raises(pgmdl.GuideError, match="cannot serve another length.*beta_"):
        guide(x[:, :3], u[:, :3], mask[:, :3])


def test_padding_after_a_sequence_changes_nothing_at_its_real_steps():
    """Run backwards, each sequence of a padded batch starts at its own last real
    step, so how much padding follows it does not reach its real steps."""
    ssm = LinearGaussianSSM()
    data = sample(4, n=2, seed=3)
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True)
    guide.setup(data.x, data.mask)
    assert guide.sequence.step_mask == "mask"
    guide.eval()
    with torch.no_grad():  # heads start at zero: move every parameter off its start
        for parameter in guide.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    locs = []
    for padding in (0, 3, 7):
        x = torch.cat([data.x, torch.zeros(2, padding, data.x.shape[-1], dtype=data.x.dtype)], 1)
        mask = torch.arange(4 + padding)[None, :] < 4
        guide(x, mask.expand(2, -1))  # the first call at a length compiles the model there
        pyro.set_rng_seed(0)
        trace = poutine.trace(guide).get_trace(x, mask.expand(2, -1))
        locs.append(torch.stack([trace.nodes[f"z_{t}"]["fn"].mean for t in range(4)]))
    assert torch.allclose(locs[0], locs[1], atol=1e-5) and torch.allclose(
        locs[0], locs[2], atol=1e-5
    )


def test_a_long_loop_is_planned_on_its_first_steps_and_shown_at_its_own_length():
    """Planning unrolled costs O(T^3) (NaMI's elimination); a time-shared guide plans
    the loop's first PROTOTYPE_STEPS steps and unrolls the slice to the call."""
    from pgmdl.guides.sequence import PROTOTYPE_STEPS

    ssm = LinearGaussianSSM()
    data = sample(20, n=4)
    pyro.clear_param_store()
    guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True)
    guide.setup(data.x, data.mask)
    assert guide.plan.time.steps == tuple(range(PROTOTYPE_STEPS))
    assert guide.sites == tuple(f"z_{t}" for t in range(20))
    inverse = pgmdl.invert(pgmdl.compile(ssm.model, data.x, data.mask), order="reverse")
    for site in guide.sites:
        assert set(guide.parents(site)) == set(inverse.parents(site)), site
    assert isinstance(guide.conditional("z_19"), StepConditional)
    trace = poutine.trace(guide).get_trace(data.x, data.mask)
    assert {f"z_{t}" for t in range(20)} <= set(trace.nodes)


def _filtering_guide(length: int, z_dim: int, x_dim: int):  # noqa: ANN202
    """q(z_t | z_{t-1}, x_t): linear-Gaussian steps with their own weights, the
    filtering structure many hand-written sequence guides use."""
    weights = torch.nn.ModuleList(torch.nn.Linear(z_dim + x_dim, 2 * z_dim) for _ in range(length))

    def guide(x, mask=None):  # noqa: ANN001, ANN202
        pyro.module("filtering", weights)
        z = x.new_zeros(x.shape[0], z_dim)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                out = weights[t](torch.cat([z, x[:, t]], -1))
                loc, scale = out[:, :z_dim], torch.nn.functional.softplus(out[:, z_dim:] - 1)
                z = pyro.sample(f"z_{t}", dist.Normal(loc, scale + 1e-3).to_event(1))

    return guide


def test_a_filtering_guide_lacks_the_future_and_does_measurably_worse():
    """q(z_t | z_{t-1}, x_t) ignores x_{t+1..}: check_faithful names the missing
    dependency, and trained alike it stays further from the Kalman evidence than
    the guide pgmdl builds."""
    ssm = LinearGaussianSSM()
    length = 6
    train, test = sample(length, 128, seed=1), sample(length, 256, seed=2)
    graph = pgmdl.compile(ssm.model, train.x)
    filtering = {f"z_{t}": ([f"z_{t - 1}"] if t else []) + [f"x_{t}"] for t in range(length)}
    report = pgmdl.check_faithful(graph, filtering)
    assert not report.ok
    first = str(report.violations[0])
    assert "x_" in first and "given" in first, first  # it names the observation it misses
    gaps = {}
    for name in ("filtering", "nami"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        if name == "filtering":
            guide = _filtering_guide(length, ssm.z_dim, ssm.x_dim)
        else:
            guide = pgmdl.NaMIGuide(ssm.model, order="reverse", time_shared=True)
        svi = SVI(ssm.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(400):
            svi.step(train.x)
        if hasattr(guide, "eval"):
            guide.eval()
        with torch.no_grad():
            loss = Trace_ELBO(num_particles=20).loss(ssm.model, guide, test.x) / 256
        gaps[name] = (loss + ssm.log_evidence(test.x).mean().item()) / length
    assert gaps["filtering"] > gaps["nami"] + 0.05, gaps


def test_step_parents_read_like_the_tuple_they_stand_for():
    """A step's parents share one list of observation names: they read as the
    materialized tuple (items, length, indexing, appending, mapping), and a
    whole loop's reads visit each observation once."""
    names = [f"x_{t}" for t in range(5)]
    parents = Parents(["w", "z_2"], [(names, 2, 5)])
    expected = ("w", "z_2", "x_2", "x_3", "x_4")
    assert tuple(parents) == expected and parents == expected and len(parents) == 5
    assert parents[2] == "x_2" and parents[-1] == "x_4" and parents[1:3] == ("z_2", "x_2")
    with pytest.raises(IndexError):
        parents[5]
    longer = parents + ("mask",)
    assert tuple(longer) == expected + ("mask",) and tuple(parents) == expected
    assert tuple(longer.mapped(str.upper)) == tuple(s.upper() for s in expected + ("mask",))
    loop = [Parents([f"z_{t + 1}"], [(names, t, 5)]) for t in range(5)]
    seen = list(read_once(loop))
    assert sorted(seen) == sorted([f"z_{t + 1}" for t in range(5)] + names)


def _unpacking_model(seqs):
    """A DMM-like model that unpacks its PackedSequence argument itself."""
    x, lengths = nn_rnn.pad_packed_sequence(seqs, batch_first=True)
    batch, steps, _ = x.shape
    with pyro.plate("seqs", batch):
        z = x.new_zeros(batch, 2)
        for t in pyro.markov(range(steps)):
            z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, 1.0).to_event(1))
            loc = z.sum(-1, keepdim=True).expand(batch, x.shape[-1])
            pyro.sample(f"x_{t}", dist.Normal(loc, 0.5).to_event(1), obs=x[:, t])


def test_a_model_that_unpacks_a_packed_sequence_gets_a_clear_error():
    """pad_packed_sequence inside the model is no view the guide can replay: the
    compiled graph says which arguments the observation came from, and the guide
    refuses with the fix (pass the padded tensor and a mask) instead of
    training on something else."""
    lengths = torch.tensor([5, 4, 2])
    seqs = nn_rnn.pack_padded_sequence(torch.randn(3, 5, 3), lengths, batch_first=True)
    graph = pgmdl.compile(_unpacking_model, seqs)
    assert graph["x_0"].bound_argument is None
    assert "seqs[0]" in graph["x_0"].computed_from  # the packed data it was read from
    with pytest.raises(pgmdl.GuideError, match=r"'x_0'.*'seqs' is a PackedSequence.*mask"):
        pgmdl.NaMIGuide(_unpacking_model).setup(seqs)
