"""The conformance programs: each module's ``build()`` returns a fresh Program."""

from __future__ import annotations

from collections.abc import Callable

from tests.conformance.harness import Program
from tests.conformance.programs import (
    air_mask,
    bayes_regression,
    capture_recapture,
    cvae_quadrants,
    dmm,
    eight_schools,
    hmm,
    inplace_loc,
    lda,
    partial_pooling,
    sparse_gamma_def,
    ssvae_m2,
    structured_args,
    vae_reshape,
)

BUILDERS: dict[str, Callable[[], Program]] = {
    "vae_reshape": vae_reshape.build,
    "ssvae_m2_labelled": ssvae_m2.build_labelled,
    "ssvae_m2_unlabelled": ssvae_m2.build_unlabelled,
    "dmm": dmm.build,
    "lda": lda.build,
    "sparse_gamma_def": sparse_gamma_def.build,
    "hmm": hmm.build,
    "eight_schools": eight_schools.build,
    "capture_recapture": capture_recapture.build,
    "cvae_quadrants": cvae_quadrants.build,
    "bayes_regression": bayes_regression.build,
    "partial_pooling": partial_pooling.build,
    "air_mask": air_mask.build,
    "structured_args": structured_args.build,
    "inplace_loc": inplace_loc.build,
}
"""Every program by name."""

NAMES = tuple(BUILDERS)


def build(name: str) -> Program:
    return BUILDERS[name]()


def training_cases() -> list[tuple[str, str]]:
    """``(program, config)`` pairs for the NaMIGuide training tests."""
    return [(name, cfg.name) for name in NAMES for cfg in BUILDERS[name]().train]
