"""The PyTorch side of `jaxfin bench train --compare-torch`: the same model shape and batch trained with
`transformers` + `torch.optim.AdamW`, timed the same way.

    python -m jaxfin.bench.torch_train SPEC.json        # or the spec as the first line of stdin

SPEC is one JSON object (written by jaxfin.bench.train.torch_spec):
    hf_config       config.json of the model (jaxfin.hf.config_to_hf of the jaxfin ModelConfig)
    batch_size, seq_len, steps, warmup, seed
    rounds          timed rounds of `steps` steps each (default 1); with `cue`, each waits for a line on stdin
                    so that the caller can alternate them with its own (jaxfin bench train --rounds)
    optimizer       {lr, b1, b2, eps, weight_decay, clip_norm}, and the learning-rate schedule as jaxfin's
                    (jaxfin/train/optimizer.py): {schedule, warmup_steps, total_steps, min_lr_ratio}
    compute_dtype   auto (bfloat16 autocast on CUDA, float32 on CPU) | float32 | bfloat16
    param_dtype     float32 | bfloat16
    threads         intra-op threads (default: all cores)
    gradient_checkpointing   recompute each layer in the backward pass (default false: torch's fastest)
After each round, one JSON line {"round", "step_times_s", "tokens_per_s", "start", "end"} (wall-clock
seconds); then the whole result as one JSON object (the last line). It runs in its own process (the jaxfin CLI
starts it as a subprocess) so its peak RSS, thread pools and GPU memory are not shared with JAX's.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import time


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def lr_factor(step: int, o: dict) -> float:
    """jaxfin's schedule as a multiple of the peak lr: linear warm-up from 1/warm (step 0) to 1 at step warm-1,
    then cosine / linear / constant decay to min_lr_ratio over the remaining total_steps - warm steps."""
    warm, total, floor = int(o.get("warmup_steps", 0)), int(o.get("total_steps", 1)), float(o.get("min_lr_ratio", 1))
    if step < warm:
        return 1.0 if warm == 1 else 1 / warm + (1 - 1 / warm) * step / (warm - 1)
    t = min(step - warm, max(total - warm, 1)) / max(total - warm, 1)
    kind = o.get("schedule", "constant")
    if kind == "cosine":
        return (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)) + floor
    if kind == "linear":
        return 1 + (floor - 1) * t
    return 1.0


def run(spec: dict, cue=None) -> dict:
    """Build, warm up, then time spec["rounds"] rounds; `cue()` (if given) is called before each round."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ValueError(f"--compare-torch needs torch and transformers ({e}); pip install -e '.[test]'") from None

    threads = int(spec.get("threads") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(int(spec.get("seed", 0)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd")):
        raise ValueError(
            f"this machine has GPUs but torch {torch.__version__} cannot use them (a CPU-only build?); install a "
            "CUDA / ROCm build of torch to compare on the GPU"
        )
    compute = spec.get("compute_dtype", "auto")
    if compute == "auto":
        compute = "bfloat16" if device.type == "cuda" else "float32"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    hf = dict(spec["hf_config"])
    config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="sdpa", dtype=dtypes[spec.get("param_dtype", "float32")]
        )
    if spec.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # shared (tied) tensors are listed once

    o = spec["optimizer"]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]  # as jaxfin: no decay on norms and biases
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    # fused is torch's fastest AdamW on both CPU and CUDA
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["b1"], o["b2"]), eps=o["eps"], fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, o))

    b, s = int(spec["batch_size"]), int(spec["seq_len"])
    gen = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    tokens = torch.randint(4, config.vocab_size, (b, s), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=dtypes[compute], enabled=compute != spec.get("param_dtype"))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        with autocast:
            loss = model(input_ids=tokens, labels=tokens).loss  # HF shifts the labels
        loss.backward()
        if o["clip_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_norm"])
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(int(spec.get("warmup", 1))):
        loss = step()
    sync()
    times, rounds = [], []
    for r in range(int(spec.get("rounds", 1))):
        if cue is not None:
            cue()
        start, round_times = time.time(), []
        for _ in range(int(spec["steps"])):
            t0 = time.perf_counter()
            loss = step()
            sync()
            round_times.append(time.perf_counter() - t0)
        rounds.append({"round": r, "step_times_s": round_times, "tokens_per_s": b * s / statistics.median(round_times),
                       "start": start, "end": time.time()})  # fmt: skip
        print(json.dumps(rounds[-1]), flush=True)
        times += round_times
    median = statistics.median(times)
    if device.type == "cuda":  # over the whole run, like JAX's peak_bytes_in_use
        peak, peak_kind = torch.cuda.max_memory_allocated(), "device max_memory_allocated"
    else:
        peak, peak_kind = _peak_rss_bytes(), "host peak RSS (whole process)"
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rounds),
        "step_time_s": median,
        "step_time_mean_s": statistics.fmean(times),
        "step_times_s": times,
        "loss": float(loss.detach()),
        "params": n_params,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": device.type,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "compute_dtype": compute,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "gradient_checkpointing": bool(spec.get("gradient_checkpointing")),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    from side import serve  # the sibling module: this script runs by path, without the jaxfin package

    return serve(run, argv)


if __name__ == "__main__":
    sys.exit(main())
