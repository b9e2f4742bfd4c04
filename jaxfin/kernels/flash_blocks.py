"""What the Pallas flash-attention kernels share, GPU (pallas_gpu.py) and TPU (pallas_tpu.py) alike: the block
skipping predicate over per-block segment ranges, the tight loop bounds it gives, input checks and padding, and the
custom-VJP wrapper over a (forward, backward) kernel pair. Plain jnp/numpy: nothing backend-specific."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

EMPTY_MIN = 2**30  # segment range of a block with no non-zero segment id: [EMPTY_MIN, -1] overlaps nothing


def visible(q_seg_min, q_seg_max, k_seg_min, k_seg_max, q_last_pos, k_first_pos, causal: bool):
    """Whether a (q block, k block) pair can contain an unmasked entry. Operators only: works on numpy arrays,
    jnp arrays and traced scalars inside the kernels alike (the one predicate everything uses)."""
    vis = (q_seg_min <= k_seg_max) & (k_seg_min <= q_seg_max)
    if causal:
        vis = vis & (k_first_pos <= q_last_pos)
    return vis


def block_ranges(seg, block, xp):
    """Per (batch, block) min and max of the non-zero segment ids; [B, S] -> two [B, S // block] int32."""
    b, s = seg.shape
    seg = seg.reshape(b, s // block, block)
    nz = seg != 0
    lo = xp.where(nz, seg, EMPTY_MIN).min(axis=-1).astype(xp.int32)
    hi = xp.where(nz, seg, -1).max(axis=-1).astype(xp.int32)
    return lo, hi


def visibility(seg, causal, block_q, block_k, xp):
    """Bool [B, nq, nk]: which block pairs the kernels do work on; plus the per-block segment ranges."""
    qmin, qmax = block_ranges(seg, block_q, xp)
    kmin, kmax = block_ranges(seg, block_k, xp)
    nq, nk = qmin.shape[1], kmin.shape[1]
    q_last = (xp.arange(nq) * block_q + block_q - 1)[None, :, None]
    k_first = (xp.arange(nk) * block_k)[None, None, :]
    vis = visible(qmin[:, :, None], qmax[:, :, None], kmin[:, None, :], kmax[:, None, :], q_last, k_first, causal)
    return vis, (qmin, qmax, kmin, kmax)


def loop_bounds(vis):
    """First and one-past-last True along the last axis of a bool [B, n, m] (0, 0 where none)."""
    m = vis.shape[-1]
    anyv = vis.any(axis=-1)
    first = jnp.argmax(vis, axis=-1)
    last = m - jnp.argmax(vis[..., ::-1], axis=-1)
    return jnp.where(anyv, first, 0).astype(jnp.int32), jnp.where(anyv, last, 0).astype(jnp.int32)


def padded_len(s: int, block_q: int, block_k: int) -> int:
    m = math.lcm(block_q, block_k)
    return -(-s // m) * m


def check_shapes(q, k, v) -> None:
    """The layout every attention kernel takes: q [B, S, Hq, D], k = v [B, S, Hkv, D], Hq a multiple of Hkv."""
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B, S, Hq, D] and k, v [B, S, Hkv, D]; got {q.shape}, {k.shape}, {v.shape}")
    b, s, hq, d = q.shape
    if k.shape[0] != b or k.shape[1] != s or k.shape[3] != d:
        raise ValueError(f"q {q.shape} and k/v {k.shape} must agree on batch, length and head dim")
    if hq % k.shape[2]:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({k.shape[2]})")


def padded_inputs(q, k, v, segment_ids, block_q: int, block_k: int):
    """(q, k, v, segment ids) with the ids defaulted to one document per row and the length padded to a multiple
    of both blocks; the padding is segment 0, so it is masked and its rows come out zero."""
    b, s = q.shape[:2]
    if segment_ids is None:
        seg = jnp.ones((b, s), jnp.int32)
    else:
        if segment_ids.shape != (b, s):
            raise ValueError(f"segment_ids must be [B, S] = {(b, s)}; got {segment_ids.shape}")
        seg = segment_ids.astype(jnp.int32)
    sp = padded_len(s, block_q, block_k)
    if sp != s:
        pad = ((0, 0), (0, sp - s), (0, 0), (0, 0))
        q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)
        seg = jnp.pad(seg, ((0, 0), (0, sp - s)))
    return q, k, v, seg


def visited_blocks(segment_ids, causal: bool = True, block_q: int = 64, block_k: int = 64) -> np.ndarray:
    """Bool [B, nq, nk] (numpy): the (q block, k block) pairs the kernels compute for these segment ids (after
    padding the length to a block multiple), by the same predicate the kernels evaluate."""
    seg = np.asarray(segment_ids)
    b, s = seg.shape
    sp = padded_len(s, block_q, block_k)
    seg = np.pad(seg, ((0, 0), (0, sp - s)))
    vis, _ = visibility(seg, causal, block_q, block_k, np)
    return vis


def flash_vjp(fwd, bwd):
    """The differentiable attention over a kernel pair (shared by the GPU and TPU backends).

    fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret) -> (o, lse);
    bwd(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret) -> (dq, dk, dv).
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
    def flash(q, k, v, seg, causal, scale, block_q, block_k, interpret):
        return fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret)[0]

    def flash_fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret):
        o, lse = fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret)
        return o, (q, k, v, seg, o, lse)

    def flash_bwd(causal, scale, block_q, block_k, interpret, res, do):
        q, k, v, seg, o, lse = res
        dq, dk, dv = bwd(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret)
        return dq, dk, dv, None

    flash.defvjp(flash_fwd, flash_bwd)
    return flash
