"""Is the dropless mixture of experts as fast as a dense model with the same active parameters? JSON.

    python benchmarks/moe_vs_dense.py [--rounds 3] [--steps 10] [--out F] [key=value ...]

Runs `jaxfin bench train` on configs/tiny-mixtral.yaml (8 experts of width 192, 2 per token) with the dropless
grouped dispatch of CPU (`model.moe_dispatch=blocked`, what `auto` picks there) and with jax.lax.ragged_dot
(`ragged`, what `auto` picks on GPU/TPU; XLA:CPU runs it as a masked dot over every expert), the same model with
every expert on every token (`dense`, E/k = 4x the expert FLOPs), and configs/tiny.yaml (the dense SwiGLU of width
384 = 2 x 192: the same active parameters, no router), in turn for --rounds rounds so a noisy stretch of a shared
machine hits all four. Each is a fresh process (compile + warm-up + timed steps); tokens/s is the median over
rounds. `grouped_slowdown` = dense model tokens/s / blocked MoE tokens/s (issue 19 asks <= 1.3 on CPU).
Overrides (key=value) apply to all three runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "moe_blocked": ["configs/tiny-mixtral.yaml", "model.moe_dispatch=blocked"],
    "moe_ragged": ["configs/tiny-mixtral.yaml", "model.moe_dispatch=ragged"],
    "moe_dense_dispatch": ["configs/tiny-mixtral.yaml", "model.moe_dispatch=dense"],
    "dense_model": ["configs/tiny.yaml"],
}


def bench(args: list[str], steps: int) -> dict:
    cmd = [sys.executable, "-m", "jaxfin.cli", "bench", "train", *args, "--steps", str(steps), "--json"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout[p.stdout.index("{") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    rounds: dict[str, list[dict]] = {k: [] for k in RUNS}
    for r in range(a.rounds):
        for name, args in RUNS.items():
            res = bench([*args, *a.overrides], a.steps)
            rounds[name].append(res)
            print(f"round {r}: {name:20s} {res['tokens_per_s']:,.0f} tokens/s", file=sys.stderr, flush=True)
    tps = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in rounds.items()}
    first = {k: v[0] for k, v in rounds.items()}
    out = {
        "benchmark": "moe_vs_dense",
        "tokens_per_s": tps,
        "grouped_slowdown": tps["dense_model"] / tps["moe_blocked"],
        "ragged_slowdown": tps["dense_model"] / tps["moe_ragged"],
        "dense_dispatch_slowdown": tps["dense_model"] / tps["moe_dense_dispatch"],
        "params": {k: v["params"] for k, v in first.items()},
        "flops_params": {k: v["flops_params"] for k, v in first.items()},
        "flops_per_token": {k: v["flops_per_token"] for k, v in first.items()},
        "model_tflops_per_s_per_device": {k: v["model_tflops_per_s_per_device"] for k, v in first.items()},
        "rounds": {k: [x["tokens_per_s"] for x in v] for k, v in rounds.items()},
        "batch": f"{first['moe_blocked']['batch_size']} x {first['moe_blocked']['seq_len']}",
        "steps": a.steps,
        "device": first["moe_blocked"]["device_kind"],
        "num_devices": first["moe_blocked"]["num_devices"],
        "jax": first["moe_blocked"]["jax"],
        "host": platform.machine(),
        "host_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "overrides": a.overrides,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
