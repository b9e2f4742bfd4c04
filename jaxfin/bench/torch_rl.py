"""The TRL side of `jaxfin bench rl --compare-trl`: GRPO steps of `trl.GRPOTrainer` (transformers generation, TRL's
loss, torch AdamW) on the model jaxfin exported, the same prompts in the same order and the same settings, timed
per GRPO step with a TrainerCallback.

    python jaxfin/bench/torch_rl.py SPEC.json        # or the spec as the first line of stdin

SPEC is one JSON object (written by jaxfin.bench.rl.trl_spec):
    hf_dir          the exported model (jaxfin.save_model(..., format="hf"): config, safetensors, tokenizer.json)
    records         the prompts in the order the steps draw them (per_step distinct prompts per step, each sampled
                    num_generations times): {"prompt": text as sampled from, "__bench_prompt": the record's own
                    prompt (what jaxfin hands a reward function), the record's other fields}
    prompt_ids      jaxfin's token ids of each record's prompt (checked against the HF tokenizer's)
    grpo            {num_generations, max_new_tokens, temperature, top_k, top_p, beta, num_iterations, loss_type,
                     scale_rewards, epsilon, epsilon_high, stop_at_eos, eos_token_id}
    rewards         jaxfin RewardConfig dicts: callables (package.module:name) and rules (jaxfin/rl/rewards.py);
                    combined as jaxfin combines them (weighted sum over those that could score)
    optimizer       {lr, b1, b2, eps, weight_decay, clip_norm, schedule, warmup_steps, total_steps, min_lr_ratio}
                    (jaxfin's schedule over optimizer updates, as torch_train.lr_factor)
    batch_size      completions per GRPO step (jaxfin train.batch_size); micro_batches: gradient accumulation
    steps, warmup, rounds, seed, threads, compute_dtype (auto | float32 | bfloat16), sys_path (import paths of the
    caller, for reward functions), cue
A GRPO step is num_iterations optimizer steps of TRL (it generates on the first and reuses the batch on the
others); its time is the sum of their on_step_begin -> on_step_end intervals (generation, rewards, old / reference
log-probs, loss, backward, AdamW). With `cue`, each round waits for a line on stdin before its first step and,
after the last round, once more before the trainer winds down, so that nothing of this process runs while the
caller times its own round. After each round, one JSON line {"round", "step_times_s", "generate_s", "tokens",
"start", "end"}; then the whole result as one JSON object (the last line).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time


def letter_share(prompts, completions, **fields):
    """The benchmark's reward: the share of 'e' among a completion's letters (None when it has none). Pure Python,
    as cheap on both sides, with spread within a group (so every step has advantages to learn from)."""
    out = []
    for c in completions:
        letters = [ch for ch in c.lower() if ch.isalpha()]
        out.append(None if not letters else letters.count("e") / len(letters))
    return out


def _load_callable(path: str):
    module, _, name = path.partition(":")
    if module == "jaxfin.bench.torch_rl":  # this script's own (run by path, it is __main__, not that module)
        return globals()[name]
    return getattr(importlib.import_module(module), name)


def make_reward(rewards: list[dict], columns: list[str]):
    """One TRL reward function computing jaxfin's total: each configured reward per completion (NaN where it
    cannot score), their weighted sum over those that could, None where none could (jaxfin.rl.rewards.combine)."""
    parts = []
    for rw in rewards:
        if rw["type"] == "model":
            raise ValueError("--compare-trl scores with Python rewards only (callables and rules), not reward models")
        parts.append((rw, _load_callable(rw["function"]) if rw["type"] == "callable" else None))
    fields = [c for c in columns if c not in ("prompt", "__bench_prompt")]

    def bench_reward(prompts, completions, **kw):
        own = kw.get("__bench_prompt", prompts)
        cols = {k: kw[k] for k in fields if k in kw}
        per = []
        for rw, fn in parts:
            if fn is not None:
                out = fn(prompts=list(own), completions=list(completions), **cols)
            else:  # a rule: jaxfin's own implementation (imports jaxfin here, outside the timed steps' first use)
                from jaxfin.config.schema import RewardConfig
                from jaxfin.rl.rewards import rule_scores

                records = [{"prompt": p, **{k: v[i] for k, v in cols.items()}} for i, p in enumerate(own)]
                out = rule_scores(RewardConfig(**rw), records, list(completions))
            per.append([math.nan if v is None else float(v) for v in out])
        totals = []
        for i in range(len(completions)):
            got = [(rw["weight"], p[i]) for (rw, _), p in zip(parts, per) if not math.isnan(p[i])]
            totals.append(sum(w * v for w, v in got) if got else None)
        return totals

    return bench_reward


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run(spec: dict, cue=None) -> dict:
    """Build the trainer, then train warmup + rounds x steps GRPO steps; `cue()` (if given) is called before each
    round's first step and once after the last round."""
    try:
        import datasets
        import torch
        import transformers
        import trl
    except ImportError as e:
        raise ValueError(f"--compare-trl needs torch, transformers, datasets and trl ({e})") from None
    try:  # run by path: the sibling script; imported as a module: the package's
        from torch_train import lr_factor
    except ImportError:
        from jaxfin.bench.torch_train import lr_factor

    for p in spec.get("sys_path", []):  # the caller's import paths (reward functions by import path)
        if p not in sys.path:
            sys.path.append(p)
    t_setup = time.perf_counter()
    threads = int(spec.get("threads") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(int(spec.get("seed", 0)))
    cuda = torch.cuda.is_available()
    compute = spec.get("compute_dtype", "auto")
    if compute == "auto":
        compute = "bfloat16" if cuda else "float32"
    g = spec["grpo"]
    it = int(g["num_iterations"])
    warmup, steps, rounds = int(spec["warmup"]), int(spec["steps"]), int(spec["rounds"])
    total = warmup + rounds * steps  # GRPO steps

    model = transformers.AutoModelForCausalLM.from_pretrained(
        spec["hf_dir"], dtype=torch.float32, attn_implementation="sdpa"
    )
    tok = transformers.AutoTokenizer.from_pretrained(spec["hf_dir"])
    records = spec["records"]
    ids_match = [tok(r["prompt"])["input_ids"] == ids for r, ids in zip(records, spec["prompt_ids"])]
    n_params = sum(p.numel() for p in model.parameters())

    o = spec["optimizer"]  # jaxfin's AdamW: decay on matrices only, its lr schedule over optimizer updates
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["b1"], o["b2"]), eps=o["eps"], fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, o))

    micro = int(spec.get("micro_batches", 1))
    out_dir = tempfile.mkdtemp(prefix="jaxfin-bench-trl-")
    gen_kwargs = None if g["stop_at_eos"] else {"suppress_tokens": [int(g["eos_token_id"])]}
    args = trl.GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=int(spec["batch_size"]) // micro,
        gradient_accumulation_steps=micro,  # steps_per_generation defaults to it: one generation per GRPO step
        num_generations=int(g["num_generations"]),
        max_completion_length=int(g["max_new_tokens"]),
        temperature=float(g["temperature"]),
        top_p=float(g["top_p"]),
        top_k=int(g["top_k"]),
        beta=float(g["beta"]),
        num_iterations=it,
        loss_type=g["loss_type"],
        scale_rewards=g["scale_rewards"],
        epsilon=float(g["epsilon"]),
        epsilon_high=g["epsilon_high"],
        generation_kwargs=gen_kwargs,
        learning_rate=o["lr"],
        max_grad_norm=o["clip_norm"] if o["clip_norm"] > 0 else 0.0,
        max_steps=total * it,
        shuffle_dataset=False,  # the records come in the order the steps draw them
        seed=int(spec.get("seed", 0)),
        use_cpu=not cuda,
        bf16=compute == "bfloat16",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_vllm=False,
        log_completions=False,
    )
    dataset = datasets.Dataset.from_list(records)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Timer(transformers.TrainerCallback):
        """Per GRPO step: the summed on_step_begin -> on_step_end time of its num_iterations optimizer steps."""

        def __init__(self):
            self.t0 = 0.0
            self.step_s = self.gen_s = 0.0
            self.tokens = 0
            self.per_step: list[dict] = []  # every GRPO step, warm-up included
            self.rounds: list[dict] = []
            self.pending = None
            self.start = 0.0
            self.round_steps: list[dict] = []

        def on_step_begin(self, args, state, control, **kw):
            k = state.global_step
            if k % it == 0:
                s = k // it
                if s >= warmup and (s - warmup) % steps == 0:  # a round starts: report the last, wait for the cue
                    self._flush()
                    if cue is not None:
                        cue()
                    self.start, self.round_steps = time.time(), []
                self.step_s = self.gen_s = 0.0
                self.tokens = 0
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.step_s += time.perf_counter() - self.t0
            k = state.global_step - 1  # the optimizer step just done
            if k % it != it - 1:
                return
            s = k // it
            rec = {"step_s": self.step_s, "generate_s": self.gen_s, "tokens": self.tokens}
            self.per_step.append(rec)
            if s < warmup:
                return
            self.round_steps.append(rec)
            if len(self.round_steps) == steps:
                r = len(self.rounds)
                times = [x["step_s"] for x in self.round_steps]
                self.rounds.append({"round": r, "step_times_s": times,
                                    "generate_s": [x["generate_s"] for x in self.round_steps],
                                    "tokens": [x["tokens"] for x in self.round_steps],
                                    "step_s": statistics.median(times), "start": self.start,
                                    "end": time.time()})  # fmt: skip
                self.pending = self.rounds[-1]
                if r == rounds - 1:  # the last round: report now, and wait before winding down
                    self._flush()
                    if cue is not None:
                        cue()

        def _flush(self):
            if self.pending is not None:
                print(json.dumps(self.pending), flush=True)
                self.pending = None

    timer = Timer()
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=make_reward(spec["rewards"], list(dataset.column_names)),
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[timer],
        optimizers=(opt, schedule),
    )
    generate = trainer._generate  # tokenize, generate, decode: what jaxfin's generate_share counts

    def timed_generate(prompts):
        sync()
        t0 = time.perf_counter()
        out = generate(prompts)
        sync()
        timer.gen_s += time.perf_counter() - t0
        timer.tokens += sum(len(c) for c in out[1])  # completion ids per row
        return out

    trainer._generate = timed_generate
    setup_s = time.perf_counter() - t_setup
    trainer.train()
    if len(timer.rounds) != rounds:
        raise ValueError(f"the TRL trainer ran {len(timer.per_step)} GRPO steps, not {total}")

    timed = [x for r in timer.rounds for x in zip(r["step_times_s"], r["generate_s"], r["tokens"])]
    times = [t for t, _, _ in timed]
    peak, peak_kind = (torch.cuda.max_memory_allocated(), "device max_memory_allocated") if cuda else (
        _peak_rss_bytes(), "host peak RSS (whole process)")  # fmt: skip
    return {
        "step_s": statistics.median(r["step_s"] for r in timer.rounds),
        "step_s_mean": statistics.fmean(times),
        "step_times_s": times,
        "generate_s": statistics.median(gs for _, gs, _ in timed),
        "generate_share": statistics.median(gs / t for t, gs, _ in timed),
        "tokens_generated": statistics.median(n for _, _, n in timed),
        "rollout_tokens_per_s": statistics.median(n / gs for _, gs, n in timed),
        "completions": int(spec["batch_size"]),
        "max_new_tokens": int(g["max_new_tokens"]),
        "num_generations": int(g["num_generations"]),
        "optimizer_steps_per_grpo_step": it,
        "first_step_s": timer.per_step[0]["step_s"] if timer.per_step else None,
        "setup_s": setup_s,
        "prompt_ids_match": all(ids_match),
        "params": n_params,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "compute_dtype": compute,
        "threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "datasets": datasets.__version__,
        "rounds": timer.rounds,
    }


def main(argv: list[str] | None = None) -> int:
    from side import serve  # the sibling module: this script runs by path, without the jaxfin package

    return serve(run, argv)


if __name__ == "__main__":
    sys.exit(main())
