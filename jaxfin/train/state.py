"""The train state on a device mesh: params, optimizer state, step and RNG, each laid out by the sharding rules
(jaxfin/parallel/rules.py), and the train step compiled ahead of time for that layout.

Used by the trainer and by `jaxfin bench train`, so a benchmark measures exactly what training runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import ModelConfig, ObjectiveConfig, TrainConfig
from jaxfin.model.batch import BATCH_DTYPE, BATCH_KEYS
from jaxfin.model.config import param_dtype
from jaxfin.model.init import traced_init_params
from jaxfin.model.params import param_axes, param_shapes
from jaxfin.parallel import batch_sharding, like_params, param_shardings, put_sharded, replicated
from jaxfin.parallel.rules import check_divisible


def check_layout(model: ModelConfig, train: TrainConfig, mesh: Mesh) -> None:
    """Everything the mesh splits must divide evenly; checked before anything is built or compiled."""
    if train.batch_size % train.micro_batches:
        raise ConfigError(
            f"train.batch_size={train.batch_size} is not divisible by train.micro_batches={train.micro_batches}"
        )
    check_divisible("each micro-batch", train.batch_size // train.micro_batches, "batch", mesh)
    param_shardings(abstract_params(model), mesh, param_axes(model))  # checks every split parameter dimension


def abstract_params(model: ModelConfig) -> dict:
    dtype = param_dtype(model)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(model), is_leaf=lambda x: isinstance(x, tuple)
    )


def state_shardings(model: ModelConfig, objective: ObjectiveConfig, optimizer, mesh: Mesh) -> dict:
    """NamedSharding for every leaf of the train state."""
    params = abstract_params(model)
    p_shard = param_shardings(params, mesh, param_axes(model))
    opt = jax.eval_shape(optimizer.init, params)
    rep = replicated(mesh)
    out = {"params": p_shard, "opt_state": like_params(opt, p_shard, mesh), "step": rep, "rng": rep}
    if keeps_reference(objective, model):
        out["ref_params"] = p_shard
    return out


def keeps_reference(objective: ObjectiveConfig, model: ModelConfig | None = None) -> bool:
    """DPO with `reference: frozen`, and GRPO with a KL term (beta > 0) on a model without LoRA adapters (with
    them, the reference is the base without the adapters, no copy), keep a copy of the initial params in the state."""
    if objective.type == "grpo":
        return bool(objective.beta) and not (model is not None and model.lora.rank > 0)
    return objective.type == "dpo" and objective.reference == "frozen"


def init_state(model: ModelConfig, objective: ObjectiveConfig, optimizer, mesh: Mesh, seed: int, params=None):
    """The initial state, created directly in its sharded layout: from `params` (e.g. loaded from Hugging Face)
    or freshly initialised from `seed` (train.seed; random numbers do not depend on the layout)."""
    shardings = state_shardings(model, objective, optimizer, mesh)
    if params is None:
        params = jax.jit(lambda k: traced_init_params(model, k), out_shardings=shardings["params"])(
            jax.random.key(seed)
        )
    else:
        params = jax.tree.map(put_sharded, params, shardings["params"])

    make = jax.jit(_state_from(objective, optimizer, seed, model), out_shardings=shardings, donate_argnums=0)
    return make(params)


def _state_from(objective: ObjectiveConfig, optimizer, seed: int, model: ModelConfig | None = None):
    def make(p):
        state = {
            "params": p,
            "opt_state": optimizer.init(p),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed)),
        }
        if keeps_reference(objective, model):
            state["ref_params"] = jax.tree.map(jnp.copy, p)
        return state

    return make


def abstract_train_state(model: ModelConfig, objective: ObjectiveConfig, optimizer, mesh: Mesh) -> dict:
    """The state `init_state` would build, as ShapeDtypeStructs with their shardings, and nothing allocated: what a
    deviceless compile (`jaxfin compile`) lowers the step for."""
    shapes = jax.eval_shape(_state_from(objective, optimizer, 0, model), abstract_params(model))
    shardings = state_shardings(model, objective, optimizer, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def abstract_state(state):
    """ShapeDtypeStructs with shardings (to compile for, or restore a checkpoint into, this layout)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def batch_spec(mesh: Mesh, rows: int, seq_len: int, ref_pairs: int = 0, extra: dict | None = None) -> dict:
    """Abstract global batch: the packed layout, plus `ref_logps` [rows, 2, P] when DPO reads precomputed
    reference log-probs (P = the most pairs any row holds), plus `extra` {name: (trailing shape, dtype)} per-row
    arrays (the RL objectives' advantages and log-probs)."""
    shard = batch_sharding(mesh)
    spec = dict.fromkeys(BATCH_KEYS, jax.ShapeDtypeStruct((rows, seq_len), BATCH_DTYPE, sharding=shard))
    if ref_pairs:
        spec["ref_logps"] = jax.ShapeDtypeStruct((rows, 2, ref_pairs), jnp.float32, sharding=shard)
    for name, (shape, dtype) in (extra or {}).items():
        spec[name] = jax.ShapeDtypeStruct((rows, *shape), dtype, sharding=shard)
    return spec


def compile_train_step(step_fn, mesh: Mesh, state, rows: int, seq_len: int, ref_pairs: int = 0,
                       extra: dict | None = None):  # fmt: skip
    """step_fn(state, batch) (from make_train_step) lowered and compiled for this state layout and a global batch
    of `rows` rows (train.batch_size), the state donated."""
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = jax.jit(
        step_fn,
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )
    batch = batch_spec(mesh, rows, seq_len, ref_pairs, extra)
    with jax.set_mesh(mesh):  # activation constraints in the model resolve against this mesh
        return step.lower(abstract_state(state), batch).compile()


def compile_eval_step(eval_fn, mesh: Mesh, state, rows: int, seq_len: int, ref_pairs: int = 0):
    """eval_fn(params, batch[, ref_params]) compiled for `rows` rows; ref_params when the state keeps them."""
    batch = batch_spec(mesh, rows, seq_len, ref_pairs)
    args = [abstract_state(state["params"]), batch]
    if "ref_params" in state:
        args.append(abstract_state(state["ref_params"]))
    with jax.set_mesh(mesh):
        return jax.jit(eval_fn, out_shardings=replicated(mesh)).lower(*args).compile()
