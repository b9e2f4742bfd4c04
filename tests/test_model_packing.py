"""The Llama forward on packed rows, layer scan/loop/remat equivalence, tied embeddings, biases, init and RoPE."""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.config.schema import ModelConfig, RopeScaling
from jaxfin.model import forward, hidden_states, init_params, param_shapes
from jaxfin.model.llama import apply_rope, rope_frequencies, rope_tables

CFG = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)
LEN_A, LEN_B, S = 5, 4, 12  # packed row: doc A, doc B, 3 padding tokens
U32 = float(np.finfo(np.float32).eps) / 2
# Two float32 forwards of the same tokens in different layouts (packed vs alone, other shapes): 4 reductions a layer
# of <= F terms, relative to max |logit| (~4e-5; measured 4.6e-7). A leak across documents moves logits by O(1).
FWD_TOL = rounding_tol(np.float32, CFG.intermediate_size, depth=4 * CFG.num_layers)


def _random_params(cfg, seed=0):
    """Random weights of the documented shapes, large enough that logits differ visibly (numpy: no compiles)."""
    rng = np.random.default_rng(seed)
    leaves, tdef = jax.tree.flatten_with_path(param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    out = []
    for path, shape in leaves:
        if path[-1].key == "scale":
            out.append(1.0 + 0.1 * rng.standard_normal(shape))
        else:
            out.append(0.2 * rng.standard_normal(shape))
    return jax.tree.unflatten(tdef, [jnp.asarray(x, jnp.float32) for x in out])


@pytest.fixture(scope="module")
def params():
    return _random_params(CFG)


def _packed():
    rng = np.random.default_rng(0)
    doc_a = rng.integers(1, CFG.vocab_size, LEN_A)
    doc_b = rng.integers(1, CFG.vocab_size, LEN_B)
    pad = S - LEN_A - LEN_B
    tokens = np.concatenate([doc_a, doc_b, np.zeros(pad, int)])[None].astype(np.int32)
    seg = np.array([[1] * LEN_A + [2] * LEN_B + [0] * pad], np.int32)
    pos = np.array([list(range(LEN_A)) + list(range(LEN_B)) + [0] * pad], np.int32)
    return doc_a, doc_b, tokens, seg, pos


def _fwd(cfg):
    return jax.jit(lambda p, t, s, q: forward(p, cfg, t, s, q))


FWD = _fwd(CFG)  # one jitted forward shared by the tests (CPU compiles dominate their time)


def test_packed_row_equals_documents_run_alone(params):
    doc_a, doc_b, tokens, seg, pos = _packed()
    packed = np.asarray(FWD(params, jnp.asarray(tokens), jnp.asarray(seg), jnp.asarray(pos)))
    assert packed.shape == (1, S, CFG.vocab_size) and packed.dtype == np.float32
    assert np.isfinite(packed).all()  # padding rows included

    # Oracle: each document alone from position 0, no segment ids: forward(params, cfg, doc[None]). Both docs go
    # in one call (one compile): doc B is followed by a filler token that, by causality, cannot change its logits.
    alone = np.stack([doc_a, np.concatenate([doc_b, [7] * (LEN_A - LEN_B)])]).astype(np.int32)
    alone_logits = np.asarray(jax.jit(lambda p, t: forward(p, CFG, t))(params, jnp.asarray(alone)))
    want_a, want_b = alone_logits[0], alone_logits[1, :LEN_B]
    assert_close_to_scale(packed[0, :LEN_A], want_a, FWD_TOL)
    assert_close_to_scale(packed[0, LEN_A : LEN_A + LEN_B], want_b, FWD_TOL)

    # the comparison is discriminating: with one segment for the whole row, doc B would see doc A
    no_seg = np.asarray(FWD(params, jnp.asarray(tokens), jnp.ones_like(jnp.asarray(seg)), jnp.asarray(pos)))
    assert np.abs(no_seg[0, LEN_A : LEN_A + LEN_B] - want_b).max() > 1e-3


def test_rope_makes_logits_depend_on_relative_positions_only(params):
    _, _, tokens, _, _ = _packed()
    seg = jnp.ones((1, S), jnp.int32)
    base = np.asarray(FWD(params, jnp.asarray(tokens), seg, jnp.arange(S)[None]))
    shifted = np.asarray(FWD(params, jnp.asarray(tokens), seg, jnp.arange(S)[None] + 13))
    # Exact in real arithmetic; in float32 the angles (up to S + 12 rad) round differently at the shifted positions:
    # ~2 (S + 13) u in each rotated q and k of each layer, on top of the forward's own rounding (measured: 8.3e-7).
    assert_close_to_scale(shifted, base, FWD_TOL + 4 * CFG.num_layers * (S + 13) * U32)


def _grads_and_logits(cfg, params, tokens, seg, pos, proj):
    def f(p):
        logits = forward(p, cfg, tokens, seg, pos)
        return jnp.sum(logits * proj), logits

    return jax.jit(jax.grad(f, has_aux=True))(params)


def _scan_loop_remat(cfg, params):
    _, _, tokens, seg, pos = (jnp.asarray(x) for x in _packed())
    proj = jnp.asarray(np.random.default_rng(1).standard_normal((1, S, cfg.vocab_size)), params["norm"]["scale"].dtype)
    return [
        _grads_and_logits(c, params, tokens, seg, pos, proj)
        for c in (cfg, dataclasses.replace(cfg, scan_layers=False), dataclasses.replace(cfg, remat="full"))
    ]


def test_scan_loop_and_remat_are_one_program_in_float64(params):
    """Program structure without float32 rounding: in float64 the three layouts agree to float64 rounding, so
    any float32 difference between them (the next test) is rounding, not a wrong layer index or a lost term."""
    cfg = dataclasses.replace(CFG, param_dtype="float64", compute_dtype="float64")
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), params)
        (g_scan, l_scan), *others = _scan_loop_remat(cfg, p64)
        assert l_scan.dtype == jnp.float64  # no float32 cast left inside the model
        tol = rounding_tol(np.float64, S * CFG.hidden_size, depth=4 * CFG.num_layers)  # ~6e-13
        for g, logits in others:
            assert_close_to_scale(logits, l_scan, tol)
            for (path, a), b in zip(jax.tree.leaves_with_path(g_scan), jax.tree.leaves(g)):
                assert_close_to_scale(b, a, tol, err_msg=str(path))
    gq = np.asarray(g_scan["layers"]["self_attn"]["q_proj"]["kernel"])  # each layer gets its own gradient
    assert np.abs(gq[0]).max() > 0 and np.abs(gq[1]).max() > 0 and not np.allclose(gq[0], gq[1])


