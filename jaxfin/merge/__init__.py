"""Parameter-space merging (``jaxfin merge``): mergekit-style methods, one tensor at a time.

The per-tensor math and its formulas live in :mod:`jaxfin.merge.methods`.
"""

from jaxfin.merge.methods import METHODS, MergeError, merge_tensor

__all__ = ["METHODS", "MergeError", "merge_tensor"]
