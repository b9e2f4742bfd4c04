"""LoRA: adapter leaves in the one pytree, forward = base forward of W + (alpha/r) A B (numpy oracle), dropout,
adapters-only training, jaxfin checkpoint round trip, merged HF export and PEFT adapter export (transformers + peft
are the oracles)."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import peft
import pytest
import torch
import transformers
from flax.traverse_util import flatten_dict, unflatten_dict
from tolerances import assert_close_to_scale, rounding_tol

import jaxfin
from jaxfin.config import ConfigError, config_from_dict
from jaxfin.config.schema import LoraConfig, ModelConfig
from jaxfin.model import Model, forward, init_params, param_shapes
from jaxfin.model.lora import adapter_paths, add_adapters, merge_adapters, split_adapters, without_lora
from jaxfin.train.optimizer import make_optimizer
from jaxfin.train.trainable import selection
from tests.conftest import tiny_hf_llama

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
D, F, V, L, HQ, HKV, DH, R = 32, 48, 64, 3, 4, 2, 8, 3


def _cfg(targets=ALL, rank=R, alpha=6.0, dropout=0.0, **kw) -> ModelConfig:
    return ModelConfig(
        vocab_size=V,
        hidden_size=D,
        intermediate_size=F,
        num_layers=L,
        num_heads=HQ,
        num_kv_heads=HKV,
        lora=LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=list(targets)),
        **kw,
    )


def _randomise_adapters(params: dict, seed: int = 1, scale: float = 0.3) -> dict:
    """Nonzero A and B, so the adapters change the output."""
    rng = np.random.default_rng(seed)

    def one(path, x):
        if path[-1].key in ("lora_a", "lora_b"):
            return jnp.asarray(rng.normal(0, scale, x.shape), x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(one, params)


def _base_part(params: dict) -> dict:
    """The params without their adapter leaves (written here, not with jaxfin.model.lora)."""
    return unflatten_dict({k: v for k, v in flatten_dict(params).items() if k[-1] not in ("lora_a", "lora_b")})


TOKENS = np.random.default_rng(0).integers(0, V, (2, 12))


def test_adapter_shapes_follow_the_kernels():
    s = param_shapes(_cfg())
    a, m = s["layers"]["self_attn"], s["layers"]["mlp"]
    assert a["q_proj"]["lora_a"] == (L, D, R) and a["q_proj"]["lora_b"] == (L, R, HQ, DH)
    assert a["k_proj"]["lora_a"] == (L, D, R) and a["k_proj"]["lora_b"] == (L, R, HKV, DH)
    assert a["o_proj"]["lora_a"] == (L, HQ, DH, R) and a["o_proj"]["lora_b"] == (L, R, D)
    assert m["gate_proj"]["lora_a"] == (L, D, R) and m["gate_proj"]["lora_b"] == (L, R, F)
    assert m["down_proj"]["lora_a"] == (L, F, R) and m["down_proj"]["lora_b"] == (L, R, D)
    only_q = param_shapes(_cfg(["q_proj"]))
    assert sorted(p for p in flatten_dict(only_q, sep="/") if "lora" in p) == sorted(adapter_paths(_cfg(["q_proj"])))
    assert len(adapter_paths(_cfg(["q_proj"]))) == 2
    assert "lora_a" not in str(param_shapes(_cfg(rank=0)))


def test_init_equals_base_and_add_adapters_bounds():
    cfg = _cfg()
    p = init_params(cfg, jax.random.key(0))
    base = init_params(without_lora(cfg), jax.random.key(0))
    chex.assert_trees_all_equal(_base_part(p), base)  # base weights: the same draw as without LoRA
    # B = 0, so the outputs are equal
    np.testing.assert_array_equal(forward(p, cfg, TOKENS), forward(base, without_lora(cfg), TOKENS))
    q = add_adapters(base, cfg, jax.random.key(3))
    a = np.asarray(q["layers"]["self_attn"]["o_proj"]["lora_a"])
    bound = 1 / np.sqrt(HQ * DH)  # PEFT's kaiming-uniform(a=sqrt(5)) bound on fan_in
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.8 * bound and a.std() > 0.5 * bound / np.sqrt(3)
    assert not np.asarray(q["layers"]["mlp"]["down_proj"]["lora_b"]).any()
    with pytest.raises(ValueError, match="already"):
        add_adapters(q, cfg, jax.random.key(3))


def _numpy_merge(params: dict, cfg: ModelConfig) -> dict:
    """W + (alpha/r) A B, written out per layer in numpy (independent of jaxfin.model.lora)."""
    s = cfg.lora.alpha / cfg.lora.rank
    flat = {k: np.asarray(v, np.float64) for k, v in flatten_dict(params, sep="/").items()}
    out = {}
    for path, w in flat.items():
        if path.endswith(("lora_a", "lora_b")):
            continue
        if path.endswith("kernel") and path.replace("kernel", "lora_a") in flat:
            a, b = flat[path.replace("kernel", "lora_a")], flat[path.replace("kernel", "lora_b")]
            w = w.copy()
            for i in range(w.shape[0]):
                ai = a[i].reshape(-1, a.shape[-1])  # [in, r]
                bi = b[i].reshape(b.shape[1], -1)  # [r, out]
                w[i] += s * (ai @ bi).reshape(w.shape[1:])
        out[path] = w.astype(np.float32)
    return unflatten_dict(out, sep="/")


def _fwd_tol(max_score: float) -> float:
    """Two float32 programs for one forward, relative to max-abs: depth 4L reductions of <= F terms, plus per layer the
    scores' rounding (DH terms, absolute ~|s| times that), which the softmax passes on as relative error. With these
    random adapters |s| is large (measured max 22; 46 under dropout's 1/(1-p)), so that part dominates."""
    return float(rounding_tol(np.float32, F, depth=4 * L) + L * max_score * rounding_tol(np.float32, DH))


@pytest.mark.parametrize("scan", [True, False])
def test_forward_equals_base_forward_of_merged_weights(scan):
    cfg = _cfg(scan_layers=scan)
    p = _randomise_adapters(init_params(cfg, jax.random.key(0)))
    merged = _numpy_merge(p, cfg)
    got = np.asarray(forward(p, cfg, TOKENS))
    want = np.asarray(forward(merged, without_lora(cfg), TOKENS))
    base = np.asarray(forward(split_adapters(p)[0], without_lora(cfg), TOKENS))
    assert np.abs(got - base).max() > 1e-2  # the adapters matter
    assert_close_to_scale(got, want, _fwd_tol(25))  # ~2e-4 (measured <= 2.1e-5; in float64 1.4e-14: rounding)
    m, mcfg = merge_adapters(p, cfg)
    assert mcfg.lora.rank == 0 and not any("lora" in k for k in flatten_dict(m, sep="/"))
    chex.assert_trees_all_equal_structs(m, merged)
    for path, w in flatten_dict(merged, sep="/").items():
        # float32 W + s (A B) (R terms), 2 roundings on top of the oracle's float32 cast, relative to max |W'|
        assert_close_to_scale(flatten_dict(m, sep="/")[path], w, rounding_tol(np.float32, R, depth=2), err_msg=path)


def test_dropout_only_with_a_key():
    cfg = _cfg(dropout=0.5)
    p = _randomise_adapters(init_params(cfg, jax.random.key(0)))
    plain = np.asarray(forward(p, cfg, TOKENS))
    k = jax.random.key(7)
    d1 = np.asarray(forward(p, cfg, TOKENS, dropout_rng=k))
    d2 = np.asarray(forward(p, cfg, TOKENS, dropout_rng=k))
    d3 = np.asarray(forward(p, cfg, TOKENS, dropout_rng=jax.random.key(8)))
    assert np.abs(d1 - plain).max() > 1e-3 and np.abs(d1 - d3).max() > 1e-3
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(plain, np.asarray(forward(p, _cfg(dropout=0.0), TOKENS)))
    no_drop = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, dropout=0.0))
    np.testing.assert_array_equal(plain, np.asarray(forward(p, no_drop, TOKENS, dropout_rng=k)))
    unscanned = dataclasses.replace(cfg, scan_layers=False)  # same per-layer keys either way
    assert_close_to_scale(forward(p, unscanned, TOKENS, dropout_rng=k), d1, _fwd_tol(50))  # ~3.6e-4


