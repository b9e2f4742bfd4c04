"""Pallas flash attention for TPUs (Mosaic lowering), forward + backward; runs on CPU in interpret mode.

Same contract as `jaxfin.kernels.attention.xla_attention`: q [B, S, Hq, D], k/v [B, S, Hkv, D] with Hq a
multiple of Hkv; segment_ids [B, S] int, 0 = padding. Only interpret mode has been run (on CPU, with the TPU
interpreter `pltpu.InterpretParams`); this module has never been compiled for a real TPU.

TPU layout (after the jax reference kernel `jax/experimental/pallas/ops/tpu/flash_attention.py`):
- q, k, v are transposed to [B, H, S, D] outside the kernels, so a block is (block, D): the sequence on sublanes,
  head_dim on lanes. Sequence blocks are multiples of 128; the length is padded inside to a block multiple.
- query segment ids are broadcast to [B, S, NUM_LANES] (a q block reads [block_q, 128] and tiles it along the
  lanes), key segment ids to [B, NUM_SUBLANES, S] (a k block reads row 0 of [8, block_k]), so the mask is built
  from lane-/sublane-dense tiles without relayouts.
- the softmax statistics (m, l) live in VMEM scratch as lane-replicated [block_q, 128]; the saved log-sum-exp and
  the backward's delta = rowsum(dO * O) are [B, H, S, 128] fp32 (lane-replicated, as in the jax reference).
- GQA/MQA: query head h reads kv head h // group through the index map; K/V are never repeated. The dk/dv kernel
  runs one program sequence per (batch, kv head, k block) and accumulates over the group's query heads and the q
  blocks (the two innermost, "arbitrary" grid axes).

Grids are (B, H, n_outer, [group,] n_inner) with the reduction axis innermost; accumulators are VMEM scratch,
initialised at the first inner step and written at the last one.

Block skipping: per (batch, block) min/max non-zero segment ids are computed once per call (plain jnp, the same
`visibility` predicate as the GPU kernel) and passed by scalar prefetch (SMEM), together with the first and
one-past-last visible inner block of every outer block. A step whose (q block, k block) pair cannot contain an
unmasked entry does no compute (`pl.when`), and its index map re-points to the nearest visible block so the
pipeline issues no new DMA for it either. The grid itself still has S^2 / block^2 steps (a skipped step costs
the per-step overhead only); the matmul work of a packed row grows with sum(doc_len^2).
Fully masked rows (padding) give exactly 0, lse 0 and zero gradients, never NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jaxfin.kernels.flash_blocks import check_shapes, flash_vjp, loop_bounds, padded_inputs, visibility, visible
from jaxfin.parallel.mesh import target_platform

NUM_LANES = 128
NUM_SUBLANES = 8
_NEG = -1e30  # finite "minus infinity" for masked scores


# ----------------------------------------------------------------------------------------------------- helpers
def _lanes(x, n: int):
    """A lane-replicated [rows, 128] statistic as [rows, n] (tile for n >= 128, slice below)."""
    return jnp.tile(x, (1, n // NUM_LANES)) if n >= NUM_LANES else x[:, :n]


def _dot(a, b, trans_b: bool = False):
    """2-D matmul with fp32 accumulation (full fp32 for fp32 inputs)."""
    prec = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    dims = (((1,), (1,)), ((), ())) if trans_b else (((1,), (0,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=prec, preferred_element_type=jnp.float32)


def _mask(qseg_ref, kseg_ref, q_start, k_start, block_q, block_k, causal):
    """Bool [block_q, block_k] from the lane-dense q segment tile and the sublane-dense k segment tile."""
    seg_q = jnp.tile(qseg_ref[...], (1, block_k // NUM_LANES))  # [bq, bk]
    seg_k = kseg_ref[:1, :]  # [1, bk]
    mask = (seg_q == seg_k) & (seg_q != 0)
    if causal:
        rows = q_start + lax.broadcasted_iota(jnp.int32, (block_q, block_k), 0)
        cols = k_start + lax.broadcasted_iota(jnp.int32, (block_q, block_k), 1)
        mask = mask & (cols <= rows)
    return mask


def _pairvisible(meta, b, i, j, nq, nk, block_q, block_k, causal):
    qmin, qmax, kmin, kmax = meta[:4]
    return visible(
        qmin[b * nq + i], qmax[b * nq + i], kmin[b * nk + j], kmax[b * nk + j],
        i * block_q + block_q - 1, j * block_k, causal,
    )  # fmt: skip


def _clamp_block(lo_ref, hi_ref, row, t):
    """Inner block to fetch at inner step t: t itself inside [lo, hi), else the nearest end (no new DMA)."""
    return jnp.minimum(jnp.maximum(t, lo_ref[row]), jnp.maximum(hi_ref[row] - 1, 0))


def _metadata(seg, causal, block_q, block_k):
    """Flattened int32 scalar-prefetch arrays: segment ranges per q and k block, and loop bounds per q block
    (over k blocks) and per k block (over q blocks)."""
    vis, (qmin, qmax, kmin, kmax) = visibility(seg, causal, block_q, block_k, jnp)
    k_lo, k_hi = loop_bounds(vis)
    q_lo, q_hi = loop_bounds(jnp.swapaxes(vis, 1, 2))
    return [x.reshape(-1).astype(jnp.int32) for x in (qmin, qmax, kmin, kmax, k_lo, k_hi, q_lo, q_hi)]


def _segment_layouts(seg):
    b, s = seg.shape
    q_seg = lax.broadcast_in_dim(seg, (b, s, NUM_LANES), (0, 1))
    kv_seg = lax.broadcast_in_dim(seg, (b, NUM_SUBLANES, s), (0, 2))
    return q_seg, kv_seg


def _q_major_specs(d, group, nq, block_q, block_k):
    """Index map for q-shaped blocks and the in_specs [q, k, v, q segments, kv segments] of a grid
    (B, Hq, q blocks, k blocks) that walks k innermost, clamped to each q block's visible k range."""

    def q_map(b, h, i, j, *m):
        return (b, h, i, 0)

    def kv_map(b, h, i, j, *m):
        return (b, h // group, _clamp_block(m[4], m[5], b * nq + i, j), 0)

    def qseg_map(b, h, i, j, *m):
        return (b, i, 0)

    def kseg_map(b, h, i, j, *m):
        return (b, 0, _clamp_block(m[4], m[5], b * nq + i, j))

    kv_blk = pl.BlockSpec((None, None, block_k, d), kv_map)
    return q_map, [
        pl.BlockSpec((None, None, block_q, d), q_map),
        kv_blk,
        kv_blk,
        pl.BlockSpec((None, block_q, NUM_LANES), qseg_map),
        pl.BlockSpec((None, NUM_SUBLANES, block_k), kseg_map),
    ]


def _params(interpret, semantics):
    kw = dict(compiler_params=pltpu.CompilerParams(dimension_semantics=semantics))
    if interpret:
        kw["interpret"] = pltpu.InterpretParams()
    return kw


def _cost(q, k, causal: bool, matmuls: int, operands) -> pl.CostEstimate:
    """What XLA's cost analysis should count for a kernel it cannot see into (a Mosaic call is opaque): `matmuls`
    [S, S, D] products per (batch, query head), halved when causal (block skipping of packed rows is not known at
    trace time, so this is the dense-causal figure), and each operand and result read or written once."""
    b, hq, s, d = q.shape
    flops = 2 * matmuls * b * hq * s * s * d // (2 if causal else 1)
    return pl.CostEstimate(
        flops=int(flops),
        transcendentals=int(b * hq * s * s // (2 if causal else 1)),
        bytes_accessed=int(sum(x.size * x.dtype.itemsize for x in operands)),
    )


_N_META = 8  # scalar-prefetch operands: qmin, qmax, kmin, kmax, k_lo, k_hi, q_lo, q_hi


# ----------------------------------------------------------------------------------------------------- forward
def _fwd_kernel(
    *refs, scale, causal, block_q, block_k, nq, nk, head_dim, count,
):  # fmt: skip
    meta = refs[:_N_META]
    q_ref, k_ref, v_ref, qseg_ref, kseg_ref = refs[_N_META : _N_META + 5]
    rest = refs[_N_META + 5 :]
    o_ref, lse_ref = rest[:2]
    cnt_ref = rest[2] if count else None
    m_sc, l_sc, acc_sc = rest[-3:]
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, _NEG, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)
        if count:
            cnt_ref[...] = jnp.zeros(cnt_ref.shape, jnp.int32)

    @pl.when(_pairvisible(meta, b, i, j, nq, nk, block_q, block_k, causal))
    def _compute():
        mask = _mask(qseg_ref, kseg_ref, i * block_q, j * block_k, block_q, block_k, causal)
        s = jnp.where(mask, _dot(q_ref[...], k_ref[...], trans_b=True) * scale, _NEG)  # [bq, bk]
        m_prev, l_prev = m_sc[...], l_sc[...]  # [bq, 128]
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
        p = jnp.where(mask, jnp.exp(s - _lanes(m_next, block_k)), 0.0)
        corr = jnp.exp(m_prev - m_next)
        l_sc[...] = corr * l_prev + jnp.sum(p, axis=1, keepdims=True)
        m_sc[...] = m_next
        v = v_ref[...]
        acc_sc[...] = acc_sc[...] * _lanes(corr, head_dim) + _dot(p.astype(v.dtype), v)
        if count:
            cnt_ref[...] += 1

    @pl.when(j == nk - 1)
    def _store():
        l_sum = l_sc[...]
        has = l_sum > 0
        safe = jnp.where(has, l_sum, 1.0)
        o_ref[...] = (acc_sc[...] / _lanes(safe, head_dim)).astype(o_ref.dtype)
        lse_ref[...] = jnp.where(has, m_sc[...] + jnp.log(safe), 0.0)


def _fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret, count=False):
    """q [B, Hq, S, D], k/v [B, Hkv, S, D] -> o [B, Hq, S, D], lse [B, Hq, S, 128] (and visit counts)."""
    b, hq, s, d = q.shape
    group = hq // k.shape[1]
    nq, nk = s // block_q, s // block_k
    meta = _metadata(seg, causal, block_q, block_k)
    q_seg, kv_seg = _segment_layouts(seg)

    q_map, q_major_in = _q_major_specs(d, group, nq, block_q, block_k)

    out_specs = [pl.BlockSpec((None, None, block_q, d), q_map), pl.BlockSpec((None, None, block_q, NUM_LANES), q_map)]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, s, NUM_LANES), jnp.float32)]
    if count:  # debug: how many (q block, k block) pairs each program computed, from its own pl.when branch
        out_specs.append(pl.BlockSpec((None, None, NUM_SUBLANES, NUM_LANES), q_map))
        out_shape.append(jax.ShapeDtypeStruct((b, hq, nq * NUM_SUBLANES, NUM_LANES), jnp.int32))
    kernel = functools.partial(
        _fwd_kernel, scale=scale, causal=causal, block_q=block_q, block_k=block_k, nq=nq, nk=nk, head_dim=d,
        count=count,
    )  # fmt: skip
    outs = pl.pallas_call(
        kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=_N_META,
            grid=(b, hq, nq, nk),
            in_specs=q_major_in,
            out_specs=out_specs,
            scratch_shapes=[
                pltpu.VMEM((block_q, NUM_LANES), jnp.float32),
                pltpu.VMEM((block_q, NUM_LANES), jnp.float32),
                pltpu.VMEM((block_q, d), jnp.float32),
            ],
        ),
        out_shape=out_shape,
        name="jaxfin_flash_tpu_fwd",
        cost_estimate=_cost(q, k, causal, 2, [q, k, v, q, jax.ShapeDtypeStruct(out_shape[1].shape, jnp.float32)]),
        **_params(interpret, ("parallel", "parallel", "parallel", "arbitrary")),
    )(*meta, q, k, v, q_seg, kv_seg)
    return outs


