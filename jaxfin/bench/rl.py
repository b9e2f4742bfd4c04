"""`jaxfin bench rl`: the time of one GRPO step (rollout with the KV-cache generator, rewards, update) of a config,
optionally side by side with TRL's `GRPOTrainer` on the same model, prompts and settings.

The jaxfin side is what `jaxfin train` runs for `objective.type: grpo`: the RL step of jaxfin/train/rl.py built by
its `setup_rl` (the state laid out on the mesh, the AOT-compiled update), called on the state step after step.
The TRL side (jaxfin/bench/torch_rl.py, a subprocess) loads the same initial weights from jaxfin's own HF export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxfin.bench.output import emit
from jaxfin.bench.worker import Worker
from jaxfin.config.schema import Config, RewardConfig

BENCH_REWARD = "jaxfin.bench.torch_rl:letter_share"
TARGET_RATIO = 1.5  # issue 22: jaxfin's GRPO step at least 1.5x faster than TRL's on the same tiny model on CPU

_SUBJECTS = ("The company", "The bank", "The insurer", "The retailer", "The utility", "The airline", "The lender",
             "The miner", "The carmaker", "The brewer", "The chipmaker", "The telecom group")  # fmt: skip
_VERBS = ("reported", "raised", "cut", "confirmed", "lowered", "beat", "missed", "revised")
_OBJECTS = ("quarterly revenue", "its dividend", "full-year guidance", "operating margins", "net interest income",
            "its sales forecast", "earnings per share", "free cash flow")  # fmt: skip
_TAILS = ("after a weak quarter.", "despite higher costs.", "as demand recovered.", "on strong volumes.",
          "amid rising rates.", "for the second year.")  # fmt: skip


def synthetic_prompts(tokenizer, n: int = 64, seed: int = 0) -> tuple[list[dict], int]:
    """(n prompt records, their token count): short finance sentences from templates, only those of the most common
    token length (BOS + text), so that every step's prompts are the same length on both sides."""
    rng = np.random.default_rng(seed)
    texts = [f"{s} {v} {o} {t}" for s in _SUBJECTS for v in _VERBS for o in _OBJECTS for t in _TAILS]
    texts = [texts[i] for i in rng.permutation(len(texts))]
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    lengths = [len(bos) + len(ids) for ids in tokenizer.encode_batch(texts)]
    common = statistics.mode(lengths)
    picked = [t for t, k in zip(texts, lengths) if k == common][:n]
    return [{"prompt": t} for t in picked], common


def _override_keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].strip() for o in overrides if "=" in o}


