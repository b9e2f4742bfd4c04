"""The XLA reference attention against an independent numpy oracle (GQA/MQA, causal, segment ids, padding)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.kernels import attention

B, S, D = 2, 8, 8
# row 0: three documents then padding; row 1: two documents filling the row
SEGMENTS = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 2, 2, 2]], np.int32)
# float32 vs float64 or another float32 program, relative to max-abs: the output is 3 chained reductions (q.k over D,
# the softmax sum and p.v over S); gradients 3 more, dk/dv summing S queries x up to 4 query heads per K/V head
OUT_TOL = float(rounding_tol(np.float32, max(S, D), depth=3))  # ~6e-6
GRAD_TOL = float(rounding_tol(np.float32, 4 * S, depth=6))  # ~2.4e-5


def ref_attention(q, k, v, segment_ids, causal, sm_scale=None):
    """Loop over batch and query heads, K/V head = h // (Hq/Hkv), explicit mask, float64 softmax."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, s, hq, d = q.shape
    hkv = k.shape[2]
    group = hq // hkv
    scale = 1.0 / np.sqrt(d) if sm_scale is None else sm_scale
    out = np.zeros((b, s, hq, d))
    for bi in range(b):
        # allowed[i, j]: may query i see key j?
        allowed = np.ones((s, s), bool)
        for i in range(s):
            for j in range(s):
                if causal and j > i:
                    allowed[i, j] = False
                if segment_ids is not None:
                    si, sj = segment_ids[bi, i], segment_ids[bi, j]
                    if si == 0 or si != sj:
                        allowed[i, j] = False
        for h in range(hq):
            kh = h // group
            for i in range(s):
                if not allowed[i].any():
                    continue  # nothing to attend to: output stays zero
                scores = q[bi, i, h] @ k[bi, :, kh].T * scale
                scores = np.where(allowed[i], scores, -np.inf)
                p = np.exp(scores - scores[allowed[i]].max())
                p = np.where(allowed[i], p, 0.0)
                p /= p.sum()
                out[bi, i, h] = p @ v[bi, :, kh]
    return out


def repeat_kv_attention(q, k, v, segment_ids, causal, sm_scale=None):
    """A second, differently written jnp implementation: K/V repeated per query head, finite mask value."""
    b, s, hq, d = q.shape
    group = hq // k.shape[2]
    k = jnp.repeat(k, group, axis=2)
    v = jnp.repeat(v, group, axis=2)
    scale = 1.0 / np.sqrt(d) if sm_scale is None else sm_scale
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    i = jnp.arange(s)
    allowed = jnp.ones((b, s, s), bool)
    if causal:
        allowed = allowed & (i[None, :, None] >= i[None, None, :])
    if segment_ids is not None:
        seg = jnp.asarray(segment_ids)
        allowed = allowed & (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] != 0)
    allowed = allowed[:, None]
    p = jax.nn.softmax(jnp.where(allowed, scores, -1e30), axis=-1)
    p = jnp.where(allowed, p, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def _qkv(hq, hkv, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, S, hq, D)).astype(np.float32)
    k = rng.standard_normal((B, S, hkv, D)).astype(np.float32)
    v = rng.standard_normal((B, S, hkv, D)).astype(np.float32)
    return q, k, v


HEADS = [pytest.param(4, 4, id="mha"), pytest.param(4, 2, id="gqa"), pytest.param(4, 1, id="mqa")]

# jit so that each shape compiles once instead of op by op (CPU compile time dominates these tests)
attn = jax.jit(attention, static_argnames=("causal", "sm_scale", "backend"))


@pytest.mark.parametrize("hq, hkv", HEADS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_matches_numpy_oracle_with_segments(hq, hkv, causal):
    q, k, v = _qkv(hq, hkv)
    out = attn(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), segment_ids=jnp.asarray(SEGMENTS), causal=causal, backend="xla"
    )
    assert out.shape == q.shape and out.dtype == jnp.float32
    assert_close_to_scale(out, ref_attention(q, k, v, SEGMENTS, causal), OUT_TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_matches_numpy_oracle_without_segments(causal):
    q, k, v = _qkv(4, 2)
    out = attn(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), causal=causal, backend="xla")
    assert_close_to_scale(out, ref_attention(q, k, v, None, causal), OUT_TOL)


def test_custom_sm_scale():
    q, k, v = _qkv(4, 2, seed=1)
    out = attn(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), segment_ids=jnp.asarray(SEGMENTS), sm_scale=0.9, backend="xla"
    )
    want = ref_attention(q, k, v, SEGMENTS, causal=True, sm_scale=0.9)
    assert_close_to_scale(out, want, OUT_TOL)
    # and the scale really matters (0.9 is far from 1/sqrt(8))
    default = ref_attention(q, k, v, SEGMENTS, causal=True)
    assert np.abs(want - default).max() > 1e-2


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_padding_rows_are_exact_zeros_and_finite(causal):
    q, k, v = _qkv(4, 2, seed=2)
    q[0, 6:] *= 1e3  # padding queries with large values must still give zeros, not NaN
    out = np.asarray(
        attn(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), segment_ids=jnp.asarray(SEGMENTS), causal=causal)
    )
    assert np.isfinite(out).all()
    pad = SEGMENTS == 0
    assert (out[pad] == 0.0).all()
    assert np.abs(out[~pad]).sum(axis=-1).min() > 0


