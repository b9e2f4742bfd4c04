"""Hugging Face import/export: config.json, safetensors weights and tokenizer files."""

from jaxfin.hf.convert import (
    config_from_hf,
    config_to_hf,
    is_hf_dir,
    load_hf,
    params_from_hf,
    params_to_hf,
    save_hf,
)

__all__ = [
    "config_from_hf",
    "config_to_hf",
    "is_hf_dir",
    "load_hf",
    "params_from_hf",
    "params_to_hf",
    "save_hf",
]