def bench_config(path, overrides: list[str], work: Path) -> tuple[Config, list[str]]:
    """The config the benchmark runs and what it changed (notes): objective.type grpo; without `kind: prompts`
    sources, synthetic prompts (synthetic_prompts) with data.seq_len = their tokens + max_new_tokens (unless set on
    the command line) and the benchmark's reward; a fresh output_dir under `work`."""
    from jaxfin.config import config_from_dict, load_config
    from jaxfin.config.schema import to_dict
    from jaxfin.data.tokenizer import load_tokenizer

    cfg = load_config(path, overrides)
    if cfg.objective.type == "ppo":
        raise ValueError("jaxfin bench rl times GRPO steps; this config is PPO (add objective.type=grpo)")
    if cfg.init_from:
        raise ValueError(
            f"init_from is set ({cfg.init_from}): the benchmark measures the shape in model.* with random weights; "
            "add init_from= to the command line and set model.* to the checkpoint's shape"
        )
    if not cfg.tokenizer:
        raise ValueError("set 'tokenizer' (a SentencePiece .model file or an HF tokenizer dir)")
    tree, notes = to_dict(cfg), []
    o = tree["objective"]
    if o["type"] != "grpo":
        notes.append(f"objective.type {o['type']} -> grpo (model, optimizer and batch as configured)")
        o["type"] = "grpo"
    bench_reward = [dataclasses.asdict(RewardConfig(type="callable", function=BENCH_REWARD, name="letter_share"))]
    sources = cfg.data.sources
    if not sources or any(s.kind != "prompts" for s in sources):
        records, n_tok = synthetic_prompts(load_tokenizer(cfg.tokenizer), seed=cfg.train.seed)
        work.mkdir(parents=True, exist_ok=True)
        (work / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        tree["data"]["sources"] = [{"name": "bench_prompts", "path": str(work / "prompts.jsonl"), "kind": "prompts"}]
        tree["data"]["dev"] = []
        o["rollout"]["prompt_template"], o["rollout"]["chat_template"] = "{prompt}", None
        notes.append(f"prompts: {len(records)} synthetic sentences of {n_tok} tokens (BOS included); the config's "
                     "data sources are not prompts")  # fmt: skip
        if "data.seq_len" not in _override_keys(overrides):
            tree["data"]["seq_len"] = n_tok + o["rollout"]["max_new_tokens"]
            notes.append(f"data.seq_len = {n_tok} + max_new_tokens = {tree['data']['seq_len']} (the update's rows)")
        o["rewards"], o["reward_model"] = bench_reward, ""
        notes.append(f"rewards: {BENCH_REWARD} (share of 'e' among the completion's letters)")
    elif not o["rewards"] and not o["reward_model"]:
        o["rewards"] = bench_reward
        notes.append(f"rewards: {BENCH_REWARD}")
    tree["output_dir"] = str(work / "run")
    tree["data"]["dev"] = []  # the step never evaluates held-out prompts
    return config_from_dict(tree, "jaxfin bench rl"), notes


def check_trl_comparable(cfg: Config) -> None:
    """What the TRL side cannot mirror: refused up front, with the reason."""
    o, m = cfg.objective, cfg.model
    why = []
    if m.lora.rank > 0:
        why.append("LoRA (model.lora.rank > 0): TRL would need PEFT; compare the full model")
    if cfg.train.trainable:
        why.append("partial training (train.trainable): TRL trains every parameter")
    if o.rollout.chat_template is not None:
        why.append("a chat template (objective.rollout.chat_template): compare on plain prompts")
    if o.rollout.stop:
        why.append("stop strings (objective.rollout.stop)")
    if o.reward_model or any(rw.type == "model" for rw in o.rewards):
        why.append("a reward model: compare with Python rewards (callables, rules)")
    if o.beta and (o.kl_estimator or "k3") != "k3":
        why.append("kl_estimator k1: TRL's GRPO uses k3")
    if m.value_head or m.num_labels:
        why.append("a value or score head")
    if why:
        raise ValueError("--compare-trl cannot mirror: " + "; ".join(why))


# ---------------------------------------------------------------------------------------------- jaxfin


def _setup_jaxfin(cfg: Config, stop_at_eos: bool):
    """(state, RL step, prompt stream, eos ids, config, setup seconds): the trainer's own RL setup
    (jaxfin.train.rl.setup_rl: the state initialised on the mesh, the AOT-compiled update, the RL step)."""
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval.generate import stop_token_ids
    from jaxfin.model import Model
    from jaxfin.parallel import make_mesh
    from jaxfin.rl.prompts import PromptStream
    from jaxfin.train.loop import for_objective
    from jaxfin.train.rl import setup_rl
    from jaxfin.train.state import check_layout

    t0 = time.perf_counter()
    tok = load_tokenizer(cfg.tokenizer)
    mesh = make_mesh(cfg.mesh)
    stream = PromptStream(cfg, tok)
    cfg = for_objective(cfg)
    check_layout(cfg.model, cfg.train, mesh)
    # no EOS: every completion runs to max_new_tokens, on both sides (equal work per step)
    eos = stop_token_ids(Model(cfg.model, None), tok, cfg.objective.rollout.chat_template) if stop_at_eos else ()
    with contextlib.redirect_stdout(sys.stderr):  # the trainable report and compile time; stdout may be --json
        loop, _, _, rl_step = setup_rl(cfg, stream, tok, mesh, None, Path(cfg.output_dir), eos)
    return loop.state, rl_step, stream, cfg, time.perf_counter() - t0


def export_hf(cfg: Config, state, path: Path) -> None:
    """The initial policy as an HF folder (jaxfin's own export: config, safetensors, tokenizer.json)."""
    from jaxfin.model import Model
    from jaxfin.parallel.distributed import to_host
    from jaxfin.store import save_model

    save_model(Model(cfg.model, to_host(state["params"]), cfg.tokenizer), path, format="hf")


def _step_record(dt: float, metrics: dict, rows: int) -> dict:
    gen_share = float(metrics["generate_share"])
    return {
        "step_s": dt,
        "generate_s": gen_share * dt,  # RLStep's t_gen / its own elapsed time, applied to the measured step
        "generate_share": gen_share,
        "rollout_tokens_per_s": float(metrics["rollout_tokens_per_s"]),
        "tokens": int(round(float(metrics["completion_len"]) * rows)),
        "reward": float(metrics["reward"]),
        "loss": float(metrics["loss"]),
    }


def bench_jaxfin(setup, steps: int, warmup: int, rounds: int = 1, before_round=None) -> dict:
    """Warm up (the first step compiles the generator), then time `rounds` rounds of `steps` GRPO steps, each
    waited for; `before_round(r)` (if given) runs before round r, outside the timing."""
    import jax

    state, rl_step, _, cfg, setup_s = setup
    rows = cfg.train.batch_size
    step, per_step, per_round = 0, [], []
    for _ in range(warmup):
        step += 1
        t0 = time.perf_counter()
        state, metrics = rl_step(state, step)
        jax.block_until_ready(state)
        per_step.append(_step_record(time.perf_counter() - t0, metrics, rows))
    first = per_step[0]["step_s"] if per_step else None
    timed = []
    for r in range(rounds):
        if before_round is not None:
            before_round(r)
        start, recs = time.time(), []
        for _ in range(steps):
            step += 1
            t0 = time.perf_counter()
            state, metrics = rl_step(state, step)
            jax.block_until_ready(state)
            recs.append(_step_record(time.perf_counter() - t0, metrics, rows))
        times = [x["step_s"] for x in recs]
        per_round.append({"round": r, "step_times_s": times, "step_s": statistics.median(times), "start": start,
                          "end": time.time()})  # fmt: skip
        timed += recs
    devices = jax.devices()
    return {
        "step_s": statistics.median(x["step_s"] for x in per_round),
        "step_s_mean": statistics.fmean(x["step_s"] for x in timed),
        "step_times_s": [x["step_s"] for x in timed],
        "generate_s": statistics.median(x["generate_s"] for x in timed),
        "generate_share": statistics.median(x["generate_share"] for x in timed),
        "tokens_generated": statistics.median(x["tokens"] for x in timed),
        "rollout_tokens_per_s": statistics.median(x["rollout_tokens_per_s"] for x in timed),
        "completions": rows,
        "max_new_tokens": cfg.objective.rollout.max_new_tokens,
        "num_generations": cfg.objective.rollout.num_generations,
        "optimizer_steps_per_grpo_step": cfg.objective.num_iterations,
        "first_step_s": first,
        "setup_s": setup_s,
        "reward": timed[-1]["reward"],
        "loss": timed[-1]["loss"],
        "peak_memory_bytes": _peak_rss_bytes(),
        "peak_memory_kind": "host peak RSS (whole process)",
        "compute_dtype": _compute_dtype(cfg),
        "device": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "jax": jax.__version__,
        "rounds": per_round,
    }


def _compute_dtype(cfg: Config) -> str:
    from jaxfin.model.config import compute_dtype

    return np.dtype(compute_dtype(cfg.model)).name


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------- TRL


def trl_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "trl", "datasets"))


