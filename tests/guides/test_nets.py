"""Guide networks: linear path, constant start, per-parent normalization, set pooling."""

from __future__ import annotations

import math

import torch

from pgmdl.nn import ParentNorm, ResidualMLP, SetEncoder


def test_residual_mlp_starts_constant_yet_every_layer_can_learn(device):
    bias = torch.tensor([0.5, -1.0])
    net = ResidualMLP(3, 2, hidden=(8, 8), init_bias=bias).to(device)
    x = torch.randn(10, 3, device=device)
    y = net(x)
    assert torch.equal(y, bias.to(device).expand(10, 2))
    (y * torch.randn_like(y)).sum().backward()
    # the linear path and the zeroed last layer get gradients at once
    assert net.linear.weight.grad.abs().sum() > 0
    assert net.out.weight.grad.abs().sum() > 0


def test_residual_mlp_has_a_purely_linear_path():
    net = ResidualMLP(3, 2, hidden=(8,), zero_init=False)
    with torch.no_grad():
        net.out.weight.zero_()  # cut the non-linear branch: what is left is affine
    a, b = torch.randn(3), torch.randn(3)
    assert torch.allclose(net(a + b) - net(b), net(a) - net(torch.zeros(3)), atol=1e-6)


def test_residual_mlp_without_inputs_is_a_free_parameter():
    net = ResidualMLP(0, 4, init_bias=torch.ones(4))
    assert torch.equal(net(None), torch.ones(4))
    assert [n for n, _ in net.named_parameters()] == ["bias"]


def test_parent_norm_standardizes_without_coupling_data_points(device):
    torch.manual_seed(0)
    norm = ParentNorm(2).to(device)
    scale = torch.tensor([10.0, 0.1], device=device)
    for _ in range(200):
        norm(3.0 + scale * torch.randn(64, 2, device=device))
    x = 3.0 + scale * torch.randn(4096, 2, device=device)
    out = norm(x)
    assert torch.allclose(out.mean(0), torch.zeros(2, device=device), atol=0.1)
    assert torch.allclose(out.std(0), torch.ones(2, device=device), atol=0.1)
    norm.eval()
    one = norm(x[:1])  # a data point's features do not depend on its batch
    assert torch.allclose(one, norm(x)[:1])


def test_parent_norm_scale_mode_shrinks_large_features_and_leaves_small_ones(device):
    torch.manual_seed(0)
    norm = ParentNorm(3, standardize=False).to(device)
    loc = torch.tensor([30.0, 0.0, 0.0], device=device)
    scale = torch.tensor([40.0, 0.5, 1.0], device=device)

    def draw(n: int) -> torch.Tensor:
        x = loc + scale * torch.randn(n, 3, device=device)
        x[:, 2] = (torch.rand(n, device=device) < 0.02).float()  # a sparse binary pixel
        return x

    for _ in range(300):
        norm(draw(64))
    x = draw(8192)
    out = norm(x)
    rms = out.square().mean(0).sqrt()
    assert abs(rms[0].item() - 1.0) < 0.1  # root mean square 50 -> 1
    assert torch.equal(out[:, 1:], x[:, 1:] * norm.scale()[1:])
    assert torch.all(norm.scale()[1:] == 1.0)  # never amplified: the pixel stays 0/1
    norm.eval()
    one = norm(x[:1])  # a data point's features do not depend on its batch
    assert torch.allclose(one, norm(x)[:1])


def test_parent_norm_statistics_survive_a_state_dict_round_trip():
    a, b = ParentNorm(3), ParentNorm(3)
    for _ in range(5):
        a(torch.randn(16, 3) * 4)
    b.load_state_dict(a.state_dict())
    b(torch.randn(16, 3))  # the next update continues the running average
    assert int(b.count) == 6


def test_set_encoder_is_permutation_invariant_and_knows_the_set_size():
    torch.manual_seed(0)
    enc = SetEncoder(3, 5, hidden=(8,))
    x = torch.randn(7, 4, 3)  # 7 sets of 4 elements, pooled over dim -2 of x
    pooled = enc(x, dims=(-2,))
    assert pooled.shape == (7, 1, 6)
    shuffled = x[:, torch.randperm(4)]
    assert torch.allclose(enc(shuffled, dims=(-2,)), pooled, atol=1e-6)
    assert torch.allclose(pooled[..., -1], torch.full((7, 1), math.log(4)))
