"""cuDNN fused attention through `jax.nn.dot_product_attention`, with segment ids honoured.

Segment ids become a dense boolean mask [B, 1, S, S] (same non-zero segment, AND causal); padding query rows
(segment 0) have nothing to attend to, which cuDNN's softmax turns into garbage or NaN, so they are zeroed
explicitly afterwards. `implementation="xla"` runs the same math through XLA (used by the CPU tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_mask(segment_ids, causal: bool):
    """Boolean [B, 1, S, S] (query, key): same non-zero segment, and key <= query if causal."""
    s = segment_ids.shape[1]
    mask = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids != 0)[:, :, None]
    if causal:
        mask = mask & jnp.tril(jnp.ones((s, s), bool))[None]
    return mask[:, None]


def cudnn_attention(q, k, v, *, segment_ids=None, causal=True, sm_scale=None, implementation="cudnn"):
    """q [B, S, Hq, D], k/v [B, S, Hkv, D] (Hkv divides Hq; GQA handled natively) -> [B, S, Hq, D]."""
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of key/value heads ({k.shape[2]})")
    if segment_ids is None:
        return jax.nn.dot_product_attention(
            q, k, v, scale=sm_scale, is_causal=causal, implementation=implementation
        ).astype(q.dtype)
    mask = segment_mask(segment_ids, causal)
    # Padding rows: give them one visible key (themselves) so the softmax stays finite (no NaN in the forward or
    # the backward), then zero their output; the where's gradient to those rows is exactly zero.
    pad = segment_ids == 0
    eye = jnp.eye(segment_ids.shape[1], dtype=bool)[None, None]
    mask = mask | (pad[:, None, :, None] & eye)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=sm_scale, implementation=implementation)
    return jnp.where(pad[:, :, None, None], jnp.zeros((), out.dtype), out).astype(q.dtype)


__all__ = ["cudnn_attention", "segment_mask"]
