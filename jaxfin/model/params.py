"""Each parameter declared once: its place in the pytree, logical axes (which give its shape and its sharding),
initializer, Hugging Face name and layout, and whether LoRA can target it. Shapes (`param_shapes`), `init_params`
(init.py), the sharding rules (`param_axes` -> jaxfin/parallel/rules.py), LoRA adapters (lora.py) and HF
conversion (jaxfin/hf/convert.py) all read the family's table, so a new model family adds a table here and its
forward.

A table lists `Param`s in the order transformers writes the tensors; `layers/...` params are stacked on a leading
`layers` axis and have one HF tensor per layer (`{i}` in the name); a mixture of experts' expert weights are also
stacked on an `experts` axis after it, one HF tensor per layer and expert (`{e}`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from flax import traverse_util

from jaxfin.config.schema import ModelConfig

# The size of each logical axis, from the config (the axes' mesh layout is RULES in jaxfin/parallel/rules.py).
AXIS_SIZES: dict[str, Callable[[ModelConfig], int]] = {
    "layers": lambda c: c.num_layers,
    "embed": lambda c: c.hidden_size,
    "norm": lambda c: c.hidden_size,
    "heads": lambda c: c.num_heads,
    "kv_heads": lambda c: c.num_kv_heads,
    "head_dim": lambda c: c.head_size,
    "mlp": lambda c: c.intermediate_size,
    "vocab": lambda c: c.vocab_size,
    "labels": lambda c: c.num_labels,
    "value": lambda c: 1,
    "lora_rank": lambda c: c.lora.rank,
    "experts": lambda c: c.num_experts,
}
INITS = ("normal", "normal_out", "ones", "zeros")  # normal_out: std / sqrt(2 L), GPT-2's residual-output scaling
ADAPTER_LEAVES = ("lora_a", "lora_b")


@dataclass(frozen=True)
class Param:
    path: str  # in the pytree, '/'-joined
    axes: tuple[str, ...]  # logical axis names, one per dimension
    init: str  # one of INITS
    hf: str  # Hugging Face tensor name ("{i}": the layer index)
    n_in: int = 0  # a matmul kernel's input dims (after `layers`); HF keeps them last, flattened, when transposed
    transpose: bool = False  # HF nn.Linear weights are [out, in]; our kernels are [in..., out...]
    lora: bool = False  # LoRA can target it (model.lora.targets names its projection, path[-2])
    when: Callable[[ModelConfig], bool] | None = None  # present only in configs where this holds

    @property
    def stacked(self) -> bool:
        return self.axes[0] == "layers"

    @property
    def per_expert(self) -> bool:
        """Stacked on layers and experts: [L, E, ...], one HF tensor per (layer, expert)."""
        return self.stacked and len(self.axes) > 1 and self.axes[1] == "experts"

    @property
    def lead(self) -> int:
        """How many leading stacking axes (layers, experts) come before the tensor's own dims."""
        return 2 if self.per_expert else 1 if self.stacked else 0

    def shape(self, cfg: ModelConfig) -> tuple[int, ...]:
        return tuple(AXIS_SIZES[a](cfg) for a in self.axes)

    def hf_shape(self, cfg: ModelConfig) -> tuple[int, ...]:
        """The HF tensor's shape (one layer of a stacked param): 2-D [out, in] for a transposed kernel."""
        dims = self.shape(cfg)[self.lead :]
        a, b = math.prod(dims[: self.n_in]), math.prod(dims[self.n_in :])
        if self.transpose:
            return (b, a)
        return (a, b) if self.n_in else (b,)


def _proj(group: str, name: str, axes: tuple[str, ...], n_in: int, init: str = "normal") -> Param:
    return Param(f"layers/{group}/{name}/kernel", ("layers", *axes), init, f"model.layers.{{i}}.{group}.{name}.weight",
                 n_in=n_in, transpose=True, lora=True)  # fmt: skip


def _bias(name: str, heads: str) -> Param:
    return Param(f"layers/self_attn/{name}/bias", ("layers", heads, "head_dim"), "zeros",
                 f"model.layers.{{i}}.self_attn.{name}.bias", when=lambda c: c.attention_bias)  # fmt: skip


def _norm(name: str) -> Param:
    return Param(f"layers/{name}/scale", ("layers", "norm"), "ones", f"model.layers.{{i}}.{name}.weight")


# Llama 2/3/3.1/3.2, Mistral and Qwen2 (attention biases): one table, HF order within each layer.
LLAMA: tuple[Param, ...] = (
    Param("embed_tokens/embedding", ("vocab", "embed"), "normal", "model.embed_tokens.weight", n_in=1),
    _proj("self_attn", "q_proj", ("embed", "heads", "head_dim"), 1),
    _bias("q_proj", "heads"),
    _proj("self_attn", "k_proj", ("embed", "kv_heads", "head_dim"), 1),
    _bias("k_proj", "kv_heads"),
    _proj("self_attn", "v_proj", ("embed", "kv_heads", "head_dim"), 1),
    _bias("v_proj", "kv_heads"),
    _proj("self_attn", "o_proj", ("heads", "head_dim", "embed"), 2, init="normal_out"),
    _proj("mlp", "gate_proj", ("embed", "mlp"), 1),
    _proj("mlp", "up_proj", ("embed", "mlp"), 1),
    _proj("mlp", "down_proj", ("mlp", "embed"), 1, init="normal_out"),
    _norm("input_layernorm"),
    _norm("post_attention_layernorm"),
    Param("norm/scale", ("norm",), "ones", "model.norm.weight"),
    Param("score/kernel", ("embed", "labels"), "normal", "score.weight", n_in=1, transpose=True,
          when=lambda c: c.num_labels > 0),  # a reward / classification model: a score head instead of the LM head
    Param("lm_head/kernel", ("embed", "vocab"), "normal", "lm_head.weight", n_in=1, transpose=True,
          when=lambda c: not c.num_labels and not c.tie_embeddings),
    # PPO's value head: zeros at the start (V = 0 until trained); TRL's AutoModelForCausalLMWithValueHead name
    Param("value_head/kernel", ("embed", "value"), "zeros", "v_head.summary.weight", n_in=1, transpose=True,
          when=lambda c: c.value_head),
)  # fmt: skip


