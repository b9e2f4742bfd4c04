"""ModelConfig for the model: a validated one from a stored `model:` mapping, and the JAX dtypes its dtype names
stand for (the checks are config/validate.py's)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfin.config import ConfigError, choices, config_from_dict
from jaxfin.config.schema import ModelConfig
from jaxfin.parallel.mesh import target_platform

DTYPES = {name: jnp.dtype(name) for name in choices.DTYPES}


def param_dtype(m: ModelConfig):
    return DTYPES[m.param_dtype]


def compute_dtype(m: ModelConfig):
    if m.compute_dtype == "auto":
        return jnp.float32 if target_platform() == "cpu" else jnp.bfloat16
    return DTYPES[m.compute_dtype]


def model_config(d: dict, where: str, **runtime) -> ModelConfig:
    """A validated ModelConfig from a `model:` mapping, with runtime knobs (param_dtype, ...) on top."""
    unknown = sorted(set(runtime) - set(ModelConfig.RUNTIME_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown runtime option(s) {', '.join(unknown)} for {where}; "
            f"allowed: {', '.join(ModelConfig.RUNTIME_KEYS)}"
        )
    try:
        return config_from_dict({"model": {**d, **runtime}}, where).model
    except ConfigError as e:  # cross-field checks do not know the file; name it
        raise (e if str(e).startswith(where) else ConfigError(f"{where}: {e}")) from None


def cast_params(params: dict, cfg: ModelConfig) -> dict:
    """Params as jax arrays in cfg.param_dtype (no copy when already there)."""
    dtype = DTYPES[cfg.param_dtype]
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
