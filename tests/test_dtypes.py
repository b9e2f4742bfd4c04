"""Param and compute dtypes: fp32 master weights with bf16 compute, bf16 params, `auto` by backend."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
from tolerances import rounding_tol

from jaxfin.config import ModelConfig
from jaxfin.model import forward, init_params
from jaxfin.model.config import compute_dtype

CFG = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 16)), jnp.int32)


def _dot_dtypes(cfg, params) -> set[str]:
    jaxpr = jax.make_jaxpr(lambda p: forward(p, cfg, TOKENS))(params)
    found = set()

    def walk(j):  # into scan / jit / remat bodies too
        for eqn in j.eqns:
            if eqn.primitive.name == "dot_general":
                found.add(str(eqn.invars[0].aval.dtype))
            for v in eqn.params.values():
                inner = getattr(v, "jaxpr", v)
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jaxpr.jaxpr)
    return found


def test_auto_compute_dtype_follows_the_backend(monkeypatch):
    """`auto` (the documented rule, schema.py): float32 on CPU, bfloat16 on GPU / TPU; explicit names win. Both
    branches are checked on any machine (the backend faked), then the real backend's answer by the same rule."""
    want = {"cpu": jnp.float32, "gpu": jnp.bfloat16, "cuda": jnp.bfloat16, "rocm": jnp.bfloat16, "tpu": jnp.bfloat16}
    assert compute_dtype(CFG) == want[jax.default_backend()]
    for backend, dtype in want.items():
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert compute_dtype(CFG) == dtype, backend
        for name, explicit in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
            assert compute_dtype(dataclasses.replace(CFG, compute_dtype=name)) == explicit, (backend, name)


def test_bf16_compute_with_fp32_master_weights():
    params = init_params(CFG, jax.random.key(0))
    bf = dataclasses.replace(CFG, compute_dtype="bfloat16")
    f32 = dataclasses.replace(CFG, compute_dtype="float32")  # explicit: `auto` is bf16 on an accelerator
    chex.assert_type(jax.tree.leaves(params), jnp.float32)
    assert _dot_dtypes(bf, params) == {"bfloat16"}  # every matmul runs in bf16 ...
    assert _dot_dtypes(f32, params) == {"float32"}
    lo, hi = forward(params, bf, TOKENS), forward(params, f32, TOKENS)
    assert lo.dtype == jnp.float32  # ... logits come back in fp32
    # close, but really computed at lower precision, relative to max |logit|: above float32 rounding (depth 4L over
    # <= F terms), below the worst case of ~16 chained bf16 roundings per layer (norms, projections, rope, softmax,
    # residual adds) + 2 (final norm, LM head), each <= u = 2^-8
    diff, scale = float(jnp.abs(lo - hi).max()), float(jnp.abs(hi).max())
    f32_tol = float(rounding_tol(np.float32, CFG.intermediate_size, depth=4 * CFG.num_layers))  # ~4e-5
    bf16_tol = (16 * CFG.num_layers + 2) * float(np.finfo(jnp.bfloat16).eps) / 2  # ~0.13
    assert f32_tol * scale < diff < bf16_tol * scale


def test_bf16_params_train_step():
    from jaxfin.config import OptimizerConfig
    from jaxfin.train.optimizer import make_optimizer, make_schedule
    from jaxfin.train.step import make_train_step

    cfg = dataclasses.replace(CFG, param_dtype="bfloat16", compute_dtype="bfloat16")
    params = init_params(cfg, jax.random.key(0))
    chex.assert_type(jax.tree.leaves(params), jnp.bfloat16)
    opt_cfg = OptimizerConfig(lr=1e-2, warmup_steps=0)
    opt = make_optimizer(opt_cfg, 10)
    from jaxfin.config.schema import ObjectiveConfig

    step = jax.jit(make_train_step(cfg, ObjectiveConfig(), opt, make_schedule(opt_cfg, 10), micro_batches=2))
    state = {"params": params, "opt_state": opt.init(params), "step": jnp.zeros((), jnp.int32), "rng": jnp.zeros(2)}
    ones = jnp.ones((4, 16), jnp.int32)
    batch = {"tokens": jnp.tile(TOKENS, (2, 1)), "segment_ids": ones, "positions": jnp.tile(jnp.arange(16), (4, 1))}
    batch["loss_mask"] = ones
    new, m = step(state, batch)
    chex.assert_trees_all_equal_shapes_and_dtypes(new["params"], params)  # still bf16, the same tree and shapes
    assert np.isfinite(float(m["loss"])) and int(new["step"]) == 1
    changed = [bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new["params"]))]
    assert all(changed)
