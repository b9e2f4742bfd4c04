"""Can a train step of CONFIG reach 2x torch on this CPU? The step's matrix multiplies, timed alone. JSON.

    python benchmarks/cpu_gemm_floor.py [--config configs/tiny.yaml] [--steps 20] [--reps 40] [--json] [--out F]

Issue 4 asks `jaxfin bench train configs/tiny.yaml --compare-torch` for a ratio >= 2.0 on the 2-core CI CPU. Every
matrix multiply of the float32 train step (per layer: the seven projections forward, their input and weight
gradients, and the six attention products; the LM head's three; the layers' forward ones twice when `model.remat`
recomputes them) is timed alone: compiled by XLA (jax.jit of one dot) with jaxfin's CPU flags (Eigen, `xla`) and
with XLA's default (YNNPACK, `xla_ynn`), and run by torch (the BLAS behind transformers' step), interleaved, each
one's empty-call overhead subtracted; also one 2048^3 GEMM in each, the machine's practical float32 peak. The real
steps (`jaxfin bench train`'s two sides, jaxfin with the flags `jaxfin train` sets) run in the same process tree.

What it shows: a 2x ratio needs the whole jaxfin step in half torch's step time. `gemm_only_ratio` = torch's step /
torch's GEMMs alone: the ratio of a step that ran torch's own BLAS GEMMs and nothing else (no norms, softmax, AdamW
or scheduling). `required_gflops` = the step's GEMM FLOPs / the 2x step time, against `peak_gemm_gflops`.
XLA's one-by-one sum is not a floor for jaxfin: inside a step XLA runs independent GEMMs concurrently.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def step_gemms(cfg) -> list[dict]:
    """Every GEMM of one train step: name, count (per step), batch, m, k, n, layout (nn: A[m,k] B[k,n]; nt: B
    stored [n,k]; tn: A stored [k,m]), and whether remat recomputes it (the layers' forward products)."""
    m = cfg.model
    t, s, b = cfg.train.batch_size * cfg.data.seq_len, cfg.data.seq_len, cfg.train.batch_size
    d, f, dh = m.hidden_size, m.intermediate_size, m.head_size
    q, kv = m.num_heads * dh, m.num_kv_heads * dh
    out = []

    def dense(name, din, dout, count, in_layer=True):  # y = x W: forward, dX = dY W^T, dW = X^T dY
        out.append(dict(name=f"{name} fwd", count=count, batch=1, m=t, k=din, n=dout, layout="nn", fwd=in_layer))
        out.append(dict(name=f"{name} dx", count=count, batch=1, m=t, k=dout, n=din, layout="nt", fwd=False))
        out.append(dict(name=f"{name} dw", count=count, batch=1, m=din, k=t, n=dout, layout="tn", fwd=False))

    layers = m.num_layers
    dense("q_proj", d, q, layers)
    dense("k_proj+v_proj", d, kv, 2 * layers)
    dense("o_proj", q, d, layers)
    dense("gate_proj+up_proj", d, f, 2 * layers)
    dense("down_proj", f, d, layers)
    bh = b * m.num_heads  # per query head (GQA shares K/V, not the work)
    out += [
        dict(name="attn q k^T", count=layers, batch=bh, m=s, k=dh, n=s, layout="nt", fwd=True),
        dict(name="attn p v", count=layers, batch=bh, m=s, k=s, n=dh, layout="nn", fwd=True),
        dict(name="attn dp = do v^T", count=layers, batch=bh, m=s, k=dh, n=s, layout="nt", fwd=False),
        dict(name="attn dv = p^T do", count=layers, batch=bh, m=s, k=s, n=dh, layout="tn", fwd=False),
        dict(name="attn dq = ds k", count=layers, batch=bh, m=s, k=s, n=dh, layout="nn", fwd=False),
        dict(name="attn dk = ds^T q", count=layers, batch=bh, m=s, k=s, n=dh, layout="tn", fwd=False),
    ]
    dense("lm_head", d, m.vocab_size, 1, in_layer=False)  # tied or not: the head is a GEMM
    for g in out:
        g["gflop"] = 2 * g["batch"] * g["m"] * g["k"] * g["n"] / 1e9
    return out


def _shapes(g: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m, k, n = g["m"], g["k"], g["n"]
    a = (k, m) if g["layout"] == "tn" else (m, k)
    b = (n, k) if g["layout"] == "nt" else (k, n)
    lead = (g["batch"],) if g["batch"] > 1 else ()
    return lead + a, lead + b


def _median_s(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


LIBS = ("xla", "xla_ynn", "torch")  # XLA with jaxfin's CPU flags (Eigen), XLA's default (YNNPACK), torch


def time_gemms(gemms: list[dict], reps: int) -> dict:
    """Adds {lib}_ms (one call, empty-call overhead subtracted) to each GEMM for each of LIBS, interleaved; returns
    each one's GFLOP/s on a 2048^3 GEMM."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from jaxfin.parallel.xla_flags import CPU_FLAGS

    torch.set_num_threads(_cpus())
    rng = np.random.default_rng(0)
    tr = {"nn": lambda a, b: a @ b, "nt": lambda a, b: a @ b.mT, "tn": lambda a, b: a.mT @ b}
    options = {"xla": CPU_FLAGS, "xla_ynn": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}}

    def compiled(fn, lib, *args):
        return jax.jit(fn).lower(*args).compile(compiler_options=options[lib])

    one, t_one = jnp.ones((1,), jnp.float32), torch.ones(1)
    call = {lib: _median_s(partial(_wait, compiled(lambda x: x + 1, lib, one), one), reps) for lib in options}
    call["torch"] = _median_s(lambda: t_one + 1, reps)
    gemms.append(dict(name="peak 2048^3", count=0, batch=1, m=2048, k=2048, n=2048, layout="nn", fwd=False))
    for g in gemms:
        sa, sb = _shapes(g)
        a, b = rng.standard_normal(sa, np.float32), rng.standard_normal(sb, np.float32)
        ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
        run = {lib: partial(_wait, compiled(tr[g["layout"]], lib, ja, jb), ja, jb) for lib in options}
        run["torch"] = partial(tr[g["layout"]], ta, tb)
        for lib in options:
            np.testing.assert_allclose(np.asarray(run[lib]()), run["torch"]().numpy(), rtol=1e-3, atol=1e-2)
        times = {lib: [] for lib in LIBS}
        for _ in range(3):  # interleaved rounds: every library sees the same machine
            for lib in LIBS:
                times[lib].append(_median_s(run[lib], reps))
        for lib in LIBS:
            g[f"{lib}_ms"] = 1e3 * max(statistics.median(times[lib]) - call[lib], 0.0)
    peak = gemms.pop()
    return {lib: 2 * 2048**3 / peak[f"{lib}_ms"] / 1e6 for lib in LIBS}


def _wait(f, *args):
    return f(*args).block_until_ready()


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _total(gemms: list[dict], key: str, remat: bool) -> float:
    return sum(g[key] * g["count"] * (2 if remat and g["fwd"] else 1) for g in gemms)


def run(config: str, steps: int, reps: int) -> dict:
    import jax
    import torch

    from jaxfin.bench.train import bench_jaxfin, bench_torch, torch_spec
    from jaxfin.config import load_config

    cfg = load_config(REPO / config if not Path(config).exists() else config)
    if cfg.model.compute_dtype not in ("float32", "auto") or jax.default_backend() != "cpu":
        raise SystemExit("this measures float32 training on CPU")
    gemms = step_gemms(cfg)
    real_torch = bench_torch(torch_spec(cfg, steps))  # a subprocess, before JAX's thread pool is busy
    real_jaxfin = bench_jaxfin(cfg, steps)
    peak = time_gemms(gemms, reps)
    flop = _total(gemms, "gflop", False)
    torch_gemm_ms = _total(gemms, "torch_ms", False)
    torch_ms, jaxfin_ms = 1e3 * real_torch["step_time_s"], 1e3 * real_jaxfin["step_time_s"]
    return {
        "benchmark": "cpu_gemm_floor",
        "config": config,
        "tokens_per_step": cfg.train.batch_size * cfg.data.seq_len,
        "gemm_gflop_per_step": {r: _total(gemms, "gflop", r == "full") for r in ("none", "full")},
        **{f"{x}_gemm_ms": {r: _total(gemms, f"{x}_ms", r == "full") for r in ("none", "full")} for x in LIBS[:2]},
        "torch_gemm_ms": torch_gemm_ms,
        "gemm_gflops": {lib: flop / _total(gemms, f"{lib}_ms", False) * 1e3 for lib in LIBS},
        "peak_gemm_gflops": peak,
        "jaxfin_step_ms": jaxfin_ms,
        "jaxfin_remat": cfg.model.remat,
        "torch_step_ms": torch_ms,
        "ratio": torch_ms / jaxfin_ms,
        "target_ratio": 2.0,
        "target_step_ms": torch_ms / 2.0,
        "required_gflops": flop / (torch_ms / 2.0) * 1e3,
        "gemm_only_ratio": torch_ms / torch_gemm_ms,
        "gemms": gemms,
        "threads": _cpus(),
        "host": platform.machine(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summary(r: dict) -> str:
    lines = [f"{'GEMM (ms alone)':22s} {'count':>5s} {'GFLOP':>7s} {'XLA':>7s} {'XLA-YNN':>8s} {'torch':>7s}"]
    for g in r["gemms"]:
        lines.append(
            f"{g['name']:22s} {g['count']:5d} {g['gflop']:7.3f} {g['xla_ms']:7.3f} {g['xla_ynn_ms']:8.3f} "
            f"{g['torch_ms']:7.3f}"
        )
    x, y, gf, rate, peak = (
        r["xla_gemm_ms"],
        r["xla_ynn_gemm_ms"],
        r["gemm_gflop_per_step"],
        r["gemm_gflops"],
        r["peak_gemm_gflops"],
    )
    lines += [
        f"GEMMs per step {gf['none']:.2f} GFLOP ({gf['full']:.2f} with remat), one by one: torch "
        f"{r['torch_gemm_ms']:.1f} ms ({rate['torch']:.0f} GFLOP/s), XLA {x['none']:.1f} ms ({rate['xla']:.0f}; "
        f"{x['full']:.1f} with remat), XLA-YNN {y['none']:.1f} ms ({rate['xla_ynn']:.0f}). 2048^3: torch "
        f"{peak['torch']:.0f}, XLA {peak['xla']:.0f}, XLA-YNN {peak['xla_ynn']:.0f} GFLOP/s",
        f"real steps: jaxfin {r['jaxfin_step_ms']:.1f} ms (remat {r['jaxfin_remat']}), torch "
        f"{r['torch_step_ms']:.1f} ms: ratio {r['ratio']:.2f}",
        f"{r['target_ratio']:.1f}x needs a {r['target_step_ms']:.1f} ms step, its GEMMs at >= "
        f"{r['required_gflops']:.0f} GFLOP/s with everything else free; a step of torch's GEMMs alone: ratio "
        f"{r['gemm_only_ratio']:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--steps", type=int, default=20, help="timed train steps on each side")
    p.add_argument("--reps", type=int, default=40, help="calls per GEMM timing (median)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    from jaxfin.parallel.xla_flags import apply_xla_flags

    apply_xla_flags()  # the real jaxfin step runs as `jaxfin train` does, before JAX starts its backend
    r = run(args.config, args.steps, args.reps)
    text = json.dumps(r, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else summary(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
