"""LoRA adapters as leaves of the one parameter pytree, next to the kernel they adapt.

For a target projection with kernel W [L, in..., out...] (q/k/v: [L, D, H, Dh]; o_proj: [L, Hq, Dh, D] contracting
two dims; gate/up: [L, D, F]; down: [L, F, D]; a Mixtral expert's [L, E, D, F], with [L, E] as the stacking) the
adapters are

    lora_a  [L, in..., r]     kaiming-uniform like PEFT's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    lora_b  [L, r, out...]    zeros, so an adapted model starts equal to its base

and the projection computes  y = x W + (alpha / r) * (dropout(x) A) B  (jaxfin/model/llama.py `_dense`).
`merge_adapters` folds them into W (for export); `jaxfin/hf/peft.py` writes them as a PEFT adapter folder.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxfin.config.schema import ModelConfig
from jaxfin.model.params import ADAPTER_LEAVES, AXIS_SIZES, adapters, lora_params


def without_lora(cfg: ModelConfig) -> ModelConfig:
    """The same model config with adapters off (rank 0; alpha, dropout and targets kept)."""
    return dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, rank=0))


def adapter_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Kernel path (e.g. 'layers/self_attn/q_proj/kernel') -> (lora_a shape, lora_b shape), per cfg.lora.targets."""
    size = lambda axes: tuple(AXIS_SIZES[a](cfg) for a in axes)  # noqa: E731
    return {path: (size(a), size(b)) for path, (a, b) in adapters(cfg).items()}


def adapter_paths(cfg: ModelConfig) -> list[str]:
    """'/'-joined paths of every adapter leaf, e.g. 'layers/self_attn/q_proj/lora_a'."""
    return [f"{path.rsplit('/', 1)[0]}/{leaf}" for path in adapters(cfg) for leaf in ADAPTER_LEAVES]


def has_adapters(params: dict) -> bool:
    return any(path[-1] in ADAPTER_LEAVES for path in traverse_util.flatten_dict(params))


def add_adapters(params: dict, cfg: ModelConfig, key: jax.Array) -> dict:
    """Base params (without adapters, e.g. loaded from Hugging Face) plus fresh adapters for cfg.lora: A drawn as
    PEFT's default init (kaiming-uniform, bound 1/sqrt(fan_in)), B = 0. Returns a new pytree (the base leaves are
    shared, not copied); adapters are in the base weights' dtype."""
    if cfg.lora.rank <= 0:
        return params
    if has_adapters(params):
        raise ValueError("these params already have LoRA adapters; merge them first (jaxfin.model.lora.merge_adapters)")
    shapes = adapter_shapes(cfg)
    keys = jax.random.split(key, len(shapes))
    flat = traverse_util.flatten_dict(params, sep="/")
    for k, (path, (a_shape, b_shape)) in zip(keys, shapes.items()):
        kernel = flat[path]
        p = lora_params(cfg)[path.split("/")[-2]]
        bound = 1.0 / math.sqrt(math.prod(a_shape[p.lead : p.lead + p.n_in]))
        base = path.rsplit("/", 1)[0]
        flat[f"{base}/lora_a"] = jax.random.uniform(k, a_shape, jnp.float32, -bound, bound).astype(kernel.dtype)
        flat[f"{base}/lora_b"] = jnp.zeros(b_shape, kernel.dtype)
    return traverse_util.unflatten_dict(flat, sep="/")


def adapter_delta(a, b, scale: float, lead: int = 1):
    """scale * A @ B per layer (and expert), shaped like the kernel [lead..., in..., out...], in float32. `lead`:
    the stacking axes A and B share (1: layers; 2: layers and experts)."""
    stack, r = a.shape[:lead], a.shape[-1]
    a32 = jnp.asarray(a, jnp.float32).reshape(math.prod(stack), -1, r)
    b32 = jnp.asarray(b, jnp.float32).reshape(math.prod(stack), r, -1)
    return scale * jnp.einsum("lir,lro->lio", a32, b32).reshape(*a.shape[:-1], *b.shape[lead + 1 :])


def merge_adapters(params: dict, cfg: ModelConfig) -> tuple[dict, ModelConfig]:
    """(params with W += (alpha/r) A B and no adapter leaves, the config with rank 0): a plain model to export or
    to keep training in full. A model without adapters comes back unchanged."""
    if cfg.lora.rank <= 0 or not has_adapters(params):
        return params, without_lora(cfg)
    scale = cfg.lora.alpha / cfg.lora.rank
    flat = traverse_util.flatten_dict(params, sep="/")
    for base in [k.rsplit("/", 1)[0] for k in flat if k.endswith("/lora_a")]:
        w, a, b = flat[f"{base}/kernel"], flat.pop(f"{base}/lora_a"), flat.pop(f"{base}/lora_b")
        lead = lora_params(cfg)[base.split("/")[-1]].lead
        flat[f"{base}/kernel"] = (jnp.asarray(w, jnp.float32) + adapter_delta(a, b, scale, lead)).astype(w.dtype)
    return traverse_util.unflatten_dict(flat, sep="/"), without_lora(cfg)


def split_adapters(params: dict) -> tuple[dict, dict]:
    """(base params without adapters, {path: adapter leaf})."""
    flat = traverse_util.flatten_dict(params, sep="/")
    adapters = {k: v for k, v in flat.items() if k.rsplit("/", 1)[-1] in ADAPTER_LEAVES}
    base = {k: v for k, v in flat.items() if k not in adapters}
    return traverse_util.unflatten_dict(base, sep="/"), adapters
