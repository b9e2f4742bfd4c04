"""A LoRA adapter put onto a base model: `load_adapter(base, DIR)`, where DIR is a PEFT adapter folder
(`adapter_config.json` + `adapter_model.safetensors`, e.g. a run's `export_peft`) or a jaxfin LoRA run /
checkpoint dir (its adapter leaves are taken, its base weights are not: the base is the one given). The inverse of
`jaxfin.hf.peft.adapter_tensors`: PEFT's lora_A [r, in] / lora_B [out, r] per layer -> our lora_a [L, in..., r] /
lora_b [L, r, out...]."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from flax import traverse_util

from jaxfin.config import ConfigError
from jaxfin.config.schema import LoraConfig
from jaxfin.hf.peft import CONFIG, WEIGHTS
from jaxfin.model import Model
from jaxfin.model.lora import adapter_shapes, has_adapters, merge_adapters, split_adapters
from jaxfin.model.params import lora_params


def load_adapter(base: Model, path: str | Path) -> Model:
    """`base` with the LoRA adapters stored at `path` (a base that has adapters of its own is merged first)."""
    path = Path(path)
    if has_adapters(base.params):
        params, cfg = merge_adapters(base.params, base.config)
        base = dataclasses.replace(base, params=params, config=cfg)
    if (path / CONFIG).is_file():
        lora, leaves = _read_peft(path, base)
    else:
        lora, leaves = _read_run(path)
    cfg = dataclasses.replace(base.config, lora=lora)
    want = {f"{k.rsplit('/', 1)[0]}/{leaf}": s for k, ab in adapter_shapes(cfg).items()
            for leaf, s in zip(("lora_a", "lora_b"), ab)}  # fmt: skip
    got = {k: tuple(v.shape) for k, v in leaves.items()}
    if got != want:
        bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))[:3]
        raise ConfigError(f"{path}: the adapter does not fit this base model (e.g. {bad[0]}: adapter "
                          f"{got.get(bad[0])}, base needs {want.get(bad[0])}); train it on this base")  # fmt: skip
    dtype = next(iter(traverse_util.flatten_dict(base.params).values())).dtype
    flat = traverse_util.flatten_dict(base.params, sep="/")
    flat.update({k: np.asarray(v).astype(dtype) for k, v in leaves.items()})
    return dataclasses.replace(base, config=cfg, params=traverse_util.unflatten_dict(flat, sep="/"))


def _read_peft(path: Path, base: Model) -> tuple[LoraConfig, dict]:
    from safetensors.numpy import load_file

    conf = json.loads((path / CONFIG).read_text())
    if conf.get("peft_type") != "LORA" or conf.get("use_dora") or conf.get("use_rslora"):
        raise ConfigError(f"{path / CONFIG}: only plain LoRA adapters are supported (peft_type LORA, no DoRA/rsLoRA)")
    targets = conf["target_modules"]
    targets = [targets] if isinstance(targets, str) else list(targets)
    known = lora_params(base.config)
    if any(t not in known for t in targets):
        raise ConfigError(f"{path / CONFIG}: target_modules {targets}; this model's LoRA targets are {sorted(known)}")
    lora = LoraConfig(rank=int(conf["r"]), alpha=float(conf["lora_alpha"]), dropout=float(conf.get("lora_dropout", 0)),
                      targets=sorted(targets))  # fmt: skip
    tensors = load_file(str(path / WEIGHTS))
    shapes = adapter_shapes(dataclasses.replace(base.config, lora=lora))
    leaves = {}
    for name in lora.targets:
        kernel = known[name]
        a_shape, b_shape = shapes[kernel.path]
        a, b = [], []
        for i in range(base.config.num_layers):
            prefix = "base_model.model." + kernel.hf.format(i=i).removesuffix(".weight")
            try:
                a.append(tensors[f"{prefix}.lora_A.weight"].T.reshape(a_shape[1:]))
                b.append(tensors[f"{prefix}.lora_B.weight"].T.reshape(b_shape[1:]))
            except KeyError as e:
                raise ConfigError(f"{path / WEIGHTS}: no tensor {e} (an adapter for another model?)") from None
            except ValueError:
                raise ConfigError(f"{path / WEIGHTS}: {prefix} does not fit this base model's shapes") from None
        base_path = kernel.path.rsplit("/", 1)[0]
        leaves[f"{base_path}/lora_a"], leaves[f"{base_path}/lora_b"] = np.stack(a), np.stack(b)
    return lora, leaves


def _read_run(path: Path) -> tuple[LoraConfig, dict]:
    from jaxfin.store.jaxfin_dir import load_jaxfin

    run = load_jaxfin(path)
    if run.config.lora.rank <= 0 or not has_adapters(run.params):
        raise ConfigError(f"{path}: not a LoRA adapter: expected a PEFT folder ({CONFIG} + {WEIGHTS}) or a jaxfin "
                          "run / checkpoint trained with model.lora.rank > 0")  # fmt: skip
    _, leaves = split_adapters(run.params)
    return run.config.lora, leaves
