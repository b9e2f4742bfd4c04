"""Pallas flash attention for GPUs (Triton lowering), forward + backward; runs on CPU in interpret mode.

Same contract as `jaxfin.kernels.attention.xla_attention`: q [B, S, Hq, D], k/v [B, S, Hkv, D] with Hq a
multiple of Hkv; segment_ids [B, S] int, 0 = padding. GQA/MQA never repeats K/V: a query head h reads kv head
h // (Hq // Hkv) through the BlockSpec index map, and the dk/dv kernel sums over the group's query heads inside the
kernel (one program per kv head and k block).

Block skipping: the min and max non-zero segment id of every q block and k block are computed once per batch row
(plain jnp, outside the kernels). A (q block, k block) pair is visited only if `visible` says the segment ranges
can overlap (and, if causal, the k block starts at or before the q block's last position). The loops run over the
[first, last] visible block of each row/column (tight bounds) and skip invisible blocks inside that range, so a
packed row costs ~sum(doc_len^2), not S^2. The predicate, bounds and padding are in flash_blocks.py (shared with
the TPU kernel); its `visited_blocks` evaluates the predicate in numpy (for tests and benchmarks).

FlashAttention-2 scheme: the forward saves the per-row log-sum-exp (fp32); the backward precomputes
delta = rowsum(dO * O), then one kernel over q blocks computes dq (looping over k blocks) and one over k blocks
computes dk, dv (looping over the group's query heads and q blocks). Softmax is fp32; masked probabilities are
zeroed explicitly, so rows with nothing to attend to give exactly 0 (and finite gradients).

Everything Triton-specific (compiler params, the triton import) lives in `_compiler_params`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxfin.kernels.flash_blocks import check_shapes, flash_vjp, loop_bounds, padded_inputs, visibility, visible
from jaxfin.parallel.mesh import target_platform

_NEG = -1e30  # finite "minus infinity" for masked scores (exp(_NEG - _NEG) = 1 never yields NaN)


# ----------------------------------------------------------------------------------------------------- Triton bits
def _compiler_params(head_dim: int, interpret: bool, *, num_stages: int = 2):
    """Triton compiler params (the only Triton-specific code; swap here when the Triton lowering is retired)."""
    if interpret:
        return None
    from jax.experimental.pallas import triton as plgpu

    return plgpu.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=num_stages)


# ----------------------------------------------------------------------------------------------------- kernels
def _dot(a, b, contract_a: int, contract_b: int):
    """2-D matmul with fp32 accumulation (IEEE fp32 for fp32 inputs, not TF32)."""
    prec = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())), precision=prec,
                           preferred_element_type=jnp.float32)  # fmt: skip


def _mask(seg_q, seg_k, q_pos, k_pos, causal: bool):
    m = (seg_q[:, None] == seg_k[None, :]) & (seg_q != 0)[:, None]
    if causal:
        m = m & (q_pos[:, None] >= k_pos[None, :])
    return m


def _fwd_kernel(
    q_ref, k_ref, v_ref, seg_ref, qmin_ref, qmax_ref, kmin_ref, kmax_ref, lo_ref, hi_ref,  # inputs
    o_ref, lse_ref,  # outputs
    *, scale, causal, block_q, block_k,
):  # fmt: skip
    i = pl.program_id(2)
    q = q_ref[...]
    q_pos = i * block_q + jnp.arange(block_q)
    seg_q = seg_ref[pl.ds(i * block_q, block_q)]
    qmin, qmax = qmin_ref[i], qmax_ref[i]
    q_last = i * block_q + block_q - 1

    def body(j, carry):
        def compute(carry):
            acc, m, l_sum = carry
            k = k_ref[pl.ds(j * block_k, block_k), :]
            v = v_ref[pl.ds(j * block_k, block_k), :]
            k_pos = j * block_k + jnp.arange(block_k)
            mask = _mask(seg_q, seg_ref[pl.ds(j * block_k, block_k)], q_pos, k_pos, causal)
            s = jnp.where(mask, _dot(q, k, 1, 1) * scale, _NEG)
            m_new = jnp.maximum(m, s.max(axis=-1))
            p = jnp.where(mask, jnp.exp(s - m_new[:, None]), 0.0)
            corr = jnp.exp(m - m_new)
            l_new = l_sum * corr + p.sum(axis=-1)
            acc_new = acc * corr[:, None] + _dot(p.astype(v.dtype), v, 1, 0)
            return acc_new, m_new, l_new

        vis = visible(qmin, qmax, kmin_ref[j], kmax_ref[j], q_last, j * block_k, causal)
        return lax.cond(vis, compute, lambda c: c, carry)

    d = q.shape[-1]
    init = (
        jnp.zeros((block_q, d), jnp.float32),
        jnp.full((block_q,), _NEG, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    acc, m, l_sum = lax.fori_loop(lo_ref[i], hi_ref[i], body, init)
    has = l_sum > 0
    o_ref[...] = (acc / jnp.where(has, l_sum, 1.0)[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(has, m + jnp.log(jnp.where(has, l_sum, 1.0)), 0.0)


def _dq_kernel(
    q_ref, k_ref, v_ref, seg_ref, do_ref, lse_ref, delta_ref,
    qmin_ref, qmax_ref, kmin_ref, kmax_ref, lo_ref, hi_ref,  # inputs
    dq_ref,  # output
    *, scale, causal, block_q, block_k,
):  # fmt: skip
    i = pl.program_id(2)
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    q_pos = i * block_q + jnp.arange(block_q)
    seg_q = seg_ref[pl.ds(i * block_q, block_q)]
    qmin, qmax = qmin_ref[i], qmax_ref[i]
    q_last = i * block_q + block_q - 1

    def body(j, dq):
        def compute(dq):
            k = k_ref[pl.ds(j * block_k, block_k), :]
            v = v_ref[pl.ds(j * block_k, block_k), :]
            k_pos = j * block_k + jnp.arange(block_k)
            mask = _mask(seg_q, seg_ref[pl.ds(j * block_k, block_k)], q_pos, k_pos, causal)
            s = _dot(q, k, 1, 1) * scale
            p = jnp.where(mask, jnp.exp(jnp.where(mask, s, 0.0) - lse[:, None]), 0.0)
            dp = _dot(do, v, 1, 1)
            ds = p * (dp - delta[:, None])
            return dq + _dot(ds.astype(k.dtype), k, 1, 0)

        vis = visible(qmin, qmax, kmin_ref[j], kmax_ref[j], q_last, j * block_k, causal)
        return lax.cond(vis, compute, lambda c: c, dq)

    dq = lax.fori_loop(lo_ref[i], hi_ref[i], body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _dkv_kernel(
    q_ref, k_ref, v_ref, seg_ref, do_ref, lse_ref, delta_ref,
    qmin_ref, qmax_ref, kmin_ref, kmax_ref, lo_ref, hi_ref,  # inputs
    dk_ref, dv_ref,  # outputs
    *, scale, causal, block_q, block_k, group,
):  # fmt: skip
    j = pl.program_id(2)
    k = k_ref[...]
    v = v_ref[...]
    k_pos = j * block_k + jnp.arange(block_k)
    seg_k = seg_ref[pl.ds(j * block_k, block_k)]
    kmin, kmax = kmin_ref[j], kmax_ref[j]
    lo, hi = lo_ref[j], hi_ref[j]

    def head(g, carry):  # the query heads of this kv head's group
        def body(i, carry):
            def compute(carry):
                dk, dv = carry
                rows = pl.ds(i * block_q, block_q)
                q = q_ref[rows, g, :]
                do = do_ref[rows, g, :]
                lse = lse_ref[g, rows]
                delta = delta_ref[g, rows]
                q_pos = i * block_q + jnp.arange(block_q)
                mask = _mask(seg_ref[rows], seg_k, q_pos, k_pos, causal)
                s = _dot(q, k, 1, 1) * scale
                p = jnp.where(mask, jnp.exp(jnp.where(mask, s, 0.0) - lse[:, None]), 0.0)  # [bq, bk]
                dv = dv + _dot(p.astype(do.dtype), do, 0, 0)
                ds = p * (_dot(do, v, 1, 1) - delta[:, None])
                dk = dk + _dot(ds.astype(q.dtype), q, 0, 0)
                return dk, dv

            vis = visible(qmin_ref[i], qmax_ref[i], kmin, kmax, i * block_q + block_q - 1, j * block_k, causal)
            return lax.cond(vis, compute, lambda c: c, carry)

        return lax.fori_loop(lo, hi, body, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, group, head, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------------------------- pallas calls
def _metadata(seg, causal, block_q, block_k):
    vis, (qmin, qmax, kmin, kmax) = visibility(seg, causal, block_q, block_k, jnp)
    k_lo, k_hi = loop_bounds(vis)  # per q block: the k blocks to loop over
    q_lo, q_hi = loop_bounds(jnp.swapaxes(vis, 1, 2))  # per k block: the q blocks to loop over
    return qmin, qmax, kmin, kmax, k_lo, k_hi, q_lo, q_hi


def _row_spec(n):
    return pl.BlockSpec((None, n), lambda b, h, i: (b, 0))


def _fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret):
    b, s, hq, d = q.shape
    group = hq // k.shape[2]
    nq, nk = s // block_q, s // block_k
    qmin, qmax, kmin, kmax, k_lo, k_hi, _, _ = _metadata(seg, causal, block_q, block_k)
    kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, block_q=block_q, block_k=block_k)
    q_spec = pl.BlockSpec((None, block_q, None, d), lambda b, h, i: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, s, None, d), lambda b, h, i: (b, 0, h // group, 0))
    o, lse = pl.pallas_call(
        kernel,
        grid=(b, hq, nq),
        in_specs=[q_spec, kv_spec, kv_spec, _row_spec(s)] + [_row_spec(nq)] * 2 + [_row_spec(nk)] * 2
        + [_row_spec(nq)] * 2,
        out_specs=[q_spec, pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, s), jnp.float32)],
        compiler_params=_compiler_params(d, interpret),
        interpret=interpret,
        name="jaxfin_flash_fwd",
    )(q, k, v, seg, qmin, qmax, kmin, kmax, k_lo, k_hi)  # fmt: skip
    return o, lse


def _bwd(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret):
    b, s, hq, d = q.shape
    hkv = k.shape[2]
    group = hq // hkv
    nq, nk = s // block_q, s // block_k
    qmin, qmax, kmin, kmax, k_lo, k_hi, q_lo, q_hi = _metadata(seg, causal, block_q, block_k)
    delta = jnp.einsum("bshd,bshd->bhs", o.astype(jnp.float32), do.astype(jnp.float32))
    common = dict(scale=scale, causal=causal, block_q=block_q, block_k=block_k)
    meta = (qmin, qmax, kmin, kmax)
    meta_specs = [_row_spec(nq)] * 2 + [_row_spec(nk)] * 2

    q_spec = pl.BlockSpec((None, block_q, None, d), lambda b, h, i: (b, i, h, 0))
    kv_full = pl.BlockSpec((None, s, None, d), lambda b, h, i: (b, 0, h // group, 0))
    row_spec = pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, **common),
        grid=(b, hq, nq),
        in_specs=[q_spec, kv_full, kv_full, _row_spec(s), q_spec, row_spec, row_spec] + meta_specs
        + [_row_spec(nq)] * 2,
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_compiler_params(d, interpret),
        interpret=interpret,
        name="jaxfin_flash_bwd_dq",
    )(q, k, v, seg, do, lse, delta, *meta, k_lo, k_hi)  # fmt: skip

    # one program per (batch, kv head, k block); it reads the whole group of query heads [S, group, D]
    q_group = pl.BlockSpec((None, s, group, d), lambda b, h, j: (b, 0, h, 0))
    kv_blk = pl.BlockSpec((None, block_k, None, d), lambda b, h, j: (b, j, h, 0))
    rows_group = pl.BlockSpec((None, group, s), lambda b, h, j: (b, h, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, group=group, **common),
        grid=(b, hkv, nk),
        in_specs=[q_group, kv_blk, kv_blk, _row_spec(s), q_group, rows_group, rows_group] + meta_specs
        + [_row_spec(nk)] * 2,
        out_specs=[kv_blk, kv_blk],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_compiler_params(d, interpret),
        interpret=interpret,
        name="jaxfin_flash_bwd_dkv",
    )(q, k, v, seg, do, lse, delta, *meta, q_lo, q_hi)  # fmt: skip
    return dq, dk, dv


_flash = flash_vjp(_fwd, _bwd)


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def pallas_attention(
    q,
    k,
    v,
    *,
    segment_ids=None,
    causal: bool = True,
    sm_scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
    interpret: bool | None = None,
):
    """Flash attention: q [B, S, Hq, D], k/v [B, S, Hkv, D] -> [B, S, Hq, D] in q's dtype (see module docstring).

    `interpret=None` interprets on CPU and compiles (Triton) elsewhere. Lengths that are not a multiple of the
    block are padded inside (padding is segment 0, masked) and the result sliced back.
    """
    check_shapes(q, k, v)
    s, d = q.shape[1], q.shape[3]
    if not _is_pow2(d) or d < 16:
        raise ValueError(f"pallas attention needs a power-of-two head dim >= 16 (e.g. 64, 128); got {d}")
    for name, blk in (("block_q", block_q), ("block_k", block_k)):
        if not _is_pow2(blk) or blk < 16:
            raise ValueError(f"pallas attention needs {name} to be a power of two >= 16; got {blk}")
    if interpret is None:
        interpret = target_platform() == "cpu"
    scale = float(d**-0.5 if sm_scale is None else sm_scale)
    q, k, v, seg = padded_inputs(q, k, v, segment_ids, block_q, block_k)
    out = _flash(q, k, v, seg, bool(causal), scale, int(block_q), int(block_k), bool(interpret))
    return out[:, :s]


__all__ = ["pallas_attention"]
