"""Networks shared by pgmdl's stages and plug-ins (Berger 2021, §4.2.4 design advice).

* :class:`ResidualMLP` (:mod:`pgmdl.nn.residual`): a purely linear path plus a
  zero-initialized residual MLP;
* :class:`ParentNorm` (:mod:`pgmdl.nn.normalize`): per-parent normalization
  with running statistics, independent of the batch;
* :class:`SetEncoder` (:mod:`pgmdl.nn.sets`): a permutation-invariant summary
  of a set of replicates (Deep Sets).

They depend on nothing else in pgmdl, so model-side plug-ins (a learned noise
network of :mod:`pgmdl.observe`, the GraphNN of :mod:`pgmdl.multiset`) use
them without depending on the guide stage.
"""

from pgmdl.nn.normalize import ParentNorm
from pgmdl.nn.residual import ResidualMLP
from pgmdl.nn.sets import SetEncoder

__all__ = ["ParentNorm", "ResidualMLP", "SetEncoder"]