def _loss(params, cfg, tokens, rng=None):
    logits = forward(params, cfg, tokens[:, :-1], dropout_rng=rng)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def test_training_touches_only_adapters():
    from jaxfin.config.schema import OptimizerConfig

    cfg = _cfg(targets=["q_proj", "o_proj", "up_proj"], dropout=0.1)
    params = init_params(cfg, jax.random.key(0))
    sel = selection(params, [], cfg)
    trained = sorted(p for p, v in flatten_dict(sel, sep="/").items() if v is not None)
    assert trained == sorted(adapter_paths(cfg))
    opt = make_optimizer(OptimizerConfig(lr=1e-2, warmup_steps=0), 10, sel)
    state = opt.init(params)
    # optimizer state: Adam's mu and nu for exactly the adapter leaves, nothing else but scalars
    leaves = jax.tree_util.tree_leaves_with_path(state)
    big = sorted(
        ("/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)), x.shape)
        for path, x in leaves
        if x.ndim
    )
    shapes = {p: tuple(x.shape) for p, x in flatten_dict(params, sep="/").items()}
    assert big == sorted([(p, shapes[p]) for p in adapter_paths(cfg)] * 2)

    @jax.jit
    def step(params, state, i):
        g = jax.grad(_loss)(params, cfg, jnp.asarray(TOKENS), jax.random.fold_in(jax.random.key(1), i))
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    new = params
    for i in range(3):
        new, state = step(new, state, i)
    flat_new = flatten_dict(new, sep="/")
    for path, x in flatten_dict(params, sep="/").items():
        changed = not np.array_equal(np.asarray(x), np.asarray(flat_new[path]))
        assert changed == ("lora" in path), path
    assert _loss(new, cfg, jnp.asarray(TOKENS)) < _loss(params, cfg, jnp.asarray(TOKENS))


def test_jaxfin_checkpoint_round_trips_adapters(tmp_path):
    cfg = _cfg(targets=["v_proj", "down_proj"])
    p = _randomise_adapters(init_params(cfg, jax.random.key(0)))
    jaxfin.save_model(Model(cfg, p), tmp_path / "m")
    loaded = jaxfin.load_model(tmp_path / "m")
    assert loaded.config.lora == cfg.lora
    chex.assert_trees_all_equal(loaded.params, p)


@pytest.mark.parametrize(
    "lora, match",
    [
        ({"targets": ["q_proj", "qkv"]}, "unknown projection.*'qkv'"),
        ({"rank": -1}, "rank"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"rank": 4, "targets": []}, "targets"),
    ],
)
def test_bad_lora_config_is_refused(lora, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"model": {"lora": lora}}, "test.yaml")


