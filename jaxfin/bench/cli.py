"""`jaxfin bench train | rl | attention | merge | eval`: the benchmarks, each a subcommand of `bench`."""

from __future__ import annotations

import argparse

BENCH_HELP = """\
Benchmarks. Each prints a readable summary, or one JSON object with --json.

MFU counts 6*N FLOPs per token (N: parameters without the input embedding table; the LM head counts, once when
tied) plus attention 12*L*H*D*S per token, halved for causal masking, against the chip's dense bf16 peak
(H100/H200 SXM: 989 TFLOP/s). Remat recomputation is not counted.
"""

TRAIN_HELP = """\
Time the real train step of CONFIG (model + next-token loss + AdamW, laid out and compiled exactly as
`jaxfin train` does) on a fixed batch of random tokens of train.batch_size x data.seq_len, one document per row:
compile, --warmup steps, then --steps timed steps.

Reports tokens/s (from the median step time), median and mean step time, compile seconds, MFU (null on CPU and
unknown chips), peak memory (device peak_bytes_in_use on GPU/TPU, the host's peak RSS on CPU, labelled), device
kind and count, jax version and parameter counts.

--compare-torch trains the same model shape and batch shape with transformers (LlamaForCausalLM, sdpa attention)
and torch.optim.AdamW (same lr schedule, betas, eps, weight decay, clipping) in a subprocess, as many threads as
cores, float32 on CPU and bfloat16 autocast on CUDA (model.compute_dtype=auto), same warm-up and timed steps, and
adds `torch_tokens_per_s`, `ratio` (jaxfin / torch tokens/s) and the full torch result under `torch`. Torch runs
without gradient checkpointing (its fastest) whatever model.remat says, unless --torch-gradient-checkpointing.
With --rounds N both sides are built and warmed up once, then time N rounds of --steps steps in turn (torch,
jaxfin, torch, jaxfin, ...), so that a noisy stretch of a shared machine hits both: each side's tokens/s is the
median over rounds, `ratio` the median of the per-round ratios, with `ratio_min` / `ratio_max` and every round
(tokens/s, ratio, wall-clock start and end) under `rounds`. Torch stays resident meanwhile, so on a GPU JAX
allocates on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false unless set).

Examples:
  jaxfin bench train configs/tiny.yaml --compare-torch --rounds 5
  jaxfin bench train configs/llama-3.2-1b.yaml --json --out bench.json
  jaxfin bench train configs/llama-3-8b.yaml model.num_layers=8 train.batch_size=2
"""

