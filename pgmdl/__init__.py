"""pgmdl: structural deep latent variable models on top of Pyro.

Write a generative model as an ordinary Pyro program; pgmdl compiles it into
an explicit Bayesian network (:func:`compile`), inverts it into the structure
of a faithful amortized guide (:func:`invert`, NaMI), certifies guide
structures (:func:`check_faithful`, :func:`is_minimal`), audits hand-written
guides (:func:`audit_guide`), builds amortized guides with that structure
(:class:`NaMIGuide`), trains them (:func:`fit`; :class:`FastSVI`, a compiled
SVI step) and draws models and guides
(:func:`render`). Plug-ins: quasi-deterministic observations with learned
noise (:mod:`pgmdl.observe`: :class:`QuasiDeterministic`,
:class:`MultiscaleObservation`), multiset plates and CompVAE's joint guide
(:mod:`pgmdl.multiset`: :func:`multiset_plate`), Boltzmann tuning of
trained models with normalizing flows (:mod:`pgmdl.boltzmann`:
:func:`boltzmann_tune`), and likelihood estimation and missing-data
imputation (:mod:`pgmdl.infer`: :func:`log_likelihood`, :func:`impute`).

Functions with options take the model's arguments as keywords,
``model_args=(...)`` and ``model_kwargs={...}`` (:mod:`pgmdl.arguments`);
:func:`compile` is the option-less shorthand ``compile(model, *args, **kwargs)``.
Errors on bad input are :class:`PgmdlError`; :mod:`pgmdl.errors` says which
one is raised for what.
"""

from pgmdl import boltzmann, observe
from pgmdl.boltzmann import TunedModel, boltzmann_tune
from pgmdl.errors import (
    ArgumentError,
    ArgumentTypeError,
    CLIError,
    DataError,
    DynamicStructureError,
    GuideError,
    GuideWarning,
    InversionError,
    ModelError,
    PgmdlError,
    PgmdlWarning,
    RenderWarning,
    SiteNotFoundError,
    SpecError,
    StructureWarning,
    TrainingError,
    TuningError,
)
from pgmdl.graph import (
    FaithfulnessReport,
    GuideAudit,
    InverseGraph,
    ModelGraph,
    PlateInfo,
    PlateLink,
    SiteInfo,
    Violation,
    audit_guide,
    check_faithful,
    compile,
    compile_model,
    invert,
    is_minimal,
    redundant_edges,
)
from pgmdl.guides import NaMIGuide
from pgmdl.infer import (
    FastSVI,
    FitResult,
    Imputation,
    LogLikelihood,
    fit,
    impute,
    log_likelihood,
)
from pgmdl.multiset import multiset_plate
from pgmdl.observe import MultiscaleObservation, QuasiDeterministic
from pgmdl.render import render

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "CLIError",
    "DataError",
    "DynamicStructureError",
    "FaithfulnessReport",
    "FastSVI",
    "FitResult",
    "Imputation",
    "LogLikelihood",
    "GuideAudit",
    "GuideError",
    "GuideWarning",
    "InverseGraph",
    "InversionError",
    "ModelError",
    "ModelGraph",
    "MultiscaleObservation",
    "NaMIGuide",
    "PgmdlError",
    "PgmdlWarning",
    "PlateInfo",
    "PlateLink",
    "QuasiDeterministic",
    "RenderWarning",
    "SiteInfo",
    "SiteNotFoundError",
    "SpecError",
    "StructureWarning",
    "TrainingError",
    "TunedModel",
    "TuningError",
    "Violation",
    "__version__",
    "audit_guide",
    "boltzmann",
    "boltzmann_tune",
    "check_faithful",
    "compile",
    "compile_model",
    "fit",
    "impute",
    "log_likelihood",
    "multiset_plate",
    "invert",
    "is_minimal",
    "observe",
    "redundant_edges",
    "render",
]
