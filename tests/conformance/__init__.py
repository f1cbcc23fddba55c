"""Conformance suite (issue 16): Pyro programs written the way Pyro users write them.

``programs/`` holds one module per program (model, hand-written guide,
example data, hand-checked expected graph); the test files run each program
AS WRITTEN through pgmdl: compile, invert and certify, render, audit the hand
guide, train a NaMIGuide. ``test_programs_are_valid_pyro.py`` vouches for the
programs under plain Pyro; ``test_regressions.py`` has one tiny model per
failure listed in the issue.
"""
