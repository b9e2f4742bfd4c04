"""The Pallas TPU flash-attention kernel, run by the TPU interpreter on CPU, against the XLA reference.

Interpret mode only: nothing here compiles the kernel with Mosaic for a real TPU (on a TPU the same tests compile it).
Shapes are small (a handful of 128-blocks) because the TPU interpreter is slow.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfin.kernels.attention import xla_attention
from jaxfin.kernels.flash_blocks import visited_blocks
from jaxfin.kernels.pallas_tpu import pallas_tpu_attention, visit_counts
from tests.attention_cases import assert_close as _close
from tests.attention_cases import case_segments, check_against_reference, kernel_tol
from tests.attention_cases import out_and_grads as _out_and_grads
from tests.attention_cases import qkv as _inputs

attn_mod = importlib.import_module("jaxfin.kernels.attention")


CASES = {  # tolerance: attention_cases.kernel_tol (float32 ~1e-4 from S, D and the group; bf16 2e-2)
    # name: (dtype, causal, B, S, Hq, Hkv, D, block_q, block_k, segments)
    "f32-causal-gqa4-d64-pad-len200": (jnp.float32, True, 2, 200, 4, 1, 64, 128, 128, "pad"),
    "f32-full-mqa8-d128-docs": (jnp.float32, False, 1, 256, 8, 1, 128, 128, 128, "docs"),
    "bf16-causal-gqa1-d128-docs-len300": (jnp.bfloat16, True, 1, 300, 2, 2, 128, 128, 256, "docs"),
    "bf16-full-gqa2-d64-pad": (jnp.bfloat16, False, 2, 256, 4, 2, 64, 128, 128, "pad"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_forward_and_gradients(name):
    dtype, causal, b, s, hq, hkv, d, bq, bk, segments = CASES[name]
    tol = kernel_tol(dtype, s, d, group=hq // hkv)
    rng = np.random.default_rng(0)
    q, k, v, w = _inputs(1, b, s, hq, hkv, d, dtype)
    seg = case_segments(rng, segments, b, s, lengths=(5, 40))
    if segments == "docs":
        assert seg.max() > 8
    check_against_reference(pallas_tpu_attention, q, k, v, w, seg, causal, tol, block_q=bq, block_k=bk)


def test_defaults_without_segment_ids():
    q, k, v, w = _inputs(2, 1, 128, 2, 2, 64, jnp.float32)
    out, grads = _out_and_grads(pallas_tpu_attention, q, k, v, w)
    ref_out, ref_grads = _out_and_grads(xla_attention, q, k, v, w)
    tol = kernel_tol(jnp.float32, 128, 64)
    _close(out, ref_out, tol, "output")
    for what, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        _close(g, r, tol, what)


def test_block_skipping_counted_by_the_kernel():
    """The forward kernel counts the (q block, k block) pairs it computed: a packed row of block-aligned
    documents visits only the diagonal blocks, the dense causal row the whole lower triangle, and both agree
    with `visited_blocks` (the per-block segment ranges' predicate)."""
    s, blk = 512, 128
    q, k, v, _ = _inputs(4, 1, s, 2, 1, 64, jnp.float32)
    packed = np.repeat(np.arange(1, 5, dtype=np.int32), 128)[None]  # 4 documents of 128 tokens
    shifted = np.concatenate([np.zeros((1, 64), np.int32), packed[:, :-64]], axis=1)  # misaligned, pad first
    for seg, causal, want in ((packed, True, 4), (packed, False, 4), (np.ones_like(packed), True, 10),
                              (np.ones_like(packed), False, 16), (shifted, True, None)):  # fmt: skip
        cnt = visit_counts(q, k, v, segment_ids=jnp.asarray(seg), causal=causal, block_q=blk, block_k=blk)
        vis = visited_blocks(seg, causal, blk, blk)
        assert (cnt == vis.sum(-1)[:, None, :]).all()  # every head visits the same blocks per q block
        if want is not None:
            assert vis.sum() == want
    assert visited_blocks(shifted, True, blk, blk).sum() <= 2 * 4  # misaligned: at most the neighbouring block


def test_skipped_blocks_are_never_read():
    """Block-aligned documents with NaN keys/values in the padding block: computing a skipped block (even fully
    masked) would pull NaN in through 0 * NaN (p @ v); the skipping kernel matches the reference on clean inputs."""
    s = 384
    seg = jnp.asarray(np.repeat(np.array([1, 2, 0], np.int32), 128)[None])
    q, k, v, _ = _inputs(3, 1, s, 2, 2, 64, jnp.float32)
    poisoned = [x.at[:, 256:].set(jnp.nan) for x in (k, v)]
    out = pallas_tpu_attention(q, *poisoned, segment_ids=seg, causal=False)  # not causal: only segments skip
    want = xla_attention(q, k, v, segment_ids=seg, causal=False)
    _close(out, want, kernel_tol(jnp.float32, s, 64, grads=False), "output")


def test_dispatch_selects_the_tpu_kernel_when_asked(monkeypatch):
    from jaxfin.kernels import attention

    assert attn_mod.pallas_kernel() == ("tpu" if jax.default_backend() == "tpu" else "gpu")
    monkeypatch.setattr(attn_mod, "_PALLAS_KERNEL", "tpu")
    calls = []
    real = pallas_tpu_attention

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr("jaxfin.kernels.pallas_tpu.pallas_tpu_attention", spy)
    r = np.random.default_rng(3)
    q = jnp.asarray(r.standard_normal((1, 100, 4, 64)), jnp.float32)
    k = jnp.asarray(r.standard_normal((1, 100, 2, 64)), jnp.float32)
    seg = jnp.asarray(np.repeat([1, 2, 0], [40, 50, 10])[None], jnp.int32)
    got = attention(q, k, k, segment_ids=seg, backend="pallas")
    assert len(calls) == 1
    _close(got, xla_attention(q, k, k, segment_ids=seg), kernel_tol(jnp.float32, 100, 64, grads=False), "output")


@pytest.mark.parametrize(
    "shape_kv, d, bq, bk, match",
    [
        ((1, 128, 3, 64), 64, 128, 128, "multiple of key/value heads"),
        ((1, 128, 2, 36), 36, 128, 128, "head dim"),
        ((1, 128, 2, 192), 192, 128, 128, "head dim"),
        ((1, 128, 2, 64), 64, 64, 128, "block_q"),
        ((1, 128, 2, 64), 64, 128, 200, "block_k"),
    ],
)
def test_rejects_unsupported_shapes(shape_kv, d, bq, bk, match):
    q = jnp.zeros((1, 128, 4, d))
    k = jnp.zeros(shape_kv)
    with pytest.raises(ValueError, match=match):
        pallas_tpu_attention(q, k, k, block_q=bq, block_k=bk)
