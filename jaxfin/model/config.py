"""Derived values of ModelConfig: the JAX dtypes its dtype names stand for (the checks are config/validate.py's)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfin.config import choices
from jaxfin.config.schema import ModelConfig

DTYPES = {name: jnp.dtype(name) for name in choices.DTYPES}


def param_dtype(m: ModelConfig):
    return DTYPES[m.param_dtype]


def compute_dtype(m: ModelConfig):
    if m.compute_dtype == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return DTYPES[m.compute_dtype]
