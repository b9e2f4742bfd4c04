"""XLA flags set by `python -m jaxfin.launch` / `jaxfin train` / `jaxfin bench train` before JAX starts its
backend: sharded training on NVIDIA GPUs (after MaxText's H100 settings), and small matmuls on CPU.

Overridable: a flag already in XLA_FLAGS wins over ours (same name, any value), and JAXFIN_XLA_FLAGS=0 turns
our defaults off. Each set is inert elsewhere (XLA reads xla_gpu_* only when compiling for a GPU, xla_cpu_* only
for the CPU).
"""

from __future__ import annotations

import os

GPU_FLAGS = {
    # overlap collectives with compute: the scheduler that makes FSDP's all-gathers nearly free
    "xla_gpu_enable_latency_hiding_scheduler": "true",
    # combine many small collectives (one per weight) into few large ones
    "xla_gpu_all_reduce_combine_threshold_bytes": "134217728",
    "xla_gpu_all_gather_combine_threshold_bytes": "134217728",
    "xla_gpu_reduce_scatter_combine_threshold_bytes": "67108864",
    # start the next layer's all-gather / this layer's reduce-scatter inside the layer scan
    "xla_gpu_enable_pipelined_all_gather": "true",
    "xla_gpu_enable_pipelined_reduce_scatter": "true",
    "xla_gpu_enable_pipelined_all_reduce": "true",
    "xla_gpu_enable_while_loop_double_buffering": "true",
    # cuBLAS rather than Triton for the big bf16 matmuls
    "xla_gpu_enable_triton_gemm": "false",
}


CPU_FLAGS = {
    # no YNNPACK fusions (jax 0.10 hands dots and reductions to YNNPACK by default): the step of configs/tiny.yaml
    # runs ~1.1x faster in interleaved A/B on a 2-core CPU; one by one its GEMMs take the same time either way
    # (benchmarks/cpu_gemm_floor.py), and YNNPACK wins only from ~2048^3 GEMMs, sizes nobody trains on a CPU
    "xla_cpu_experimental_ynn_fusion_type": "",
}

DEFAULT_FLAGS = GPU_FLAGS | CPU_FLAGS


def merged_flags(current: str, defaults: dict[str, str] = DEFAULT_FLAGS) -> str:
    """`current` plus each default flag it does not already set."""
    present = {f.lstrip("-").split("=", 1)[0] for f in current.split()}
    extra = [f"--{k}={v}" for k, v in defaults.items() if k not in present]
    return " ".join([current.strip(), *extra]).strip()


def apply_xla_flags(env=os.environ) -> None:
    if env.get("JAXFIN_XLA_FLAGS", "1") == "0":
        return
    env["XLA_FLAGS"] = merged_flags(env.get("XLA_FLAGS", ""))
