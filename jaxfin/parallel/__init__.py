"""Device mesh and sharding helpers."""

from jaxfin.parallel.mesh import AXES, batch_sharding, global_batch, make_mesh, replicated

__all__ = ["AXES", "batch_sharding", "global_batch", "make_mesh", "replicated"]
