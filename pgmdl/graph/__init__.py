"""Graph compiler: Pyro programs as Bayesian networks.

* :func:`compile` / :func:`compile_model` (:mod:`pgmdl.graph.compile`) run a
  Pyro program under provenance tracking and return its
  :class:`ModelGraph` (:mod:`pgmdl.graph.model_graph`);
* :class:`SiteInfo` and :class:`PlateInfo` (:mod:`pgmdl.graph.sites`) are the
  per-site and per-plate metadata.
"""

from pgmdl.graph.compile import compile, compile_model
from pgmdl.graph.model_graph import EDGE_KINDS, ModelGraph
from pgmdl.graph.sites import PlateInfo, SiteInfo

__all__ = ["EDGE_KINDS", "ModelGraph", "PlateInfo", "SiteInfo", "compile", "compile_model"]
