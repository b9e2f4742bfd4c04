"""The Pallas flash-attention kernel (interpret mode on CPU) against the XLA reference, segment ids and GQA always."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxfin.kernels.attention import xla_attention
from jaxfin.kernels.flash_blocks import visited_blocks
from jaxfin.kernels.pallas_gpu import pallas_attention
from tests.attention_cases import assert_close as _close
from tests.attention_cases import case_segments, check_against_reference, kernel_tol
from tests.attention_cases import out_and_grads as _out_and_grads
from tests.attention_cases import qkv as _inputs

CASES = {  # tolerance: attention_cases.kernel_tol (float32 ~1e-4 from S, D and the group; bf16 2e-2)
    # name: (dtype, causal, B, S, Hq, Hkv, D, block_q, block_k, segments)
    "f32-causal-gqa4-padded-len96": (jnp.float32, True, 2, 96, 8, 2, 64, 32, 32, "pad"),
    "f32-full-mqa-d128-docs": (jnp.float32, False, 1, 128, 4, 1, 128, 32, 16, "docs"),
    "bf16-causal-gqa8-docs-len160": (jnp.bfloat16, True, 1, 160, 16, 2, 64, 32, 64, "docs"),
    "bf16-full-gqa1-pad": (jnp.bfloat16, False, 2, 128, 2, 2, 64, 64, 32, "pad"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_forward_and_gradients(name):
    dtype, causal, b, s, hq, hkv, d, bq, bk, segments = CASES[name]
    tol = kernel_tol(dtype, s, d, group=hq // hkv)
    rng = np.random.default_rng(0)
    q, k, v, w = _inputs(1, b, s, hq, hkv, d, dtype)
    seg = case_segments(rng, segments, b, s)
    if segments == "docs":
        assert visited_blocks(seg, causal, bq, bk).sum() < seg.shape[0] * (-(-s // bq)) * (-(-s // bk)) / 2
    check_against_reference(pallas_attention, q, k, v, w, seg, causal, tol, block_q=bq, block_k=bk)


def test_defaults_without_segment_ids():
    q, k, v, w = _inputs(2, 1, 128, 4, 4, 64, jnp.float32)
    out, grads = _out_and_grads(pallas_attention, q, k, v, w)
    ref_out, ref_grads = _out_and_grads(xla_attention, q, k, v, w)
    tol = kernel_tol(jnp.float32, 128, 64)
    _close(out, ref_out, tol, "output")
    for what, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        _close(g, r, tol, what)


def test_skipped_blocks_are_never_read():
    """Block-aligned documents with NaN keys/values in the padding blocks: a kernel that computed a skipped block
    (even fully masked) would pull NaN into 0 * NaN; the skipping kernel matches the reference on clean inputs."""
    s, bq = 128, 32
    seg = np.repeat(np.array([1, 2, 3, 0], np.int32), 32)[None]  # three docs, one block each, then a padding block
    q, k, v, w = _inputs(3, 1, s, 4, 2, 64, jnp.float32)
    poisoned = [x.at[:, 96:].set(jnp.nan) for x in (k, v)]
    for causal in (False, True):
        out = pallas_attention(q, *poisoned, segment_ids=jnp.asarray(seg), causal=causal, block_q=bq, block_k=bq)
        ref = xla_attention(q, k, v, segment_ids=jnp.asarray(seg), causal=causal)
        _close(out, ref, kernel_tol(jnp.float32, s, 64, grads=False), f"output causal={causal}")
        assert visited_blocks(seg, causal, bq, bq).sum() == 3  # only the diagonal blocks


def test_packed_row_cost_grows_with_sum_of_squared_doc_lengths():
    s, blk = 1024, 64
    seg = np.repeat(np.arange(1, 17, dtype=np.int32), 64)[None]  # 16 documents of 64 tokens
    dense_causal = (s // blk) * (s // blk + 1) // 2  # 136 blocks for plain causal attention
    assert visited_blocks(seg, True, blk, blk).sum() == 16
    assert visited_blocks(np.ones_like(seg), True, blk, blk).sum() == dense_causal
    assert visited_blocks(seg, False, blk, blk).sum() == 16
    # misaligned documents touch at most the neighbouring block too; still linear in S, not quadratic
    shifted = np.concatenate([np.zeros((1, 32), np.int32), seg[:, :-32]], axis=1)
    assert visited_blocks(shifted, True, blk, blk).sum() <= 2 * 16
    # smaller blocks: each 64-token document spans 4 blocks of 16 -> 4 * 5 / 2 causal pairs per document
    assert visited_blocks(seg, True, 16, 16).sum() == 16 * 10


@pytest.mark.parametrize(
    "shape_kv, d, bq, bk, match",
    [
        ((1, 64, 3, 64), 64, 32, 32, "multiple"),
        ((1, 64, 2, 48), 48, 32, 32, "power-of-two head dim"),
        ((1, 64, 2, 64), 64, 24, 32, "block_q"),
        ((1, 64, 2, 64), 64, 32, 8, "block_k"),
    ],
)
def test_rejects_unsupported_shapes(shape_kv, d, bq, bk, match):
    q = jnp.zeros((1, 64, 4, d))
    k = jnp.zeros(shape_kv)
    with pytest.raises(ValueError, match=match):
        pallas_attention(q, k, k, block_q=bq, block_k=bk)


def test_dispatch_runs_the_pallas_kernel_by_name():
    from jaxfin.kernels import attention

    r = np.random.default_rng(3)
    q = jnp.asarray(r.standard_normal((1, 64, 4, 64)), jnp.float32)
    k = jnp.asarray(r.standard_normal((1, 64, 2, 64)), jnp.float32)
    seg = jnp.asarray(np.repeat([1, 2, 0], [30, 30, 4])[None], jnp.int32)
    got = attention(q, k, k, segment_ids=seg, backend="pallas")
    want = xla_attention(q, k, k, segment_ids=seg)
    _close(got, want, kernel_tol(jnp.float32, 64, 64, grads=False), "output")
