"""NaMIGuide on multiset plates: the joint conditional (GraphNN + correlated Gaussian)
where the inversion joins the parts, checked against the exact posterior of a
linear-Gaussian multiset model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

import pgmdl
from pgmdl.errors import GuideError
from pgmdl.guides.plan import JointPlan
from pgmdl.multiset import CorrelatedMultisetNormal, multiset_plate
from pgmdl.multiset.conditional import MultisetConditional, PlateView
from tests.conftest import FAST

NOISE = 0.5


def sum_model(m, mask, x=None):
    """w_i ~ N(m_i, 1) for the K_n present parts, x ~ N(sum_i w_i, NOISE^2)."""
    with pyro.plate("data", m.shape[0], dim=-1):
        with multiset_plate("parts", mask, dim=-2) as parts:
            w = pyro.sample("w", dist.Normal(parts.align(m), 1.0))
        pyro.sample("x", dist.Normal(parts.sum(w), NOISE), obs=x)


def log_evidence(m, mask, x):
    """log p(x) = log N(x; sum_i m_i, K + NOISE^2)."""
    k = mask.sum(-1).to(m.dtype)
    return dist.Normal((m * mask).sum(-1), (k + NOISE**2).sqrt()).log_prob(x)


def mean_field_gap(k):
    """The smallest KL(q || posterior) of any q independent across the parts: the
    posterior precision is I + 11^T / s^2, and the best factorized q keeps its
    diagonal, so the gap is (sum_i log L_ii - log det L) / 2."""
    s2 = NOISE**2
    return 0.5 * (k * math.log(1 + 1 / s2) - math.log(1 + k / s2))


def draw(n, k_max, device, generator):
    sizes = torch.randint(0, k_max + 1, (n,), generator=generator)
    mask = sizes[:, None] > torch.arange(k_max)
    m = torch.randn(n, k_max, generator=generator) * mask
    w = m + torch.randn(n, k_max, generator=generator)
    x = (w * mask).sum(-1) + NOISE * torch.randn(n, generator=generator)
    return m.to(device), mask.to(device), x.to(device)


def test_the_guide_gives_the_parts_a_joint_conditional(device):
    g = torch.Generator().manual_seed(0)
    m, mask, x = draw(6, 4, device, g)
    guide = pgmdl.NaMIGuide(sum_model).setup(m, mask, x)
    assert isinstance(guide.conditional("w"), MultisetConditional)
    assert guide.parents("w") == ("m@parts", "x")
    trace = pyro.poutine.trace(guide).get_trace(m, mask, x)
    q = trace.nodes["w"]["fn"]
    assert isinstance(q, PlateView) and q.batch_shape == (4, 6)
    assert torch.equal(trace.nodes["w"]["mask"], mask.T)  # the model's mask, in the guide too
    # at the start: the prior's mean, unit scales, nu = 0 (rho = 1 / (1 + K))
    joint = q.joint
    assert torch.allclose(joint.scale[mask], torch.ones_like(joint.scale[mask]), atol=1e-3)
    rho = joint.rho.squeeze(-1)
    k = mask.sum(-1, keepdim=True).to(rho.dtype)
    assert torch.allclose(rho[mask], (1 / (1 + k)).expand_as(rho)[mask], atol=1e-5)


def test_the_joint_is_permutation_equivariant_and_blind_to_padding(device):
    g = torch.Generator().manual_seed(1)
    m, mask, x = draw(5, 4, device, g)
    mask[:] = True
    m = torch.randn(5, 4, generator=g).to(device)
    guide = pgmdl.NaMIGuide(sum_model, hidden=(16,)).setup(m, mask, x)
    net = guide.conditional("w").graph
    torch.nn.init.normal_(net.out.weight, std=0.3)  # not the constant start
    guide.eval()  # freeze the running feature statistics

    def loc(m, mask):
        trace = pyro.poutine.trace(guide).get_trace(m, mask, x)
        return trace.nodes["w"]["fn"].joint.loc

    base = loc(m, mask)
    perm = torch.tensor([3, 1, 0, 2], device=device)
    assert torch.allclose(loc(m[:, perm], mask), base[:, perm], atol=1e-5)
    padded_m = torch.cat([m, torch.zeros(5, 3, device=device)], -1)
    padded_mask = torch.cat([mask, torch.zeros(5, 3, dtype=torch.bool, device=device)], -1)
    assert torch.allclose(loc(padded_m, padded_mask)[:, :4], base, atol=1e-5)


def test_plate_view_shares_the_joint_density_and_kl_out_over_the_replicates(device):
    g = torch.Generator().manual_seed(2)
    shape = (3, 5, 2)  # (N, K, D)
    loc, nu = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    scale = torch.rand(shape, generator=g) + 0.2
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    joint = CorrelatedMultisetNormal(
        loc.to(device), scale.to(device), nu.to(device), mask.to(device)
    )
    q = PlateView(joint, dim=-2)
    value = q.rsample((4,))
    assert value.shape == (4, 5, 3, 2)
    lp = q.log_prob(value)
    assert lp.shape == (4, 5, 3)
    assert torch.allclose(lp.sum(-2), joint.log_prob(value.movedim(-3, -2)))
    assert torch.all(lp[..., 2] == 0) and torch.all(lp[:, 2:, 1] == 0)
    prior = dist.Normal(torch.randn(5, 3, 2, generator=g).to(device), 1.5).to_event(1)
    kl = kl_divergence(q, prior)
    p_joint = dist.Normal(prior.base_dist.loc.movedim(-3, -2), 1.5).to_event(2)
    assert torch.allclose(kl.sum(-2), kl_divergence(joint, p_joint), atol=1e-5)


@pytest.mark.parametrize("elbo", ["trace", "mean-field"])
def test_trained_joint_guide_beats_every_independent_guide(device, elbo):
    """On x = sum_i w_i + noise the exact posterior couples the parts. The correlated
    family contains it (sigma_i = 1, rho_i = (1 - s / sqrt(K + s^2)) / K), so the
    joint guide's ELBO gap can close; no guide independent across the parts can get
    below the analytic mean-field gap."""
    pyro.set_rng_seed(0)
    g = torch.Generator().manual_seed(3)
    k_max = 4
    guide = pgmdl.NaMIGuide(sum_model, hidden=(32,))
    loss = Trace_ELBO() if elbo == "trace" else TraceMeanField_ELBO()
    svi = SVI(sum_model, guide, pyro.optim.ClippedAdam({"lr": 3e-3, "lrd": 0.999}), loss)
    for _ in range(500 if FAST else 1500):
        svi.step(*draw(64, k_max, device, g))
    m, mask, x = draw(3000, k_max, device, g)
    with torch.no_grad():
        estimate = -Trace_ELBO(num_particles=8).loss(sum_model, guide, m, mask, x) / len(x)
    gap = log_evidence(m, mask, x).mean().item() - estimate
    bound = sum(mean_field_gap(k) for k in range(k_max + 1)) / (k_max + 1)  # 0.69 nat
    assert -0.05 < gap < 0.5 * bound, (gap, bound)


def test_posterior_moments_of_a_trained_joint_guide(device):
    """Var(w_i | x) = 1 - 1/(K + s^2) and Var(sum_i w_i | x) = K s^2 / (K + s^2)."""
    pyro.set_rng_seed(0)
    g = torch.Generator().manual_seed(4)
    guide = pgmdl.NaMIGuide(sum_model, hidden=(32,))
    svi = SVI(
        sum_model, guide, pyro.optim.ClippedAdam({"lr": 3e-3, "lrd": 0.999}), TraceMeanField_ELBO()
    )
    for _ in range(500 if FAST else 1500):
        svi.step(*draw(64, 3, device, g))
    m, mask, x = draw(400, 3, device, g)
    mask[:] = True
    with torch.no_grad():
        q = pyro.poutine.trace(guide).get_trace(m, mask, x).nodes["w"]["fn"].joint
    k, s2 = 3.0, NOISE**2
    exact_mean = m + ((x - m.sum(-1)) / (k + s2))[:, None]
    assert (q.loc.squeeze(-1) - exact_mean).abs().mean() < 0.15
    assert abs(q.variance.mean().item() - (1 - 1 / (k + s2))) < 0.15
    assert abs(q.sum_variance.mean().item() - k * s2 / (k + s2)) < 0.15


def test_users_can_ask_for_the_joint_conditional_and_bad_requests_are_named():
    def local(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(5)
    assert not isinstance(pgmdl.NaMIGuide(local).setup(x).conditional("z"), MultisetConditional)
    asked = pgmdl.NaMIGuide(local, joint_sites=["z"]).setup(x)
    assert isinstance(asked.conditional("z"), MultisetConditional)
    assert asked(x)["z"].shape == (5,)
    assert asked.plan["z"].joint == JointPlan("data", "multiset")

    def positive(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.LogNormal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(GuideError, match=r"site 'z' cannot be joined .*support 'positive'"):
        pgmdl.NaMIGuide(positive, joint_sites=["z"]).setup(x)
    with pytest.raises(pgmdl.SiteNotFoundError):
        pgmdl.NaMIGuide(local, joint_sites=["nope"]).setup(x)
    with pytest.raises(GuideError, match=r"joint_sites='yes'"):
        pgmdl.NaMIGuide(local, joint_sites="yes")
    with pytest.raises(GuideError, match=r"not options of the multiset joint conditional"):
        pgmdl.NaMIGuide(local, joint_sites=["z"], joint_options={"depth": 3}).setup(x)


def test_the_old_spellings_of_the_joint_options_warn_and_still_work():
    def local(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(5)
    with pytest.warns(FutureWarning, match="joint_sites"):
        old = pgmdl.NaMIGuide(local, multiset_sites=["z"], multiset_layers=3)
    with pytest.warns(FutureWarning, match="joint_options"):
        pgmdl.NaMIGuide(local, multiset_layers=3)
    assert isinstance(old.setup(x).conditional("z"), MultisetConditional)
    assert old.joint_options == {"layers": 3}