def test_scan_loop_and_remat_agree(params):
    """float32: the three layouts agree within float32 rounding of depth ~4L reductions of up to S*D terms (the
    embedding gradient sums over tokens), relative to each tensor's max-abs (cancelled entries keep its error);
    each is as close to the float64 result, which shows that bound is the rounding there is."""
    (g_scan, l_scan), *others = _scan_loop_remat(CFG, params)
    tol = rounding_tol(np.float32, S * CFG.hidden_size, depth=4 * CFG.num_layers)  # ~1.1e-4
    with jax.enable_x64(True):
        cfg64 = dataclasses.replace(CFG, param_dtype="float64", compute_dtype="float64")
        p64 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), params)
        g64, l64 = _scan_loop_remat(cfg64, p64)[0]
        g64, l64 = jax.tree.map(np.asarray, g64), np.asarray(l64)
    for g, logits in [(g_scan, l_scan), *others]:
        assert jax.tree.structure(g) == jax.tree.structure(g_scan)
        assert_close_to_scale(logits, l_scan, tol)
        assert_close_to_scale(logits, l64, tol)
        for (path, a), b, c in zip(jax.tree.leaves_with_path(g_scan), jax.tree.leaves(g), jax.tree.leaves(g64)):
            assert_close_to_scale(b, a, tol, err_msg=str(path))
            assert_close_to_scale(b, c, tol, err_msg=f"{path} vs float64")


def _init_shapes(cfg):
    """Shapes of init_params' pytree without running it (eval_shape traces, compiles nothing)."""
    return jax.tree.map(lambda x: tuple(x.shape), jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0)))


def test_tied_embeddings():
    cfg = dataclasses.replace(CFG, tie_embeddings=True)
    shapes = _init_shapes(cfg)
    assert "lm_head" not in shapes
    assert set(shapes) == {"embed_tokens", "layers", "norm"}
    p = _random_params(cfg, seed=3)
    _, _, tokens, seg, pos = (jnp.asarray(x) for x in _packed())

    @jax.jit
    def run(p):
        return forward(p, cfg, tokens, seg, pos), hidden_states(p, cfg, tokens, seg, pos)

    logits, h = run(p)
    want = np.asarray(h, np.float64) @ np.asarray(p["embed_tokens"]["embedding"], np.float64).T
    # the hidden states may be computed twice in one program (if XLA does not CSE them), then one GEMM of D terms
    # (measured 9e-8 of max |logit|); an untied head gives O(1) differences
    tol = rounding_tol(np.float32, max(cfg.intermediate_size, cfg.hidden_size), depth=4 * cfg.num_layers + 1)
    assert_close_to_scale(np.asarray(logits), want, tol)


