"""Small real data sets for examples and tests."""

from pgmdl.datasets.digits import load_digits

__all__ = ["load_digits"]
