"""Checks and derived values for ModelConfig (kept apart from the dataclass so the schema stays a list of keys)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfin.config.load import ConfigError
from jaxfin.config.schema import ModelConfig

FAMILIES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "llama3")
# float64 is for numerical checks (tests of program structure without float32 rounding); it needs JAX's x64 mode
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def validate_model_config(m: ModelConfig) -> None:
    if m.family not in FAMILIES:
        raise ConfigError(f"'model.family' must be one of {', '.join(FAMILIES)}; got '{m.family}'")
    if m.rope_scaling.type not in ROPE_TYPES:
        raise ConfigError(
            f"'model.rope_scaling.type' '{m.rope_scaling.type}' is not supported (supported: {', '.join(ROPE_TYPES)})"
        )
    if m.sliding_window and m.sliding_window < m.max_position_embeddings:
        raise ConfigError(
            f"this model needs sliding-window attention (window {m.sliding_window} < context "
            f"{m.max_position_embeddings}), which jaxfin does not support yet; set "
            f"max_position_embeddings <= sliding_window to train within the window"
        )
    if m.num_kv_heads < 1 or m.num_heads % m.num_kv_heads:
        raise ConfigError(
            f"'model.num_heads' ({m.num_heads}) must be a multiple of 'model.num_kv_heads' ({m.num_kv_heads})"
        )
    if not m.head_dim and m.hidden_size % m.num_heads:
        raise ConfigError(f"'model.hidden_size' ({m.hidden_size}) is not divisible by num_heads ({m.num_heads})")
    if m.head_size % 2:
        raise ConfigError(f"head dimension must be even for RoPE; got {m.head_size}")
    for key in ("param_dtype",):
        if getattr(m, key) not in DTYPES:
            raise ConfigError(f"'model.{key}' must be one of {', '.join(DTYPES)}")
    if m.compute_dtype not in (*DTYPES, "auto"):
        raise ConfigError(f"'model.compute_dtype' must be auto or one of {', '.join(DTYPES)}")
    if "float64" in (m.param_dtype, m.compute_dtype) and not jax.config.jax_enable_x64:
        raise ConfigError("model dtype float64 needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 (for numerical checks)")
    if m.remat not in REMAT:
        raise ConfigError(f"'model.remat' must be one of {', '.join(REMAT)}; got '{m.remat}'")
    from jaxfin.kernels.attention import BACKENDS

    if m.attention_backend not in BACKENDS:
        raise ConfigError(f"'model.attention_backend' must be one of {', '.join(BACKENDS)}")
    _validate_lora(m)


def _validate_lora(m: ModelConfig) -> None:
    from jaxfin.model.lora import TARGETS

    lora = m.lora
    if not isinstance(lora.rank, int) or isinstance(lora.rank, bool) or lora.rank < 0:
        raise ConfigError(f"'model.lora.rank' must be an integer >= 0 (0 = no adapters); got {lora.rank!r}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"'model.lora.dropout' must be in [0, 1); got {lora.dropout}")
    if lora.rank and lora.alpha <= 0:
        raise ConfigError(f"'model.lora.alpha' must be > 0; got {lora.alpha}")
    unknown = [t for t in lora.targets if t not in TARGETS]
    if unknown:
        raise ConfigError(
            f"'model.lora.targets': unknown projection(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(TARGETS)}"
        )
    if len(set(lora.targets)) != len(lora.targets):
        raise ConfigError(f"'model.lora.targets' lists a projection twice: {lora.targets}")
    if lora.rank and not lora.targets:
        raise ConfigError("'model.lora.targets' is empty while model.lora.rank > 0; name the projections to adapt")


# What the backward pass keeps from each layer's forward (the rest is recomputed): nothing (`full`), every matmul
# output including attention scores (`save_matmuls`), only the q/k/v/o and MLP projections (`save_projections`).
REMAT = ("none", "full", "save_matmuls", "save_projections")


def param_dtype(m: ModelConfig):
    return DTYPES[m.param_dtype]


def compute_dtype(m: ModelConfig):
    if m.compute_dtype == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return DTYPES[m.compute_dtype]
