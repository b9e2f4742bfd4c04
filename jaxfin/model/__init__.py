"""The model: a ModelConfig plus one parameter pytree, and the functions over them."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from jaxfin.config.schema import ModelConfig
from jaxfin.model.init import init_params
from jaxfin.model.llama import forward, forward_with_values, hidden_states, output_kernel, scores
from jaxfin.model.params import param_axes, param_shapes


@dataclass
class Model:
    """A model in memory: what `jaxfin.load_model` returns and `jaxfin.save_model` writes (jaxfin/store/).

    `tokenizer_dir`: where the tokenizer files are (or None). `hf_extra`: Hugging Face fields that do not
    change the weights (eos list, generation config), kept so an export back to HF stays faithful.
    """

    config: ModelConfig
    params: dict
    tokenizer_dir: str | None = None
    hf_extra: dict | None = None
    _logits_fn: object = field(default=None, init=False, repr=False, compare=False)

    def logits(self, tokens) -> jnp.ndarray:
        """int [B, S] -> float32 logits [B, S, V]; positions 0..S-1, one document per row."""
        if self._logits_fn is None:  # compiled once per Model (and per input shape)
            self._logits_fn = jax.jit(lambda p, t: forward(p, self.config, t))
        return self._logits_fn(self.params, jnp.asarray(tokens, jnp.int32))


__all__ = [
    "Model", "forward", "hidden_states", "init_params", "output_kernel", "param_axes", "param_shapes",
    "scores",
    "forward_with_values",
]  # fmt: skip
