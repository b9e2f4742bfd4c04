"""Device mesh with named axes (data, fsdp, expert, tensor), batch shardings and process-local batch assembly.

How arrays are laid out on the mesh is decided in one place, `jaxfin/parallel/rules.py`.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import MeshConfig
from jaxfin.parallel.rules import RULES

AXES = ("data", "fsdp", "expert", "tensor")


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, ...]:
    sizes = [cfg.data, cfg.fsdp, cfg.expert, cfg.tensor]
    if sum(s == -1 for s in sizes) > 1:
        raise ConfigError("at most one of mesh.data, mesh.fsdp, mesh.expert, mesh.tensor may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} does not fit {num_devices} devices")
    sizes = [num_devices // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} uses {math.prod(sizes)} of {num_devices} devices")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """The mesh over all devices (of all processes); device order follows the hardware topology (jax.make_mesh),
    with `tensor` innermost so tensor-parallel groups sit on the fastest links."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(cfg, len(devices))
    types = (AxisType.Auto,) * len(AXES)
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    if slices > 1:  # multi-slice TPU: data parallelism spans the slices (DCN), fsdp and tensor stay inside one (ICI)
        if shape[0] % slices:
            raise ConfigError(f"mesh.data={shape[0]} must be a multiple of the {slices} slices (data parallelism "
                              f"spans the slices); fsdp and tensor stay inside one slice")  # fmt: skip
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_hybrid_device_mesh((shape[0] // slices, *shape[1:]), (slices, 1, 1, 1), devices)
        return Mesh(grid, AXES, axis_types=types)
    try:
        return jax.make_mesh(shape, AXES, axis_types=types, devices=devices)
    except NotImplementedError:  # e.g. tensor=4 on a 16x16 torus: no physical axis of 4; let one be split
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        return Mesh(grid, AXES, axis_types=types)


def target_platform() -> str:
    """The platform being compiled for: that of the mesh set by `jax.set_mesh` (a TPU topology's devices on a CPU
    host under `jaxfin compile`), else the default backend. Code that picks dtypes or kernels by platform asks this,
    not `jax.default_backend()`, so that a deviceless compile builds what the target would run."""
    device = jax.sharding.get_abstract_mesh().abstract_device
    return device.platform if device is not None else jax.default_backend()


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of a [B, S] batch split over the data-parallel axes (data x fsdp x expert)."""
    return NamedSharding(mesh, PartitionSpec(RULES["batch"]))


def batch_parallelism(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in RULES["batch"])


def process_rows(mesh: Mesh, global_rows: int) -> tuple[int, int]:
    """The rows [lo, hi) of a global batch that this process's devices hold: the only rows it has to load."""
    index = batch_sharding(mesh).addressable_devices_indices_map((global_rows, 1))
    spans = sorted({(i[0].start or 0, global_rows if i[0].stop is None else i[0].stop) for i in index.values()})
    lo, hi = spans[0][0], max(s[1] for s in spans)
    covered = lo
    for a, b in spans:  # the mesh keeps each process's rows contiguous; anything else is a bug worth stopping on
        if a > covered:
            raise RuntimeError(f"process {jax.process_index()} holds non-contiguous batch rows {spans}")
        covered = max(covered, b)
    return lo, hi


def global_batch(mesh: Mesh, local: dict[str, np.ndarray], global_rows: int | None = None) -> dict[str, jax.Array]:
    """Assemble a global batch from this process's rows (those of `process_rows`)."""
    sharding = batch_sharding(mesh)
    out = {}
    for k, v in local.items():
        shape = None if global_rows is None else (global_rows, *v.shape[1:])
        out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
    return out
