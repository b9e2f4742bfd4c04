"""Mixture of experts (Mixtral) against transformers' MixtralForCausalLM (the oracle): logits in both checkpoint
layouts, bitwise round trips through `jaxfin convert`, the router's statistics against HF's
`load_balancing_loss_func` and the z-loss formula, the dropless grouped path against the dense einsum, packing,
LoRA on the experts, router-only training. Tiny random models, fp32 on CPU."""

from __future__ import annotations

import dataclasses
import json
import shutil
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file
from tolerances import assert_close_to_scale, rounding_tol
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

import jaxfin
from jaxfin.config import ConfigError, ModelConfig
from jaxfin.config.schema import LoraConfig
from jaxfin.hf import load_hf, params_to_hf
from jaxfin.model import forward, init_params
from jaxfin.model.lora import add_adapters, merge_adapters
from jaxfin.model.moe import (
    active_params,
    capacities,
    dense_experts,
    dispatch,
    padded_experts,
    ragged_experts,
    route,
)
from jaxfin.store.convert import convert_main

SHAPE = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
)  # fmt: skip
TOKENS = np.random.default_rng(0).integers(0, 128, (2, 24))
# two float32 programs: depth 4L reductions of <= F terms, relative to max-abs (as tests/test_hf.py)
HF_TOL = float(rounding_tol(np.float32, SHAPE["intermediate_size"], depth=4 * SHAPE["num_hidden_layers"]))
CFG = ModelConfig(
    family="mixtral", vocab_size=128, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
    num_kv_heads=2, num_experts=4, experts_per_token=2, compute_dtype="float32",
)  # fmt: skip


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, framework="numpy") as h:
            out |= {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    return out


@pytest.fixture(scope="module")
def hf_mixtral(tmp_path_factory):
    """A random Mixtral saved by transformers (the per-expert w1/w2/w3 layout it writes), its fp32 logits and
    router logits on TOKENS, and the same weights re-saved in the fused layout transformers holds in memory."""
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**SHAPE)).eval()
    with torch.no_grad():
        for p in model.parameters():  # HF init leaves norms at 1, which would hide mapping mistakes
            p.add_(0.05 * torch.randn_like(p))
        out = model(torch.tensor(TOKENS), output_router_logits=True)
    per_expert = tmp_path_factory.mktemp("mixtral_per_expert")
    model.save_pretrained(per_expert)
    fused = tmp_path_factory.mktemp("mixtral_fused")
    save_file({k: v.contiguous().numpy() for k, v in model.state_dict().items()}, fused / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    shutil.copy(per_expert / "config.json", fused / "config.json")
    return {
        "per_expert": per_expert, "fused": fused, "logits": out.logits.numpy(),
        "router_logits": [r.numpy() for r in out.router_logits], "model": model,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- import / export
@pytest.mark.parametrize("layout", ["per_expert", "fused"])
@pytest.mark.parametrize("dispatch", ["ragged", "padded", "dense"])
def test_logits_match_transformers_in_both_layouts(hf_mixtral, layout, dispatch):
    names = _tensors(hf_mixtral[layout])
    marker = "block_sparse_moe.experts.0.w1.weight" if layout == "per_expert" else "mlp.experts.gate_up_proj"
    assert any(marker in k for k in names)  # the fixture really is in that layout
    model = load_hf(hf_mixtral[layout], moe_dispatch=dispatch)
    assert model.config.family == "mixtral" and model.config.num_experts == 4
    assert_close_to_scale(np.asarray(model.logits(TOKENS)), hf_mixtral["logits"], HF_TOL, err_msg=layout)


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_round_trip_is_bitwise_in_the_source_layout(hf_mixtral, layout, tmp_path):
    src_dir = hf_mixtral[layout]
    convert_main(src_dir, tmp_path / "jaxfin")
    convert_main(tmp_path / "jaxfin", tmp_path / "hf")
    src, out = _tensors(src_dir), _tensors(tmp_path / "hf")
    assert sorted(src) == sorted(out)
    for k in src:
        assert src[k].dtype == out[k].dtype and np.array_equal(src[k], out[k]), k
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(back).__name__ == "MixtralForCausalLM"
    with torch.no_grad():  # bitwise-equal tensors: the same transformers program, so the same logits
        np.testing.assert_array_equal(back(torch.tensor(TOKENS)).logits.numpy(), hf_mixtral["logits"])


def test_pytree_layout_stacks_experts_under_the_layer_axis(hf_mixtral):
    model = load_hf(hf_mixtral["per_expert"])
    mlp = model.params["layers"]["mlp"]
    L, D, E, F = 2, 32, 4, 48  # noqa: N806
    assert mlp["router"]["kernel"].shape == (L, D, E)
    assert mlp["experts"]["gate_proj"]["kernel"].shape == (L, E, D, F)
    assert mlp["experts"]["up_proj"]["kernel"].shape == (L, E, D, F)
    assert mlp["experts"]["down_proj"]["kernel"].shape == (L, E, F, D)
    src = _tensors(hf_mixtral["per_expert"])
    w1 = src["model.layers.1.block_sparse_moe.experts.2.w1.weight"]  # [F, D]
    assert np.array_equal(np.asarray(mlp["experts"]["gate_proj"]["kernel"][1, 2]), w1.T)
    gate = src["model.layers.0.block_sparse_moe.gate.weight"]  # [E, D]
    assert np.array_equal(np.asarray(mlp["router"]["kernel"][0]), gate.T)
    out = params_to_hf(model.params, model.config)
    assert sorted(out) == sorted(src) and all(np.array_equal(out[k], src[k]) for k in src)


def test_mixtral_config_round_trips_through_hf(hf_mixtral, tmp_path):
    model = load_hf(hf_mixtral["per_expert"])
    jaxfin.save_model(model, tmp_path / "out", format="hf")
    got = json.loads((tmp_path / "out/config.json").read_text())
    src = json.loads((hf_mixtral["per_expert"] / "config.json").read_text())
    for k in ("model_type", "num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "architectures"):
        assert got[k] == src[k], k


# ------------------------------------------------------------------------------------------- routing
def test_router_statistics_match_transformers(hf_mixtral):
    """Per layer: router logits equal HF's, the load-balancing loss equals HF's load_balancing_loss_func on that
    layer, the z-loss is mean(logsumexp^2), load shares sum to 1, nothing is dropped."""
    model = load_hf(hf_mixtral["per_expert"])
    _, stats = forward(model.params, model.config, jnp.asarray(TOKENS), router_stats=True)
    for i, hf_logits in enumerate(hf_mixtral["router_logits"]):  # [B*S, E]
        t = torch.tensor(hf_logits)
        want_aux = float(load_balancing_loss_func((t,), num_experts=4, top_k=2))
        np.testing.assert_allclose(float(stats["aux_loss"][i]), want_aux, rtol=1e-5)
        lse = np.log(np.exp(hf_logits.astype(np.float64)).sum(-1))
        np.testing.assert_allclose(float(stats["z_loss"][i]), np.mean(lse**2), rtol=1e-5)
        p = np.exp(hf_logits - hf_logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(float(stats["entropy"][i]), np.mean(-(p * np.log(p)).sum(-1)), rtol=1e-5)
        top = np.argsort(-p, axis=-1)[:, :2]
        load = np.bincount(top.ravel(), minlength=4) / top.size
        np.testing.assert_allclose(np.asarray(stats["load"][i]), load, rtol=1e-6)
    assert float(jnp.sum(stats["dropped"])) == 0.0


def test_padding_tokens_do_not_count_in_the_router_statistics(hf_mixtral):
    model = load_hf(hf_mixtral["per_expert"])
    cfg, row = model.config, jnp.asarray(TOKENS[:1, :16])
    _, alone = forward(model.params, cfg, row, jnp.ones_like(row), router_stats=True)
    padded = jnp.concatenate([row, jnp.zeros((1, 8), row.dtype)], axis=1)
    seg = jnp.concatenate([jnp.ones((1, 16), jnp.int32), jnp.zeros((1, 8), jnp.int32)], axis=1)
    _, stats = forward(model.params, cfg, padded, seg, router_stats=True)
    for k in ("aux_loss", "z_loss", "entropy", "load"):
        np.testing.assert_allclose(np.asarray(stats[k]), np.asarray(alone[k]), rtol=1e-5, err_msg=k)


def test_routing_weights_are_softmax_over_the_selected_k():
    logits = jnp.array([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 0.5, 2.0]])
    eye = jnp.eye(4)  # x @ I = the logits themselves
    for norm in (True, False):
        cfg = dataclasses.replace(CFG, norm_topk_prob=norm)
        _, top_i, top_w = route(cfg, eye, logits)
        p = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
        want_i = np.argsort(-p, -1)[:, :2]
        want_w = np.take_along_axis(p, want_i, -1)
        if norm:
            want_w = want_w / want_w.sum(-1, keepdims=True)
        np.testing.assert_array_equal(np.asarray(top_i), want_i)
        np.testing.assert_allclose(np.asarray(top_w), want_w, rtol=1e-6)


def test_grouped_dispatch_equals_every_expert_on_every_token():
    """The sorted ragged_dot path computes, per (token, expert) assignment, what the dense einsum computes, and so
    do the gradients of the whole model under both dispatches."""
    params = init_params(CFG, jax.random.key(0))
    experts = jax.tree.map(lambda w: w[0], params["layers"]["mlp"]["experts"])
    x = jax.random.normal(jax.random.key(1), (40, CFG.hidden_size))
    _, top_i, _ = route(CFG, params["layers"]["mlp"]["router"]["kernel"][0], x)
    keys = (None, None, None)
    dense, _ = dense_experts(experts, CFG, x, top_i, keys)
    for grouped in (ragged_experts, padded_experts):
        out, n = grouped(experts, CFG, x, top_i, keys)
        assert int(n) == top_i.size  # dropless: every assignment computed
        assert_close_to_scale(out, dense, rounding_tol(np.float32, CFG.intermediate_size, depth=2))
    # padding ids (>= the group count, as expert parallelism sends) come out 0 and are not counted
    pad = top_i.at[:5].set(CFG.num_experts)
    for grouped in (ragged_experts, padded_experts):
        out, n = grouped(experts, CFG, x, pad, keys)
        assert int(n) == top_i.size - 10 and not np.any(np.asarray(out[:5]))
        assert_close_to_scale(out[5:], dense[5:], rounding_tol(np.float32, CFG.intermediate_size, depth=2))

    tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, CFG.vocab_size)

    def loss(p, cfg):
        return jnp.mean(jax.nn.logsumexp(forward(p, cfg, tokens), axis=-1))

    g_d = jax.grad(loss)(params, dataclasses.replace(CFG, moe_dispatch="dense"))
    for kind in ("ragged", "padded"):
        g = jax.grad(loss)(params, dataclasses.replace(CFG, moe_dispatch=kind))
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g), jax.tree.leaves(g_d)):
            assert_close_to_scale(
                a, b, rounding_tol(np.float32, 64, depth=8), err_msg=f"{kind} {jax.tree_util.keystr(path)}"
            )