# ---------------------------------------------------------------------------------------------- HF / PEFT


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_base")
    hf = tiny_hf_llama(vocab_size=V, hidden_size=D, intermediate_size=F, num_attention_heads=HQ,
                       num_key_value_heads=HKV, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)  # fmt: skip
    hf.save_pretrained(path, safe_serialization=True)
    return path


def _torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.float().numpy()


def test_peft_adapter_and_merged_export_match_transformers(hf_base, tmp_path):
    from jaxfin.hf.peft import base_model, save_peft_adapter

    loaded = jaxfin.load_model(hf_base)
    targets = ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    cfg = dataclasses.replace(loaded.config, lora=LoraConfig(rank=4, alpha=12.0, dropout=0.05, targets=targets))
    params = _randomise_adapters(add_adapters(loaded.params, cfg, jax.random.key(0)), scale=0.2)
    model = Model(cfg, params)
    ours = np.asarray(model.logits(TOKENS))
    assert np.abs(ours - np.asarray(loaded.logits(TOKENS))).max() > 1e-2  # the adapters matter

    jaxfin.save_model(base_model(model), tmp_path / "base", format="hf")
    save_peft_adapter(model, out_dir=tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float32)
    # torch vs jaxfin, float32: depth 4L reductions of <= F terms, relative to max-abs (scores stay small here: the
    # adapters leave k_proj alone)
    tol = rounding_tol(np.float32, cfg.intermediate_size, depth=4 * cfg.num_layers)  # ~4e-5
    assert_close_to_scale(_torch_logits(base), loaded.logits(TOKENS), tol)
    adapted = peft.PeftModel.from_pretrained(base, tmp_path / "adapter")
    adapted.eval()
    assert_close_to_scale(_torch_logits(adapted), ours, tol)

    jaxfin.save_model(model, tmp_path / "merged", format="hf")  # a plain HF model with the adapters folded in
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", torch_dtype=torch.float32)
    assert_close_to_scale(_torch_logits(merged), ours, tol)
    assert "lora" not in (tmp_path / "merged" / "config.json").read_text()
    # and PEFT's own merge agrees with ours
    folded = adapted.merge_and_unload()
    assert_close_to_scale(_torch_logits(folded), ours, tol)


def test_peft_export_refuses_a_model_without_adapters(hf_base, tmp_path):
    from jaxfin.hf.peft import save_peft_adapter

    with pytest.raises(ConfigError, match="no LoRA adapters"):
        save_peft_adapter(jaxfin.load_model(hf_base), out_dir=tmp_path / "a")
