"""Deep Markov model (Krishnan et al. 2017) with the signature of Pyro's DMM example.

The model and the guide are methods of one ``nn.Module``; they take the
padded mini-batch, its reversal as a ``torch.nn.utils.rnn.PackedSequence``
(read by the guide's RNN), a boolean mask and the sequence lengths. The model
loops ``for t in pyro.markov(range(1, T_max + 1))`` with sites ``z_{t}`` and
``obs_x_{t}`` (``obs=mini_batch[:, t - 1, :]``) under
``poutine.mask(mask=mini_batch_mask[:, t - 1])``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from tests.conformance.harness import Program, TrainConfig, argument_root, seeded

X_DIM, Z_DIM, TRANS_DIM, RNN_DIM, T_MAX = 5, 3, 8, 8, 4


class Emitter(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(Z_DIM, TRANS_DIM)
        self.lin_hidden_to_input = nn.Linear(TRANS_DIM, X_DIM)

    def forward(self, z_t):
        h = torch.relu(self.lin_z_to_hidden(z_t))
        return torch.sigmoid(self.lin_hidden_to_input(h))


class Transition(nn.Module):
    """p(z_t | z_{t-1}): a gated residual update, Normal with a learned scale."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(Z_DIM, Z_DIM)
        self.proposed = nn.Linear(Z_DIM, Z_DIM)
        self.scale = nn.Linear(Z_DIM, Z_DIM)

    def forward(self, z_prev):
        gate = torch.sigmoid(self.gate(z_prev))
        loc = (1 - gate) * z_prev + gate * self.proposed(z_prev)
        return loc, nn.functional.softplus(self.scale(torch.relu(z_prev))) + 1e-3


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t): h_t summarizes x_{t:T} (the RNN runs backwards in time)."""

    def __init__(self):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(Z_DIM, RNN_DIM)
        self.lin_loc = nn.Linear(RNN_DIM, Z_DIM)
        self.lin_scale = nn.Linear(RNN_DIM, Z_DIM)

    def forward(self, z_prev, h_rnn):
        h = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_prev)) + h_rnn)
        return self.lin_loc(h), nn.functional.softplus(self.lin_scale(h)) + 1e-3


def reverse_sequences(padded, seq_lengths):
    """Reverse each sequence of a padded (batch, time, dim) tensor within its length."""
    out = torch.zeros_like(padded)
    for b in range(padded.size(0)):
        length = int(seq_lengths[b])
        steps = torch.arange(length - 1, -1, -1)
        out[b, :length, :] = torch.index_select(padded[b], 0, steps)
    return out


def pad_and_reverse(rnn_output, seq_lengths):
    padded, _ = nn.utils.rnn.pad_packed_sequence(rnn_output, batch_first=True)
    return reverse_sequences(padded, seq_lengths)


class DMM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emitter = Emitter()
        self.trans = Transition()
        self.combiner = Combiner()
        self.rnn = nn.RNN(X_DIM, RNN_DIM, nonlinearity="relu", batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(Z_DIM))
        self.z_q_0 = nn.Parameter(torch.zeros(Z_DIM))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, RNN_DIM))

    def model(
        self,
        mini_batch,
        mini_batch_reversed,
        mini_batch_mask,
        mini_batch_seq_lengths,
        annealing_factor=1.0,
    ):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        z_prev = self.z_0.expand(mini_batch.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.trans(z_prev)
                with poutine.mask(mask=mini_batch_mask[:, t - 1]):
                    with poutine.scale(scale=annealing_factor):
                        z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).to_event(1))
                    emission_probs_t = self.emitter(z_t)
                    pyro.sample(
                        f"obs_x_{t}",
                        dist.Bernoulli(emission_probs_t).to_event(1),
                        obs=mini_batch[:, t - 1, :],
                    )
                z_prev = z_t

    def guide(
        self,
        mini_batch,
        mini_batch_reversed,
        mini_batch_mask,
        mini_batch_seq_lengths,
        annealing_factor=1.0,
    ):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        h_0 = self.h_0.expand(1, mini_batch.size(0), RNN_DIM).contiguous()
        rnn_output, _ = self.rnn(mini_batch_reversed, h_0)
        rnn_output = pad_and_reverse(rnn_output, mini_batch_seq_lengths)
        z_prev = self.z_q_0.expand(mini_batch.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                with (
                    poutine.mask(mask=mini_batch_mask[:, t - 1]),
                    poutine.scale(scale=annealing_factor),
                ):
                    z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).to_event(1))
                z_prev = z_t


def mini_batch(seed: int):
    """Six binary sequences of lengths 4, 4, 3, 3, 2, 4 (zero-padded to T_MAX = 4),
    as Pyro's DMM prepares them: padded, reversed and packed, mask, lengths."""
    g = seeded(seed)
    lengths = torch.tensor([4, 4, 3, 3, 2, 4])
    steps = torch.arange(T_MAX)
    mask = steps[None, :] < lengths[:, None]
    # a sticky binary chain per channel
    x = torch.zeros(len(lengths), T_MAX, X_DIM)
    x[:, 0] = (torch.rand(len(lengths), X_DIM, generator=g) < 0.5).float()
    for t in range(1, T_MAX):
        flip = (torch.rand(len(lengths), X_DIM, generator=g) < 0.15).float()
        x[:, t] = (x[:, t - 1] + flip) % 2
    x = x * mask[..., None]
    reversed_x = reverse_sequences(x, lengths)
    packed = nn.utils.rnn.pack_padded_sequence(
        reversed_x, lengths, batch_first=True, enforce_sorted=False
    )
    return x, packed, mask, lengths


def _audit(audit) -> None:
    """The hand guide reads the reversed PackedSequence, an argument the model never
    reads: pgmdl cannot know it holds x, so every z_t legitimately misses x_{t:T}
    (its Markov boundary is {z_{t-1}} + x_{t:T}) and the argument is reported."""
    assert not audit.missing_sites and not audit.unexpected_sites, audit.report()
    assert not audit.support_mismatches, audit.report()
    for t in range(1, T_MAX + 1):
        want = {f"obs_x_{s}" for s in range(t, T_MAX + 1)}
        got = {m.parent for m in audit.site(f"z_{t}").missing}
        assert got == want, f"z_{t}: missing {sorted(got)}, expected {sorted(want)}\n" + (
            audit.report()
        )
    ignored = {argument_root(a) for a in audit.ignored_arguments}
    assert "mini_batch_reversed" in ignored, audit.report()


def build() -> Program:
    torch.manual_seed(0)
    dmm = DMM()
    first, second = mini_batch(0), mini_batch(1)
    ts = range(1, T_MAX + 1)
    parents = {"z_1": set()}  # z_0 is a parameter
    parents |= {f"z_{t}": {f"z_{t - 1}"} for t in ts if t > 1}
    parents |= {f"obs_x_{t}": {f"z_{t}"} for t in ts}
    every_site = {f"z_{t}" for t in ts} | {f"obs_x_{t}" for t in ts}
    return Program(
        name="dmm",
        model=dmm.model,
        guide=dmm.guide,
        call=(first, {}),
        parents=parents,
        latent={f"z_{t}" for t in ts},
        observed={f"obs_x_{t}" for t in ts},
        # the mask argument feeds every site through poutine.mask; mini_batch is read
        # only as the observations; the reversed copy and the lengths are not read
        inputs={"mini_batch_mask": every_site},
        audit=_audit,
        train=(TrainConfig("trace", lambda: [(first, {}), (second, {})], steps=50),),
    )
