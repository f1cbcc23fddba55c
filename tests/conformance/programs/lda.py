"""Latent Dirichlet allocation with nested plates, as in Pyro's amortized LDA example.

A ``topics`` plate, a ``documents`` plate and a ``words`` plate inside it;
the model is wrapped in ``config_enumerate`` so the word's topic assignment is
summed out by TraceEnum_ELBO; its sizes come from an ``argparse.Namespace``.
The hand guide has free parameters for the topics and an amortized
``doc_topics`` predictor from each document's word counts.
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn
from torch.distributions import constraints

import pgmdl
from tests.conformance.harness import Program, TrainConfig, seeded


@config_enumerate
def model(data, args):
    # data[w, d] is the w-th word of document d
    with pyro.plate("topics", args.num_topics):
        topic_weights = pyro.sample("topic_weights", dist.Gamma(1.0, 1.0))
        topic_words = pyro.sample(
            "topic_words", dist.Dirichlet(torch.ones(args.num_words) / args.num_words)
        )
    with pyro.plate("documents", args.num_docs, dim=-1):
        doc_topics = pyro.sample("doc_topics", dist.Dirichlet(topic_weights))
        with pyro.plate("words", args.num_words_per_doc, dim=-2):
            word_topics = pyro.sample("word_topics", dist.Categorical(doc_topics))
            pyro.sample("doc_words", dist.Categorical(topic_words[word_topics]), obs=data)


def make_predictor(args):
    return nn.Sequential(
        nn.Linear(args.num_words, args.layer_size),
        nn.Sigmoid(),
        nn.Linear(args.layer_size, args.num_topics),
    )


def make_guide(predictor):
    def guide(data, args):
        topic_weights_posterior = pyro.param(
            "topic_weights_posterior",
            lambda: torch.ones(args.num_topics),
            constraint=constraints.positive,
        )
        topic_words_posterior = pyro.param(
            "topic_words_posterior",
            lambda: torch.ones(args.num_topics, args.num_words),
            constraint=constraints.greater_than(0.5),
        )
        with pyro.plate("topics", args.num_topics):
            pyro.sample("topic_weights", dist.Gamma(topic_weights_posterior, 1.0))
            pyro.sample("topic_words", dist.Dirichlet(topic_words_posterior))

        pyro.module("predictor", predictor)
        with pyro.plate("documents", args.num_docs):
            counts = torch.zeros(args.num_words, args.num_docs).scatter_add(
                0, data, torch.ones(data.shape)
            )
            concentration = nn.functional.softplus(predictor(counts.transpose(0, 1))) + 1e-2
            pyro.sample("doc_topics", dist.Dirichlet(concentration))

    return guide


def corpus(args, seed: int = 0) -> torch.Tensor:
    g = seeded(seed)
    topic_words = dist.Dirichlet(0.3 * torch.ones(args.num_words)).sample(
        (args.num_topics,)
    )  # uses the global RNG: seeded by build()
    doc_topics = torch.distributions.Dirichlet(torch.ones(args.num_topics)).sample((args.num_docs,))
    z = torch.multinomial(doc_topics, args.num_words_per_doc, replacement=True, generator=g)
    words = torch.multinomial(topic_words[z.reshape(-1)], 1, generator=g).reshape(z.shape)
    return words.t().contiguous()  # (num_words_per_doc, num_docs)


def _audit(audit) -> None:
    """Pyro's LDA guide samples doc_topics from the document's counts only, but given
    the words (word_topics summed out) doc_topics still depends on its prior's
    topic_weights and, through the words, on topic_words: a genuine report."""
    assert not audit.missing_sites and not audit.unexpected_sites, audit.report()
    assert not audit.support_mismatches, audit.report()
    assert "word_topics" in audit.enumerated, audit.report()
    got = {m.parent for m in audit.site("doc_topics").missing}
    assert got == {"topic_weights", "topic_words"}, audit.report()


def build() -> Program:
    torch.manual_seed(0)
    args = argparse.Namespace(
        num_topics=3, num_words=12, num_docs=10, num_words_per_doc=15, layer_size=16
    )
    data = corpus(args)
    predictor = make_predictor(args)
    guide = make_guide(predictor)
    enum = lambda: TraceEnum_ELBO(max_plate_nesting=2)  # noqa: E731
    calls = [((data, args), {})]
    return Program(
        name="lda",
        model=model,
        guide=guide,
        call=((data, args), {}),
        # doc_topics ~ Dirichlet(topic_weights); word_topics ~ Cat(doc_topics);
        # doc_words ~ Cat(topic_words[word_topics])
        parents={
            "topic_weights": set(),
            "topic_words": set(),
            "doc_topics": {"topic_weights"},
            "word_topics": {"doc_topics"},
            "doc_words": {"topic_words", "word_topics"},
        },
        latent={"topic_weights", "topic_words", "doc_topics", "word_topics"},
        observed={"doc_words"},
        inputs={},  # args is a Namespace of ints; data is the observation
        audit=_audit,
        train=(
            TrainConfig("enum", lambda: calls, enum, steps=50),
            # With amortized globals the min-fill inverse couples the topics' replicates
            # (they are coupled in the posterior) and the guide says, with a GuideWarning,
            # that it samples them independently: a true statement, not a failure.
            TrainConfig(
                "enum-amortized-globals",
                lambda: calls,
                enum,
                {"global_latents": "amortized"},
                steps=50,
                allowed_warnings=(pgmdl.GuideWarning,),
            ),
        ),
        hand_train=(enum, guide, calls),
    )