def test_attention_bias_leaves():
    cfg = dataclasses.replace(CFG, attention_bias=True)
    attn = _init_shapes(cfg)["layers"]["self_attn"]
    L, dh = CFG.num_layers, CFG.head_size
    assert attn["q_proj"]["bias"] == (L, CFG.num_heads, dh)
    assert attn["k_proj"]["bias"] == (L, CFG.num_kv_heads, dh)
    assert attn["v_proj"]["bias"] == (L, CFG.num_kv_heads, dh)
    assert "bias" not in attn["o_proj"]
    plain = _init_shapes(CFG)["layers"]["self_attn"]
    assert all("bias" not in plain[n] for n in ("q_proj", "k_proj", "v_proj", "o_proj"))  # the default has none

    _, _, tokens, seg, pos = (jnp.asarray(x) for x in _packed())
    big = _random_params(cfg, seed=1)
    zero_bias = jax.tree.map_with_path(lambda path, w: jnp.zeros_like(w) if path[-1].key == "bias" else w, big)
    no_bias = jax.tree.map(lambda x: x, zero_bias)
    for name in ("q_proj", "k_proj", "v_proj"):
        del no_bias["layers"]["self_attn"][name]["bias"]
    with_b = _fwd(cfg)
    l_zero = np.asarray(with_b(zero_bias, tokens, seg, pos))
    l_none = np.asarray(FWD(no_bias, tokens, seg, pos))
    np.testing.assert_allclose(l_zero, l_none, rtol=1e-6, atol=1e-6)  # zero bias == no bias
    for name in ("q_proj", "k_proj", "v_proj"):  # each bias is used
        one = jax.tree.map(lambda x: x, zero_bias)
        one["layers"]["self_attn"][name]["bias"] = jnp.full_like(zero_bias["layers"]["self_attn"][name]["bias"], 0.5)
        one["layers"]["self_attn"][name]["bias"] = one["layers"]["self_attn"][name]["bias"].at[:, 0].set(-1.0)
        changed = np.asarray(with_b(one, tokens, seg, pos))
        assert np.abs(changed - l_zero)[0, : LEN_A + LEN_B].max() > 1e-3, name


def test_param_shapes_match_documented_layout():
    V, D, L, F, Hq, Hkv, Dh = 97, 32, 2, 48, 4, 2, 8
    want = {
        "embed_tokens": {"embedding": (V, D)},
        "layers": {
            "input_layernorm": {"scale": (L, D)},
            "self_attn": {
                "q_proj": {"kernel": (L, D, Hq, Dh)},
                "k_proj": {"kernel": (L, D, Hkv, Dh)},
                "v_proj": {"kernel": (L, D, Hkv, Dh)},
                "o_proj": {"kernel": (L, Hq, Dh, D)},
            },
            "post_attention_layernorm": {"scale": (L, D)},
            "mlp": {
                "gate_proj": {"kernel": (L, D, F)},
                "up_proj": {"kernel": (L, D, F)},
                "down_proj": {"kernel": (L, F, D)},
            },
        },
        "norm": {"scale": (D,)},
        "lm_head": {"kernel": (D, V)},
    }
    assert _init_shapes(CFG) == want
    abstract = jax.eval_shape(lambda k: init_params(CFG, k), jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract))


