"""Tolerances for comparing two float computations of the same value, argued from dtype, magnitude and length.

Two programs that sum the same K terms in different orders (scan vs unrolled layers, remat, another GEMM tiling,
AVX-512 vs SSE lanes) differ by rounding of about sqrt(K)·u per reduction (u = eps/2; Higham & Mary 2019,
probabilistic rounding error analysis), relative to the *magnitude of the terms summed*, not to the result: an
entry that comes out small by cancellation carries the absolute error of the large terms it came from. So the
absolute part of a tolerance must scale with the tensor's magnitude (its max-abs), never be a fixed number.
"""

from __future__ import annotations

import math

import numpy as np


def rounding_tol(dtype, terms: int, depth: int = 1, lam: float = 6.0) -> float:
    """Relative (to the tensor's max-abs) difference two computations may show from rounding alone: `depth`
    chained reductions of `terms` terms each, lam·sqrt(terms)·u per reduction, times 2 (both sides round)."""
    u = np.finfo(dtype).eps / 2
    return 2 * depth * lam * math.sqrt(terms) * u


def assert_close_to_scale(actual, expected, rel: float, err_msg: str = "") -> None:
    """|actual - expected| <= rel * max|expected| everywhere (also rel relative to each entry, for large ones)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale, err_msg=err_msg)
