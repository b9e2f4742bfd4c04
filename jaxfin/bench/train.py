"""`jaxfin bench train`: throughput, step time, MFU and peak memory of the real train step of a config, optionally
side by side with `transformers` + torch training the same model shape on the same batch shape.

The jaxfin side is exactly what `jaxfin train` runs (jaxfin.train.state: the state laid out on the device mesh
by the sharding rules, the AOT-compiled step with model + next-token loss + AdamW), on a fixed batch of random
tokens, one document per row. One warm-up step, then `steps` timed steps, each waited for.
"""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import resource
import statistics
import time

import numpy as np

from jaxfin.bench.output import emit
from jaxfin.bench.worker import Worker
from jaxfin.config.schema import Config, ModelConfig
from jaxfin.model.batch import Batch

# Dense (no sparsity) bf16 peak per JAX device in TFLOP/s, from the vendors' data sheets, matched against
# jax.Device.device_kind (lower-cased) in this order, first hit wins.
PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("h200",), 989.0),  # "NVIDIA H200" (SXM)
    (("h100", "pcie"), 756.0),  # "NVIDIA H100 PCIe"
    (("h100", "nvl"), 835.0),  # "NVIDIA H100 NVL"
    (("h100",), 989.0),  # "NVIDIA H100 80GB HBM3" (SXM)
    (("a100",), 312.0),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"
    (("mi300x",), 1307.0),  # "AMD Instinct MI300X"
    (("mi250x",), 191.5),  # 383 per MI250X package, whose two GCDs are two devices to JAX
    (("tpu v4",), 275.0),
    (("tpu v5 lite",), 197.0),  # v5e
    (("tpu v5e",), 197.0),
    (("tpu v5p",), 459.0),
    (("tpu v5",), 459.0),  # v5p reports "TPU v5"
    (("tpu v6 lite",), 918.0),  # v6e (Trillium)
    (("tpu v6e",), 918.0),
)


def peak_tflops(device_kind: str) -> float | None:
    """One device's dense bf16 peak in TFLOP/s, or None (CPU, unknown hardware)."""
    kind = device_kind.lower()
    for words, tflops in PEAK_BF16_TFLOPS:
        if all(w in kind for w in words):
            return tflops
    return None


def param_count(model_cfg: ModelConfig) -> int:
    """All parameters (a tied embedding is one matrix, counted once)."""
    from jaxfin.model.params import param_shapes

    leaves = _shape_leaves(param_shapes(model_cfg))
    return sum(math.prod(s) for s in leaves)


def _shape_leaves(tree) -> list[tuple[int, ...]]:
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _shape_leaves(v)]
    return [tree]


def flops_params(model_cfg: ModelConfig) -> int:
    """N in 6·N: every parameter that takes part in a matmul per token, i.e. all but the input embedding table
    (a lookup does no FLOPs). The LM head counts; with tied embeddings the shared matrix counts once, as the head.
    Norm scales are included (negligible: 2·L·D + D). A mixture of experts counts its active parameters: the
    router and k of the E experts per token (jaxfin.model.moe.active_params), as MaxText's MoE MFU does."""
    from jaxfin.model.moe import active_params

    n = active_params(model_cfg, param_count(model_cfg))
    return n if model_cfg.tie_embeddings else n - model_cfg.vocab_size * model_cfg.hidden_size


def flops_per_token(model_cfg: ModelConfig, seq_len: int, causal: bool = True) -> float:
    """Training FLOPs per token (forward + backward), the usual MFU convention (PaLM appendix B):

        6·N  +  12·L·H·D·S   (attention scores and values; causal masking halves it to 6·L·H·D·S)

    N = flops_params (non-embedding parameters, LM head included), L = layers, H = query heads, D = head dim,
    S = sequence length. Recomputation under remat is not counted: MFU measures useful work.
    """
    attn = 12 * model_cfg.num_layers * model_cfg.num_heads * model_cfg.head_size * seq_len
    return 6.0 * flops_params(model_cfg) + (attn / 2 if causal else attn)


def synthetic_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> Batch:
    """Random tokens, one document per row: segment_ids 1, positions 0..S-1, every token a target."""
    rng = np.random.default_rng(seed)
    return {
        "tokens": rng.integers(4, vocab, (rows, seq_len), dtype=np.int32),
        "segment_ids": np.ones((rows, seq_len), np.int32),
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)).copy(),
        "loss_mask": np.ones((rows, seq_len), np.int32),
    }