# ---------------------------------------------------------------------------------------------------- backward
def _dq_kernel(*refs, scale, causal, block_q, block_k, nq, nk, head_dim):
    meta = refs[:_N_META]
    q_ref, k_ref, v_ref, qseg_ref, kseg_ref, do_ref, lse_ref, delta_ref, dq_ref, dq_sc = refs[_N_META:]
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    @pl.when(_pairvisible(meta, b, i, j, nq, nk, block_q, block_k, causal))
    def _compute():
        mask = _mask(qseg_ref, kseg_ref, i * block_q, j * block_k, block_q, block_k, causal)
        k, v = k_ref[...], v_ref[...]
        s = _dot(q_ref[...], k, trans_b=True) * scale
        p = jnp.where(mask, jnp.exp(jnp.where(mask, s, 0.0) - _lanes(lse_ref[...], block_k)), 0.0)
        dp = _dot(do_ref[...], v, trans_b=True)
        ds = p * (dp - _lanes(delta_ref[...], block_k))
        dq_sc[...] += _dot(ds.astype(k.dtype), k)

    @pl.when(j == nk - 1)
    def _store():
        dq_ref[...] = (dq_sc[...] * scale).astype(dq_ref.dtype)


def _dkv_kernel(*refs, scale, causal, block_q, block_k, nq, nk, group):
    meta = refs[:_N_META]
    q_ref, k_ref, v_ref, qseg_ref, kseg_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_sc, dv_sc = refs[_N_META:]
    b, j, g, i = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((g == 0) & (i == 0))
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    @pl.when(_pairvisible(meta, b, i, j, nq, nk, block_q, block_k, causal))
    def _compute():
        mask = _mask(qseg_ref, kseg_ref, i * block_q, j * block_k, block_q, block_k, causal)
        q, do = q_ref[...], do_ref[...]
        s = _dot(q, k_ref[...], trans_b=True) * scale  # [bq, bk]
        p = jnp.where(mask, jnp.exp(jnp.where(mask, s, 0.0) - _lanes(lse_ref[...], block_k)), 0.0)
        dv_sc[...] += _dot(p.T.astype(do.dtype), do)
        dp = _dot(do, v_ref[...], trans_b=True)
        ds = p * (dp - _lanes(delta_ref[...], block_k))
        dk_sc[...] += _dot(ds.T.astype(q.dtype), q)

    @pl.when((g == group - 1) & (i == nq - 1))
    def _store():
        dk_ref[...] = (dk_sc[...] * scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _bwd(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret):
    b, hq, s, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    nq, nk = s // block_q, s // block_k
    meta = _metadata(seg, causal, block_q, block_k)
    q_seg, kv_seg = _segment_layouts(seg)
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
    delta = jnp.broadcast_to(delta, (b, hq, s, NUM_LANES))
    common = dict(scale=scale, causal=causal, block_q=block_q, block_k=block_k, nq=nq, nk=nk)

    # dq: grid (B, Hq, q blocks, k blocks), k innermost
    q_map, q_major_in = _q_major_specs(d, group, nq, block_q, block_k)

    q_blk = pl.BlockSpec((None, None, block_q, d), q_map)
    row_blk = pl.BlockSpec((None, None, block_q, NUM_LANES), q_map)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, head_dim=d, **common),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=_N_META,
            grid=(b, hq, nq, nk),
            in_specs=[*q_major_in, q_blk, row_blk, row_blk],
            out_specs=q_blk,
            scratch_shapes=[pltpu.VMEM((block_q, d), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        name="jaxfin_flash_tpu_bwd_dq",
        cost_estimate=_cost(q, k, causal, 3, [q, k, v, do, lse, delta, q]),
        **_params(interpret, ("parallel", "parallel", "parallel", "arbitrary")),
    )(*meta, q, k, v, q_seg, kv_seg, do, lse, delta)

    # dk, dv: grid (B, Hkv, k blocks, group, q blocks); the group's query heads and the q blocks are reduced
    def qh_map(b, h, j, g, i, *m):
        return (b, h * group + g, _clamp_block(m[6], m[7], b * nk + j, i), 0)

    def k_map(b, h, j, g, i, *m):
        return (b, h, j, 0)

    def qseg2_map(b, h, j, g, i, *m):
        return (b, _clamp_block(m[6], m[7], b * nk + j, i), 0)

    def kseg2_map(b, h, j, g, i, *m):
        return (b, 0, j)

    qh_blk = pl.BlockSpec((None, None, block_q, d), qh_map)
    rowh_blk = pl.BlockSpec((None, None, block_q, NUM_LANES), qh_map)
    k_blk = pl.BlockSpec((None, None, block_k, d), k_map)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, group=group, **common),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=_N_META,
            grid=(b, hkv, nk, group, nq),
            in_specs=[
                qh_blk,
                k_blk,
                k_blk,
                pl.BlockSpec((None, block_q, NUM_LANES), qseg2_map),
                pl.BlockSpec((None, NUM_SUBLANES, block_k), kseg2_map),
                qh_blk,
                rowh_blk,
                rowh_blk,
            ],
            out_specs=[k_blk, k_blk],
            scratch_shapes=[pltpu.VMEM((block_k, d), jnp.float32), pltpu.VMEM((block_k, d), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        name="jaxfin_flash_tpu_bwd_dkv",
        cost_estimate=_cost(q, k, causal, 4, [q, k, v, do, lse, delta, k, v]),
        **_params(interpret, ("parallel", "parallel", "parallel", "arbitrary", "arbitrary")),
    )(*meta, q, k, v, q_seg, kv_seg, do, lse, delta)
    return dq, dk, dv


# ------------------------------------------------------------------------------------------------- custom VJP
_flash = flash_vjp(_fwd, _bwd)


# ------------------------------------------------------------------------------------------------------ entry
def _prepare(q, k, v, segment_ids, sm_scale, block_q, block_k):
    check_shapes(q, k, v)
    s, d = q.shape[1], q.shape[3]
    if not (d % NUM_LANES == 0 or (d < NUM_LANES and d % NUM_SUBLANES == 0)):
        raise ValueError(f"pallas TPU attention needs head dim a multiple of 128, or of 8 below 128; got {d}")
    for name, blk in (("block_q", block_q), ("block_k", block_k)):
        if blk <= 0 or blk % NUM_LANES:
            raise ValueError(f"pallas TPU attention needs {name} to be a multiple of {NUM_LANES}; got {blk}")
    scale = float(d**-0.5 if sm_scale is None else sm_scale)
    q, k, v, seg = padded_inputs(q, k, v, segment_ids, block_q, block_k)
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [B, H, S, D]: sequence on sublanes, D on lanes
    return q, k, v, seg, scale, s


def pallas_tpu_attention(
    q,
    k,
    v,
    *,
    segment_ids=None,
    causal: bool = True,
    sm_scale: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
    interpret: bool | None = None,
):
    """Flash attention: q [B, S, Hq, D], k/v [B, S, Hkv, D] -> [B, S, Hq, D] in q's dtype (module docstring).

    `interpret=None` interprets (TPU interpreter) unless running on a TPU, where it compiles with Mosaic.
    """
    if interpret is None:
        interpret = target_platform() != "tpu"
    q, k, v, seg, scale, s = _prepare(q, k, v, segment_ids, sm_scale, block_q, block_k)
    out = _flash(q, k, v, seg, bool(causal), scale, int(block_q), int(block_k), bool(interpret))
    return jnp.swapaxes(out, 1, 2)[:, :s]


def visit_counts(q, k, v, *, segment_ids=None, causal=True, block_q=128, block_k=128, interpret=True):
    """Debug: int [B, Hq, nq], how many k blocks each forward program actually computed (its pl.when branch),
    read back from the kernel itself."""
    return np.asarray(_visit_counts(q, k, v, segment_ids, bool(causal), int(block_q), int(block_k), bool(interpret)))


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _visit_counts(q, k, v, segment_ids, causal, block_q, block_k, interpret):
    q, k, v, seg, scale, _ = _prepare(q, k, v, segment_ids, None, block_q, block_k)
    cnt = _fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret, count=True)[2]
    b, h = cnt.shape[:2]
    return cnt.reshape(b, h, -1, NUM_SUBLANES, NUM_LANES)[..., 0, 0]


__all__ = ["pallas_tpu_attention", "visit_counts"]
