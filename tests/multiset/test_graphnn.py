"""GraphSetEncoder (thesis §9.2.3): equal to the quadratic message passing it
replaces, permutation-equivariant, blind to padding, works for empty and
large sets."""

from __future__ import annotations

import pytest
import torch

from pgmdl.errors import ModelError
from pgmdl.multiset import GraphSetEncoder


def quadratic_reference(encoder, parts, mask, context):
    """Eq. 9.14 written naively: every part sums the messages of every other part."""
    present = mask.unsqueeze(-1).to(parts.dtype)
    h = encoder.embed(parts) * present
    ctx = encoder.context(context).unsqueeze(-2).expand(*h.shape[:-1], -1)
    k = parts.shape[-2]
    for message, update in zip(encoder.messages, encoder.updates, strict=True):
        sent = message(torch.cat([h, ctx], -1)) * present
        rows = []
        for i in range(k):
            others = [j for j in range(k) if j != i]
            total = sent[..., others, :].sum(-2)
            n = present[..., others, 0].sum(-1, keepdim=True)
            if encoder.pool == "mean":
                feats = [h[..., i, :], ctx[..., i, :], total / n.clamp(min=1), torch.log1p(n)]
            else:
                feats = [h[..., i, :], ctx[..., i, :], total]
            rows.append(update(torch.cat(feats, -1)))
        h = (h + torch.stack(rows, -2)) * present
    return encoder.out(h) * present


@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_linear_form_equals_the_quadratic_one(pool, device):
    torch.manual_seed(0)
    encoder = GraphSetEncoder(3, 4, context_features=5, width=16, layers=2, pool=pool).to(device)
    parts, context = torch.randn(2, 6, 3, device=device), torch.randn(2, 5, device=device)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [1] * 6], dtype=torch.bool, device=device)
    torch.testing.assert_close(encoder(parts, mask, context),
                               quadratic_reference(encoder, parts, mask, context))  # fmt: skip


def test_permutation_equivariance_and_padding(device):
    torch.manual_seed(1)
    encoder = GraphSetEncoder(3, 4, context_features=2).to(device)
    parts, context = torch.randn(1, 7, 3, device=device), torch.randn(1, 2, device=device)
    mask = torch.ones(1, 7, dtype=torch.bool, device=device)
    out = encoder(parts, mask, context)
    perm = torch.randperm(7)
    torch.testing.assert_close(encoder(parts[:, perm], mask[:, perm], context), out[:, perm])
    # padding slots (with any content) change nothing for the real parts
    padded = torch.cat([parts, 1e3 * torch.randn(1, 5, 3, device=device)], 1)
    pad_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool, device=device)], 1)
    wide = encoder(padded, pad_mask, context)
    torch.testing.assert_close(wide[:, :7], out)
    assert bool((wide[:, 7:] == 0).all())
    # the context matters
    assert not torch.allclose(encoder(parts, mask, context + 1), out)


def test_empty_single_and_large_sets(device):
    encoder = GraphSetEncoder(2, 3).to(device)
    assert encoder(torch.zeros(4, 0, 2, device=device)).shape == (4, 0, 3)
    none = encoder(torch.randn(1, 3, 2, device=device),
                   torch.zeros(1, 3, dtype=torch.bool, device=device))  # fmt: skip
    assert bool((none == 0).all())
    assert encoder(torch.randn(1, 1, 2, device=device)).shape == (1, 1, 3)
    with torch.no_grad():
        big = encoder(torch.randn(1, 5000, 2, device=device))
    assert bool(torch.isfinite(big).all())


def test_bad_input():
    encoder = GraphSetEncoder(3, 2, context_features=4)
    with pytest.raises(ModelError, match=r"\(\.\.\., K, 3\)"):
        encoder(torch.zeros(2, 5, 4), context=torch.zeros(2, 4))
    with pytest.raises(ModelError, match="mask must be a boolean tensor of shape"):
        encoder(torch.zeros(2, 5, 3), torch.ones(2, 6, dtype=torch.bool), torch.zeros(2, 4))
    with pytest.raises(ModelError, match="NaN"):
        encoder(torch.full((1, 2, 3), float("nan")), context=torch.zeros(1, 4))
    with pytest.raises(ModelError, match=r"context must have shape \(2, 4\)"):
        encoder(torch.zeros(2, 5, 3))
    with pytest.raises(ModelError, match="pool"):
        GraphSetEncoder(3, 2, pool="max")