def test_padded_dispatch_is_dropless_under_any_routing():
    """The window is the largest group's size rounded up to a capacity: the router's own routing, 40 of 80
    assignments on one expert, and all 80 on one (only the largest capacity, every assignment, holds them);
    outputs and gradients equal the dense einsum's each time."""
    assert capacities(80, 20) == (24, 32, 40, 56, 64, 80) and capacities(7, 8) == (7,)
    caps = capacities(2048, 256)
    assert caps[0] == 256 and caps[-1] == 2048 and all(c % 8 == 0 for c in caps)
    for largest in range(256, 2049):  # the window picked for each largest group: >= it, and at most 1/8 of the
        window = min(c for c in caps if c >= largest)  # balanced share above it up to twice that, then 1.26x it
        bound = largest + 256 / 8 if largest <= 512 else largest * 2 ** (1 / 3)
        assert largest <= window <= -(-int(bound) // 8) * 8 + 8, largest
    params = init_params(CFG, jax.random.key(4))
    experts = jax.tree.map(lambda w: w[0], params["layers"]["mlp"]["experts"])
    x = jax.random.normal(jax.random.key(5), (40, CFG.hidden_size))
    _, balanced, _ = route(CFG, params["layers"]["mlp"]["router"]["kernel"][0], x)
    skewed = jnp.stack([jnp.full((40,), 2), jnp.arange(40) % 2 * 2 + 1], axis=1)  # 40 on expert 2, 20 on 1 and 3
    one = jnp.full((40, 2), 2)  # every assignment on expert 2
    tol = rounding_tol(np.float32, CFG.intermediate_size, depth=2)
    for top_i in (balanced, skewed, one):

        def total(ex, x, grouped, top_i=top_i):
            out, n = grouped(ex, CFG, x, top_i, (None, None, None))
            return jnp.sum(out * out), n

        (loss, n), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(experts, x, padded_experts)
        (loss_d, _), grads_d = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(experts, x, dense_experts)
        assert int(n) == top_i.size
        assert_close_to_scale(loss, loss_d, tol)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_d)):
            assert_close_to_scale(a, b, rounding_tol(np.float32, 64, depth=4))