def _compiled_train_step(cfg: Config):
    """(compiled step, initial state, mesh): the trainer's own setup (jaxfin.train.state), so the benchmark
    measures exactly the layout and program that `jaxfin train` runs."""
    from jaxfin.parallel import make_mesh
    from jaxfin.train.optimizer import make_optimizer, make_schedule
    from jaxfin.train.state import abstract_params, check_layout, compile_train_step, init_state
    from jaxfin.train.step import make_train_step
    from jaxfin.train.trainable import selection

    mesh = make_mesh(cfg.mesh)
    t = cfg.train
    check_layout(cfg.model, t, mesh)
    trained = selection(abstract_params(cfg.model), list(t.trainable), cfg.model)  # partial training / LoRA as run
    optimizer = make_optimizer(cfg.optimizer, t.steps, trained)
    schedule = make_schedule(cfg.optimizer, t.steps)
    state = init_state(cfg.model, cfg.objective, optimizer, mesh, t.seed)
    step_fn = make_train_step(cfg.model, cfg.objective, optimizer, schedule, t.micro_batches)
    return compile_train_step(step_fn, mesh, state, t.batch_size, cfg.data.seq_len), state, mesh


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _peak_memory(devices) -> tuple[int, str]:
    """Device peak (max over this process's devices) where the backend reports it, else the host's peak RSS."""
    peaks = []
    for d in devices:
        try:
            stats = d.memory_stats() or {}
        except Exception:  # some backends do not implement memory_stats
            stats = {}
        if "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    if peaks:
        return max(peaks), "device peak_bytes_in_use (max over devices)"
    return _peak_rss_bytes(), "host peak RSS (whole process)"


def bench_jaxfin(cfg: Config, steps: int, warmup: int = 1, rounds: int = 1, before_round=None) -> dict:
    """Compile, warm up, then time `rounds` rounds of `steps` train steps on one fixed batch; `before_round(r)`
    (if given) runs before round r, outside the timing (the other side's round, when alternating)."""
    import jax

    from jaxfin.model.config import compute_dtype
    from jaxfin.parallel import global_batch

    t0 = time.perf_counter()
    step, state, mesh = _compiled_train_step(cfg)
    compile_s = time.perf_counter() - t0
    b, s = cfg.train.batch_size, cfg.data.seq_len
    batch = synthetic_batch(b, s, cfg.model.vocab_size, cfg.train.seed)
    batch = global_batch(mesh, batch, b)  # on the devices once: host-to-device copies are the loader's business
    metrics = None
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times, losses, per_round = [], [], []
    for r in range(rounds):
        if before_round is not None:
            before_round(r)
        start, round_times = time.time(), []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
            round_times.append(time.perf_counter() - t0)
            losses.append(metrics["loss"])
        tps = b * s / statistics.median(round_times)
        per_round.append({"round": r, "step_times_s": round_times, "tokens_per_s": tps, "start": start,
                          "end": time.time()})  # fmt: skip
        times += round_times
    devices = sorted(mesh.devices.flat, key=lambda d: d.id)
    peak, peak_kind = _peak_memory([d for d in devices if d.process_index == jax.process_index()])
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in per_round),
        "step_time_s": statistics.median(times),
        "step_time_mean_s": statistics.fmean(times),
        "step_times_s": times,
        "rounds": per_round,
        "compile_s": compile_s,
        "loss": float(losses[-1]) if losses else None,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "compute_dtype": np.dtype(compute_dtype(cfg.model)).name,
        "device": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "jax": jax.__version__,
    }


# ---------------------------------------------------------------------------------------------- torch


def torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def torch_spec(
    cfg: Config,
    steps: int,
    warmup: int = 1,
    threads: int | None = None,
    gradient_checkpointing: bool = False,
    rounds: int = 1,
) -> dict:
    """The JSON spec jaxfin/bench/torch_train.py reads: the same model shape, batch shape, optimizer and steps."""
    from jaxfin.hf.convert import config_to_hf
    from jaxfin.train.optimizer import warmup_steps

    o = cfg.optimizer
    return {
        "hf_config": config_to_hf(cfg.model),
        "batch_size": cfg.train.batch_size,
        "seq_len": cfg.data.seq_len,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "seed": cfg.train.seed,
        "optimizer": {
            "lr": o.lr,
            "b1": o.b1,
            "b2": o.b2,
            "eps": o.eps,
            "weight_decay": o.weight_decay,
            "clip_norm": o.clip_norm,
            "schedule": o.schedule,
            "warmup_steps": warmup_steps(o, cfg.train.steps),
            "total_steps": cfg.train.steps,
            "min_lr_ratio": o.min_lr_ratio,
        },
        "compute_dtype": cfg.model.compute_dtype,
        "param_dtype": cfg.model.param_dtype,
        "threads": threads,
        "gradient_checkpointing": gradient_checkpointing,
    }