RL_HELP = """\
Time one GRPO step of CONFIG as `jaxfin train` runs it (jaxfin/train/rl.py, built by its setup_rl: the state on the
mesh, the AOT-compiled update): rollout of train.batch_size completions (objective.rollout.num_generations per
prompt) with the KV-cache generator, rewards, then objective.num_iterations updates. --warmup untimed steps (the
first compiles the generator), then --steps timed steps, each waited for.

CONFIG is a jaxfin config; another objective than grpo is run as grpo (ppo is refused), init_from is refused
(random weights of the model.* shape). Prompts: the config's own `kind: prompts` sources with its rewards; else
64 synthetic finance sentences of one token length (the commonest of the templates' lengths), data.seq_len set to
their tokens + max_new_tokens (unless given on the command line), and one pure-Python reward,
jaxfin.bench.torch_rl:letter_share (the share of 'e' among a completion's letters). By default no completion stops
at EOS (jaxfin samples with no stop id; TRL suppresses the EOS token), so both sides generate exactly
max_new_tokens per completion; --eos stops at EOS on both (then compare tokens/s as well).

Reports, per side: step_s (median step time; with rounds the median of the rounds' medians), step_s_mean,
generate_s and generate_share (the rollout: sampling and decoding to text; jaxfin's from the step's own metrics),
tokens_generated per step and rollout_tokens_per_s, first_step_s, setup_s, peak memory; the GRPO settings, model
shape, device kind and versions.

--compare-trl runs TRL's GRPOTrainer in a subprocess on jaxfin's own HF export of the same initial weights
(LlamaForCausalLM, sdpa, float32 on CPU, as many torch threads as cores) with the same prompts in the same order
(shuffle_dataset off; the prompt token ids are checked equal: trl.prompt_ids_match), num_generations,
max_completion_length = max_new_tokens, temperature / top_k / top_p, beta, num_iterations, loss_type,
scale_rewards, epsilon(_high), train.batch_size completions per step (per_device_train_batch_size, gradient
accumulation = train.micro_batches, one generation per step), the same rewards, and jaxfin's AdamW (betas, eps,
weight decay on matrices only, clipping, its lr schedule) as a torch AdamW passed to the trainer. A TRL GRPO step
is timed by a TrainerCallback (on_step_begin to on_step_end, summed over its num_iterations optimizer steps), its
generate_s by a timer around GRPOTrainer._generate. Adds `ratio` = TRL step time / jaxfin step time (> 1: jaxfin
faster; with --rounds the median of the per-round ratios, with ratio_min / ratio_max), `target` 1.5 and
`target_met`, `rollout_ratio` (jaxfin / TRL rollout tokens/s) and `update_ratio` (TRL / jaxfin time of the rest
of the step), the full TRL result under `trl`. With --rounds N both sides are built and warmed up once, then time
N rounds of --steps steps in turn (TRL, jaxfin, TRL, ...); the idle side waits on a pipe meanwhile.

Examples:
  jaxfin bench rl configs/tiny.yaml objective.rollout.num_generations=8 train.batch_size=64 \\
      objective.rollout.max_new_tokens=32 --compare-trl --rounds 3
  jaxfin bench rl configs/tiny.yaml train.batch_size=16 --steps 5 --json --out rl.json   # jaxfin alone
"""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add `bench` with its subcommands (train, rl, attention, merge, eval)."""
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: train step (vs torch), GRPO step (vs TRL), eval speed (vs lm-eval hf), attention, merge",
        description=BENCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bench_command", required=True)
    _add_train(sub)
    _add_rl(sub)
    _add_attention(sub)
    from jaxfin.bench.merge import add_merge_bench

    add_merge_bench(sub)
    from jaxfin.bench.eval import add_eval_bench

    add_eval_bench(sub)
    return p


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train-step tokens/s, step time, MFU, peak memory",
        description=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config (model shape, batch, optimizer, runtime knobs)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. model.num_layers=8")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling (default 1)")
    p.add_argument("--compare-torch", action="store_true", help="also train the same shape with transformers + torch")
    p.add_argument("--rounds", type=int, default=1, help="with --compare-torch: alternating timed rounds (default 1)")
    p.add_argument(
        "--torch-gradient-checkpointing",
        action="store_true",
        help="torch recomputes each layer in the backward pass (when its activations do not fit otherwise)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    p.add_argument("--peak-tflops", type=float, help="the chip's dense bf16 peak for MFU, if not in the built-in table")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from jaxfin.bench.train import run_bench_train

    return run_bench_train(args)


def _add_rl(sub) -> None:
    p = sub.add_parser(
        "rl",
        help="one GRPO step (rollout, rewards, update): step time, rollout tokens/s, generate share (vs TRL)",
        description=RL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config (model shape, batch, optimizer, objective.rollout, prompts)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.batch_size=64")
    p.add_argument("--steps", type=int, default=3, help="timed GRPO steps (per round; default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first compiles; default 1)")
    p.add_argument("--compare-trl", action="store_true", help="also run TRL's GRPOTrainer on the same model")
    p.add_argument("--rounds", type=int, default=1, help="with --compare-trl: alternating timed rounds (default 1)")
    p.add_argument("--eos", action="store_true", help="stop completions at EOS (default: all run to max_new_tokens)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    p.set_defaults(func=_run_rl)


def _run_rl(args) -> int:
    from jaxfin.bench.rl import run_bench_rl

    return run_bench_rl(args)


def _add_attention(sub) -> None:
    from jaxfin.bench.attention import __doc__ as doc

    p = sub.add_parser(
        "attention",
        help="attention kernels: forward and forward+backward TFLOP/s per backend",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seq-lens", help="comma-separated (default 1024..16384 doubling; 256,512 on CPU)")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument(
        "--batch-tokens", type=int, default=None, help="batch = max(1, tokens // S) (default 16384; 1024 on CPU)"
    )
    p.add_argument("--doc-len", type=int, default=512, help="document length of the packed case")
    p.add_argument("--backends", help="comma-separated (default xla,cudnn on GPU, xla elsewhere)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), help="default bfloat16 (float32 on CPU)")
    p.add_argument("--iters", type=int, default=5, help="timed iterations (median)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    p.set_defaults(func=_run_attention)


def _run_attention(args) -> int:
    from jaxfin.bench.attention import run_bench_attention

    return run_bench_attention(args)
