"""pgmdl: structural deep latent variable models on top of Pyro.

Write a generative model as an ordinary Pyro program; pgmdl compiles it into
an explicit Bayesian network (:func:`compile`), inverts it into the structure
of a faithful amortized guide (:func:`invert`, NaMI), certifies guide
structures (:func:`check_faithful`, :func:`is_minimal`), audits hand-written
guides (:func:`audit_guide`) and draws models and guides
(:func:`render`).
"""

from pgmdl.errors import (
    CLIError,
    DynamicStructureError,
    InversionError,
    ModelError,
    PgmdlError,
    PgmdlWarning,
    RenderWarning,
    SiteNotFoundError,
    StructureWarning,
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
from pgmdl.render import render

__version__ = "0.1.0"

__all__ = [
    "CLIError",
    "DynamicStructureError",
    "FaithfulnessReport",
    "GuideAudit",
    "InverseGraph",
    "InversionError",
    "ModelError",
    "ModelGraph",
    "PgmdlError",
    "PgmdlWarning",
    "PlateInfo",
    "PlateLink",
    "RenderWarning",
    "SiteInfo",
    "SiteNotFoundError",
    "StructureWarning",
    "Violation",
    "__version__",
    "audit_guide",
    "check_faithful",
    "compile",
    "compile_model",
    "invert",
    "is_minimal",
    "redundant_edges",
    "render",
]
