"""Attention kernels behind one function: `jaxfin.kernels.attention(q, k, v, segment_ids=..., backend=...)`."""

from jaxfin.kernels.attention import BACKENDS, attention

__all__ = ["BACKENDS", "attention"]
