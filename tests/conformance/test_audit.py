"""audit_guide on each program's hand-written guide: no false alarm.

Where the hand guide legitimately cannot represent the posterior (Pyro's DMM
guide reads a reversed copy of the data the model never reads; Pyro's LDA
guide samples doc_topics from the counts alone), the program states the
report it expects instead.
"""

from __future__ import annotations

import pytest

import pgmdl
from tests.conformance.programs import NAMES, build


@pytest.mark.parametrize("name", NAMES)
def test_audit_of_the_hand_written_guide(name):
    program = build(name)
    args, kwargs = program.call
    audit = pgmdl.audit_guide(program.model, program.guide, *args, **kwargs)
    if program.audit is None:
        assert audit.ok, audit.report()
    else:
        program.audit(audit)
