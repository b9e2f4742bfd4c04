"""Device mesh, logical-axis sharding rules (`rules.py`, the one place) and multi-host helpers."""

from jaxfin.parallel.mesh import (
    AXES,
    batch_parallelism,
    batch_sharding,
    global_batch,
    make_mesh,
    process_rows,
    replicated,
    target_platform,
)
from jaxfin.parallel.rules import constrain, constrain_params, like_params, param_shardings, put_sharded

__all__ = [
    "AXES",
    "batch_parallelism",
    "batch_sharding",
    "constrain",
    "constrain_params",
    "global_batch",
    "like_params",
    "make_mesh",
    "param_shardings",
    "process_rows",
    "put_sharded",
    "replicated",
    "target_platform",
]