def test_remat_keeps_the_padded_experts_output_and_the_same_gradients():
    """Every remat policy saves the padded experts' output (their custom VJP recomputes their forward itself):
    gradients equal those without remat, and the rematerialised backward holds one forward of the experts, not
    two."""
    params = init_params(CFG, jax.random.key(6))
    tokens = jax.random.randint(jax.random.key(7), (2, 16), 0, CFG.vocab_size)

    def loss(p, cfg):
        return jnp.mean(jax.nn.logsumexp(forward(p, cfg, tokens), axis=-1))

    cfg = dataclasses.replace(CFG, moe_dispatch="padded")
    g_none = jax.grad(loss)(params, cfg)
    for remat in ("full", "save_matmuls", "save_projections"):
        g = jax.grad(loss)(params, dataclasses.replace(cfg, remat=remat))
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_none)):
            assert_close_to_scale(a, b, rounding_tol(np.float32, 64, depth=8), err_msg=remat)

    def expert_dots(remat):  # HLO lines of the batched expert matmuls ("ecd,edf->ecf") in the compiled gradient
        c = dataclasses.replace(cfg, remat=remat)
        text = jax.jit(jax.grad(partial(loss, cfg=c))).lower(params).compile().as_text()
        return text.count("ecd,edf->ecf/dot_general")

    assert expert_dots("full") == expert_dots("none")


