"""Compile targets: accelerator names as users write them, the chip each one is made of, and abstract devices for
it on a host that has none (a TPU topology from libtpu; see `devices`).

Names: TPU slices as Cloud TPU names them (`v5p-64`, `v6e-256`, `v5litepod-16`, `v4-32`; v4 and v5p count
TensorCores, two per chip, v5e and v6e count chips) or libtpu's own `v5p:4x4x2` form; `cpu` or `cpu:N` compiles
for this machine's CPU (N host devices), which is what the tests use where libtpu is not installed. GPU names
(`h100x8`, ...) are parsed and their chips known, but XLA has no deviceless GPU compile here (README, "jaxfin
compile").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jaxfin.config.errors import ConfigError


@dataclass(frozen=True)
class Chip:
    """One accelerator chip (one JAX device): dense bf16 peak, HBM size and bandwidth, and the interconnect
    bandwidth one chip has for collectives, from the vendor pages cited in `source`."""

    name: str
    platform: str
    peak_tflops: float  # dense bf16
    hbm_gib: float
    hbm_gbps: float  # GB/s
    link_gbps: float  # GB/s one way per chip: half the bidirectional ICI / NVLink / Infinity Fabric figure
    source: str


_TPU_DOC = "https://cloud.google.com/tpu/docs/"
CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", "tpu", 275.0, 32.0, 1200.0, 150.0, _TPU_DOC + "v4 (ICI 2,400 Gbps bidirectional)"),
    "v5e": Chip("TPU v5e", "tpu", 197.0, 16.0, 819.0, 200.0, _TPU_DOC + "v5e (ICI 400 GB/s bidirectional)"),
    "v5p": Chip("TPU v5p", "tpu", 459.0, 95.0, 2765.0, 600.0, _TPU_DOC + "v5p (ICI 1,200 GB/s bidirectional)"),
    "v6e": Chip("TPU v6e", "tpu", 918.0, 32.0, 1638.0, 400.0, _TPU_DOC + "v6e (ICI 800 GB/s bidirectional)"),
    "h100": Chip("NVIDIA H100 SXM", "gpu", 989.0, 80.0, 3350.0, 450.0,
                 "https://www.nvidia.com/en-us/data-center/h100/ (NVLink 900 GB/s bidirectional)"),
    "h200": Chip("NVIDIA H200 SXM", "gpu", 989.0, 141.0, 4800.0, 450.0,
                 "https://www.nvidia.com/en-us/data-center/h200/ (NVLink 900 GB/s bidirectional)"),
    "mi300x": Chip("AMD Instinct MI300X", "gpu", 1307.0, 192.0, 5300.0, 448.0,
                   "https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html (Infinity Fabric "
                   "7 x 128 GB/s bidirectional)"),
}  # fmt: skip
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "v5": "v5p"}
_LIBTPU_NAME = {"v4": "v4", "v5e": "v5e", "v5p": "v5p", "v6e": "v6e"}  # generation -> libtpu topology prefix
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}  # what the number in a Cloud TPU name counts


@dataclass(frozen=True)
class Target:
    name: str  # as the user wrote it
    chip: Chip | None  # None: this machine's CPU
    topology: str  # libtpu's form (v5p:2x4x4), `cpu:N`, or `gpu:N` (N devices)
    num_slices: int = 1

    @property
    def platform(self) -> str:
        return "cpu" if self.chip is None else self.chip.platform


def _torus(chips: int, dims: int) -> list[int]:
    """The slice shape Cloud TPU gives a power-of-two chip count: start from 2x2(x1) and double the smallest
    dimension, the last one among equals (v5p-64 = 32 chips -> 2x4x4; v6e-256 -> 16x16)."""
    shape = [2, 2, 1][:dims] if dims == 3 else [2, 2]
    if chips == 1:
        return [1] * dims
    if chips < math.prod(shape) or chips & (chips - 1):
        raise ConfigError(f"no standard slice shape for {chips} chips; give the topology as e.g. v5p:2x2x4")
    while math.prod(shape) < chips:
        i = max(j for j, d in enumerate(shape) if d == min(shape))
        shape[i] *= 2
    return shape


def parse_target(name: str, num_slices: int = 1) -> Target:
    """`v5p-64`, `v6e-256`, `v5litepod-16`, `v4-32`, `v5p:2x4x4`, `v6e:16x16`, `h100x8`, `2xH100` (nodes x 8),
    `cpu`, `cpu:8` -> a Target; an unknown name lists the accepted forms."""
    text = name.strip().lower()
    if num_slices < 1:
        raise ConfigError(f"--num-slices must be >= 1; got {num_slices}")
    if m := re.fullmatch(r"cpu(?::(\d+))?", text):
        return Target(name, None, f"cpu:{m.group(1) or 0}", num_slices)
    if m := re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)+)", text):
        gen = _ALIASES.get(m.group(1), m.group(1))
        if gen in _LIBTPU_NAME:
            return Target(name, CHIPS[gen], f"{_LIBTPU_NAME[gen]}:{m.group(2)}", num_slices)
    if m := re.fullmatch(r"(v\d+[a-z]*)-(\d+)", text):
        gen = _ALIASES.get(m.group(1), m.group(1))
        if gen in _CORES_PER_CHIP:
            count = int(m.group(2))
            if count % _CORES_PER_CHIP[gen]:
                raise ConfigError(f"topology {name}: {gen} names count TensorCores, 2 per chip; use an even count")
            chips = count // _CORES_PER_CHIP[gen]
            shape = _torus(chips, 3 if gen in ("v4", "v5p") else 2)
            return Target(name, CHIPS[gen], f"{_LIBTPU_NAME[gen]}:{'x'.join(map(str, shape))}", num_slices)
    if m := re.fullmatch(r"(?:(\d+)x)?(h100|h200|mi300x?)(?:x(\d+))?", text):
        chip = "mi300x" if m.group(2).startswith("mi") else m.group(2)
        nodes, per_node = int(m.group(1) or 1), int(m.group(3) or 8)
        return Target(name, CHIPS[chip], f"gpu:{nodes * per_node}", num_slices)
    raise ConfigError(
        f"unknown topology '{name}': use a Cloud TPU name (v5p-64, v6e-256, v5litepod-16, v4-32), libtpu's form "
        f"(v5p:2x4x4, v6e:16x16), a GPU node (h100x8, h200x8, mi300x8, 2xH100 = 2 nodes of 8) or cpu[:N]"
    )


def devices(target: Target) -> list:
    """The target's devices: abstract TPU devices from libtpu (no TPU needed, only `pip install jax[tpu]`), or this
    machine's CPU devices."""
    import jax

    if target.platform == "cpu":
        n = int(target.topology.split(":")[1]) or jax.device_count()
        if jax.default_backend() != "cpu" or jax.device_count() < n:
            raise ConfigError(
                f"topology {target.name}: {n} CPU devices wanted, {jax.device_count()} present; set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={n}"
            )
        return jax.devices()[:n]
    if target.platform == "gpu":
        raise ConfigError(
            f"topology {target.name}: XLA cannot compile for a GPU without one on this host (no deviceless GPU "
            f"target in the installed jaxlib; see README, 'jaxfin compile'); compile on a GPU node, or for a TPU here"
        )
    from jax.experimental import topologies

    try:
        # v4 and v5p run their two TensorCores per chip as one device (megacore), as on a real slice
        kw = {"chip_config_name": "megacore"} if target.topology.startswith(("v4", "v5p")) else {}
        topo = topologies.get_topology_desc(target.topology, "tpu", num_slices=target.num_slices, **kw)
    except Exception as e:  # noqa: BLE001 - libtpu missing or the name refused: say what to do
        hint = "" if _has_libtpu() else (f"; install the TPU build of jax first: `make compile-venv` in a clone, or "
                                         f"pip install 'jax[tpu]=={jax.__version__}'")  # fmt: skip
        raise ConfigError(f"topology {target.name} ({target.topology}): libtpu refused it: {e}{hint}") from None
    return list(topo.devices)


def _has_libtpu() -> bool:
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None
