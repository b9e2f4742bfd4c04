"""Is the dropless mixture of experts as fast as a dense model with the same active parameters? JSON.

    python benchmarks/moe_vs_dense.py [--rounds 5] [--steps 10] [--only NAME,...] [--out F] [key=value ...]

Times the real train step (as `jaxfin bench train` builds it: model + loss + AdamW, compiled as `jaxfin train`
does) of configs/tiny-mixtral.yaml (8 experts of width 192, 2 per token) with the dropless dispatch of CPU
(`model.moe_dispatch=padded`, what `auto` picks there), with jax.lax.ragged_dot (`ragged`, what `auto` picks on
GPU/TPU; XLA:CPU runs it as a masked dot over every expert), the same model with every expert on every token
(`dense`, E/k = 4x the expert FLOPs), and configs/tiny.yaml (the dense SwiGLU of width 384 = 2 x 192: the same
active parameters, no router). All are compiled in this one process, then timed in turn, --steps steps each, for
--rounds rounds, so that a noisy stretch of a shared machine hits every run alike; each run's tokens/s is the
median over rounds of the tokens per step / the round's median step time. `grouped_slowdown` = dense model
tokens/s / padded MoE tokens/s (issue 19 asks <= 1.3 on CPU). Overrides (key=value) apply to every run, e.g.
`model.hidden_size=256 model.intermediate_size=896` for Mixtral's F/D of 3.5 (the dense model's width follows:
intermediate_size is set to 2x the experts' width).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNS = {
    "moe_padded": ["configs/tiny-mixtral.yaml", "model.moe_dispatch=padded"],
    "moe_ragged": ["configs/tiny-mixtral.yaml", "model.moe_dispatch=ragged"],
    "moe_dense_dispatch": ["configs/tiny-mixtral.yaml", "model.moe_dispatch=dense"],
    "dense_model": ["configs/tiny.yaml"],
}


def _dense_width(overrides: list[str]) -> list[str]:
    """The dense model's MLP width = k x the experts' (same active parameters) when the overrides set a width."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        out.append(f"{key}={2 * int(value)}" if key == "model.intermediate_size" else o)
    return out


def build(name: str, overrides: list[str]):
    from jaxfin.bench.train import _compiled_train_step, synthetic_batch
    from jaxfin.config.load import load_config
    from jaxfin.parallel import global_batch

    path, *fixed = RUNS[name]
    cfg = load_config(REPO / path, [*fixed, *(_dense_width(overrides) if name == "dense_model" else overrides)])
    t0 = time.perf_counter()
    step, state, mesh = _compiled_train_step(cfg)
    b, s = cfg.train.batch_size, cfg.data.seq_len
    batch = global_batch(mesh, synthetic_batch(b, s, cfg.model.vocab_size, cfg.train.seed), b)
    return {"cfg": cfg, "step": step, "state": state, "batch": batch, "compile_s": time.perf_counter() - t0}


def time_round(run: dict, steps: int) -> float:
    """tokens/s of one round: tokens per step / the median of `steps` step times."""
    import jax

    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        run["state"], metrics = run["step"](run["state"], run["batch"])
        jax.block_until_ready((run["state"], metrics))
        times.append(time.perf_counter() - t0)
    cfg = run["cfg"]
    return cfg.train.batch_size * cfg.data.seq_len / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(RUNS)} (dense_model and moe_padded kept)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    names = list(RUNS) if not a.only else [n for n in RUNS if n in {*a.only.split(","), "moe_padded", "dense_model"}]

    import jax

    from jaxfin.bench.train import flops_params, flops_per_token, param_count

    runs = {}
    for name in names:
        runs[name] = build(name, a.overrides)
        time_round(runs[name], 2)  # warm-up
        print(f"built {name} (compile {runs[name]['compile_s']:.1f} s)", file=sys.stderr, flush=True)
    rounds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for name, run in runs.items():
            rounds[name].append(time_round(run, a.steps))
            print(f"round {r}: {name:20s} {rounds[name][-1]:,.0f} tokens/s", file=sys.stderr, flush=True)
    tps = {n: statistics.median(v) for n, v in rounds.items()}
    cfgs = {n: run["cfg"] for n, run in runs.items()}
    seq = cfgs["moe_padded"].data.seq_len
    out = {
        "benchmark": "moe_vs_dense",
        "tokens_per_s": tps,
        **{f"{n.removeprefix('moe_')}_slowdown": tps["dense_model"] / tps[n] for n in names if n != "dense_model"},
        "grouped_slowdown": tps["dense_model"] / tps["moe_padded"],
        "params": {n: param_count(c.model) for n, c in cfgs.items()},
        "flops_params": {n: flops_params(c.model) for n, c in cfgs.items()},
        "flops_per_token": {n: flops_per_token(c.model, seq) for n, c in cfgs.items()},
        "model_tflops_per_s_per_device": {n: flops_per_token(c.model, seq) * tps[n] / 1e12 for n, c in cfgs.items()},
        "compile_s": {n: run["compile_s"] for n, run in runs.items()},
        "rounds": rounds,
        "batch": f"{cfgs['moe_padded'].train.batch_size} x {seq}",
        "steps": a.steps,
        "remat": cfgs["moe_padded"].model.remat,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
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
