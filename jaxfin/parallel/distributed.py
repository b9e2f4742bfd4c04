"""Multi-host: find out whether this is one process of several and start `jax.distributed`, plus the few
cross-process helpers the trainer needs (a barrier, gathering sharded arrays to the host).

How the cluster is found, in order:
1. explicit: `--coordinator HOST:PORT --num-processes N --process-id I`, or JAXFIN_COORDINATOR /
   JAXFIN_NUM_PROCESSES / JAXFIN_PROCESS_ID;
2. Kubernetes Indexed Job / JobSet: the process id is the pod's JOB_COMPLETION_INDEX, with JAXFIN_COORDINATOR
   and JAXFIN_NUM_PROCESSES set in the manifest (see launch/k8s/);
3. SLURM with more than one task (SLURM_JOB_ID, SLURM_NTASKS > 1): jax.distributed's own SLURM detection; with
   one task per node, that task owns all the node's GPUs (JAX alone would give it only GPU 0);
4. a TPU VM (a slice of one or more hosts: /dev/accel0 or /dev/vfio/0, or TPU_WORKER_HOSTNAMES on GKE):
   jax.distributed's TPU detection through the metadata server;
otherwise a single process.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

log = logging.getLogger("jaxfin")


def detect(coordinator: str | None, num_processes: int | None, process_id: int | None, env=os.environ) -> dict | None:
    """Arguments for jax.distributed.initialize, {} for its own cluster detection, or None for one process."""
    coordinator = coordinator or env.get("JAXFIN_COORDINATOR")
    num_processes = num_processes if num_processes is not None else _int(env, "JAXFIN_NUM_PROCESSES")
    if process_id is None:
        process_id = _int(env, "JAXFIN_PROCESS_ID")
    if process_id is None and "JOB_COMPLETION_INDEX" in env:  # Kubernetes Indexed Job / JobSet pod
        process_id = _int(env, "JOB_COMPLETION_INDEX")
    if coordinator or (num_processes or 1) > 1:
        missing = [n for n, v in (("coordinator", coordinator), ("num-processes", num_processes),
                                  ("process-id", process_id)) if v is None]  # fmt: skip
        if missing:
            raise ValueError(
                f"multi-host needs --coordinator, --num-processes and --process-id together (or JAXFIN_COORDINATOR, "
                f"JAXFIN_NUM_PROCESSES, JAXFIN_PROCESS_ID); missing: {', '.join(missing)}"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id {process_id} is not in 0..{num_processes - 1}")
        return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}
    tasks = _int(env, "SLURM_NTASKS") or _int(env, "SLURM_NPROCS") or 1
    if "SLURM_JOB_ID" in env and tasks > 1:
        per_node = tasks // (_int(env, "SLURM_NNODES") or _int(env, "SLURM_JOB_NUM_NODES") or tasks)
        gpus = _int(env, "SLURM_GPUS_ON_NODE")
        if per_node == 1 and gpus and not env.get("JAX_LOCAL_DEVICE_IDS"):
            return {"local_device_ids": list(range(gpus))}
        return {}
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1 or on_tpu_vm():
        return {}
    return None


def on_tpu_vm() -> bool:
    return os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")


def _int(env, key: str) -> int | None:
    value = env.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Start jax.distributed when this process is one of several; a no-op otherwise."""
    kwargs = detect(coordinator, num_processes, process_id)
    if kwargs is None:
        return
    # CPU-only processes (tests, CPU clusters) need a cross-process collective implementation; GPUs/TPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info("process %d of %d, %d local devices", jax.process_index(), jax.process_count(), jax.local_device_count())


def is_main() -> bool:
    """Process 0 writes the run's files (config, metrics, exports); every process writes its checkpoint shards."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_host(tree):
    """A pytree of (possibly sharded, possibly multi-process) arrays as numpy arrays on every process."""
    if all(x.is_fully_addressable for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
