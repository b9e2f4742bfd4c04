"""Inputs and checks shared by the attention kernel tests (GPU and TPU Pallas kernels against the XLA reference)."""

import jax
import jax.numpy as jnp
import numpy as np


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
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.isfinite(got).all(), f"{what}: NaN or inf"
    err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    assert err < tol, f"{what}: max error {err:.2e} (relative to max |ref| when > 1) exceeds {tol:.0e}"
