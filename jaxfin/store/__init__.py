"""Models on disk: `load_model` reads a jaxfin checkpoint dir, a training run dir or a Hugging Face dir;
`save_model` writes either format; `load_adapter` puts a LoRA adapter (a PEFT folder or a LoRA run) onto a
loaded base model. The run's own checkpoints (params + optimizer state + data position) are
`jaxfin.store.checkpoint`."""

from __future__ import annotations

from pathlib import Path

from jaxfin.hf import is_hf_dir, load_hf, save_hf
from jaxfin.model import Model
from jaxfin.store.adapter import load_adapter
from jaxfin.store.jaxfin_dir import load_jaxfin, save_jaxfin

FORMATS = ("jaxfin", "hf")


def load_model(path: str | Path, mesh=None, **runtime) -> Model:
    """Load a jaxfin checkpoint dir, a training run dir (latest checkpoint) or a Hugging Face dir.

    `runtime` may set ModelConfig runtime knobs (param_dtype, compute_dtype, scan_layers, remat,
    attention_backend); the architecture always comes from the checkpoint. `mesh` (a jax Mesh of several devices):
    the weights go straight onto their shards, laid out by the training sharding rules (HF and checkpoint dirs;
    a run dir's params come back as saved), for evaluation on the mesh (jaxfin/eval/sharding.py).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {path}")
    return load_hf(path, mesh, **runtime) if is_hf_dir(path) else load_jaxfin(path, mesh, **runtime)


def save_model(model: Model, path: str | Path, format: str = "jaxfin") -> None:
    """Write a jaxfin checkpoint dir (`format="jaxfin"`) or a Hugging Face dir (`format="hf"`; LoRA adapters
    merged into the weights)."""
    if format == "hf":
        save_hf(model, path)
    elif format == "jaxfin":
        save_jaxfin(model, path)
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got '{format}'")


__all__ = ["FORMATS", "Model", "load_adapter", "load_model", "save_model"]