class TorchWorker(Worker):
    """The torch side (jaxfin/bench/torch_train.py): built and warmed up at start, then timing one round of
    spec["steps"] steps at each `round()`; `result()` is its whole JSON."""

    SCRIPT = "torch_train.py"


def bench_torch(spec: dict) -> dict:
    """All of spec["rounds"] torch rounds back to back, and its JSON."""
    worker = TorchWorker(spec)
    for r in range(int(spec.get("rounds", 1))):
        worker.round(r)
    return worker.result()


# ---------------------------------------------------------------------------------------------- both


def model_summary(m: ModelConfig) -> dict:
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads")
    out = {k: getattr(m, k) for k in keys}
    out |= {"head_dim": m.head_size, "tie_embeddings": m.tie_embeddings}
    out |= {k: getattr(m, k) for k in ("param_dtype", "scan_layers", "remat", "attention_backend")}
    if m.num_experts:
        out |= {k: getattr(m, k) for k in ("family", "num_experts", "experts_per_token", "moe_dispatch")}
    return out


def bench_train(
    cfg: Config,
    steps: int = 10,
    warmup: int = 1,
    compare_torch: bool = False,
    peak_tflops_override: float | None = None,
    torch_gradient_checkpointing: bool = False,
    rounds: int = 1,
) -> dict:
    """The JSON result of `jaxfin bench train` (see the CLI's --help for the keys). With compare_torch, torch and
    jaxfin time `rounds` rounds of `steps` steps in turn (torch, jaxfin, torch, ...), both built and warmed up
    once; each side's tokens/s is the median over rounds, `ratio` the median of the per-round ratios."""
    if steps < 1 or warmup < 0 or rounds < 1:
        raise ValueError("--steps and --rounds must be >= 1 and --warmup >= 0")
    if compare_torch and not torch_available():
        raise ValueError("--compare-torch needs torch and transformers installed (pip install -e '.[test]')")
    worker, torch_rounds = None, []
    if compare_torch:  # first, before JAX takes device memory in this process
        spec = torch_spec(cfg, steps, warmup, gradient_checkpointing=torch_gradient_checkpointing, rounds=rounds)
        worker = TorchWorker(spec)
    before = None if worker is None else (lambda r: torch_rounds.append(worker.round(r)))
    jx = bench_jaxfin(cfg, steps, warmup, rounds if compare_torch else 1, before)
    s = cfg.data.seq_len
    fpt = flops_per_token(cfg.model, s)
    peak = peak_tflops_override or peak_tflops(jx["device_kind"])
    achieved = fpt * jx["tokens_per_s"] / jx["num_devices"] / 1e12  # per chip
    result = {
        "benchmark": "train",
        "model": model_summary(cfg.model),
        "params": param_count(cfg.model),
        "flops_params": flops_params(cfg.model),
        "batch_size": cfg.train.batch_size,
        "seq_len": s,
        "tokens_per_step": cfg.train.batch_size * s,
        "micro_batches": cfg.train.micro_batches,
        "steps": steps,
        "warmup_steps": warmup,
        **{k: jx[k] for k in ("tokens_per_s", "step_time_s", "step_time_mean_s", "compile_s", "loss")},
        "flops_per_token": fpt,
        "model_tflops_per_s_per_device": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        **{k: jx[k] for k in ("peak_memory_bytes", "peak_memory_kind", "compute_dtype", "device", "device_kind")},
        **{k: jx[k] for k in ("num_devices", "mesh", "jax")},
        "host": platform.machine(),
        "host_cpus": _cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "step_times_s": jx["step_times_s"],
    }
    if worker is not None:
        torch = worker.result()
        ratios = [j["tokens_per_s"] / t["tokens_per_s"] for j, t in zip(jx["rounds"], torch["rounds"])]
        result["torch_tokens_per_s"] = torch["tokens_per_s"]
        result["ratio"] = statistics.median(ratios)
        result["ratio_min"], result["ratio_max"] = min(ratios), max(ratios)
        result["rounds"] = [
            {"round": j["round"], "jaxfin_tokens_per_s": j["tokens_per_s"], "torch_tokens_per_s": t["tokens_per_s"],
             "ratio": q, "jaxfin_start": j["start"], "jaxfin_end": j["end"], "torch_start": t["start"],
             "torch_end": t["end"]}
            for j, t, q in zip(jx["rounds"], torch["rounds"], ratios)
        ]  # fmt: skip
        result["torch"] = torch
    return result


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def format_summary(r: dict) -> str:
    m = r["model"]
    lines = [
        f"model   {m['num_layers']} layers, hidden {m['hidden_size']}, {m['num_heads']}/{m['num_kv_heads']} heads, "
        f"vocab {m['vocab_size']:,}: {r['params'] / 1e6:,.2f}M params ({r['flops_params'] / 1e6:,.2f}M in 6N)"
        + (
            f", {m['num_experts']} experts, {m['experts_per_token']} per token ({m['moe_dispatch']} dispatch; 6N "
            f"counts the active ones)"
            if "num_experts" in m
            else ""
        ),
        f"batch   {r['batch_size']} x {r['seq_len']} = {r['tokens_per_step']:,} tokens/step, {r['steps']} timed steps "
        f"after {r['warmup_steps']} warm-up; {r['compute_dtype']} compute on {r['num_devices']} x {r['device_kind']} "
        f"(jax {r['jax']}, remat {m['remat']}, scan_layers {m['scan_layers']})",
        f"jaxfin  {r['tokens_per_s']:,.0f} tokens/s   step {r['step_time_s']:.4f} s (mean {r['step_time_mean_s']:.4f})"
        f"   compile {r['compile_s']:.1f} s   peak {_gb(r['peak_memory_bytes'])} ({r['peak_memory_kind']})",
    ]
    if r["mfu"] is not None:
        lines.append(
            f"MFU     {100 * r['mfu']:.1f}%   ({r['model_tflops_per_s_per_device']:.1f} of {r['peak_tflops']:.0f} "
            f"TFLOP/s per device; {r['flops_per_token'] / 1e9:.2f} GFLOP/token)"
        )
    else:
        lines.append(
            f"MFU     n/a (no bf16 peak known for '{r['device_kind']}'; {r['model_tflops_per_s_per_device']:.3f} "
            f"TFLOP/s achieved, {r['flops_per_token'] / 1e9:.4f} GFLOP/token; --peak-tflops sets one)"
        )
    t = r.get("torch")
    if t is not None:
        lines.append(
            f"torch   {t['tokens_per_s']:,.0f} tokens/s   step {t['step_time_s']:.4f} s "
            f"(mean {t['step_time_mean_s']:.4f})"
            f"   peak {_gb(t['peak_memory_bytes'])} ({t['peak_memory_kind']})   torch {t['torch']}, transformers "
            f"{t['transformers']}, {t['attn_implementation']}, {t['compute_dtype']}, {t['threads']} threads"
        )
        n = len(r["rounds"])
        spread = f", min {r['ratio_min']:.2f} max {r['ratio_max']:.2f} over {n} alternating rounds" if n > 1 else ""
        lines.append(f"ratio   {r['ratio']:.2f}x  (jaxfin tokens/s / torch tokens/s; median{spread})")
    return "\n".join(lines)


def run_bench_train(args) -> int:
    from jaxfin.config import load_config
    from jaxfin.parallel.xla_flags import apply_xla_flags

    cfg = load_config(args.config, args.overrides)
    if args.compare_torch:  # torch stays resident between rounds: JAX must not take 75% of a GPU's memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    apply_xla_flags()  # the XLA flags `jaxfin train` runs with, before the backend starts
    if cfg.init_from:
        raise ValueError(
            f"init_from is set ({cfg.init_from}): the benchmark measures the shape in model.* with random weights; "
            "add init_from= to the command line and set model.* to the checkpoint's shape"
        )
    result = bench_train(
        cfg,
        args.steps,
        args.warmup,
        args.compare_torch,
        args.peak_tflops,
        args.torch_gradient_checkpointing,
        args.rounds,
    )
    result = {"config": args.config, "overrides": list(args.overrides), **result}
    return emit(result, args, format_summary)