def trl_spec(cfg: Config, stream, hf_dir: Path, steps: int, warmup: int, rounds: int, stop_at_eos: bool) -> dict:
    """The JSON spec jaxfin/bench/torch_rl.py reads: the exported model, the prompts each step draws (in the order
    jaxfin's PromptStream draws them), and the GRPO, reward and optimizer settings of `cfg`."""
    from jaxfin.train.optimizer import warmup_steps
    from jaxfin.train.rl import updates_per_step

    o, opt = cfg.objective, cfg.optimizer
    records, ids = [], []
    for step in range(1, warmup + rounds * steps + 1):
        for i in stream.indices(step):
            rec = stream.records[int(i)]
            fields = {k: v for k, v in rec.items() if not k.startswith("_") and k != "prompt"}
            records.append({"prompt": stream.texts[int(i)], "__bench_prompt": rec.get("prompt"), **fields})
            ids.append(stream.ids[int(i)])
    updates = cfg.train.steps * updates_per_step(cfg)  # jaxfin's schedule counts optimizer updates
    return {
        "hf_dir": str(hf_dir),
        "records": records,
        "prompt_ids": ids,
        "grpo": {**grpo_settings(cfg), "stop_at_eos": stop_at_eos, "eos_token_id": cfg.model.eos_token_id},
        "rewards": [dataclasses.asdict(rw) for rw in o.rewards],
        "optimizer": {
            "lr": opt.lr,
            "b1": opt.b1,
            "b2": opt.b2,
            "eps": opt.eps,
            "weight_decay": opt.weight_decay,
            "clip_norm": opt.clip_norm,
            "schedule": opt.schedule,
            "warmup_steps": warmup_steps(opt, updates),
            "total_steps": updates,
            "min_lr_ratio": opt.min_lr_ratio,
        },
        "batch_size": cfg.train.batch_size,
        "micro_batches": cfg.train.micro_batches,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "seed": cfg.train.seed,
        "threads": None,
        "compute_dtype": cfg.model.compute_dtype,
        "sys_path": [p for p in sys.path if p],
    }