def test_all_padding_row():
    q, k, v = _qkv(4, 2, seed=3)
    seg = SEGMENTS.copy()
    seg[1] = 0
    out = np.asarray(attn(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), segment_ids=jnp.asarray(seg)))
    assert np.isfinite(out).all()
    assert (out[1] == 0.0).all()
    assert_close_to_scale(out[0], ref_attention(q, k, v, seg, True)[0], OUT_TOL)


@pytest.mark.parametrize(
    "hq, hkv, causal",
    [
        pytest.param(4, 4, True, id="mha-causal"),
        pytest.param(4, 2, False, id="gqa-bidir"),
        pytest.param(4, 1, True, id="mqa-causal"),
    ],
)
def test_gradients_match_repeat_kv_implementation(hq, hkv, causal):
    q, k, v = (jnp.asarray(x) for x in _qkv(hq, hkv, seed=4))
    seg = jnp.asarray(SEGMENTS)
    proj = jnp.asarray(np.random.default_rng(5).standard_normal((B, S, hq, D)).astype(np.float32))

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * proj)

    @jax.jit
    def both(q, k, v):
        got = jax.grad(loss(lambda q, k, v: attention(q, k, v, segment_ids=seg, causal=causal)), argnums=(0, 1, 2))
        want = jax.grad(loss(lambda q, k, v: repeat_kv_attention(q, k, v, seg, causal)), argnums=(0, 1, 2))
        return got(q, k, v), want(q, k, v)

    got, want = both(q, k, v)
    for g, w, name in zip(got, want, "qkv"):
        assert np.isfinite(np.asarray(g)).all(), name
        assert_close_to_scale(g, w, GRAD_TOL, err_msg=name)
    # padding queries get no gradient, padding keys/values get none either
    pad = SEGMENTS == 0
    assert (np.asarray(got[0])[pad] == 0).all()
    assert (np.asarray(got[1])[pad] == 0).all() and (np.asarray(got[2])[pad] == 0).all()


def test_gradients_match_finite_differences_of_numpy_oracle():
    hq, hkv = 4, 2
    q, k, v = _qkv(hq, hkv, seed=6)
    proj = np.random.default_rng(7).standard_normal((B, S, hq, D))

    def f64(q, k, v):
        return float((ref_attention(q, k, v, SEGMENTS, True) * proj).sum())

    grads = jax.jit(
        jax.grad(
            lambda q, k, v: jnp.sum(
                attention(q, k, v, segment_ids=jnp.asarray(SEGMENTS)) * jnp.asarray(proj, jnp.float32)
            ),
            argnums=(0, 1, 2),
        )
    )(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    rng = np.random.default_rng(8)
    eps = 1e-4  # float64 central differences: truncation ~eps^2 (measured <= 2e-10 of max |grad|), negligible here
    for which in range(3):
        arrs = [q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)]
        scale = float(np.abs(np.asarray(grads[which])).max())  # the float32 gradient's rounding scales with this
        for _ in range(4):
            idx = tuple(rng.integers(0, n) for n in arrs[which].shape)
            idx = (0, min(idx[1], 5)) + idx[2:]  # row 0, a non-padding position
            plus = [a.copy() for a in arrs]
            minus = [a.copy() for a in arrs]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            fd = (f64(*plus) - f64(*minus)) / (2 * eps)
            assert float(grads[which][idx]) == pytest.approx(fd, rel=GRAD_TOL, abs=GRAD_TOL * scale), (which, idx)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_no_attention_across_segments(causal):
    q, k, v = _qkv(4, 2, seed=9)
    seg = jnp.asarray(SEGMENTS)
    base = np.asarray(attn(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), segment_ids=seg, causal=causal))
    k2, v2 = k.copy(), v.copy()
    doc2 = SEGMENTS[0] == 2  # row 0, positions 3..4
    k2[0, doc2] += 5.0
    v2[0, doc2] = np.random.default_rng(10).standard_normal(v2[0, doc2].shape) * 10
    # also change the K/V of row 0's padding
    k2[0, SEGMENTS[0] == 0] = 100.0
    v2[0, SEGMENTS[0] == 0] = 100.0
    out = np.asarray(attn(jnp.asarray(q), jnp.asarray(k2), jnp.asarray(v2), segment_ids=seg, causal=causal))
    others = SEGMENTS[0] != 2
    np.testing.assert_array_equal(out[0, others], base[0, others])  # docs 1 and 3 (and padding) untouched
    np.testing.assert_array_equal(out[1], base[1])  # the other row untouched
    assert np.abs(out[0, doc2] - base[0, doc2]).max() > 1e-2  # the test would see a change


def test_auto_backend_equals_xla():
    q, k, v = (jnp.asarray(x) for x in _qkv(4, 2, seed=11))
    seg = jnp.asarray(SEGMENTS)
    a = attn(q, k, v, segment_ids=seg, backend="auto")
    x = attn(q, k, v, segment_ids=seg, backend="xla")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(x))


def test_unknown_backend_raises():
    q, k, v = (jnp.asarray(x) for x in _qkv(4, 2))
    with pytest.raises(ValueError, match="no-such-backend"):
        attention(q, k, v, backend="no-such-backend")


def test_heads_not_a_multiple_raises():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((1, 4, 3, D)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1, 4, 2, D)), jnp.float32)
    with pytest.raises(ValueError):
        attention(q, k, k, backend="xla")
