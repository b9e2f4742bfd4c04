"""Inputs and checks shared by the attention kernel tests (GPU and TPU Pallas kernels against the XLA reference)."""

import jax
import jax.numpy as jnp
import numpy as np
from tolerances import rounding_tol

# bf16 inputs on both sides, float32 accumulation in the kernels: no growth with the length, but up to 5 chained bf16
# roundings (p, dO, O in delta, dS, the result), each <= u = 2^-8 relative to the max-abs: 5u ~ 2e-2
BF16_TOL = 5 * float(np.finfo(jnp.bfloat16).eps) / 2


def kernel_tol(dtype, s: int, d: int, group: int = 1, grads: bool = True) -> float:
    """A kernel vs the XLA reference, relative to max-abs. float32: 3 chained reductions forward (q.k over d, the
    softmax sum and p.v over s keys), 3 more backward (dp and delta over d, dS, then dq over s keys and dk/dv over
    s queries x group heads)."""
    if dtype == jnp.bfloat16:
        return BF16_TOL
    return rounding_tol(np.float32, max(s * group, d) if grads else max(s, d), depth=6 if grads else 3)


def packed_row(rng, s, lengths=(5, 30), pad_tail=0):
    """A packed row: documents of random lengths numbered 1, 2, ..., then `pad_tail` zeros."""
    seg, doc, pos = np.zeros(s, np.int32), 1, 0
    while pos < s - pad_tail:
        n = int(rng.integers(*lengths))
        seg[pos : min(pos + n, s - pad_tail)] = doc
        pos, doc = pos + n, doc + 1
    return seg


def qkv(seed, b, s, hq, hkv, d, dtype):
    """q, k, v and a random projection w of the output (the gradient's cotangent)."""
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (b, s, hq, d), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (b, s, hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (b, s, hkv, d), jnp.float32).astype(dtype)
    w = jax.random.normal(ks[3], (b, s, hq, d), jnp.float32)
    return q, k, v, w


def out_and_grads(fn, q, k, v, w, **kw):
    def loss(q, k, v):
        out = fn(q, k, v, **kw)
        return jnp.sum(out.astype(jnp.float32) * w), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


def assert_close(got, want, tol, what):
    """max |got - want| <= tol * max |want| (rounding scales with the tensor's magnitude, never a fixed floor)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.isfinite(got).all(), f"{what}: NaN or inf"
    err, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    assert err <= tol * scale, (
        f"{what}: max error {err:.2e} = {err / max(scale, 1e-30):.2e} of max |ref|, over {tol:.1e}"
    )


def case_segments(rng, kind: str, b: int, s: int, lengths=(5, 30)) -> np.ndarray:
    """ "pad": two documents then padding, and every row after the first all padding; "docs": many short
    documents per row, ending in 7 padding tokens."""
    if kind == "pad":
        seg = np.zeros((b, s), np.int32)
        seg[0, : s // 3], seg[0, s // 3 : s - 20] = 1, 2
        return seg
    return np.stack([packed_row(rng, s, lengths, pad_tail=7) for _ in range(b)])


def check_against_reference(kernel, q, k, v, w, seg, causal, tol, zero_pad_grads=("dq", "dk", "dv"), **kw):
    """The kernel's output and q/k/v gradients equal the XLA reference's in float32 on the same (rounded) inputs,
    in the inputs' dtype and shape; padding rows come out exactly zero, as do the named gradients there."""
    from jaxfin.kernels.attention import xla_attention

    args = dict(segment_ids=jnp.asarray(seg), causal=causal)
    out, grads = out_and_grads(kernel, q, k, v, w, **args, **kw)
    ref_out, ref_grads = out_and_grads(xla_attention, *(x.astype(jnp.float32) for x in (q, k, v)), w, **args)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert_close(out, ref_out, tol, "output")
    names = ("dq", "dk", "dv")
    for what, g, r in zip(names, grads, ref_grads):
        assert g.dtype == q.dtype and g.shape == r.shape
        assert_close(g, r, tol, what)
    pad = np.asarray(seg) == 0
    assert (np.asarray(out, np.float32)[pad] == 0).all(), "padding rows must be exactly zero"
    for what in zero_pad_grads:  # padding tokens neither attend nor are attended to
        assert (np.asarray(grads[names.index(what)], np.float32)[pad] == 0).all(), f"padding rows get no {what}"