class TRLWorker(Worker):
    """The TRL side (jaxfin/bench/torch_rl.py), built and warmed up at start; `round()` times one round of
    spec["steps"] GRPO steps, `result()` lets it finish (its trainer winds down only after "end") and returns its
    whole JSON."""

    SCRIPT, SIDE, END = "torch_rl.py", "TRL", True


# ---------------------------------------------------------------------------------------------- both


def grpo_settings(cfg: Config) -> dict:
    """The sampling and loss settings both sides run with (the TRL spec and the reported summary)."""
    o, r = cfg.objective, cfg.objective.rollout
    return {
        "num_generations": r.num_generations,
        "max_new_tokens": r.max_new_tokens,
        "temperature": r.temperature or 1.0,
        "top_k": r.top_k,
        "top_p": r.top_p,
        "beta": o.beta or 0.0,
        "num_iterations": o.num_iterations,
        "loss_type": o.loss_type,
        "scale_rewards": o.scale_rewards,
        "epsilon": o.epsilon,
        "epsilon_high": o.epsilon_high,
    }


def grpo_summary(cfg: Config, stream, stop_at_eos: bool) -> dict:
    o, r = cfg.objective, cfg.objective.rollout
    lengths = [len(x) for x in stream.ids]
    return {
        **grpo_settings(cfg),
        "prompts_per_step": cfg.train.batch_size // r.num_generations,
        "completions_per_step": cfg.train.batch_size,
        "stop_at_eos": stop_at_eos,
        "lr": cfg.optimizer.lr,
        "micro_batches": cfg.train.micro_batches,
        "seq_len": cfg.data.seq_len,
        "prompts": len(stream.ids),
        "prompt_tokens_min": min(lengths),
        "prompt_tokens_max": max(lengths),
        "rewards": [rw.function if rw.type == "callable" else rw.type for rw in o.rewards],
    }


