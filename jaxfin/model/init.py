"""Fresh parameters for a config, from its family's table (params.py): the base weights, then LoRA adapters."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxfin.config.schema import ModelConfig
from jaxfin.model.config import param_dtype
from jaxfin.model.lora import add_adapters
from jaxfin.model.params import table

LORA_KEY = 0x10A  # fold_in constant: adapters of a fresh model draw from their own stream, base weights unchanged


def init_params(cfg: ModelConfig, key: jax.Array) -> dict:
    """Normal(0, init_std) weights, ones for norms, zeros for biases; output projections scaled by 1/sqrt(2L);
    LoRA adapters (if any) as lora.add_adapters draws them."""
    return jax.jit(lambda k: traced_init_params(cfg, k))(key)  # one compile instead of one per leaf shape


def traced_init_params(cfg: ModelConfig, key: jax.Array) -> dict:
    """init_params without its jit (to call inside another jitted function). Base weights exactly as without LoRA
    (same key, same values), then fresh adapters from a folded key."""
    base = sorted(table(cfg), key=lambda p: p.path.split("/"))  # one key per leaf in pytree order, as jax.tree.flatten
    keys = jax.random.split(key, len(base))
    dtype = param_dtype(cfg)
    flat = {}
    for p, k in zip(base, keys, strict=True):
        shape = p.shape(cfg)
        if p.init == "ones":
            flat[p.path] = jnp.ones(shape, dtype)
        elif p.init == "zeros":
            flat[p.path] = jnp.zeros(shape, dtype)
        else:
            std = cfg.init_std / (math.sqrt(2 * cfg.num_layers) if p.init == "normal_out" else 1)
            flat[p.path] = (std * jax.random.normal(k, shape, jnp.float32)).astype(dtype)
    params = traverse_util.unflatten_dict(flat, sep="/")
    return add_adapters(params, cfg, jax.random.fold_in(key, LORA_KEY)) if cfg.lora.rank > 0 else params
