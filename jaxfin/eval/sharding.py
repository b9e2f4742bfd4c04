"""Evaluation and generation on a device mesh, laid out exactly as training lays out its state.

`shard_model(model, mesh)` puts a loaded model's params on the mesh with the training sharding rules
(`jaxfin.parallel.param_shardings`: FSDP splits the model dimension over `fsdp`, tensor parallelism the heads, MLP
columns and vocabulary over `tensor`), each device receiving only its shards (`jaxfin.parallel.put_sharded`),
so with fsdp > 1 no device ever holds the whole model. The scoring and generation functions (`text_metrics`,
`score_requests`, `sequence_logps`, `generate_full`) read the mesh off the params (`params_mesh`): they run their
jitted programs under `jax.set_mesh(mesh)` (the model's `constrain` calls and the attention backend see it, as in
training) with every batch's rows split over the batch axes (data x fsdp x expert, `batch_sharding`). A batch of
`batch_size` rows that does not divide the batch axes is padded with empty rows (`padded_rows`): they score
nothing and generate nothing. Params that are not on a mesh of several devices take the one-device path as before.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxfin.config.schema import MeshConfig
from jaxfin.parallel import batch_parallelism, batch_sharding, make_mesh, param_shardings, put_sharded


def eval_mesh(cfg: MeshConfig, devices=None) -> Mesh | None:
    """The mesh for `cfg` (the training `mesh` section; -1 = the remaining devices) over all devices, or None when
    it has a single device (nothing to shard)."""
    mesh = make_mesh(cfg, devices)
    return mesh if mesh.size > 1 else None


def shard_model(model, mesh: Mesh | None):
    """A copy of `model` whose params lie on `mesh` laid out by the training rules (each device gets only its
    shards); `model` itself when `mesh` is None or has one device. A dimension the mesh cannot split evenly raises
    a ConfigError naming the model and mesh keys."""
    if mesh is None or mesh.size == 1:
        return model
    from jaxfin.model import param_axes

    shardings = param_shardings(model.params, mesh, param_axes(model.config))
    return dataclasses.replace(model, params=jax.tree.map(put_sharded, model.params, shardings))


def params_mesh(params) -> Mesh | None:
    """The mesh the params are laid out on (`shard_model`), or None for host / single-device params."""
    for leaf in jax.tree.leaves(params):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
            return sharding.mesh
    return None


def padded_rows(mesh: Mesh | None, batch_size: int) -> int:
    """Rows per forward pass for `batch_size` real rows: rounded up to a multiple of the batch axes' size (data x
    fsdp x expert) on a mesh, so every device gets as many rows; the extra rows are empty."""
    if mesh is None:
        return batch_size
    n = batch_parallelism(mesh)
    return -(-batch_size // n) * n


def put_rows(mesh: Mesh | None, x):
    """A host batch array [rows, ...] on the devices: its rows split over the batch axes on a mesh."""
    if mesh is None:
        return jnp.asarray(x)
    return put_sharded(np.asarray(x), batch_sharding(mesh))


def on_mesh(mesh: Mesh | None):
    """`jax.set_mesh(mesh)` (activation constraints and per-device kernels resolve against it), or nothing."""
    return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()


__all__ = ["eval_mesh", "on_mesh", "padded_rows", "params_mesh", "put_rows", "shard_model"]