def test_auto_dispatch_is_padded_on_cpu_and_ragged_on_accelerators():
    from unittest import mock

    assert CFG.moe_dispatch == "auto" and dispatch(CFG) == "padded"  # these tests run on CPU
    for platform in ("gpu", "tpu"):
        with mock.patch("jaxfin.parallel.mesh.target_platform", return_value=platform):
            assert dispatch(CFG) == "ragged"
    assert dispatch(dataclasses.replace(CFG, moe_dispatch="ragged")) == "ragged"


def test_packed_documents_route_and_score_as_alone():
    params = init_params(CFG, jax.random.key(3))
    rng = np.random.default_rng(1)
    a, b = rng.integers(4, CFG.vocab_size, 10), rng.integers(4, CFG.vocab_size, 14)
    packed = jnp.asarray(np.concatenate([a, b])[None])
    seg = jnp.asarray(np.array([1] * 10 + [2] * 14)[None])
    pos = jnp.asarray(np.concatenate([np.arange(10), np.arange(14)])[None])
    got = np.asarray(forward(params, CFG, packed, seg, pos))[0]
    tol = rounding_tol(np.float32, CFG.intermediate_size, depth=8)
    assert_close_to_scale(got[:10], np.asarray(forward(params, CFG, jnp.asarray(a[None])))[0], tol)
    assert_close_to_scale(got[10:], np.asarray(forward(params, CFG, jnp.asarray(b[None])))[0], tol)


def test_active_parameters_count_k_of_e_experts():
    total = sum(x.size for x in jax.tree.leaves(init_params(CFG, jax.random.key(0))))
    per_expert_layer = 3 * CFG.hidden_size * CFG.intermediate_size
    assert active_params(CFG, total) == total - (4 - 2) * per_expert_layer * CFG.num_layers


# ------------------------------------------------------------------------------------------- adapters, config
def test_lora_on_experts_merges_into_the_expert_kernels():
    cfg = dataclasses.replace(CFG, lora=LoraConfig(rank=2, alpha=4.0, targets=["gate_proj", "down_proj"]))
    params = add_adapters(init_params(CFG, jax.random.key(0)), cfg, jax.random.key(1))
    a = params["layers"]["mlp"]["experts"]["gate_proj"]["lora_a"]
    assert a.shape == (2, 4, CFG.hidden_size, 2)  # [L, E, D, r]: one adapter per expert
    params = jax.tree_util.tree_map_with_path(  # LoRA B starts at 0: make the adapters do something
        lambda p, x: x + 0.1 if "lora_b" in jax.tree_util.keystr(p) else x, params
    )
    tokens = jnp.asarray(TOKENS[:, :12])
    with_lora = forward(params, cfg, tokens)
    merged, _ = merge_adapters(params, cfg)
    plain = forward(merged, CFG, tokens)
    assert float(jnp.max(jnp.abs(with_lora - forward(init_params(CFG, jax.random.key(0)), CFG, tokens)))) > 1e-3
    assert_close_to_scale(plain, with_lora, rounding_tol(np.float32, CFG.intermediate_size, depth=8))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(num_experts=0), "'model.num_experts' is 0 for family 'mixtral'"),
        (dict(family="llama"), "'model.num_experts' is 4 for family 'llama'"),
        (dict(experts_per_token=5), "experts_per_token"),
        (dict(router_aux_loss_coef=-1.0), "router_aux_loss_coef"),
        (dict(moe_dispatch="sparse"), "moe_dispatch"),
    ],
)
def test_bad_moe_configs_are_refused(changes, match):
    from jaxfin.config.validate import validate_model_config

    with pytest.raises(ConfigError, match=match):
        validate_model_config(dataclasses.replace(CFG, **changes))
