"""The model: a ModelConfig plus one parameter pytree, and the functions over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxfin.config.schema import ModelConfig
from jaxfin.model.init import init_params
from jaxfin.model.llama import forward, hidden_states, output_kernel, scores
from jaxfin.model.params import param_axes, param_shapes


@dataclass
class Model:
    """What `jaxfin.load_model` returns.

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

    def save(self, path: str | Path, format: str = "jaxfin") -> None:
        """Write a jaxfin checkpoint dir (`format="jaxfin"`) or a Hugging Face dir (`format="hf"`)."""
        if format == "hf":
            from jaxfin.hf import save_hf

            save_hf(self, path)
        elif format == "jaxfin":
            from jaxfin.model.store import save_jaxfin

            save_jaxfin(self, path)
        else:
            raise ValueError(f"format must be 'jaxfin' or 'hf', got '{format}'")


def load_model(path: str | Path, **runtime) -> Model:
    """Load a jaxfin checkpoint dir, a training run dir (latest checkpoint) or a Hugging Face dir.

    `runtime` may set ModelConfig runtime knobs (param_dtype, compute_dtype, scan_layers, remat,
    attention_backend); the architecture always comes from the checkpoint.
    """
    from jaxfin.hf import is_hf_dir, load_hf
    from jaxfin.model.store import load_jaxfin

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {path}")
    model = load_hf(path, **runtime) if is_hf_dir(path) else load_jaxfin(path, **runtime)
    return model


__all__ = [
    "Model", "forward", "hidden_states", "init_params", "load_model", "output_kernel", "param_axes", "param_shapes",
    "scores",
]  # fmt: skip
