"""Run several short trainings in one process (so each device count pays for one JAX start) and print, as one
JSON line, each run's logged losses plus the layout of the sharded state.

    XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/drivers/train_runs.py SPEC.json

SPEC: {"config": path, "runs": {name: [override, ...]}, "inspect": [override, ...] (optional)}.
"""

import json
import sys

import jax

from jaxfin.config import load_config
from jaxfin.train import train


def losses(out_dir: str) -> list[dict]:
    keep = ("step", "loss", "grad_norm", "dev_loss")
    with open(f"{out_dir}/metrics.jsonl") as f:
        return [{k: r[k] for k in keep if k in r} for r in map(json.loads, f)]


def inspect(cfg) -> dict:
    """Shapes of one device's shard of a weight and of its Adam moments under this config's mesh."""
    from jaxfin.parallel import make_mesh
    from jaxfin.train.optimizer import make_optimizer
    from jaxfin.train.state import init_state

    optimizer = make_optimizer(cfg.optimizer, cfg.train.steps)
    state = init_state(cfg.model, cfg.objective, optimizer, make_mesh(cfg.mesh), cfg.train.seed)
    shard = lambda x: list(x.addressable_shards[0].data.shape)  # noqa: E731
    q = state["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
    moments = [
        shard(x) for x in jax.tree.leaves(state["opt_state"]) if x.shape == q.shape
    ]  # Adam's mu and nu for q_proj (and any other leaf of that shape)
    return {"q_proj_global": list(q.shape), "q_proj_shard": shard(q), "moment_shards": moments}


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    result = {"devices": jax.device_count(), "runs": {}}
    for name, overrides in spec["runs"].items():
        cfg = load_config(spec["config"], [*overrides, f"output_dir={spec['out']}/{name}"])
        train(cfg)
        result["runs"][name] = losses(cfg.output_dir)
    if "inspect" in spec:
        result["inspect"] = inspect(load_config(spec["config"], spec["inspect"]))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
