"""Exceptions and warnings raised by pgmdl: one taxonomy, by whose mistake it is.

Every error pgmdl raises on bad input is a :class:`PgmdlError`, so users can
catch them in one place. Each message names the site, argument or file at
fault and says how to fix it. Errors that wrap an exception raised by user
code chain it (``raise ... from err``) so the original traceback is kept.

Which error for what:

:class:`ArgumentError`
    a pgmdl function was called with an argument it cannot use (a negative
    count, an unknown method, a mask of the wrong shape, a bad data-set
    option); also a ``ValueError``.
:class:`ArgumentTypeError`
    the same, when the argument has the wrong *type*; also a ``TypeError``
    (and a ``ValueError``, as every :class:`ArgumentError`).
:class:`ModelError`
    the *model* (the user's Pyro program, or the arguments it is run with)
    cannot be compiled, or does not have the layout a function needs.
:class:`DynamicStructureError`
    the model's structure changes between runs.
:class:`InversionError`
    an elimination order or guide structure that cannot be inverted; also a
    ``ValueError``.
:class:`SiteNotFoundError`
    a site (or plate) name the graph lacks; also a ``KeyError``.
:class:`GuideError`
    a guide that cannot be built or run.
:class:`TrainingError`
    training went wrong (a NaN loss, a checkpoint of another model); also a
    ``FloatingPointError``.
:class:`TuningError`
    Boltzmann tuning cannot do what was asked.
:class:`DataError`
    a data set that cannot be loaded (a missing optional package, a
    malformed file).
:class:`CLIError`
    a command-line argument the ``pgmdl`` program cannot use;
    :class:`SpecError`, a model spec (``FILE.py:NAME``) that cannot be loaded.

The rule of thumb: an :class:`ArgumentError` is fixed by changing *how the
pgmdl function is called*; a :class:`ModelError` by changing *the model*.
Argument errors subclass ``ValueError`` (and ``TypeError`` for
:class:`ArgumentTypeError`) so code written against Python's conventions
(``except ValueError``) keeps working.

Warnings derive from :class:`PgmdlWarning`; a deprecated spelling (for
example ``compile_model(model, args, kwargs)``) gives a ``FutureWarning``
naming the new one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PgmdlError(Exception):
    """Base class of every error raised by pgmdl."""


class ArgumentError(PgmdlError, ValueError):
    """A pgmdl function was called with an argument it cannot use; the
    message names the argument and the fix (``num_traces must be a positive
    integer, got 0``). Also a ``ValueError``."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of a pgmdl function has a type it cannot use (``data must
    be a tensor ...``). Also a ``TypeError``, and a ``ValueError`` as every
    :class:`ArgumentError`."""


class ModelError(PgmdlError):
    """The object given as a model cannot be compiled: not callable, wrong
    arguments, no sample sites, or it raised while being traced; or the
    compiled model does not have the layout a function needs (an observed
    site that does not factorize over data points, a guide of another
    model)."""


class DynamicStructureError(PgmdlError):
    """The model's graph differs between runs (sites, parents, plates or
    shapes depend on sampled values), so no single Bayesian network describes
    it."""


class InversionError(PgmdlError, ValueError):
    """An inversion request pgmdl cannot carry out: an elimination order that
    misses, repeats or misnames latent sites, or a guide structure that is
    not a DAG over the model's sites."""


class SiteNotFoundError(PgmdlError, KeyError):
    """A site name that the graph does not contain."""

    def __init__(self, name: str, known: Iterable[str], what: str = "site") -> None:
        known = list(known)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        message = f"no {what} named {name!r} in this graph (it has {known}).{hint}"
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class GuideError(PgmdlError):
    """A guide pgmdl cannot build or run for this model: no latent site, a
    latent whose support has no variational family, an observed site the
    guide cannot find among the model's arguments, or an observed value of
    the wrong shape."""


class TrainingError(PgmdlError, FloatingPointError):
    """Training went wrong in a way the user must fix: the loss turned NaN or
    infinite (the message names the sites and parameters at fault), or a
    checkpoint does not match the model and guide being trained."""


class TuningError(PgmdlError):
    """Boltzmann tuning (:func:`pgmdl.boltzmann_tune`) cannot do what was asked:
    a criterion that returns NaN or is not differentiable with respect to the
    tuned sites, a tuned site that is not a continuous latent, or a target
    that the outer loop does not reach (``best`` then holds the closest
    :class:`~pgmdl.boltzmann.TuningStep`). The user's model is never modified."""

    def __init__(self, message: str, best: object = None) -> None:
        super().__init__(message)
        self.best = best


class DataError(PgmdlError):
    """A data set pgmdl cannot load: the optional package that ships it is
    not installed, or its file is missing or malformed. The message says how
    to get it."""


class CLIError(PgmdlError):
    """A command-line argument the ``pgmdl`` program cannot use."""


class SpecError(CLIError):
    """A model spec (``FILE.py:NAME`` or ``package.module:NAME``, see
    :func:`pgmdl.specs.load_model`) that cannot be loaded: no such file or
    module, no such callable, or an ``example_args`` that fails. A
    :class:`CLIError` because on the command line the spec is an argument
    (the ``pgmdl`` program exits with status 2)."""


class PgmdlWarning(UserWarning):
    """Base class of pgmdl's warnings."""


class StructureWarning(PgmdlWarning):
    """The compiled graph had to be made conservative: a sampled value left
    PyTorch (``.item()``, ``bool()``, NumPy) so pgmdl cannot see what it
    influenced, or the structure changed between traces and
    ``on_dynamic="warn"`` was asked for."""


class GuideWarning(PgmdlWarning):
    """The guide is less expressive than the inverse graph asks for: for
    example NaMI couples the replicates of a site along a plate (a joint
    plate), and the vectorized guide samples them independently given pooled
    summaries of their parents."""


class RenderWarning(PgmdlWarning):
    """A drawing could not be produced in the requested format (for example
    Graphviz's ``dot`` program is missing); the DOT source was written
    instead."""
