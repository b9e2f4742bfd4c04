"""Attention dispatch and the cuDNN path's math (run through XLA on CPU) against the reference."""

from __future__ import annotations

import importlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.kernels.attention import BACKENDS, attention, xla_attention
from jaxfin.kernels.cudnn import cudnn_attention, segment_mask

attn_mod = importlib.import_module("jaxfin.kernels.attention")  # the package re-exports the function under this name


def _inputs(b=2, s=16, hq=8, hkv=2, d=16, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (b, s, hq, d), jnp.float32)
    k = jax.random.normal(kk, (b, s, hkv, d), jnp.float32)
    v = jax.random.normal(kv, (b, s, hkv, d), jnp.float32)
    seg = np.array([[1] * 5 + [2] * 7 + [0] * 4, [1] * 3 + [2] * 3 + [3] * 9 + [0]], np.int32)[:b, :s]
    return q, k, v, jnp.asarray(seg)


def test_backends_listed():
    assert set(BACKENDS) == {"auto", "xla", "pallas", "cudnn"}


def test_unknown_backend_names_the_choices():
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="choose one of auto, xla, pallas, cudnn"):
        attention(q, k, v, backend="flash")


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cudnn is valid on a GPU")
def test_cudnn_off_gpu_is_a_clear_error():
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="cudnn' needs an NVIDIA GPU.*use xla or pallas"):
        attention(q, k, v, backend="cudnn")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU dispatch")
def test_auto_on_cpu_is_xla_with_a_logged_reason(caplog, monkeypatch):
    monkeypatch.setattr(attn_mod, "_logged", set())
    q, k, v, seg = _inputs()
    with caplog.at_level(logging.INFO, logger="jaxfin"):
        assert attn_mod.resolve_backend(q, k, "auto") == "xla"
        attn_mod.resolve_backend(q, k, "auto")
        out = attention(q, k, v, segment_ids=seg, backend="auto")
    msgs = [r.getMessage() for r in caplog.records if "auto -> xla" in r.getMessage()]
    assert len(msgs) == 1 and "cpu" in msgs[0]  # logged once per reason
    np.testing.assert_array_equal(out, xla_attention(q, k, v, segment_ids=seg))


def test_segment_mask_by_hand():
    seg = jnp.array([[1, 1, 2, 0]])
    want = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(segment_mask(seg, causal=True)[0, 0], want)
    want_nc = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(segment_mask(seg, causal=False)[0, 0], want_nc)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("packed", [True, False])
def test_cudnn_path_math_matches_reference(causal, packed):
    q, k, v, seg = _inputs()
    seg = seg if packed else None

    def loss(fn, q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out * jnp.cos(out)), out

    ref = lambda q, k, v: xla_attention(q, k, v, segment_ids=seg, causal=causal)  # noqa: E731
    got = lambda q, k, v: cudnn_attention(  # noqa: E731
        q, k, v, segment_ids=seg, causal=causal, sm_scale=None, implementation="xla"
    )
    (lr, out_r), g_r = jax.value_and_grad(lambda *a: loss(ref, *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    (lg, out_g), g_g = jax.value_and_grad(lambda *a: loss(got, *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    # two float32 programs, relative to max-abs: 3 chained reductions forward (q.k over D, softmax and p.v over S), 3
    # more backward, dk/dv summing S queries x 4 query heads per K/V head
    s, d, group = q.shape[1], q.shape[3], q.shape[2] // k.shape[2]
    assert_close_to_scale(out_g, out_r, rounding_tol(np.float32, max(s, d), depth=3))  # ~9e-6
    for a, b in zip(g_g, g_r, strict=True):
        assert np.all(np.isfinite(a))
        assert_close_to_scale(a, b, rounding_tol(np.float32, max(s * group, d), depth=6))  # ~3e-5
    if packed:  # padding rows are exactly zero, and get no gradient
        pad = np.asarray(seg) == 0
        assert np.all(np.asarray(out_g)[pad] == 0)
        assert np.all(np.asarray(g_g[0])[pad] == 0)


def test_model_config_accepts_the_backends_and_rejects_junk():
    from jaxfin.config import ConfigError
    from jaxfin.config.schema import ModelConfig
    from jaxfin.config.validate import validate_model_config

    validate_model_config(ModelConfig(attention_backend="cudnn"))
    validate_model_config(ModelConfig(attention_backend="pallas"))
    with pytest.raises(ConfigError, match="attention_backend"):
        validate_model_config(ModelConfig(attention_backend="flash"))


def test_bench_attention_cli_end_to_end(capsys):
    import json

    from jaxfin.bench.attention import attention_flops
    from jaxfin.cli import main

    args = "bench attention --json --seq-lens 64 --backends xla --heads 4 --kv-heads 2 --head-dim 32"
    assert main([*args.split(), "--batch-tokens", "128", "--doc-len", "16", "--iters", "2"]) in (0, None)
    r = json.loads(capsys.readouterr().out)
    assert r["benchmark"] == "attention" and r["device"] and r["jax"] == jax.__version__
    assert [row["layout"] for row in r["results"]] == ["dense", "packed"]
    assert attention_flops(2, 64, 4, 32) == 4 * 2 * 4 * 64 * 64 * 32 / 2
    for row in r["results"]:
        x = row["backends"]["xla"]
        assert x["fwd_tflops"] > 0 and x["fwd_bwd_tflops"] > 0