def bench_rl(
    cfg: Config,
    steps: int = 3,
    warmup: int = 1,
    compare_trl: bool = False,
    rounds: int = 1,
    stop_at_eos: bool = False,
    work: Path | None = None,
) -> dict:
    """The JSON result of `jaxfin bench rl` (see the CLI's --help for the keys)."""
    from jaxfin.bench.train import model_summary, param_count

    if steps < 1 or warmup < 0 or rounds < 1:
        raise ValueError("--steps and --rounds must be >= 1 and --warmup >= 0")
    if compare_trl:
        if not trl_available():
            raise ValueError("--compare-trl needs torch, transformers, datasets and trl installed")
        check_trl_comparable(cfg)
    work = Path(tempfile.mkdtemp(prefix="jaxfin-bench-rl-")) if work is None else work
    load_before = _load_average()
    setup = _setup_jaxfin(cfg, stop_at_eos)
    _, _, stream, cfg, _ = setup
    worker, trl_rounds = None, []
    if compare_trl:
        export_hf(cfg, setup[0], work / "hf")  # before any step: both sides start from these weights
        worker = TRLWorker(trl_spec(cfg, stream, work / "hf", steps, warmup, rounds, stop_at_eos))
    before = None if worker is None else (lambda r: trl_rounds.append(worker.round(r)))
    jx = bench_jaxfin(setup, steps, warmup, rounds if compare_trl else 1, before)
    result = {
        "benchmark": "rl",
        "model": model_summary(cfg.model),
        "params": param_count(cfg.model),
        "grpo": grpo_summary(cfg, stream, stop_at_eos),
        "steps": steps,
        "warmup_steps": warmup,
        "jaxfin": jx,
        "device": jx["device"],
        "device_kind": jx["device_kind"],
        "jax": jx["jax"],
        "host": platform.machine(),
        "host_cpus": _cpu_count(),
        # a shared machine: the 1-minute load average before the benchmark (other jobs) and after (ours included)
        "load_average_1m": [load_before, _load_average()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if worker is not None:
        trl = worker.result()
        ratios = [t["step_s"] / j["step_s"] for j, t in zip(jx["rounds"], trl["rounds"])]
        result["trl"] = trl
        result["ratio"] = statistics.median(ratios)
        result["ratio_min"], result["ratio_max"] = min(ratios), max(ratios)
        result["target"] = TARGET_RATIO
        result["target_met"] = result["ratio"] >= TARGET_RATIO
        result["rollout_ratio"] = jx["rollout_tokens_per_s"] / trl["rollout_tokens_per_s"]
        result["update_ratio"] = (trl["step_s"] - trl["generate_s"]) / max(jx["step_s"] - jx["generate_s"], 1e-12)
        result["rounds"] = [
            {"round": j["round"], "jaxfin_step_s": j["step_s"], "trl_step_s": t["step_s"], "ratio": q,
             "jaxfin_start": j["start"], "jaxfin_end": j["end"], "trl_start": t["start"], "trl_end": t["end"]}
            for j, t, q in zip(jx["rounds"], trl["rounds"], ratios)
        ]  # fmt: skip
        result["versions"] = {"jax": jx["jax"], **{k: trl[k] for k in ("torch", "transformers", "trl", "datasets")}}
    return result


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _side(name: str, s: dict) -> str:
    return (
        f"{name:<7} step {s['step_s']:.3f} s (mean {s['step_s_mean']:.3f})   generate {s['generate_s']:.3f} s "
        f"({100 * s['generate_share']:.0f}% of the step), {s['tokens_generated']:.0f} tokens at "
        f"{s['rollout_tokens_per_s']:,.0f} tokens/s   update etc. {s['step_s'] - s['generate_s']:.3f} s   "
        f"first step {s['first_step_s'] or float('nan'):.1f} s"
    )


def format_summary(r: dict) -> str:
    m, g, j = r["model"], r["grpo"], r["jaxfin"]
    eos = "stopping at EOS" if g["stop_at_eos"] else "no EOS stop"
    lines = [
        f"model   {m['num_layers']} layers, hidden {m['hidden_size']}, {m['num_heads']}/{m['num_kv_heads']} heads, "
        f"vocab {m['vocab_size']:,}: {r['params'] / 1e6:,.2f}M params; {j['compute_dtype']} on "
        f"{j['num_devices']} x {j['device_kind']} (jax {j['jax']})",
        f"grpo    {g['prompts_per_step']} prompts x {g['num_generations']} = {g['completions_per_step']} completions "
        f"of {g['max_new_tokens']} new tokens ({eos}), prompts {g['prompt_tokens_min']}-{g['prompt_tokens_max']} "
        f"tokens, rows of {g['seq_len']}; beta {g['beta']}, {g['num_iterations']} update(s) per step, loss "
        f"{g['loss_type']}; {r['steps']} timed steps after {r['warmup_steps']} warm-up",
        *([f"note    {n}" for n in r.get("notes", [])]),
        _side("jaxfin", j),
    ]
    t = r.get("trl")
    if t is not None:
        lines.append(_side("trl", t))
        lines.append(f"        trl {t['trl']}, transformers {t['transformers']}, torch {t['torch']}, {t['threads']} "
                     f"threads, {t['compute_dtype']}, prompt ids equal: {t['prompt_ids_match']}")  # fmt: skip
        n = len(r["rounds"])
        spread = f", min {r['ratio_min']:.2f} max {r['ratio_max']:.2f} over {n} alternating rounds" if n > 1 else ""
        met = "met" if r["target_met"] else "not met"
        lines.append(f"ratio   {r['ratio']:.2f}x  (TRL step time / jaxfin step time; median{spread}); target "
                     f"{r['target']}x {met}; rollout tokens/s {r['rollout_ratio']:.2f}x, rest of the step "
                     f"{r['update_ratio']:.2f}x")  # fmt: skip
    return "\n".join(lines)


def run_bench_rl(args) -> int:
    from jaxfin.parallel.xla_flags import apply_xla_flags

    if args.compare_trl:  # torch stays resident between rounds: JAX must not take 75% of a GPU's memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    apply_xla_flags()  # the XLA flags `jaxfin train` runs with, before the backend starts
    with tempfile.TemporaryDirectory(prefix="jaxfin-bench-rl-") as tmp:
        cfg, notes = bench_config(args.config, list(args.overrides), Path(tmp))
        result = bench_rl(cfg, args.steps, args.warmup, args.compare_trl, args.rounds, args.eos, Path(tmp))
    result = {"config": args.config, "overrides": list(args.overrides), "notes": notes, **result}
    return emit(result, args, format_summary)
