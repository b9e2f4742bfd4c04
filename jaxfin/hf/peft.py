"""LoRA adapters <-> a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`), which
`peft.PeftModel.from_pretrained(base_model, folder)` loads onto the base model exported with `Model.save(...,
format="hf")` of the same model without adapters (`merge_adapters` is not applied: the base is the base).

PEFT's layout, per adapted module: `base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_A.weight`
[r, in] and `....lora_B.weight` [out, r], with y = x W^T + (lora_alpha / r) * x A^T B^T. Our lora_a [in..., r] and
lora_b [r, out...] map onto them by the converter's rule for kernels (flatten in/out dims, transpose).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxfin.config import ConfigError, ModelConfig
from jaxfin.model.lora import has_adapters
from jaxfin.model.params import lora_params

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def adapter_config(cfg: ModelConfig, base_model_name_or_path: str = "") -> dict:
    """adapter_config.json for cfg.lora (peft's LoraConfig fields)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path or None,
        "revision": None,
        "inference_mode": True,
        "r": cfg.lora.rank,
        "lora_alpha": cfg.lora.alpha,
        "lora_dropout": cfg.lora.dropout,
        "target_modules": sorted(cfg.lora.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def adapter_tensors(params: dict, cfg: ModelConfig, dtype: str | None = None) -> dict[str, np.ndarray]:
    """PEFT tensor name -> array ([r, in] for lora_A, [out, r] for lora_B), one per layer and target."""
    import jax

    from jaxfin.hf.safetensors_io import FLOAT_DTYPES

    np_dtype = FLOAT_DTYPES[dtype or cfg.param_dtype]
    out = {}
    for name in cfg.lora.targets:
        kernel = lora_params(cfg)[name]  # its table entry: pytree path and HF name
        _, group, _, _ = kernel.path.split("/")
        p = params["layers"][group][name]
        a = np.asarray(jax.device_get(p["lora_a"]))  # [L, in..., r]
        b = np.asarray(jax.device_get(p["lora_b"]))  # [L, r, out...]
        n, r = a.shape[0], a.shape[-1]
        a = a.reshape(n, -1, r)
        b = b.reshape(n, r, -1)
        for i in range(n):
            prefix = "base_model.model." + kernel.hf.format(i=i).removesuffix(".weight")
            out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T.astype(np_dtype))
            out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T.astype(np_dtype))
    return out


def save_peft_adapter(
    model_or_params, cfg: ModelConfig | None = None, out_dir: str | Path = "", base_model_name_or_path: str = ""
) -> list[str]:
    """Write `out_dir/adapter_config.json` and `out_dir/adapter_model.safetensors` for a model (or params + cfg)
    with LoRA adapters. Load with `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out_dir)`
    where `base` is the base model (the params without adapters) in HF format. Returns the file names."""
    from jaxfin.hf.safetensors_io import write_tensors

    if hasattr(model_or_params, "params"):
        params, cfg = model_or_params.params, cfg or model_or_params.config
    else:
        params = model_or_params
    if cfg is None or not out_dir:
        raise ValueError("save_peft_adapter needs the model config and an output dir")
    if cfg.lora.rank <= 0 or not has_adapters(params):
        raise ConfigError("this model has no LoRA adapters (model.lora.rank is 0); nothing to write as a PEFT adapter")
    if cfg.num_experts:
        raise ConfigError(
            "PEFT adapter export supports dense models only: PEFT has no layout for adapters on stacked experts "
            "(transformers fuses a Mixtral layer's experts into one tensor); export the merged model with format='hf'"
        )
    if cfg.num_labels:
        raise ConfigError(
            "PEFT adapter export supports causal LMs only; a reward model's trained score head is not an adapter "
            "(export the merged model with format='hf' instead)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(json.dumps(adapter_config(cfg, base_model_name_or_path), indent=2) + "\n")
    write_tensors(out, adapter_tensors(params, cfg), None, basename="adapter_model")  # WEIGHTS
    return [CONFIG, WEIGHTS]


def base_model(model):
    """The model without its adapters (a jaxfin Model), to export as the base a PEFT adapter loads onto."""
    import dataclasses

    from jaxfin.model.lora import split_adapters, without_lora

    base, _ = split_adapters(model.params)
    return dataclasses.replace(model, config=without_lora(model.config), params=base)
