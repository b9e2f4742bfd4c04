"""Hugging Face <-> jaxfin: config.json <-> ModelConfig and safetensors <-> the param pytree.

The weight mapping is pure transposes and reshapes (no RoPE permutation: HF's q/k weights are already in
rotate-half order, which is what our RoPE uses), so HF -> jaxfin -> HF is bitwise in the stored dtype.
HF-only fields that ModelConfig does not model (an eos id list, generation_config.json, a few inert config
keys) travel as `model.hf_extra` and in the `hf` entry of jaxfin_model.json, so exports stay faithful.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from jaxfin.config import ConfigError, ModelConfig
from jaxfin.hf.safetensors_io import FLOAT_DTYPES, SafetensorsReader, SafetensorsWriter, TensorSpec
from jaxfin.model import Model
from jaxfin.model.config import model_config
from jaxfin.model.params import param_shapes, table

ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
}  # fmt: skip
# inert keys copied back on export when the source had them (the export is otherwise built from ModelConfig)
KEPT_KEYS = ("use_cache", "attention_dropout", "pretraining_tp", "max_window_layers", "output_router_logits",
             "router_jitter_noise")  # fmt: skip
IGNORED_TENSORS = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


# ---------------------------------------------------------------------------------------------- config


def _get(hf: dict, key: str, where: str, default=None, required: bool = False):
    value = hf.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing '{key}'")
        return default
    return value


def _rope(hf: dict, where: str) -> tuple[float, dict]:
    """(rope_theta, RopeScaling fields) from the transformers-v5 `rope_parameters` or the older layout."""
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}  # transformers gives rope_scaling priority
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        raise ConfigError(f"{where}: per-layer-type rope parameters are not supported")
    theta = params.get("rope_theta") or hf.get("rope_theta") or 10000.0
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind == "default":
        return float(theta), {"type": "default"}
    if kind != "llama3":
        raise ConfigError(
            f"{where}: rope type '{kind}' is not supported (supported: default, llama3); "
            f"jaxfin would compute different positions than the model was trained with"
        )
    scaling = {"type": "llama3"}
    for key in ("factor", "low_freq_factor", "high_freq_factor"):
        if params.get(key) is None:
            raise ConfigError(f"{where}: llama3 rope scaling needs '{key}'")
        scaling[key] = params[key]
    # transformers falls back to max_position_embeddings when this is missing; so do we
    scaling["original_max_position_embeddings"] = params.get("original_max_position_embeddings") or hf.get(
        "max_position_embeddings"
    )
    return float(theta), scaling


def _token_id(value) -> int:
    if isinstance(value, list):
        value = value[0] if value else None
    return -1 if value is None else int(value)


def _check_supported(hf: dict, family: str, where: str) -> None:
    act = hf.get("hidden_act") or hf.get("hidden_activation") or "silu"
    if act != "silu":
        raise ConfigError(f"{where}: hidden_act '{act}' is not supported (jaxfin's MLP is SwiGLU: silu)")
    if hf.get("mlp_bias"):
        raise ConfigError(f"{where}: mlp_bias true (biases on gate/up/down_proj) is not supported")
    if family != "qwen2" and hf.get("attention_bias"):
        raise ConfigError(
            f"{where}: attention_bias true for '{family}' means biases on q/k/v *and* o_proj, and jaxfin "
            f"has no o_proj bias; only Qwen2-style q/k/v biases are supported"
        )
    if hf.get("quantization_config"):
        raise ConfigError(f"{where}: quantized checkpoints are not supported; use the unquantized weights")


def config_from_hf(hf: dict, where: str) -> ModelConfig:
    """A validated ModelConfig from a config.json dict (`where` names the file in messages)."""
    family = hf.get("model_type")
    if family not in ARCHITECTURES:
        raise ConfigError(f"{where}: model_type '{family}' is not supported (supported: {', '.join(ARCHITECTURES)})")
    _check_supported(hf, family, where)
    theta, scaling = _rope(hf, where)
    heads = _get(hf, "num_attention_heads", where, required=True)
    if family in ("mistral", "mixtral"):
        window = hf.get("sliding_window") or 0
    elif family == "qwen2":
        window = (hf.get("sliding_window") or 0) if hf.get("use_sliding_window") else 0
    else:
        window = 0
    d = {
        "family": family,
        "vocab_size": _get(hf, "vocab_size", where, required=True),
        "hidden_size": _get(hf, "hidden_size", where, required=True),
        "intermediate_size": _get(hf, "intermediate_size", where, required=True),
        "num_layers": _get(hf, "num_hidden_layers", where, required=True),
        "num_heads": heads,
        "num_kv_heads": _get(hf, "num_key_value_heads", where, heads),
        "head_dim": _get(hf, "head_dim", where, 0),
        "rms_norm_eps": _get(hf, "rms_norm_eps", where, 1e-6),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "max_position_embeddings": _get(hf, "max_position_embeddings", where, 2048),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "attention_bias": family == "qwen2",
        "sliding_window": window,
        "init_std": _get(hf, "initializer_range", where, 0.02),
        "bos_token_id": _token_id(hf.get("bos_token_id")),
        "eos_token_id": _token_id(hf.get("eos_token_id")),
        "pad_token_id": _token_id(hf.get("pad_token_id")),
        "num_labels": _num_labels(hf),
    }
    if family == "mixtral":
        d |= {
            "num_experts": _get(hf, "num_local_experts", where, required=True),
            "experts_per_token": _get(hf, "num_experts_per_tok", where, required=True),
            "router_aux_loss_coef": _get(hf, "router_aux_loss_coef", where, 0.001),
        }
    return model_config(d, where)


def _num_labels(hf: dict) -> int:
    """0 for a causal LM; the number of labels of a `...ForSequenceClassification` (e.g. 1 for a reward model)."""
    if not any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or []):
        return 0
    return int(hf.get("num_labels") or len(hf.get("id2label") or {}) or 2)


def config_to_hf(cfg: ModelConfig) -> dict:
    """config.json for the family, in the layout transformers 5 writes, plus the legacy keys (rope_theta,
    rope_scaling, torch_dtype) older transformers / serving stacks read, so they cannot silently fall back to
    default RoPE."""
    rope = {"rope_theta": cfg.rope_theta, "rope_type": cfg.rope_scaling.type}
    if cfg.rope_scaling.type == "llama3":
        rs = cfg.rope_scaling
        rope |= {
            "factor": rs.factor,
            "low_freq_factor": rs.low_freq_factor,
            "high_freq_factor": rs.high_freq_factor,
            "original_max_position_embeddings": rs.original_max_position_embeddings,
        }
    legacy = {k: v for k, v in rope.items() if k != "rope_theta"} if cfg.rope_scaling.type != "default" else None

    def token(i):
        return None if i < 0 else i

    arch = ARCHITECTURES[cfg.family]
    hf = {
        "architectures": [arch.replace("ForCausalLM", "ForSequenceClassification") if cfg.num_labels else arch],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.rms_norm_eps,
        "use_cache": True,
        "bos_token_id": token(cfg.bos_token_id),
        "eos_token_id": token(cfg.eos_token_id),
        "pad_token_id": token(cfg.pad_token_id),
        "tie_word_embeddings": cfg.tie_embeddings,
        "rope_parameters": rope,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": legacy,
        "attention_dropout": 0.0,
        "dtype": cfg.param_dtype,
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.num_labels:  # transformers reads the score at the last token that is not pad_token_id
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    if cfg.family != "qwen2" or cfg.head_dim:  # Qwen2Config derives head_dim; the others write it
        hf["head_dim"] = cfg.head_size
    if cfg.family == "llama":
        hf |= {"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}
    elif cfg.family == "mistral":
        hf["sliding_window"] = cfg.sliding_window or None
    elif cfg.family == "mixtral":
        hf |= {
            "sliding_window": cfg.sliding_window or None,
            "num_local_experts": cfg.num_experts,
            "num_experts_per_tok": cfg.experts_per_token,
            "router_aux_loss_coef": cfg.router_aux_loss_coef,
            "output_router_logits": False,
            "router_jitter_noise": 0.0,
        }
    elif cfg.family == "qwen2":
        hf |= {
            "use_sliding_window": bool(cfg.sliding_window),
            "sliding_window": cfg.sliding_window or None,
            "max_window_layers": cfg.num_layers,
        }
    return hf


def _extras(hf: dict, generation: dict | None, layout: str | None = None) -> dict:
    """HF fields ModelConfig does not hold, kept for a faithful export (and a mixture of experts' tensor layout)."""
    config = {k: hf[k] for k in KEPT_KEYS if k in hf}
    if isinstance(hf.get("eos_token_id"), list):
        config["eos_token_id"] = hf["eos_token_id"]
    if hf.get("model_type") == "qwen2" and not hf.get("use_sliding_window") and "sliding_window" in hf:
        config["sliding_window"] = hf["sliding_window"]  # inert while use_sliding_window is false
    extra = {"model_type": hf.get("model_type"), "config": config}
    if layout:
        extra["moe_layout"] = layout
    if generation:
        extra["generation_config"] = {k: v for k, v in generation.items() if k != "transformers_version"}
    return extra


def _ids_match(value, cfg_id: int) -> bool:
    return _token_id(value) == cfg_id


def _export_configs(cfg: ModelConfig, extra: dict | None) -> tuple[dict, dict]:
    """(config.json, generation_config.json) dicts: built from cfg, with the kept extras where still true."""
    hf = config_to_hf(cfg)
    extra = extra if extra and extra.get("model_type") == cfg.family else {}
    kept = dict(extra.get("config", {}))
    if not _ids_match(kept.get("eos_token_id"), cfg.eos_token_id):
        kept.pop("eos_token_id", None)  # eos changed since import: the old list is stale
    if cfg.sliding_window:
        kept.pop("sliding_window", None)  # the inert Qwen2 value must not replace a live one
    hf |= kept
    gen = dict(extra.get("generation_config") or {"_from_model_config": True})
    # the stored generation config wins unless the model config contradicts it
    for name in ("bos", "eos", "pad"):
        key, mine = f"{name}_token_id", getattr(cfg, f"{name}_token_id")
        if mine < 0 or (key in gen and _ids_match(gen[key], mine)):
            continue
        gen[key] = hf[key] if _ids_match(hf.get(key), mine) else mine
    return hf, gen


# ---------------------------------------------------------------------------------------------- weights


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One HF tensor: where it lives in the pytree (layer and expert index or None) and its HF shape."""

    name: str
    path: tuple[str, ...]
    layer: int | None
    hf_shape: tuple[int, ...]
    transpose: bool  # HF nn.Linear weights are [out, in]; our kernels are [in, out]
    expert: int | None = None

    def part(self, buf: np.ndarray) -> np.ndarray:
        """This tensor's slice of its (stacked) leaf."""
        if self.layer is None:
            return buf
        return buf[self.layer] if self.expert is None else buf[self.layer, self.expert]


def _specs(cfg: ModelConfig) -> list[_Spec]:
    """Every HF tensor of the model, in the order transformers writes them: from the family's table
    (jaxfin/model/params.py), the stacked layer params one layer at a time (a layer's experts one expert at a
    time, each with its projections)."""
    base = table(cfg)
    stacked = [p for p in base if p.stacked]
    first = base.index(stacked[0])
    experts = [p for p in stacked if p.per_expert]

    def one(p, i=None, e=None):
        name = p.hf.format(i=i, e=e)
        return _Spec(name, tuple(p.path.split("/")), i, p.hf_shape(cfg), p.transpose, e)

    def layer(i):
        out = []
        for p in stacked:
            if p is (experts[0] if experts else None):
                out += [one(q, i, e) for e in range(cfg.num_experts) for q in experts]
            elif not p.per_expert:
                out.append(one(p, i))
        return out

    layers = [s for i in range(cfg.num_layers) for s in layer(i)]
    return [one(p) for p in base[:first]] + layers + [one(p) for p in base[first:] if not p.stacked]


# ---------------------------------------------------------------------------------------------- MoE layouts

# A Mixtral checkpoint comes in two layouts transformers reads: per expert (`block_sparse_moe.experts.{e}.w1/w2/w3`,
# what it writes, and what the MIXTRAL table names) and fused (`mlp.experts.gate_up_proj` [E, 2F, D] = each
# expert's w1 then w3 along dim 1, `mlp.experts.down_proj` [E, D, F], router `mlp.gate`: the module's own
# parameters). The fused one is read through a per-expert view and written by fusing the per-expert stream.
_PER_EXPERT = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight")
_FUSED_TEST = "model.layers.0.mlp.experts.gate_up_proj"


def _fused(i: int, what: str) -> str:
    return f"model.layers.{i}.mlp.{what}"


def moe_layout(names) -> str | None:
    """'fused' or 'per_expert' for a Mixtral checkpoint's tensor names, None for a dense model."""
    names = set(names)
    if _FUSED_TEST in names:
        return "fused"
    return "per_expert" if any(_PER_EXPERT.fullmatch(n) for n in names) else None


class _PerExpertView(Mapping):
    """A fused Mixtral checkpoint seen with per-expert names (the dense names unchanged)."""

    def __init__(self, tensors: Mapping, cfg: ModelConfig):
        self.tensors, self.cfg = tensors, cfg
        self.names = {}
        for name in tensors:
            m = re.fullmatch(
                r"model\.layers\.(\d+)\.mlp\.(gate\.weight|experts\.gate_up_proj|experts\.down_proj)", name
            )
            if not m:
                self.names[name] = name
                continue
            i, what = m.group(1), m.group(2)
            if what == "gate.weight":
                self.names[f"model.layers.{i}.block_sparse_moe.gate.weight"] = name
            else:
                for e in range(cfg.num_experts):
                    for w in ("w1", "w3") if what == "experts.gate_up_proj" else ("w2",):
                        self.names[f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight"] = name
        self._last = (None, None)

    def __getitem__(self, name):
        m = _PER_EXPERT.fullmatch(name)
        if not m:
            return self.tensors[self.names[name]]
        fused = self.names[name]
        if self._last[0] != fused:  # one fused tensor serves all experts of a layer: read it once
            self._last = (fused, np.asarray(self.tensors[fused]))
        t, e, f = self._last[1], int(m.group(2)), self.cfg.intermediate_size
        if t.ndim != 3 or t.shape[0] != self.cfg.num_experts:
            raise ValueError(f"tensor '{fused}' has shape {list(t.shape)}, expected [{self.cfg.num_experts}, ...]")
        return {"w1": t[e, :f], "w3": t[e, f:], "w2": t[e]}[m.group(3)]

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)


def _fused_specs(cfg: ModelConfig, dtype: str) -> list[TensorSpec]:
    """The fused layout's tensors, in the per-expert stream's order."""
    out, d, f, e = [], cfg.hidden_size, cfg.intermediate_size, cfg.num_experts
    for s in _specs(cfg):
        m = _PER_EXPERT.fullmatch(s.name)
        if s.name.endswith("block_sparse_moe.gate.weight"):
            out.append(TensorSpec(_fused(s.layer, "gate.weight"), s.hf_shape, dtype))
        elif m and m.group(2) == "0" and m.group(3) == "w1":
            out.append(TensorSpec(_fused(s.layer, "experts.gate_up_proj"), (e, 2 * f, d), dtype))
            out.append(TensorSpec(_fused(s.layer, "experts.down_proj"), (e, d, f), dtype))
        elif not m:
            out.append(TensorSpec(s.name, s.hf_shape, dtype))
    return out


def _fuse(pairs: Iterator[tuple[str, np.ndarray]], cfg: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """The per-expert (name, tensor) stream -> the fused layout's, one layer's experts gathered at a time."""
    held: dict[str, np.ndarray] = {}
    for name, x in pairs:
        m = _PER_EXPERT.fullmatch(name)
        if name.endswith("block_sparse_moe.gate.weight"):
            yield name.replace("block_sparse_moe.gate", "mlp.gate"), x
            continue
        if not m:
            yield name, x
            continue
        held[f"{m.group(2)}.{m.group(3)}"] = x
        if len(held) == 3 * cfg.num_experts:
            i, experts = int(m.group(1)), range(cfg.num_experts)
            yield _fused(i, "experts.gate_up_proj"), np.stack([np.concatenate([held[f"{e}.w1"], held[f"{e}.w3"]])
                                                               for e in experts])  # fmt: skip
            yield _fused(i, "experts.down_proj"), np.stack([held[f"{e}.w2"] for e in experts])
            held = {}


def _from_hf(w: np.ndarray, spec: _Spec, shape: tuple[int, ...]) -> np.ndarray:
    return (w.T if spec.transpose else w).reshape(shape)


def _to_hf(x: np.ndarray, spec: _Spec) -> np.ndarray:
    if spec.transpose:  # [in..., out...] -> [in, out] -> [out, in]
        return np.ascontiguousarray(x.reshape(spec.hf_shape[::-1]).T)
    return np.ascontiguousarray(x.reshape(spec.hf_shape))


def _check_names(names, specs: list[_Spec], cfg: ModelConfig, where: str) -> None:
    expected = {s.name for s in specs}
    missing = sorted(expected - set(names))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{where}: missing tensor '{missing[0]}'{more} for this config.json")
    skip = {"lm_head.weight"} if cfg.tie_embeddings else set()  # a tied copy some exporters still write
    unknown = sorted(n for n in names if n not in expected and n not in skip and not IGNORED_TENSORS.fullmatch(n))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(
            f"{where}: unexpected tensor '{unknown[0]}'{more}; jaxfin supports plain Llama / Mistral / Qwen2 "
            f"decoders and would silently drop it"
        )


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg: ModelConfig, where: str = "checkpoint",
                   shardings: dict | None = None) -> dict:  # fmt: skip
    """HF tensors -> the param pytree in cfg.param_dtype, one tensor at a time (`tensors` may be lazy); with
    `shardings` (a NamedSharding per param) each leaf goes straight onto its shards, never whole onto one device."""
    from jaxfin.parallel import put_sharded

    place = traverse_util.flatten_dict(shardings) if shardings else {}
    specs = _specs(cfg)
    if moe_layout(tensors.keys()) == "fused":
        tensors = _PerExpertView(tensors, cfg)
    _check_names(list(tensors.keys()), specs, cfg, where)
    shapes = traverse_util.flatten_dict(param_shapes(cfg))
    dtype = FLOAT_DTYPES[cfg.param_dtype]
    by_leaf: dict[tuple[str, ...], list[_Spec]] = {}
    for spec in specs:
        by_leaf.setdefault(spec.path, []).append(spec)
    out: dict[tuple[str, ...], jax.Array] = {}
    for path, leaf_specs in by_leaf.items():  # one stacked leaf at a time keeps host memory low
        buf = np.empty(shapes[path], dtype)
        for spec in leaf_specs:
            w = np.asarray(tensors[spec.name])
            if tuple(w.shape) != spec.hf_shape:
                raise ValueError(
                    f"{where}: tensor '{spec.name}' has shape {list(w.shape)}, expected {list(spec.hf_shape)}"
                )
            part = spec.part(buf)
            part[...] = _from_hf(w, spec, part.shape)
        out[path] = put_sharded(buf, place[path]) if place else jax.device_put(buf)
        del buf
    return traverse_util.unflatten_dict(out)


def _host(x, spec: _Spec) -> np.ndarray:
    """One tensor of a (stacked) leaf on the host: a free view on CPU, else sliced on device then copied."""
    if isinstance(x, np.ndarray) or all(d.platform == "cpu" for d in x.devices()):
        return spec.part(np.asarray(x))
    return np.asarray(jax.device_get(spec.part(x)))


def _iter_hf(params: dict, cfg: ModelConfig, dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, tensor) pairs, one tensor on the host at a time."""
    flat = traverse_util.flatten_dict(params)
    for spec in _specs(cfg):
        x = _host(flat[spec.path], spec)
        yield spec.name, _to_hf(x.astype(dtype, copy=False), spec)


def params_to_hf(params: dict, cfg: ModelConfig, dtype: str | None = None) -> dict[str, np.ndarray]:
    """The param pytree -> HF tensors (in `dtype`, default the params' own); LoRA adapters merged in."""
    from jaxfin.model.lora import merge_adapters

    params, cfg = merge_adapters(params, cfg)
    return dict(_iter_hf(params, cfg, FLOAT_DTYPES[dtype or cfg.param_dtype]))


# ---------------------------------------------------------------------------------------------- files


def is_hf_dir(path: str | Path) -> bool:
    """A dir with a config.json that names a model_type."""
    f = Path(path) / "config.json"
    try:
        return f.is_file() and "model_type" in json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def stored_dtype(path: str | Path) -> str:
    """The dtype the checkpoint's weights are stored in (its embedding's), e.g. 'bfloat16'."""
    dtype = SafetensorsReader(path).dtype("model.embed_tokens.weight")
    if dtype not in FLOAT_DTYPES:
        raise ConfigError(f"{path}: weights stored as {dtype}; supported: {', '.join(FLOAT_DTYPES)}")
    return dtype


def load_hf(path: str | Path, mesh=None, **runtime) -> Model:
    """Load an HF dir (config.json + safetensors). `runtime` sets ModelConfig runtime knobs; params are cast
    to param_dtype (default float32). `mesh`: put each weight straight onto its shards, laid out by the training
    sharding rules (jaxfin.model.params.param_layout)."""
    from jaxfin.hf.tokenizer import has_tokenizer_files
    from jaxfin.model.params import param_layout

    path = Path(path)
    hf = _read_json(path / "config.json")
    cfg = config_from_hf(hf, str(path / "config.json"))
    if runtime:
        cfg = model_config(dataclasses.asdict(cfg), str(path / "config.json"), **runtime)
    tensors = SafetensorsReader(path)
    params = params_from_hf(tensors, cfg, tensors.where, param_layout(cfg, mesh))
    gen = path / "generation_config.json"
    extra = _extras(hf, _read_json(gen) if gen.is_file() else None, moe_layout(tensors.keys()))
    return Model(cfg, params, str(path) if has_tokenizer_files(path) else None, hf_extra=extra)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_hf(model: Model, path: str | Path, max_shard_size: int | str = "5GB", dtype: str | None = None) -> list[str]:
    """Write an HF dir: config.json, generation_config.json, safetensors (sharded past max_shard_size) and the
    tokenizer. LoRA adapters are merged into the weights (a plain HF model; `jaxfin.hf.peft.save_peft_adapter`
    writes them as a PEFT adapter instead); a PPO value head is left out. Returns the file names written."""
    from jaxfin.hf.tokenizer import export_tokenizer
    from jaxfin.model.lora import merge_adapters

    params, merged_cfg = merge_adapters(model.params, model.config)
    if merged_cfg.value_head:  # PPO's critic is training state: the exported policy is a plain causal LM
        params = {k: v for k, v in params.items() if k != "value_head"}
    cfg = dataclasses.replace(merged_cfg, param_dtype=dtype or model.config.param_dtype, value_head=False)
    if cfg.param_dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype '{cfg.param_dtype}' is not one of {', '.join(FLOAT_DTYPES)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf, gen = _export_configs(cfg, model.hf_extra)
    _write_json(path / "config.json", hf)
    _write_json(path / "generation_config.json", gen)
    specs = [TensorSpec(s.name, s.hf_shape, cfg.param_dtype) for s in _specs(cfg)]
    pairs = _iter_hf(params, cfg, FLOAT_DTYPES[cfg.param_dtype])
    if cfg.num_experts and (model.hf_extra or {}).get("moe_layout") == "fused":  # written as it was read
        specs, pairs = _fused_specs(cfg, cfg.param_dtype), _fuse(pairs, cfg)
    written = ["config.json", "generation_config.json"]
    with SafetensorsWriter(path, specs, max_shard_size) as w:  # removes stale shards of an earlier export
        for name, x in pairs:
            w.write(name, x)
    written += w.close()
    if model.tokenizer_dir:
        written += [f for f in export_tokenizer(model.tokenizer_dir, path, cfg) if f not in written]
    return written