def test_init_values():
    cfg = dataclasses.replace(CFG, init_std=0.05, attention_bias=True)
    # rbg keys: same init code, ~4x less CPU compile time than threefry (one compile per leaf shape)
    key = jax.random.key(7, impl="rbg")
    p = init_params(cfg, key)
    for name in ("q_proj", "k_proj", "v_proj"):
        assert (np.asarray(p["layers"]["self_attn"][name]["bias"]) == 0).all()
    for scale in (
        p["norm"]["scale"],
        p["layers"]["input_layernorm"]["scale"],
        p["layers"]["post_attention_layernorm"]["scale"],
    ):
        assert (np.asarray(scale) == 1.0).all()
    out_std = 0.05 / math.sqrt(2 * cfg.num_layers)
    la, mlp = p["layers"]["self_attn"], p["layers"]["mlp"]
    expected = {
        "embedding": (p["embed_tokens"]["embedding"], 0.05),
        "lm_head": (p["lm_head"]["kernel"], 0.05),
        "q": (la["q_proj"]["kernel"], 0.05),
        "k": (la["k_proj"]["kernel"], 0.05),
        "v": (la["v_proj"]["kernel"], 0.05),
        "gate": (mlp["gate_proj"]["kernel"], 0.05),
        "up": (mlp["up_proj"]["kernel"], 0.05),
        "o": (la["o_proj"]["kernel"], out_std),
        "down": (mlp["down_proj"]["kernel"], out_std),
    }
    for name, (w, std) in expected.items():
        w = np.asarray(w, np.float64)
        assert abs(w.std() - std) < 0.12 * std, (name, w.std(), std)
        assert abs(w.mean()) < 4 * std / math.sqrt(w.size), name
    # independent draws per leaf (and per layer)
    assert not np.allclose(np.asarray(mlp["gate_proj"]["kernel"]), np.asarray(mlp["up_proj"]["kernel"]))
    assert not np.allclose(np.asarray(la["k_proj"]["kernel"]), np.asarray(la["v_proj"]["kernel"]))
    q = np.asarray(la["q_proj"]["kernel"])
    assert not np.allclose(q[0], q[1])
    # deterministic in the key
    chex.assert_trees_all_equal(init_params(cfg, jax.random.key(7, impl="rbg")), p)


def _llama3_inv_freq_numpy(theta, head_dim, factor, low, high, orig):
    """Llama 3.1 RoPE scaling, written out from its published description, in float64."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    low_wavelen, high_wavelen = orig / low, orig / high
    out = np.empty_like(inv)
    kinds = []
    for i, f in enumerate(inv):
        wavelen = 2 * math.pi / f
        if wavelen > low_wavelen:
            out[i] = f / factor
            kinds.append("low")
        elif wavelen < high_wavelen:
            out[i] = f
            kinds.append("high")
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out[i] = (1 - smooth) * f / factor + smooth * f
            kinds.append("mid")
    return out, kinds


def test_llama3_rope_frequencies():
    cfg = ModelConfig(
        hidden_size=64 * 4,
        num_heads=4,
        num_kv_heads=4,
        head_dim=64,
        rope_theta=500000.0,
        rope_scaling=RopeScaling(
            type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
        ),
    )
    want, kinds = _llama3_inv_freq_numpy(500000.0, 64, 8.0, 1.0, 4.0, 8192)
    assert {"low", "mid", "high"} <= set(kinds)  # the case exercises all three branches
    got = np.asarray(jax.jit(lambda: rope_frequencies(cfg))(), np.float64)
    assert got.shape == (32,)
    # float32 theta ** (2i / Dh) = exp(2i / Dh * ln theta): its argument's rounding (|arg| <= ln theta) and a few ops
    # each of u, entry by entry (measured: 1.0 eps)
    freq_rtol = (math.log(500000.0) + 8) * U32  # ~1.2e-6
    np.testing.assert_allclose(got, want, rtol=freq_rtol)
    # the default type is plain RoPE
    plain_cfg = dataclasses.replace(cfg, rope_scaling=RopeScaling())
    plain = np.asarray(jax.jit(lambda: rope_frequencies(plain_cfg))(), np.float64)
    np.testing.assert_allclose(plain, 1.0 / 500000.0 ** (np.arange(0, 64, 2) / 64), rtol=freq_rtol)


def test_apply_rope_is_rotate_half_rotation():
    """HF's rotate-half layout: pair (x[i], x[i + Dh/2]) is rotated by angle position * inv_freq[i]."""
    rng = np.random.default_rng(0)
    b, s, h, dh = 2, 5, 3, 8
    x = rng.standard_normal((b, s, h, dh)).astype(np.float32)
    pos = rng.integers(0, 50, (b, s)).astype(np.int32)
    inv = 1.0 / 10000.0 ** (np.arange(0, dh, 2) / dh)
    z = x[..., : dh // 2].astype(np.float64) + 1j * x[..., dh // 2 :].astype(np.float64)
    z = z * np.exp(1j * pos[:, :, None, None] * inv[None, None, None, :])
    want = np.concatenate([z.real, z.imag], axis=-1)
    got = np.asarray(
        jax.jit(lambda x, p, i: apply_rope(x, *rope_tables(p, i)))(
            jnp.asarray(x), jnp.asarray(pos), jnp.asarray(inv, jnp.float32)
        )
    )
    # float32 angles pos * inv_freq (inv_freq's rounding and the product's: 2 u of the angle), cos/sin and the rotation
    # a few u more, relative to max |x| (measured: 0.66 eps)
    assert_close_to_scale(got, want, math.sqrt(2) * (2 * float(pos.max()) + 6) * U32)  # ~8e-6