def _expert(name: str, hf: str, axes: tuple[str, ...], init: str = "normal") -> Param:
    hf_name = f"model.layers.{{i}}.block_sparse_moe.experts.{{e}}.{hf}.weight"
    return Param(f"layers/mlp/experts/{name}/kernel", ("layers", "experts", *axes), init, hf_name, n_in=1,
                 transpose=True, lora=True)  # fmt: skip


# Mixtral: Llama attention; the MLP is a router [D, E] and E SwiGLU experts (HF w1 = gate, w3 = up, w2 = down).
# HF names are the per-expert layout; jaxfin/hf/convert.py also reads and writes transformers 5's fused one.
_DENSE_MLP = ("layers/mlp/gate_proj/kernel", "layers/mlp/up_proj/kernel", "layers/mlp/down_proj/kernel")
_MOE_MLP = (
    Param("layers/mlp/router/kernel", ("layers", "embed", "experts"), "normal",
          "model.layers.{i}.block_sparse_moe.gate.weight", n_in=1, transpose=True),
    _expert("gate_proj", "w1", ("embed", "mlp")),
    _expert("down_proj", "w2", ("mlp", "embed"), init="normal_out"),
    _expert("up_proj", "w3", ("embed", "mlp")),
)  # fmt: skip
_AT = LLAMA.index(next(p for p in LLAMA if p.path == _DENSE_MLP[0]))
MIXTRAL: tuple[Param, ...] = (
    *(p for p in LLAMA[:_AT] if not p.path.endswith("/bias")),
    *_MOE_MLP,
    *(p for p in LLAMA[_AT:] if p.path not in _DENSE_MLP),
)

TABLES: dict[str, tuple[Param, ...]] = {"llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "mixtral": MIXTRAL}


def table(cfg: ModelConfig) -> list[Param]:
    """The base (non-adapter) params of this config, in HF order."""
    return [p for p in TABLES[cfg.family] if p.when is None or p.when(cfg)]


def lora_params(cfg: ModelConfig) -> dict[str, Param]:
    """Projection name -> its kernel's Param, for every projection LoRA can target in this family."""
    return {p.path.split("/")[-2]: p for p in TABLES[cfg.family] if p.lora}


def adapters(cfg: ModelConfig) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Kernel path -> (lora_a axes, lora_b axes) for each of cfg.lora.targets (none without adapters): A keeps
    the kernel's stacking (layer, expert) and input axes, B the stacking and output axes."""
    if cfg.lora.rank <= 0:
        return {}
    out = {}
    for name in cfg.lora.targets:
        k = lora_params(cfg)[name]
        cut = k.lead + k.n_in
        out[k.path] = ((*k.axes[:cut], "lora_rank"), (*k.axes[: k.lead], "lora_rank", *k.axes[cut:]))
    return out


def param_axes(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """'/'-joined path -> logical axes of every param of this config, adapters included."""
    axes = {p.path: p.axes for p in table(cfg)}
    for path, (a, b) in adapters(cfg).items():
        base = path.rsplit("/", 1)[0]
        axes[f"{base}/lora_a"], axes[f"{base}/lora_b"] = a, b
    return axes


def param_shapes(cfg: ModelConfig) -> dict:
    """Shape of every parameter, as the same nested dict as the params."""
    flat = {path: tuple(AXIS_SIZES[a](cfg) for a in axes) for path, axes in param_axes(cfg).items()}
    return traverse_util.unflatten_dict(flat, sep="/")


def param_count(cfg: ModelConfig) -> int:
    """All parameters of this config, adapters included (a tied embedding is one matrix, counted once)."""
    return sum(math.prod(AXIS_SIZES[a](cfg) for a in axes) for axes in param_axes(cfg).values())


def param_layout(cfg: ModelConfig, mesh) -> dict | None:
    """NamedSharding per parameter of model config `cfg` on `mesh` by the training sharding rules (the nested
    param dict), for loaders that place each weight straight onto its shards (`jaxfin.load_model(path,
    mesh=...)`); None without a mesh of several devices."""
    if mesh is None or mesh.size == 1:
        return None
    import jax

    from jaxfin.model.config import param_dtype
    from jaxfin.parallel import param_shardings

    dtype = param_dtype(cfg)
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(cfg),
                          is_leaf=lambda x: isinstance(x, tuple))  # fmt: skip
    return param_shardings(shapes, mesh, param_axes(cfg))
