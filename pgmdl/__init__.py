"""pgmdl: structural deep latent variable models on top of Pyro.

Write a generative model as an ordinary Pyro program; pgmdl compiles it into
an explicit Bayesian network (:func:`compile`) and draws it (:func:`render`).
"""

from pgmdl.errors import (
    CLIError,
    DynamicStructureError,
    ModelError,
    PgmdlError,
    PgmdlWarning,
    RenderWarning,
    SiteNotFoundError,
    StructureWarning,
)
from pgmdl.graph import ModelGraph, PlateInfo, SiteInfo, compile, compile_model
from pgmdl.render import render

__version__ = "0.1.0"

__all__ = [
    "CLIError",
    "DynamicStructureError",
    "ModelError",
    "ModelGraph",
    "PgmdlError",
    "PgmdlWarning",
    "PlateInfo",
    "RenderWarning",
    "SiteInfo",
    "SiteNotFoundError",
    "StructureWarning",
    "__version__",
    "compile",
    "compile_model",
    "render",
]
