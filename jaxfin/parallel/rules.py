"""Logical-axis rules: the one place that says how parameters, optimizer state, batches and activations are laid
out on the device mesh.

Every array dimension has a logical name; `RULES` maps names to mesh axes (None = replicated):

- FSDP (ZeRO-3): the model dimension (`embed`) of every weight is split over `fsdp`, and so is the optimizer state,
  which is laid out like the parameters; XLA all-gathers a weight where it is used and reduce-scatters its
  gradient. Batches are split over `data` x `fsdp`.
- Tensor parallelism (Megatron): query/key/value heads, the MLP hidden dimension and the vocabulary are split over
  `tensor`, so attention and the MLP run on local heads / columns and meet in one reduction per block.
- Expert parallelism (mixture of experts): the `experts` dimension of the expert weights is split over `expert`,
  and so is the batch, so each device routes its own tokens and exchanges them with the devices holding their
  experts (all-to-all inside shard_map, jaxfin/model/moe.py). The other weights are replicated over `expert`.
- The stacked layer axis, head_dim and norms stay whole.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxfin.config.errors import ConfigError

RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp", "expert"),
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "layers": None,
    "head_dim": None,
    "norm": None,
    "labels": None,
    "value": None,
    "lora_rank": None,
    "experts": "expert",
    "seq": None,
    "act_embed": None,  # the model dimension of activations: whole on each device (no sequence parallelism)
}

# Which config key sets each logical dimension's size (named in errors).
_CONFIG_KEY = {
    "vocab": "model.vocab_size",
    "embed": "model.hidden_size",
    "heads": "model.num_heads",
    "kv_heads": "model.num_kv_heads",
    "mlp": "model.intermediate_size",
    "experts": "model.num_experts",
    "batch": "train.batch_size / train.micro_batches",
}


def spec(names: tuple[str | None, ...]) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions have these logical names."""
    return PartitionSpec(*(RULES[n] if n is not None else None for n in names))


def _path(key_path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def _axes_of(axes: Mapping[str, tuple[str, ...]], path: str) -> tuple[str, ...]:
    try:
        return axes[path]
    except KeyError:
        raise KeyError(f"no logical axes for parameter '{path}': declare it in its family's table "
                       f"(jaxfin/model/params.py)") from None  # fmt: skip


def _mesh_size(mesh: Mesh, axes) -> int:
    axes = (axes,) if isinstance(axes, str) else axes or ()
    size = 1
    for a in axes:
        size *= mesh.shape[a]
    return size


def check_divisible(name: str, size: int, logical: str, mesh: Mesh) -> None:
    """A dimension split over mesh axes must divide evenly; say which setting to change when it does not."""
    axes = RULES[logical]
    n = _mesh_size(mesh, axes)
    if size % n:
        axes_txt = " x ".join(f"mesh.{a}={mesh.shape[a]}" for a in ((axes,) if isinstance(axes, str) else axes))
        raise ConfigError(
            f"{name}: {_CONFIG_KEY.get(logical, logical)}={size} is not divisible by {axes_txt} "
            f"(the '{logical}' dimension is split over it); choose mesh sizes that divide it"
        )


def param_specs(params, axes: Mapping[str, tuple[str, ...]]) -> dict:
    """PartitionSpec per parameter (arrays or ShapeDtypeStructs); `axes`: path -> logical axes, from the model
    (jaxfin.model.param_axes(cfg)), so these rules know no model family."""
    return jax.tree_util.tree_map_with_path(lambda p, x: spec(_axes_of(axes, _path(p))), params)


def param_shardings(params, mesh: Mesh, axes: Mapping[str, tuple[str, ...]]) -> dict:
    """NamedSharding per parameter, after checking every split dimension divides evenly."""

    def one(p, x):
        path = _path(p)
        names = _axes_of(axes, path)
        for dim, logical in zip(x.shape, names):
            check_divisible(f"parameter {path}", dim, logical, mesh)
        return NamedSharding(mesh, spec(names))

    return jax.tree_util.tree_map_with_path(one, params)


def put_sharded(x, sharding):
    """Host (numpy) or device array -> a global array with this sharding; each process only copies its shards
    (never a whole copy per device): training's state, evaluation's params and batches."""
    if isinstance(x, jax.Array):
        return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def like_params(tree, params_shardings: dict, mesh: Mesh):
    """Shardings for a tree that embeds the parameter tree (optimizer state: Adam's mu and nu): a leaf whose path
    ends with a parameter's path and has its shape is laid out like that parameter; everything else (step
    counters, masked-out placeholders) is replicated. This is what makes FSDP shard the optimizer state too."""
    flat = {_path(p): s for p, s in jax.tree_util.tree_leaves_with_path(params_shardings)}

    def one(p, x):
        keys = [str(k.key) for k in p if isinstance(k, jax.tree_util.DictKey)]
        for i in range(len(keys)):
            s = flat.get("/".join(keys[i:]))
            if s is not None and len(s.spec) == len(x.shape):
                return s
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, tree)


def constrain(x, names: tuple[str | None, ...]):
    """Pin an activation's layout by logical names inside a jitted function traced under `jax.set_mesh(mesh)`;
    a no-op without a mesh (single-device use such as `Model.logits`)."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, spec(names))


def constrain_params(tree, axes: Mapping[str, tuple[str, ...]]):
    """Lay a parameter-shaped tree (gradients) out like the parameters: under FSDP this makes the gradient
    reduction a reduce-scatter into the owners' shards rather than an all-reduce."""
    if jax.sharding.get_abstract_mesh().empty:
        return tree
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jax.lax.with_sharding_constraint(x, spec(_axes_of(axes, _path(p)))), tree
    )
