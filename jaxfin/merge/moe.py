"""`jaxfin moe CONFIG.yml OUT_DIR`: a mixture of experts (a Mixtral folder) assembled from dense Llama / Mistral
models, from a mergekit-moe YAML (mergekit 0.1.5's MoEMergeConfig) unchanged.

The YAML: `base_model`, `experts: [{source_model, positive_prompts, negative_prompts, noise_scale,
residual_scale}]`, `gate_mode`, `dtype`, `experts_per_token` (default 2), `architecture` (only `mixtral`),
`shared_experts` (refused: Mixtral has none; mergekit writes Qwen2-MoE for them). jaxfin adds `non_expert:
base | average` and the gate modes `hidden_normed` and a rescaled `random`. Models are local Hugging Face folders
or jaxfin checkpoints (relative paths: against the current directory, then the YAML's folder).

The output, as mergekit-moe's Mixtral writer makes it:
  - expert e of layer i = `source_model` e's dense MLP of layer i, copied (cast to `dtype` if given):
    w1 = gate_proj, w2 = down_proj, w3 = up_proj (`residual_scale` multiplies w2, `noise_scale` adds
    N(0, noise_scale^2) noise to all three, drawn from --seed, so not mergekit's torch draws);
  - every other tensor (embeddings, attention, norms, LM head) is the base model's (`non_expert: base`, mergekit),
    or the mean of the experts' (`non_expert: average`, Branch-Train-MiX), computed in float32;
  - the router of layer i, `block_sparse_moe.gate.weight` [E, D], from `gate_mode` (below);
  - config.json: the base's, as MixtralForCausalLM with num_local_experts = E and num_experts_per_tok = k (the
    base's sliding_window kept; mergekit drops it); the base's tokenizer files and generation_config.json copied.
  Per-expert tensor names by default (transformers 4 and 5, vLLM, llama.cpp read them); `layout="fused"` writes the
  `mlp.experts.gate_up_proj` / `mlp.experts.down_proj` / `mlp.gate` tensors mergekit 0.1.5 writes.

Gate modes. Each prompt is tokenized as mergekit does: the tokenizer's BOS string + the prompt, no other special
tokens. For an expert, v = mean over its positive prompts - mean over its negative prompts (if any) of a per-prompt
vector, and its gate row is v / max(|v|, 1e-8):
  - `hidden` (= `hidden_last`, mergekit): the base model's residual stream entering layer i (HF
    `output_hidden_states[i]`) at each prompt's last token; one row per layer.
  - `hidden_avg` (mergekit): the same averaged over the prompt's tokens (mergekit also averages its left padding
    in; jaxfin only the prompt's own tokens).
  - `hidden_normed` (jaxfin): the router's own input instead: rms_norm(h_i + attn_i) * post_attention_layernorm_i,
    at the last token, so the rows live in the space the router multiplies.
  - `cheap_embed` (mergekit): per prompt set, the sum of the base's input embeddings of all their tokens (BOS
    included), normalised; v = positive - negative; the same row for every layer.
  - `random`: rows drawn N(0, I) from --seed (mergekit: the same distribution, unseeded torch), then each row of
    layer i rescaled to norm nu_i = ||post_attention_layernorm_i||_2 of the output model: the router input
    x = rms_norm(h) * s has |rms_norm(h)|^2 = D, so E|x|^2 = sum_j s_j^2 = ||s||^2 for a normalised direction with
    E[x_j^2] = 1 per coordinate. Rows as large as the inputs they multiply, layer by layer.
  - `uniform_random` (mergekit): U(-1/sqrt(D), 1/sqrt(D)) (nn.Linear's init), from --seed.
Hidden states come from jaxfin's JAX forward (jaxfin/model/llama.py) in float32; mergekit 0.1.5 runs the base in
bfloat16, so its `hidden` gates carry bfloat16 rounding (about 2^-8 relative; up to 4e-3 from the float32 ones on
tests/test_moe_assembly.py's models); `hidden_dtype="bfloat16"` runs jaxfin's forward in bfloat16 too and rounds the
mean, difference and normalisation to bfloat16 as torch does (closer to mergekit, less accurate: the embeddings'
layer 0 comes out equal, deeper layers within a bfloat16 step or two, since the two forwards round differently).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxfin.merge.config import MergeConfigError

log = logging.getLogger(__name__)

TOP_KEYS = {"base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts", "architecture",
            "non_expert"}  # fmt: skip
EXPERT_KEYS = {"source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale"}
GATE_MODES = ("hidden", "hidden_last", "hidden_avg", "hidden_normed", "cheap_embed", "random", "uniform_random")
PROMPT_MODES = ("hidden", "hidden_last", "hidden_avg", "hidden_normed", "cheap_embed")  # need positive_prompts
NON_EXPERT = ("base", "average")
DTYPES = {"float32", "bfloat16", "float16"}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
INPUT_TYPES = ("llama", "mistral")  # what a Mixtral can be assembled from (mergekit's MixtralMoE.supports_config)
# config.json keys that must agree between the base and every expert (value normalised as transformers reads it)
ARCH_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "hidden_act", "rms_norm_eps",
             "rope_theta", "rope_scaling", "max_position_embeddings", "sliding_window")  # fmt: skip
LAYER_MLP = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight$")
IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
HF_EXPERT = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}


class MoEConfigError(MergeConfigError):
    """A mistake in a mergekit-moe YAML (or its models): says what, where and what to do."""


@dataclasses.dataclass(frozen=True)
class Expert:
    source_model: str
    positive_prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    noise_scale: float | None
    residual_scale: float | None


@dataclasses.dataclass
class MoEPlan:
    base_model: str
    experts: list[Expert]
    gate_mode: str
    dtype: str | None
    experts_per_token: int
    non_expert: str
    paths: dict[str, Path]  # model reference -> local folder
    where: str
    source: str = ""  # the YAML text (copied next to the output, as mergekit does)

    def models(self) -> list[str]:
        return list(dict.fromkeys([self.base_model] + [e.source_model for e in self.experts]))


# ------------------------------------------------------------------------------------------------ parsing


def _model_ref(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise MoEConfigError(f"{where}: expected a model path, got {v!r}")
    if "+" in v and not Path(v).exists():
        raise MoEConfigError(f"{where}: '{v}' looks like model+LoRA, which jaxfin moe does not support")
    return v


def _prompts(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise MoEConfigError(f"{where}: expected a list of strings, got {v!r}")
    return tuple(v)


def _number(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MoEConfigError(f"{where}: expected a number, got {v!r}")
    return float(v)


def _find(ref: str, yaml_dir: Path) -> Path:
    for cand in (Path(ref).expanduser(), yaml_dir / ref):
        if cand.is_dir():
            return cand.resolve()
    raise FileNotFoundError(
        f"model '{ref}' is not a local folder (looked in the current directory and {yaml_dir}); jaxfin moe reads "
        f"local Hugging Face folders or jaxfin checkpoints and never downloads: fetch it first, e.g. "
        f"`huggingface-cli download {ref} --local-dir DIR`, and put DIR in the YAML"
    )


def parse_moe_config(
    data: Any,
    where: str = "moe config",
    base_dir: str | Path = ".",
    *,
    allow_all_same: bool = False,
    find_models: bool = True,
) -> MoEPlan:
    """A mergekit-moe YAML (already loaded) -> MoEPlan, with mergekit's checks (is_bad_config) and jaxfin's.
    `find_models=False` checks the YAML alone (a recipe's models do not exist until their stages run)."""
    if not isinstance(data, dict):
        raise MoEConfigError(f"{where}: expected a mapping with base_model and experts")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise MoEConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    if data.get("shared_experts"):
        raise MoEConfigError(
            f"{where}.shared_experts: jaxfin moe writes Mixtral only, which has no shared experts (mergekit-moe "
            f"writes Qwen2-MoE for them, which jaxfin does not support); remove shared_experts"
        )
    arch = data.get("architecture")
    if arch is not None and not (isinstance(arch, str) and "mixtral".startswith(arch.lower()) and arch):
        raise MoEConfigError(
            f"{where}.architecture: '{arch}': only Mixtral output is supported (architecture: mixtral)"
        )
    if "base_model" not in data:
        raise MoEConfigError(f"{where}: 'base_model' is missing")
    base = _model_ref(data["base_model"], f"{where}.base_model")
    gate_mode = data.get("gate_mode", "hidden")
    if gate_mode not in GATE_MODES:
        raise MoEConfigError(f"{where}.gate_mode: unknown gate_mode '{gate_mode}'; known: {', '.join(GATE_MODES)}")
    non_expert = data.get("non_expert", "base")
    if non_expert not in NON_EXPERT:
        raise MoEConfigError(f"{where}.non_expert: '{non_expert}' is not one of {', '.join(NON_EXPERT)}")
    k = data.get("experts_per_token", 2)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MoEConfigError(f"{where}.experts_per_token: must be an integer >= 1, got {k!r}")
    raw = data.get("experts")
    if not isinstance(raw, list) or not raw:
        raise MoEConfigError(f"{where}.experts: expected a list of {{source_model, positive_prompts, ...}}")
    experts = []
    for i, e in enumerate(raw):
        w = f"{where}.experts[{i}]"
        if not isinstance(e, dict) or "source_model" not in e:
            raise MoEConfigError(f"{w}: expected {{source_model: PATH, positive_prompts: [...]}}")
        extra = set(e) - EXPERT_KEYS
        if extra:
            raise MoEConfigError(f"{w}: unknown key(s) {sorted(extra)}; known: {', '.join(sorted(EXPERT_KEYS))}")
        experts.append(Expert(
            _model_ref(e["source_model"], f"{w}.source_model"),
            _prompts(e.get("positive_prompts"), f"{w}.positive_prompts"),
            _prompts(e.get("negative_prompts"), f"{w}.negative_prompts"),
            _number(e.get("noise_scale"), f"{w}.noise_scale"),
            _number(e.get("residual_scale"), f"{w}.residual_scale"),
        ))  # fmt: skip
    if len(experts) < k:
        raise MoEConfigError(f"{where}: {len(experts)} experts but experts_per_token {k}; give at least k experts")
    if gate_mode in PROMPT_MODES:
        for i, e in enumerate(experts):
            if not e.positive_prompts:
                raise MoEConfigError(f"{where}.experts[{i}].positive_prompts: gate_mode {gate_mode} needs prompts")
        if len(experts) > 1 and all(
            (e.positive_prompts, e.negative_prompts) == (experts[0].positive_prompts, experts[0].negative_prompts)
            for e in experts[1:]
        ):
            raise MoEConfigError(
                f"{where}.experts: the positive and negative prompts are identical for all experts, so every gate "
                f"is the same and the router cannot tell them apart; give each expert prompts of its own domain"
            )
        if not allow_all_same and len(experts) > 1 and len({e.source_model for e in experts}) == 1:
            raise MoEConfigError(
                f"{where}.experts: every expert is {experts[0].source_model}, which makes a bigger model with the "
                f"same outputs; pass --i-understand-this-is-not-useful-without-training to build it anyway"
            )
    plan = MoEPlan(base, experts, gate_mode, _dtype(data.get("dtype"), where), k, non_expert, {}, where)
    for ref in plan.models() if find_models else ():
        plan.paths[ref] = _find(ref, Path(base_dir))
    return plan


def _dtype(v: Any, where: str) -> str | None:
    if v is None:
        return None
    d = _DTYPE_ALIASES.get(str(v), str(v))
    if d not in DTYPES:
        raise MoEConfigError(f"{where}.dtype: '{v}' is not one of {', '.join(sorted(DTYPES))}")
    return d


def load_moe_config(path: str | Path, *, allow_all_same: bool = False) -> MoEPlan:
    """Read a mergekit-moe YAML file into a MoEPlan."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no moe config at {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MoEConfigError(f"{path}: not valid YAML ({e})") from None
    plan = parse_moe_config(data, str(path), path.parent, allow_all_same=allow_all_same)
    plan.source = text
    return plan


# ------------------------------------------------------------------------------------------------ checks


def _hf_config(path: Path) -> dict:
    f = path / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no config.json")
    return json.loads(f.read_text())


def _arch_value(cfg: dict, key: str):
    """A config.json value as transformers reads it (defaults filled in, rope in either layout)."""
    heads = cfg.get("num_attention_heads")
    rope = cfg.get("rope_parameters") or {}
    if key == "head_dim":
        return cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads else None)
    if key == "num_key_value_heads":
        return cfg.get("num_key_value_heads") or heads
    if key == "rope_theta":
        return float(rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0)
    if key == "rope_scaling":
        scaling = cfg.get("rope_scaling") or {k: v for k, v in rope.items() if k != "rope_theta"}
        return None if not scaling or scaling.get("rope_type", scaling.get("type")) == "default" else scaling
    if key == "tie_word_embeddings":
        return bool(cfg.get(key, False))
    if key == "hidden_act":
        return cfg.get("hidden_act") or cfg.get("hidden_activation") or "silu"
    if key == "sliding_window":
        return cfg.get("sliding_window") if cfg.get("model_type") == "mistral" else None
    return cfg.get(key)


def check_architectures(plan: MoEPlan, configs: dict[str, dict]) -> None:
    """Every model a Llama / Mistral of the base's architecture; else an error naming both models and the key."""
    base = plan.base_model
    for m, cfg in configs.items():
        t = cfg.get("model_type")
        if t not in INPUT_TYPES:
            raise MoEConfigError(
                f"{m}: model_type '{t}': a Mixtral is assembled from {' or '.join(INPUT_TYPES)} models only"
            )
        for key in ("attention_bias", "mlp_bias"):
            if cfg.get(key):
                raise MoEConfigError(f"{m}: {key} true, which Mixtral cannot hold (no biases on its projections)")
    for m in plan.models():
        for key in ARCH_KEYS:
            a, b = _arch_value(configs[base], key), _arch_value(configs[m], key)
            if a != b:
                raise MoEConfigError(
                    f"experts differ in architecture: {key} is {a!r} in {base} (base_model) but {b!r} in {m}; "
                    f"every expert must have the base model's architecture"
                )


def _out_config(plan: MoEPlan, base_cfg: dict, out_dtype: str | None) -> dict:
    """config.json of the output: the base's, as a Mixtral (what mergekit's MixtralMoE._generate_config keeps)."""
    cfg = {k: v for k, v in base_cfg.items() if k not in ("transformers_version", "_name_or_path")}
    cfg.update(
        architectures=["MixtralForCausalLM"],
        model_type="mixtral",
        num_local_experts=len(plan.experts),
        num_experts_per_tok=plan.experts_per_token,
        sliding_window=_arch_value(base_cfg, "sliding_window"),
        output_router_logits=False,
        router_aux_loss_coef=base_cfg.get("router_aux_loss_coef", 0.001),
        router_jitter_noise=0.0,
    )
    for k in ("pretraining_tp", "mlp_bias", "attention_bias"):  # Llama-only keys MixtralConfig does not read
        cfg.pop(k, None)
    cfg.setdefault("head_dim", _arch_value(base_cfg, "head_dim"))
    if out_dtype:
        cfg["dtype"] = cfg["torch_dtype"] = out_dtype
    return cfg


# ------------------------------------------------------------------------------------------------ forward


def _segment_batches(ids: list[list[int]], rows: int = 8, multiple: int = 32):
    """Token-id lists -> (tokens [B, S], segment ids, index of each row's last token, which inputs) batches: right
    padded (causal attention never sees it), rows and length rounded up so few shapes compile."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), rows):
        chunk = order[start : start + rows]
        s = max(len(ids[i]) for i in chunk)
        s = -(-s // multiple) * multiple
        tokens = np.zeros((rows, s), np.int32)
        seg = np.zeros((rows, s), np.int32)
        last = np.zeros((rows,), np.int32)
        for r, i in enumerate(chunk):
            n = len(ids[i])
            tokens[r, :n], seg[r, :n], last[r] = ids[i], 1, n - 1
        yield tokens, seg, last, chunk


_TRACE_FNS: dict[str, Any] = {}  # repr(ModelConfig) -> compiled trace (a ModelConfig is not hashable)


def _trace_fn(cfg):
    """jit(params, tokens, seg, last) -> per layer [L, B, ...]: the residual stream entering the layer and the
    router's input (rms_norm(h + attn) * post_attention_layernorm), each at the last token and averaged over the
    row's tokens, and (a mixture of experts) each token's top-1 router choice."""
    if repr(cfg) in _TRACE_FNS:
        return _TRACE_FNS[repr(cfg)]
    import jax
    import jax.numpy as jnp

    from jaxfin.model.config import compute_dtype
    from jaxfin.model.llama import decoder_layer, mlp_block, rms_norm, rope_frequencies, rope_tables

    def fn(params, tokens, seg, last):
        b, s = tokens.shape
        dtype = compute_dtype(cfg)
        rope = rope_tables(jnp.broadcast_to(jnp.arange(s), (b, s)), rope_frequencies(cfg))
        h = jnp.take(params["embed_tokens"]["embedding"], tokens, axis=0).astype(dtype)
        mask = (seg != 0).astype(jnp.float32)
        count = jnp.maximum(mask.sum(1, keepdims=True), 1.0)
        rows = jnp.arange(b)

        def pool(x):
            xf = x.astype(jnp.float32)
            return xf[rows, last], jnp.einsum("bsd,bs->bd", xf, mask) / count

        def body(h, lp):
            # the attention half of the layer: decoder_layer with the MLP's weights zeroed adds exactly 0
            silent = {**lp, "mlp": jax.tree.map(jnp.zeros_like, lp["mlp"])}
            mid, _ = decoder_layer(cfg, silent, h, seg, rope)
            x = rms_norm(mid, lp["post_attention_layernorm"]["scale"], cfg.rms_norm_eps)
            out, _ = mlp_block(cfg, lp["mlp"], x, seg != 0)
            rec = dict(zip(("h_last", "h_mean"), pool(h))) | dict(zip(("x_last", "x_mean"), pool(x)))
            if cfg.num_experts:
                logits = jnp.einsum(
                    "bsd,de->bse", x.astype(jnp.float32), lp["mlp"]["router"]["kernel"].astype(jnp.float32)
                )
                rec["top1"] = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return mid + out, rec

        _, recs = jax.lax.scan(body, h, params["layers"])
        return recs

    return _TRACE_FNS.setdefault(repr(cfg), jax.jit(fn))


def trace(model, ids: list[list[int]]) -> dict[str, list[np.ndarray]]:
    """Run `model` (a jaxfin Model) on each token-id list; per input, per-layer arrays: h_last, h_mean, x_last,
    x_mean [L, D] (float32), and top1 [L, n] (router choice of each token) for a mixture of experts."""
    fn = _trace_fn(model.config)
    out: dict[str, list] = {}
    for tokens, seg, last, chunk in _segment_batches(ids):
        recs = {k: np.asarray(v) for k, v in fn(model.params, tokens, seg, last).items()}
        for r, i in enumerate(chunk):
            for k, v in recs.items():
                x = v[:, r, : len(ids[i])] if k == "top1" else v[:, r]
                out.setdefault(k, [None] * len(ids))[i] = x
    return out


def _load_dense(path: Path, dtype: str):
    from jaxfin.hf.convert import load_hf

    return load_hf(path, param_dtype=dtype, compute_dtype=dtype, scan_layers=True)


def _tokenize(tok, prompts) -> list[list[int]]:
    """mergekit's tokenize_prompts, one prompt at a time: the BOS string + the prompt, no other special tokens."""
    ids = [tok((tok.bos_token or "") + p, add_special_tokens=False)["input_ids"] for p in prompts]
    for p, x in zip(prompts, ids):
        if not x:
            raise MoEConfigError(f"prompt {p!r} tokenizes to nothing")
    return ids


def _load_tokenizer(path: Path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(path))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


def compute_gates(plan: MoEPlan, *, seed: int = 0, hidden_dtype: str = "float32", norm_scales=None) -> np.ndarray:
    """Router rows [L, E, D] (float32) for plan.gate_mode (module doc). `norm_scales` [L, D]: the output's
    post_attention_layernorm weights (`random` scales by their norms)."""
    base = plan.paths[plan.base_model]
    cfg = _hf_config(base)
    n_layers, d, e = cfg["num_hidden_layers"], cfg["hidden_size"], len(plan.experts)
    mode = "hidden" if plan.gate_mode == "hidden_last" else plan.gate_mode
    rng = np.random.default_rng(seed)
    if mode == "random":
        g = rng.standard_normal((n_layers, e, d))
        nu = np.linalg.norm(np.asarray(norm_scales, np.float64), axis=-1)  # [L]
        return (_unit(g) * nu[:, None, None]).astype(np.float32)
    if mode == "uniform_random":
        scale = math.sqrt(1.0 / d)
        return (rng.random((n_layers, e, d)) * 2 * scale - scale).astype(np.float32)
    tok = _load_tokenizer(base)
    if mode == "cheap_embed":
        from jaxfin.hf.safetensors_io import SafetensorsReader

        embed = SafetensorsReader(base).read("model.embed_tokens.weight").astype(np.float64)

        def vec(prompts):
            total = sum(embed[np.asarray(x)].sum(0) for x in _tokenize(tok, prompts))
            return np.broadcast_to(_unit(total), (n_layers, d))
    else:
        model = _load_dense(base, hidden_dtype)
        key = {"hidden": "h_last", "hidden_avg": "h_mean", "hidden_normed": "x_last"}[mode]

        def vec(prompts):
            got = np.stack(trace(model, _tokenize(tok, prompts))[key])  # [n, L, D]
            if hidden_dtype == "bfloat16":  # mergekit's torch bfloat16 sum, then division
                return _bf16(_bf16(got.sum(0, dtype=np.float32)) / np.float32(len(prompts)))
            return np.mean(got.astype(np.float64), axis=0)  # [L, D]

    rows = []
    for ex in plan.experts:
        v = vec(ex.positive_prompts)
        if ex.negative_prompts:
            v = v - vec(ex.negative_prompts)
        if mode in PROMPT_MODES and mode != "cheap_embed" and hidden_dtype == "bfloat16":
            v = _bf16(v)  # each torch bfloat16 op rounds: the difference, the norm (float32 sum), the quotient
            norm = np.maximum(_bf16(np.sqrt(np.sum(v.astype(np.float32) ** 2, -1, keepdims=True))), 1e-8)
            rows.append(_bf16(v / _bf16(norm)))
        else:
            rows.append(_unit(v))
    return np.stack(rows, axis=1).astype(np.float32)  # [L, E, D]


def _bf16(x: np.ndarray) -> np.ndarray:
    """Rounded to bfloat16 (round to nearest even), held as float32."""
    import ml_dtypes

    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def degenerate_layers(gates: np.ndarray, threshold: float = 5.0) -> list[int]:
    """Layers whose router rows are nearly dependent (condition number > threshold, mergekit's warning)."""
    return [i for i in range(gates.shape[0]) if np.linalg.cond(gates[i].astype(np.float64)) > threshold]


# ------------------------------------------------------------------------------------------------ assembly


def _noise(x: np.ndarray, scale: float, seed: int, name: str, expert: int) -> np.ndarray:
    import zlib

    rng = np.random.default_rng([seed, expert, zlib.crc32(name.encode())])
    return (x.astype(np.float32) + rng.standard_normal(x.shape, np.float32) * scale).astype(x.dtype)


def assemble_moe(
    config: str | Path | MoEPlan,
    out_dir: str | Path,
    *,
    seed: int = 0,
    layout: str = "per_expert",
    max_shard_size: int | str = "5GB",
    hidden_dtype: str = "float32",
    allow_all_same: bool = False,
) -> dict:
    """Build the Mixtral folder a mergekit-moe YAML (a path, or a MoEPlan already parsed) describes (module doc) in
    `out_dir`. `seed`: random gates and
    expert noise. `layout`: 'per_expert' (block_sparse_moe.experts.{e}.w1/w2/w3) or 'fused' (mergekit 0.1.5's).
    `hidden_dtype`: the dtype of the base's forward for the hidden gate modes. Returns a JSON-able summary."""
    from jaxfin.hf.convert import config_from_hf, stored_dtype
    from jaxfin.hf.safetensors_io import FLOAT_DTYPES, SafetensorsReader, SafetensorsWriter, TensorSpec
    from jaxfin.merge.engine import as_hf_folder

    if layout not in ("per_expert", "fused"):
        raise ValueError(f"layout must be 'per_expert' or 'fused', got '{layout}'")
    if hidden_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"hidden_dtype must be 'float32' or 'bfloat16', got '{hidden_dtype}'")
    t0 = time.perf_counter()
    plan = config if isinstance(config, MoEPlan) else load_moe_config(config, allow_all_same=allow_all_same)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="jaxfin-moe-") as tmp:
        for ref in plan.models():
            plan.paths[ref] = as_hf_folder(ref, plan.paths[ref], Path(tmp))
        configs = {m: _hf_config(plan.paths[m]) for m in plan.models()}
        check_architectures(plan, configs)
        base_cfg = configs[plan.base_model]
        readers = {m: SafetensorsReader(plan.paths[m]) for m in plan.models()}
        base_r = readers[plan.base_model]
        n_layers, e_count = base_cfg["num_hidden_layers"], len(plan.experts)
        # mergekit's select_dtype: the YAML's dtype, else the base config's; jaxfin then the base's stored dtype
        out_dtype = plan.dtype or base_cfg.get("dtype") or base_cfg.get("torch_dtype") or stored_dtype(base_r.path)
        if out_dtype not in FLOAT_DTYPES:
            raise MoEConfigError(f"{plan.base_model}: config dtype '{out_dtype}' is not one of {sorted(DTYPES)}")

        for m in dict.fromkeys(e.source_model for e in plan.experts):  # every expert has the dense MLP tensors
            for i in range(n_layers):
                for p in HF_EXPERT:
                    name = f"model.layers.{i}.mlp.{p}.weight"
                    if name not in readers[m]:
                        raise MoEConfigError(f"expert {m} has no tensor {name}; is it a dense Llama / Mistral?")
        dense = [n for n in base_r.names() if not LAYER_MLP.match(n) and not IGNORED.match(n)]
        if base_cfg.get("tie_word_embeddings"):
            dense = [n for n in dense if n != "lm_head.weight"]
        non_expert_src = [plan.base_model] if plan.non_expert == "base" else [e.source_model for e in plan.experts]
        for m in non_expert_src:
            for n in dense:
                if n not in readers[m]:
                    raise MoEConfigError(f"{m} has no tensor {n} (present in {plan.base_model})")
                if readers[m].shape(n) != base_r.shape(n):
                    raise MoEConfigError(
                        f"experts differ in architecture: tensor {n} is {list(base_r.shape(n))} in "
                        f"{plan.base_model} but {list(readers[m].shape(n))} in {m}"
                    )

        out_np = FLOAT_DTYPES[out_dtype]

        def non_expert(n: str) -> np.ndarray:
            if plan.non_expert == "base":
                return base_r.read(n).astype(out_np, copy=False)
            total = None
            for m in non_expert_src:  # the experts' mean in float32, in YAML order
                x = readers[m].read(n).astype(np.float32)
                total = x if total is None else total + x
            return (total / len(non_expert_src)).astype(out_np)

        norms = None
        if plan.gate_mode == "random":
            norms = [non_expert(f"model.layers.{i}.post_attention_layernorm.weight").astype(np.float32)
                     for i in range(n_layers)]  # fmt: skip
        gates = compute_gates(plan, seed=seed, hidden_dtype=hidden_dtype, norm_scales=norms)
        degenerate = degenerate_layers(gates)
        if degenerate:
            log.warning("layers %s have degenerate routing parameters (condition number > 5): the prompts may be "
                        "too similar, and some experts will be underused", degenerate)  # fmt: skip

        def expert_tensor(i: int, e: int, p: str) -> np.ndarray:
            ex, name = plan.experts[e], f"model.layers.{i}.mlp.{p}.weight"
            x = readers[ex.source_model].read(name)
            if ex.noise_scale is not None:
                x = _noise(x, ex.noise_scale, seed, name, e)
            if p == "down_proj" and ex.residual_scale is not None:
                x = (x.astype(np.float32) * ex.residual_scale).astype(x.dtype)
            return x.astype(out_np, copy=False)

        def fused(i: int, which: str) -> np.ndarray:
            parts = ("gate_proj", "up_proj") if which == "gate_up_proj" else ("down_proj",)
            return np.stack([np.concatenate([expert_tensor(i, e, p) for p in parts]) for e in range(e_count)])

        # the output tensors, in the order transformers writes a Mixtral: the embedding; per layer attention,
        # router, experts, norms; the final norm and LM head
        tasks: list[tuple[str, tuple[int, ...], Any]] = []  # (name, shape, () -> array)
        layer_of = re.compile(r"^model\.layers\.(\d+)\.")
        per_layer: dict[int, list[str]] = {}
        for n in dense:
            if g := layer_of.match(n):
                per_layer.setdefault(int(g.group(1)), []).append(n)
        top = [n for n in dense if not layer_of.match(n)]
        pre, post = [n for n in top if n.startswith("model.embed")], [n for n in top if not n.startswith("model.embed")]
        tasks += [(n, base_r.shape(n), functools.partial(non_expert, n)) for n in pre]
        for i in range(n_layers):
            names = per_layer.get(i, [])
            tasks += [(n, base_r.shape(n), functools.partial(non_expert, n)) for n in names if "layernorm" not in n]
            router = f"model.layers.{i}.{'mlp' if layout == 'fused' else 'block_sparse_moe'}.gate.weight"
            tasks.append((router, gates.shape[1:], lambda i=i: gates[i].astype(out_np)))
            shapes = {p: base_r.shape(f"model.layers.{i}.mlp.{p}.weight") for p in HF_EXPERT}
            if layout == "fused":
                f, d = shapes["gate_proj"]
                tasks.append((f"model.layers.{i}.mlp.experts.gate_up_proj", (e_count, 2 * f, d),
                              functools.partial(fused, i, "gate_up_proj")))  # fmt: skip
                tasks.append((f"model.layers.{i}.mlp.experts.down_proj", (e_count, d, f),
                              functools.partial(fused, i, "down_proj")))  # fmt: skip
            else:
                for e in range(e_count):
                    for p in ("gate_proj", "down_proj", "up_proj"):
                        name = f"model.layers.{i}.block_sparse_moe.experts.{e}.{HF_EXPERT[p]}.weight"
                        tasks.append((name, shapes[p], functools.partial(expert_tensor, i, e, p)))
            tasks += [(n, base_r.shape(n), functools.partial(non_expert, n)) for n in names if "layernorm" in n]
        tasks += [(n, base_r.shape(n), functools.partial(non_expert, n)) for n in post]

        out_dir.mkdir(parents=True, exist_ok=True)
        writer = SafetensorsWriter(out_dir, [TensorSpec(n, tuple(s), out_dtype) for n, s, _ in tasks], max_shard_size)
        for n, shape, get in tasks:
            x = np.asarray(get())
            if tuple(x.shape) != tuple(shape):
                writer.abort()
                raise MoEConfigError(f"tensor {n}: shape {list(x.shape)}, expected {list(shape)}")
            writer.write(n, x)
        files = writer.close()
        out_cfg = _out_config(plan, base_cfg, out_dtype)
        (out_dir / "config.json").write_text(json.dumps(out_cfg, indent=2, sort_keys=True) + "\n")
        config_from_hf(out_cfg, str(out_dir / "config.json"))  # jaxfin reads what it wrote
        files.append("config.json")
        base_dir = plan.paths[plan.base_model]
        if (base_dir / "generation_config.json").is_file():
            shutil.copyfile(base_dir / "generation_config.json", out_dir / "generation_config.json")
            files.append("generation_config.json")
        from jaxfin.hf.tokenizer import copy_tokenizer_files, has_tokenizer_files

        if has_tokenizer_files(base_dir):
            files += copy_tokenizer_files(base_dir, out_dir)
        else:
            log.warning("%s has no tokenizer files; the MoE has none either", base_dir)
        if plan.source:
            (out_dir / "mergekit_moe_config.yml").write_text(plan.source)
            files.append("mergekit_moe_config.yml")
    return {
        "out_dir": str(out_dir),
        "architecture": "MixtralForCausalLM",
        "experts": [e.source_model for e in plan.experts],
        "experts_per_token": plan.experts_per_token,
        "layers": n_layers,
        "gate_mode": plan.gate_mode,
        "non_expert": plan.non_expert,
        "dtype": out_dtype,
        "layout": layout,
        "tensors": len(tasks),
        "bytes_written": writer.written,
        "degenerate_layers": degenerate,
        "seconds": round(time.perf_counter() - t0, 3),
        "files": files,
    }


