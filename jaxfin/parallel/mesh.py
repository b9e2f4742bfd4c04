"""Device mesh with named axes (data, fsdp, tensor) and the shardings the trainer uses.

For now parameters are replicated and batches are split over data x fsdp; the scale-out work adds
logical-axis rules here (one place) without changing the trainer.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxfin.config.load import ConfigError
from jaxfin.config.schema import MeshConfig

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, ...]:
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    if sum(s == -1 for s in sizes) > 1:
        raise ConfigError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} does not fit {num_devices} devices")
    sizes = [num_devices // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} uses {math.prod(sizes)} of {num_devices} devices")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(cfg, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of a [B, S] batch split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assemble a global batch from this process's rows (the seam for multi-host data loading)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
