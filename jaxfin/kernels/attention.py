"""The one attention function. Every backend must match the `xla` reference, segment ids included.

Shapes: q [B, S, Hq, D]; k, v [B, S, Hkv, D] with Hq a multiple of Hkv (GQA/MQA: K/V are never repeated in
memory, query heads are grouped instead); segment_ids [B, S] int, 0 = padding. A query attends to a key only
inside the same non-zero segment (and, if causal, at or before its own position). Rows with nothing to attend
to (padding) return zeros.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from jaxfin.config.choices import ATTENTION_BACKENDS
from jaxfin.parallel.mesh import target_platform
from jaxfin.parallel.rules import spec

BACKENDS = ATTENTION_BACKENDS  # pallas: interpret mode on CPU; not chosen by auto until GPU-tested

# Which Pallas kernel backend="pallas" runs: None = by platform (TPU -> the Mosaic TPU kernel, else the Triton GPU
# kernel, interpreted on CPU); "tpu" / "gpu" force one (tests use "tpu" to run the TPU kernel interpreted on CPU).
_PALLAS_KERNEL: str | None = None

_log = logging.getLogger("jaxfin")
_logged: set[str] = set()


def _log_once(reason: str) -> None:
    if reason not in _logged:
        _logged.add(reason)
        _log.info(reason)


def resolve_backend(q, k, backend: str = "auto") -> str:
    """The concrete backend `attention` runs for these inputs ("auto" resolved; fallbacks logged once)."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend '{backend}' is not available; choose one of {', '.join(BACKENDS)}")
    platform = target_platform()
    if backend == "cudnn" and platform != "gpu":
        raise ValueError(f"attention backend 'cudnn' needs an NVIDIA GPU (this is {platform}); use xla or pallas")
    if backend != "auto":
        return backend
    if platform != "gpu":
        _log_once(f"attention backend auto -> xla: no fused kernel for platform '{platform}' yet")
        return "xla"
    if q.dtype in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    _log_once(f"attention backend auto -> xla: cuDNN needs bfloat16/float16 (got {q.dtype})")
    return "xla"


def pallas_kernel() -> str:
    """The Pallas kernel behind backend="pallas": "tpu" on a TPU, else "gpu" (interpreted on CPU)."""
    if _PALLAS_KERNEL is not None:
        return _PALLAS_KERNEL
    return "tpu" if target_platform() == "tpu" else "gpu"


def attention(q, k, v, *, segment_ids=None, causal: bool = True, sm_scale: float | None = None, backend="auto"):
    """q [B, S, Hq, D], k/v [B, S, Hkv, D] -> [B, S, Hq, D]; see the module docstring for the masking rules."""
    name = resolve_backend(q, k, backend)
    if name == "pallas":
        return _per_device(_pallas, q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
    if name == "cudnn":
        from jaxfin.kernels.cudnn import cudnn_attention

        return cudnn_attention(q, k, v, segment_ids=segment_ids, causal=causal, sm_scale=sm_scale)
    return xla_attention(q, k, v, segment_ids=segment_ids, causal=causal, sm_scale=sm_scale)


def _pallas(q, k, v, segment_ids, *, causal, sm_scale):
    if pallas_kernel() == "tpu":
        from jaxfin.kernels.pallas_tpu import pallas_tpu_attention

        return pallas_tpu_attention(q, k, v, segment_ids=segment_ids, causal=causal, sm_scale=sm_scale)
    from jaxfin.kernels.pallas_gpu import pallas_attention

    return pallas_attention(q, k, v, segment_ids=segment_ids, causal=causal, sm_scale=sm_scale)


def _per_device(kernel, q, k, v, segment_ids, **kw):
    """A Pallas kernel is one device's program (XLA cannot partition a Mosaic / Triton custom call): on a mesh of
    several devices it runs inside shard_map, each device on its rows (the batch axes) and its heads (`tensor`),
    which is exactly how the activations are laid out, so no data moves. GQA stays local: a device holds query
    heads [i*Hq/t, (i+1)*Hq/t) and their kv heads [i*Hkv/t, (i+1)*Hkv/t)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return kernel(q, k, v, segment_ids, **kw)
    if segment_ids is None:
        segment_ids = jnp.ones(q.shape[:2], jnp.int32)
    qs, kvs = spec(("batch", "seq", "heads", "head_dim")), spec(("batch", "seq", "kv_heads", "head_dim"))
    run = jax.shard_map(lambda *a: kernel(*a, **kw), in_specs=(qs, kvs, kvs, spec(("batch", "seq"))), out_specs=qs,
                        check_vma=False)  # fmt: skip
    return run(q, k, v, segment_ids)


def attention_mask(segment_ids, seq_len: int, batch: int, causal: bool):
    """Boolean [B, S, S] (query, key) mask."""
    mask = jnp.ones((batch, seq_len, seq_len), bool)
    if causal:
        mask = mask & jnp.tril(jnp.ones((seq_len, seq_len), bool))[None]
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = mask & same & (segment_ids != 0)[:, :, None]
    return mask


def xla_attention(q, k, v, *, segment_ids=None, causal=True, sm_scale=None):
    """Reference: softmax in float32 (or the inputs' wider dtype), grouped-query einsum, masked rows -> 0."""
    b, s, hq, d = q.shape
    hkv = k.shape[2]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    scale = d**-0.5 if sm_scale is None else sm_scale
    qg = q.reshape(b, s, hkv, hq // hkv, d)
    acc = jnp.promote_types(q.dtype, jnp.float32)
    scores = jnp.einsum("bskgd,btkd->bkgst", qg, k, preferred_element_type=acc) * scale
    mask = attention_mask(segment_ids, s, b, causal)[:, None, None]
    scores = jnp.where(mask, scores, -jnp.inf)
    row_max = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    probs = jnp.exp(scores - jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    denom = jnp.sum(probs, axis=-1, keepdims=True)
    probs = probs / jnp.where(denom == 0, 1.0, denom)
    out = jnp.einsum("bkgst,btkd->bskgd", probs.astype(v.dtype), v, preferred_element_type=acc)
    return out.reshape(b, s, hq, d).astype(q.dtype)


__all__ = ["BACKENDS", "attention", "attention_mask", "pallas_kernel", "resolve_backend", "xla_attention"]
