"""Graph compiler and inversion: Pyro programs as Bayesian networks, and the
structure of their amortized guides.

* :func:`compile` / :func:`compile_model` (:mod:`pgmdl.graph.compile`) run a
  Pyro program under provenance tracking and return its
  :class:`ModelGraph` (:mod:`pgmdl.graph.model_graph`);
* :class:`SiteInfo` and :class:`PlateInfo` (:mod:`pgmdl.graph.sites`) are the
  per-site and per-plate metadata;
* :func:`invert` (:mod:`pgmdl.graph.nami`) builds the NaMI inverse
  (:class:`InverseGraph`) on the plate-level graph (:mod:`pgmdl.graph.plated`);
* :func:`check_faithful`, :func:`is_minimal` (:mod:`pgmdl.graph.faithful`)
  certify a guide structure by d-separation; :func:`audit_guide`
  (:mod:`pgmdl.graph.audit`) does it for a hand-written guide.
"""

from pgmdl.graph.audit import GuideAudit, MissingDependency, SiteAudit, audit, audit_guide
from pgmdl.graph.compile import compile, compile_model
from pgmdl.graph.faithful import (
    FaithfulnessReport,
    Violation,
    check_faithful,
    is_minimal,
    redundant_edges,
)
from pgmdl.graph.model_graph import EDGE_KINDS, ModelGraph
from pgmdl.graph.nami import INVERSE_EDGE_KINDS, ORDERS, InverseGraph, invert
from pgmdl.graph.plated import PlateLink
from pgmdl.graph.sites import PlateInfo, SiteInfo

__all__ = [
    "EDGE_KINDS",
    "INVERSE_EDGE_KINDS",
    "ORDERS",
    "FaithfulnessReport",
    "GuideAudit",
    "InverseGraph",
    "MissingDependency",
    "ModelGraph",
    "PlateInfo",
    "PlateLink",
    "SiteAudit",
    "SiteInfo",
    "Violation",
    "audit",
    "audit_guide",
    "check_faithful",
    "compile",
    "compile_model",
    "invert",
    "is_minimal",
    "redundant_edges",
]