# ------------------------------------------------------------------------------------------------ routing


def routing_accuracy(moe_dir: str | Path, texts_by_expert: list[list[str]], *, max_tokens: int = 256) -> dict:
    """How often the MoE at `moe_dir` routes held-out text of expert e's domain to expert e.

    texts_by_expert[e]: texts that belong to expert e. Each text is tokenized as gate prompts are (BOS string +
    text, no other special tokens, at most `max_tokens` tokens) and run through the MoE (jaxfin's forward,
    float32); at every layer l and token t the router's top-1 choice c(l, t) = argmax_e' of its logits (the expert
    with the largest routing weight) is compared with e. Tokens after the BOS count (the BOS itself is the same in
    every domain). Returns
      - `token`: the mean over experts e of acc_e, where acc_e = sum over e's texts, layers and tokens of
        [c(l, t) = e] / their count (each expert's tokens weigh equally within e; the experts weigh equally),
      - `last_token`: the same over each text's last token only,
      - `per_expert` (acc_e), `per_layer` (token accuracy of each layer, experts weighted equally),
      - `chance`: 1 / E, what a router that ignores the text scores on average.
    """
    from jaxfin.hf.convert import load_hf

    model = load_hf(moe_dir, param_dtype="float32", compute_dtype="float32", scan_layers=True)
    cfg = model.config
    if not cfg.num_experts:
        raise ValueError(f"{moe_dir}: not a mixture of experts")
    if len(texts_by_expert) != cfg.num_experts:
        raise ValueError(f"{len(texts_by_expert)} text lists for {cfg.num_experts} experts")
    tok = _load_tokenizer(Path(moe_dir))
    per_expert, last, per_layer = [], [], []
    for e, texts in enumerate(texts_by_expert):
        if not texts:
            raise ValueError(f"no texts for expert {e}")
        ids = [x[:max_tokens] for x in _tokenize(tok, texts)]
        top1 = trace(model, ids)["top1"]  # each [L, n]
        hits = np.concatenate([t[:, 1:] == e for t in top1 if t.shape[1] > 1], axis=1)  # [L, tokens]
        per_expert.append(float(hits.mean()))
        per_layer.append(hits.mean(axis=1))
        last.append(float(np.mean([t[:, -1] == e for t in top1])))
    return {
        "token": float(np.mean(per_expert)),
        "last_token": float(np.mean(last)),
        "per_expert": per_expert,
        "per_layer": [float(x) for x in np.mean(per_layer, axis=0)],
        "chance": 1.0 / cfg.num_experts,
    }
