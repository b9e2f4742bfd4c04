"""`jaxfin bench train` (and, later, other benchmarks as further subcommands of `bench`)."""

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


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add `bench` with its subcommands (train)."""
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: train-step throughput / MFU (vs transformers + torch)",
        description=BENCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bench_command", required=True)
    _add_train(sub)
    _add_attention(sub)
    from jaxfin.bench.merge import add_merge_bench

    add_merge_bench(sub)
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
