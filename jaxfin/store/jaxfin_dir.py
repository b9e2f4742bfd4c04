"""jaxfin checkpoint dirs: `jaxfin_model.json` (the ModelConfig) + `params/` (Orbax) + tokenizer files.

A training run dir (`jaxfin_model.json` + `checkpoints/`) loads the same way, from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxfin.config import ConfigError, ModelConfig
from jaxfin.hf.tokenizer import copy_tokenizer_files, has_tokenizer_files
from jaxfin.model import Model
from jaxfin.model.config import DTYPES, cast_params, model_config
from jaxfin.model.params import param_shapes
from jaxfin.store.checkpoint import restore_params

FORMAT, VERSION = "jaxfin-model", 1
MODEL_JSON = "jaxfin_model.json"


def write_model_json(path: Path, cfg: ModelConfig, hf_extra: dict | None = None) -> None:
    """`path/jaxfin_model.json`: the architecture (and HF-only fields, for a faithful export back to HF)."""
    desc = {"format": FORMAT, "version": VERSION, "model": dataclasses.asdict(cfg)}
    if hf_extra:  # eos list, generation config: fields ModelConfig does not model
        desc["hf"] = hf_extra
    (path / MODEL_JSON).write_text(json.dumps(desc, indent=2) + "\n")


def save_jaxfin(model: Model, path: str | Path) -> None:
    """Write `model` as a jaxfin checkpoint dir (overwriting the params of an existing one)."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    write_model_json(path, model.config, model.hf_extra)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path / "params", model.params, force=True)
    ckptr.wait_until_finished()
    ckptr.close()
    if model.tokenizer_dir:
        copy_tokenizer_files(model.tokenizer_dir, path)


def _read_desc(path: Path) -> dict:
    where = path / MODEL_JSON
    try:
        desc = json.loads(where.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e})") from None
    if desc.get("format") != FORMAT or not isinstance(desc.get("model"), dict):
        raise ConfigError(f"{where}: not a jaxfin model description (expected format '{FORMAT}' and a 'model' key)")
    if desc.get("version", 0) > VERSION:
        raise ConfigError(f"{where}: version {desc['version']} is newer than this jaxfin reads ({VERSION})")
    return desc


def _restore(params_dir: Path, cfg: ModelConfig, shardings: dict | None = None) -> dict:
    """Restore the param pytree saved in cfg.param_dtype onto the default device, or straight onto the shards of
    `shardings` (a NamedSharding per param)."""
    dtype = DTYPES[cfg.param_dtype]
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = param_shapes(cfg)
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    shardings = shardings or jax.tree.map(lambda s: one, shapes, is_leaf=is_shape)
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s, dtype, sharding=sh), shapes, shardings,
                          is_leaf=is_shape)  # fmt: skip
    ckptr = ocp.StandardCheckpointer()
    try:
        return ckptr.restore(params_dir, target)
    finally:
        ckptr.close()


def load_jaxfin(path: str | Path, mesh=None, **runtime) -> Model:
    """Load a jaxfin checkpoint dir or a training run dir (its newest readable checkpoint). `mesh`: restore a
    checkpoint dir's params straight onto their shards, laid out by the training sharding rules (a run dir's come
    back as saved; `jaxfin.eval.sharding.shard_model` lays them out)."""
    from jaxfin.model.params import param_layout

    path = Path(path).absolute()
    if not (path / MODEL_JSON).is_file() or not ((path / "params").is_dir() or (path / "checkpoints").is_dir()):
        raise FileNotFoundError(
            f"{path} is not a model dir: expected a Hugging Face dir (config.json with model_type + "
            f"*.safetensors), a jaxfin checkpoint ({MODEL_JSON} + params/) or a training run dir "
            f"({MODEL_JSON} + checkpoints/)"
        )
    desc = _read_desc(path)
    where = str(path / MODEL_JSON)
    stored = model_config(desc["model"], where)
    cfg = model_config(desc["model"], where, **runtime)
    if (path / "params").is_dir():
        params = _restore(path / "params", stored, param_layout(stored, mesh))
    else:
        params = restore_params(path)
    tokenizer_dir = str(path) if has_tokenizer_files(path) else None
    return Model(cfg, cast_params(params, cfg), tokenizer_dir, hf_extra=desc.get("hf"))
