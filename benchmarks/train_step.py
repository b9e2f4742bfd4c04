"""Train-step throughput of one config under several runtime knobs, side by side in one run; prints JSON.

    python benchmarks/train_step.py [--config configs/tiny.yaml] [--steps 20] [key=value ...]

Each variant compiles the real jaxfin train step (model + loss + AdamW) and times `--steps` steps on a fixed
packed batch after one warm-up step. Reports compile seconds, seconds per step, tokens/s and the ratio to the
first variant. On CPU only the ratios mean anything; absolute numbers need a GPU/TPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxfin.config import load_config
from jaxfin.model import init_params
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.step import make_train_step

VARIANTS = {
    "scan": {"scan_layers": True, "remat": "none"},
    "loop": {"scan_layers": False, "remat": "none"},
    "scan+remat_full": {"scan_layers": True, "remat": "full"},
}


def packed_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of 4 documents each (so segment masking is exercised), random tokens."""
    rng = np.random.default_rng(seed)
    seg = np.repeat(np.arange(1, 5), -(-seq_len // 4))[:seq_len]
    pos = np.concatenate([np.arange((seg == s).sum()) for s in range(1, 5)])
    return {
        "tokens": rng.integers(4, vocab, (rows, seq_len), dtype=np.int32),
        "segment_ids": np.broadcast_to(seg, (rows, seq_len)).astype(np.int32),
        "positions": np.broadcast_to(pos, (rows, seq_len)).astype(np.int32),
        "loss_mask": np.ones((rows, seq_len), np.int32),
    }


def time_variant(cfg, knobs: dict, steps: int) -> dict:
    model_cfg = dataclasses.replace(cfg.model, **knobs)
    opt = make_optimizer(cfg.optimizer, cfg.train.steps)
    step_fn = jax.jit(make_train_step(model_cfg, opt, make_schedule(cfg.optimizer, cfg.train.steps), 1))
    params = init_params(model_cfg, jax.random.key(0))
    state = {"params": params, "opt_state": opt.init(params), "step": jnp.zeros((), jnp.int32), "rng": jnp.zeros(2)}
    batch = packed_batch(cfg.train.batch_size, cfg.data.seq_len, model_cfg.vocab_size)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / steps
    tokens = cfg.train.batch_size * cfg.data.seq_len
    return {"compile_s": round(compile_s, 3), "step_s": step_s, "tokens_per_s": tokens / step_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    results = {name: time_variant(cfg, knobs, args.steps) for name, knobs in VARIANTS.items()}
    base = results["scan"]["step_s"]
    for r in results.values():
        r["speed_vs_scan"] = round(base / r["step_s"], 3)
    dev = jax.devices()[0]
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "device": f"{dev.platform}:{dev.device_kind}",
                "num_devices": jax.device_count(),
                "host": platform.processor() or platform.machine(),
                "jax": jax.__version__,
                "config": args.config,
                "overrides": args.overrides,
                "batch_tokens": cfg.train.batch_size * cfg.data.seq_len,
                "variants": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
