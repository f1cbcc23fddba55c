"""The old home of pgmdl's shared networks, now :mod:`pgmdl.nn`.

``from pgmdl.guides.nets import ResidualMLP`` keeps working for one release,
with a ``FutureWarning``; import from :mod:`pgmdl.nn`.
"""

import warnings

from pgmdl.nn import ParentNorm, ResidualMLP, SetEncoder

warnings.warn(
    "pgmdl.guides.nets moved to pgmdl.nn (ResidualMLP, ParentNorm, SetEncoder); the old "
    "module goes in the next release",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["ParentNorm", "ResidualMLP", "SetEncoder"]
