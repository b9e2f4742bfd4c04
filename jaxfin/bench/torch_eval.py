"""The other side of `jaxfin bench eval`: lm-eval's `hf` backend (lm_eval.models.huggingface.HFLM) scoring an lm-eval
task with `simple_evaluate`, and transformers' `LlamaForCausalLM.generate` (greedy, no EOS stop), on the HF folder
jaxfin exported, timed per round.

    python jaxfin/bench/torch_eval.py SPEC.json        # or the spec as the first line of stdin

SPEC is one JSON object (written by jaxfin.bench.eval.bench_eval):
    hf_dir          the model (config, safetensors, tokenizer files)
    task, include_path, limit, batch_size     the lm-eval task and how it is run (num_fewshot 0, bootstrap_iters 0)
    prompt_ids      the generation prompts' token ids (jaxfin's), in batches of batch_size, left-padded with pad_id
    max_new_tokens, pad_id, threads (torch threads; default all cores), rounds, cue
Built, then warmed up once (one untimed evaluation and one untimed generation; with `cue` after a line on stdin,
then one JSON line {"warmup": ...}), then each round (with `cue` after a line on stdin): one timed evaluation, one
timed generation, and one JSON line {"round", "loglik": {...}, "generate": {...}}. After the last round (one more
line on stdin with `cue`), the whole result as one JSON object (the only line with "versions"). Run by path, not as
a module, so that it imports neither jaxfin nor JAX.
"""

from __future__ import annotations

import json
import os
import sys
import time


def timed_loglikelihood(lm):
    """Wrap the LM's loglikelihood (what simple_evaluate calls for multiple_choice tasks): its seconds and request
    count per evaluation, in the returned dict."""
    stats = {"s": 0.0, "requests": 0}
    inner = lm.loglikelihood

    def loglikelihood(requests, *args, **kwargs):
        t0 = time.perf_counter()
        out = inner(requests, *args, **kwargs)
        stats["s"] += time.perf_counter() - t0
        stats["requests"] += len(requests)
        return out

    lm.loglikelihood = loglikelihood
    return stats


def evaluate(lm, stats, tm, spec) -> dict:
    """One simple_evaluate of the task: {"s" (wall), "model_s" (inside loglikelihood), "examples", "requests",
    "acc", "acc_norm", "start", "end"}."""
    from lm_eval import simple_evaluate

    stats["s"], stats["requests"] = 0.0, 0
    start = time.time()
    t0 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[spec["task"]], task_manager=tm, limit=spec["limit"], num_fewshot=0,
                          bootstrap_iters=0, log_samples=False)  # fmt: skip
    dt = time.perf_counter() - t0
    res = out["results"][spec["task"]]
    n = int(out["n-samples"][spec["task"]]["effective"])
    return {"s": dt, "model_s": stats["s"], "examples": n, "requests": stats["requests"], "acc": res["acc,none"],
            "acc_norm": res["acc_norm,none"], "start": start, "end": time.time()}  # fmt: skip


def generate(model, spec) -> dict:
    """Greedy generation of max_new_tokens per prompt, batch_size prompts per left-padded batch, EOS never stopping
    a row: {"s", "tokens" (generated), "rows", "new_tokens" (per row, the fewest), "ids", "start", "end"}."""
    import torch

    prompts, pad_id, bs = spec["prompt_ids"], spec["pad_id"], spec["batch_size"]
    batches = []
    for b0 in range(0, len(prompts), bs):
        chunk = prompts[b0 : b0 + bs]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        batches.append((ids, mask))
    start = time.time()
    t0 = time.perf_counter()
    new = []
    with torch.no_grad():
        for ids, mask in batches:
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=spec["max_new_tokens"], pad_token_id=pad_id)  # fmt: skip
            new += out[:, ids.shape[1] :].tolist()
    dt = time.perf_counter() - t0
    return {"s": dt, "tokens": sum(len(x) for x in new), "rows": len(new), "new_tokens": min(len(x) for x in new),
            "ids": new, "start": start, "end": time.time()}  # fmt: skip


def run(spec: dict, cue=None) -> dict:
    import lm_eval
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    threads = int(spec.get("threads") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    lm = HFLM(pretrained=spec["hf_dir"], dtype="float32", device="cpu", batch_size=spec["batch_size"])
    model = lm.model  # the LlamaForCausalLM behind the hf backend: generation runs on the very same module
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id = None, spec["pad_id"]  # no EOS stop: every row gets max_new_tokens
    gc.do_sample, gc.temperature, gc.top_p, gc.top_k = False, None, None, None
    stats = timed_loglikelihood(lm)
    tm = TaskManager(include_path=spec["include_path"])
    setup_s = time.perf_counter() - t0
    if cue is not None:  # the caller warms its own side up first: neither first call overlaps the other's
        cue()
    first_loglik = evaluate(lm, stats, tm, spec)
    first_gen = generate(model, spec)
    print(json.dumps({"warmup": {"loglik_s": first_loglik["s"], "generate_s": first_gen["s"]}}), flush=True)
    rounds = []
    for r in range(spec["rounds"]):
        if cue is not None:
            cue()
        rec = {"round": r, "loglik": evaluate(lm, stats, tm, spec), "generate": generate(model, spec)}
        rounds.append(rec)
        print(json.dumps({**rec, "generate": {k: v for k, v in rec["generate"].items() if k != "ids"}}), flush=True)
    if cue is not None:
        cue()
    return {
        "setup_s": setup_s,
        "loglik_first_call_s": first_loglik["s"],
        "generate_first_call_s": first_gen["s"],
        "rounds": [{**x, "generate": {k: v for k, v in x["generate"].items() if k != "ids"}} for x in rounds],
        "generated_ids": rounds[-1]["generate"]["ids"] if rounds else first_gen["ids"],
        "acc": rounds[-1]["loglik"]["acc"] if rounds else first_loglik["acc"],
        "acc_norm": rounds[-1]["loglik"]["acc_norm"] if rounds else first_loglik["acc_norm"],
        "threads": torch.get_num_threads(),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "lm_eval": lm_eval.__version__,
        },  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    from side import serve  # the sibling module: this script runs by path, without the jaxfin package

    return serve(run, argv)


if __name__ == "__main__":
    sys.exit(main())
