"""Partial training: trainable-set patterns, optimizer state only for what is trained (bytes by formula), frozen
weights and layers bit-for-bit unchanged, and the wrapper equal to the plain optimizer when everything trains."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.config import ConfigError
from jaxfin.config.schema import LoraConfig, ModelConfig, OptimizerConfig
from jaxfin.model import forward, init_params, param_axes, param_shapes
from jaxfin.train.optimizer import make_optimizer
from jaxfin.train.trainable import (
    count_params,
    flatten,
    optimizer_state_bytes,
    selection,
    stop_frozen_gradients,
    trainable_report,
    trainable_summary,
)

D, F, V, L, HQ, HKV, DH = 16, 24, 40, 4, 4, 2, 4
CFG = ModelConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_layers=L, num_heads=HQ, num_kv_heads=HKV)
SHAPES = param_shapes(CFG)
LAYER_LEAVES = [p for p in flatten(SHAPES) if p.startswith("layers/")]
OCFG = OptimizerConfig(lr=1e-2, warmup_steps=0, weight_decay=0.1, clip_norm=1.0)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, 10)))


def _sel(patterns, cfg=CFG):
    return {p: v for p, v in flatten(selection(param_shapes(cfg), patterns, cfg)).items() if v is not None}


def test_globs_and_module_prefixes():
    assert _sel(["embed_tokens/embedding"]) == {"embed_tokens/embedding": True}
    mlp = {f"layers/mlp/{n}_proj/kernel": True for n in ("gate", "up", "down")}
    assert _sel(["layers/mlp/*"]) == mlp
    assert _sel(["layers/mlp"]) == mlp  # a module path selects everything under it
    assert _sel(["embed_tokens"]) == {"embed_tokens/embedding": True}
    assert len(_sel(["*_proj/kernel"])) == 7
    assert _sel(["*/scale"]) == _sel(["@norms"]) and len(_sel(["@norms"])) == 3
    assert _sel([]) == dict.fromkeys(flatten(SHAPES), True) == _sel(["@all"])


def test_layer_selections():
    top = _sel(["layers[-1:]/*"])
    assert top == dict.fromkeys(LAYER_LEAVES, (3,)) == _sel(["@top:1"])
    assert _sel(["@top:2"]) == dict.fromkeys(LAYER_LEAVES, (2, 3)) == _sel(["layers[2,3]"])
    assert _sel(["@bottom:1"]) == dict.fromkeys(LAYER_LEAVES, (0,))
    assert _sel(["layers[::2]/self_attn/q_proj"]) == {"layers/self_attn/q_proj/kernel": (0, 2)}
    got = _sel(["layers[0,3]/mlp/*", "layers[1:3]/mlp/up_proj/kernel", "norm"])
    assert got == {
        "layers/mlp/gate_proj/kernel": (0, 3),
        "layers/mlp/down_proj/kernel": (0, 3),
        "layers/mlp/up_proj/kernel": True,  # 0,3 + 1,2 = every layer: the whole leaf
        "norm/scale": True,
    }
    assert _sel(["layers[-1]/mlp/*", "layers/mlp/down_proj/kernel"])["layers/mlp/down_proj/kernel"] is True


def test_shortcuts_embeddings_head_lora():
    assert _sel(["@embeddings"]) == {"embed_tokens/embedding": True, "lm_head/kernel": True}
    assert _sel(["@head"]) == {"lm_head/kernel": True}
    tied = dataclasses.replace(CFG, tie_embeddings=True)
    assert _sel(["@embeddings"], tied) == {"embed_tokens/embedding": True}
    lora = dataclasses.replace(CFG, lora=LoraConfig(rank=2, targets=["q_proj", "down_proj"]))
    adapters = {f"layers/{m}/lora_{x}": True for m in ("self_attn/q_proj", "mlp/down_proj") for x in ("a", "b")}
    assert _sel([], lora) == adapters == _sel(["@lora"], lora)
    assert _sel(["@lora", "layers[-1]/mlp/down_proj/kernel"], lora) == adapters | {"layers/mlp/down_proj/kernel": (3,)}
    reward = dataclasses.replace(lora, num_labels=1)
    assert _sel([], reward) == adapters | {"score/kernel": True}


@pytest.mark.parametrize(
    "patterns, match",
    [
        (["layers/attn/*"], "'layers/attn/\\*' matches no parameter"),
        (["embed_tokens", "lm_head/bias"], "'lm_head/bias'"),
        (["@lora"], "'@lora' matches no parameter"),
        (["@everything"], "unknown shortcut '@everything'"),
        (["layers[4]/*"], "layer 4, but the model has 4 layers"),
        (["layers[a]"], "not a layer selection"),
        (["layers[5:]"], "selects no layer"),
        (["@top:9"], "between 1 and"),
    ],
)
def test_bad_patterns_are_named(patterns, match):
    with pytest.raises(ConfigError, match=match):
        selection(SHAPES, patterns, CFG)


def _opt_paths(state) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        if x.ndim:
            out.append(("/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)), tuple(x.shape)))
    return sorted(out)


def test_embeddings_only_optimizer_state():
    sel = selection(SHAPES, ["@embeddings"], CFG)
    opt = make_optimizer(OCFG, 10, sel)
    state = jax.eval_shape(opt.init, jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), SHAPES,
                                                  is_leaf=lambda x: isinstance(x, tuple)))  # fmt: skip
    want = [("embed_tokens/embedding", (V, D)), ("lm_head/kernel", (D, V))]
    assert _opt_paths(state) == sorted(want * 2)  # Adam mu and nu, nothing else


def _train(sel, steps=3):
    params = init_params(CFG, jax.random.key(0))
    opt = make_optimizer(OCFG, 10, sel)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            logits = forward(p, CFG, TOKENS[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:]).mean()

        u, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, u), state

    new = params
    for _ in range(steps):
        new, state = step(new, state)
    return params, new, state


@pytest.mark.parametrize("patterns, trained", [(["@top:1"], (3,)), (["layers[0,2]/*", "norm"], (0, 2))])
def test_frozen_layers_unchanged_bit_for_bit(patterns, trained):
    sel = selection(SHAPES, patterns, CFG)
    old, new, state = _train(sel)
    flat_new = flatten(new)
    for path, x in flatten(old).items():
        x, y = np.asarray(x), np.asarray(flat_new[path])
        if path.startswith("layers/"):
            for i in range(L):
                same = np.array_equal(x[i], y[i])
                assert same == (i not in trained), (path, i)  # weight decay would move frozen ones too
        else:
            assert np.array_equal(x, y) == (path != "norm/scale" or "norm" not in patterns), path
    k = len(trained)
    assert all(shape[0] == k for p, shape in _opt_paths(state) if p.startswith("layers/"))


def test_optimizer_state_bytes_by_formula():
    params = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32), SHAPES, is_leaf=lambda x: isinstance(x, tuple)
    )
    per_layer = 2 * D + D * HQ * DH + 2 * D * HKV * DH + HQ * DH * D + 3 * D * F  # norms, q, k+v, o, mlp
    total = L * per_layer + V * D + D + D * V
    sel = selection(SHAPES, ["@top:1"], CFG)
    assert count_params(params, sel) == (per_layer, total - per_layer)
    all_bytes = optimizer_state_bytes(make_optimizer(OCFG, 10), params)
    top_bytes = optimizer_state_bytes(make_optimizer(OCFG, 10, sel), params)
    counters = 2 * 4  # two int32 step counters (Adam's and the schedule's)
    assert all_bytes == 2 * 4 * total + counters  # mu and nu in float32
    assert top_bytes == 2 * 4 * per_layer + counters
    s = trainable_summary(params, sel, make_optimizer(OCFG, 10, sel))
    assert s["opt_state_bytes"] == top_bytes and s["opt_state_bytes_all"] == all_bytes
    assert s["opt_state_bytes_saved"] == 8 * (total - per_layer)
    report = trainable_report(params, sel, make_optimizer(OCFG, 10, sel))
    assert f"{per_layer:,} of {total:,}" in report and "saved" in report and "[layers 3]" in report


def test_select_all_equals_plain_optimizer():
    params = init_params(CFG, jax.random.key(0))
    plain, wrapped = make_optimizer(OCFG, 10), make_optimizer(OCFG, 10, selection(params, [], CFG))
    s1, s2 = plain.init(params), wrapped.init(params)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    rng = np.random.default_rng(1)
    p1 = p2 = params
    for _ in range(3):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 1, x.shape), x.dtype), params)
        u1, s1 = plain.update(g, s1, p1)
        u2, s2 = wrapped.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_equal(p1, p2)


def test_stop_frozen_gradients():
    params = init_params(CFG, jax.random.key(0))
    sel = selection(params, ["layers[1]/mlp/*", "lm_head"], CFG)

    def loss(p, freeze):
        p = stop_frozen_gradients(p, sel) if freeze else p
        return forward(p, CFG, TOKENS).sum()

    full, part = jax.grad(loss)(params, False), jax.grad(loss)(params, True)
    flat_part = flatten(part)
    for path, g in flatten(full).items():
        g, h = np.asarray(g), np.asarray(flat_part[path])
        if path == "lm_head/kernel":
            np.testing.assert_array_equal(g, h)
        elif path.startswith("layers/mlp/"):
            np.testing.assert_array_equal(g[1], h[1])
            assert not np.delete(h, 1, axis=0).any() and np.abs(g[1]).max() > 0
        else:
            assert not h.any(), path


def test_layer_slices_of_opt_state_are_laid_out_like_the_params():
    from jax.sharding import Mesh

    from jaxfin.parallel import AXES, like_params, param_shardings

    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1, 1), AXES)
    params = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32), SHAPES, is_leaf=lambda x: isinstance(x, tuple)
    )
    shard = param_shardings(params, mesh, param_axes(CFG))
    opt = make_optimizer(OCFG, 10, selection(SHAPES, ["layers[0,2]/mlp/*"], CFG))
    got = like_params(jax.eval_shape(opt.init, params), shard, mesh)
    specs = {p: s.spec for p, s in flatten(shard).items()}
    n = 0
    for path, s in jax.tree_util.tree_leaves_with_path(got):
        keys = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
        if keys.startswith("layers/"):
            assert s.spec == specs[keys] and s.spec != jax.sharding.PartitionSpec(), keys
            n += 1
    assert n == 6  # mu and nu of gate, up, down


def test_gradients_of_the_trainable_part_only():
    """The memory-lean path: differentiate w.r.t. trainable_part, update with optimizer.inner, write back."""
    from jaxfin.train.trainable import apply_part_updates, trainable_part, with_trainable

    params = init_params(CFG, jax.random.key(0))
    sel = selection(params, ["layers[0,2]/mlp/*", "layers[-1]/self_attn/q_proj", "lm_head"], CFG)
    opt = make_optimizer(OCFG, 10, sel)

    def loss(p):
        logits = forward(p, CFG, TOKENS[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:]).mean()

    part = trainable_part(params, sel)
    assert jax.tree.map(jnp.shape, part)["layers"]["mlp"]["up_proj"]["kernel"] == (2, D, F)
    g_part = jax.grad(lambda q: loss(with_trainable(params, q, sel)))(part)
    g_full = jax.grad(loss)(params)
    # float32, two programs: depth ~4L+2 reductions of up to V terms (the widest: softmax over V, MLP over F, weight
    # gradients over B*S tokens), relative to each gradient's max-abs (~8e-5; today they are bitwise equal)
    tol = rounding_tol(np.float32, V, depth=4 * L + 2)
    chex.assert_trees_all_equal_structs(g_part, trainable_part(g_full, sel))
    for a, b in zip(jax.tree.leaves(g_part), jax.tree.leaves(trainable_part(g_full, sel))):
        assert_close_to_scale(a, b, tol)
    state = opt.init(params)
    u_full, _ = opt.update(g_full, state, params)
    u_part, _ = opt.inner.update(g_part, state, part)
    lean, full = apply_part_updates(params, u_part, sel), optax.apply_updates(params, u_full)
    # Adam's first step is ~lr*sign(g), blind to the gradients' rounding (the smallest |g| here is 1e-6, far above
    # Adam's eps and the gradients' difference): only w + update rounds, to about an ulp of w
    flat_lean = flatten(lean)
    for path, x in flatten(full).items():
        assert_close_to_scale(flat_lean[path], x, 2 * np.finfo(np.float32).eps, err_msg=path)
    assert np.array_equal(np.asarray(lean["layers"]["mlp"]["up_proj"]["kernel"][1]),
                          np.asarray(params["layers"]["mlp"]["up_proj"]["kernel"][1]))  # fmt: skip
