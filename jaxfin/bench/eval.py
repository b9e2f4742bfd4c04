"""`jaxfin bench eval`: evaluation speed side by side on one model. Log-likelihood scoring of an lm-eval task with
`simple_evaluate`, jaxfin's lm-eval model (`jaxfin`, jaxfin/eval/harness.py) against lm-eval's `hf` backend; and
greedy batched generation, jaxfin's `generate_full` against transformers' `generate`. The other side runs in a
subprocess (jaxfin/bench/torch_eval.py) on the same HF folder, so both load the very same weights.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from jaxfin.bench.output import emit
from jaxfin.bench.torch_eval import evaluate, timed_loglikelihood  # the same timing on both sides
from jaxfin.bench.worker import Worker

TARGET_RATIO = 2.0  # issue 23: jaxfin at least 2x lm-eval's hf backend (examples/s) and transformers (tokens/s)
REPO = Path(__file__).resolve().parents[2]
INCLUDE = REPO / "configs/eval/lm_eval"
FPB_TEST = "financial_phrasebank/gtfintechlab_allagree_test_seed5768.csv"  # the fpb_lm task's test split
AGREE_FIRST = 4  # generated tokens per row that must agree between the sides (greedy, same weights)

HELP = """\
Time evaluation on one model, jaxfin against the PyTorch tools, side by side in one run.

MODEL is a Hugging Face folder, a jaxfin checkpoint (or run dir), or a YAML config whose model.* shape is
initialised randomly (train.seed; overrides apply); a checkpoint or config is first exported with jaxfin's HF export
(config, safetensors, tokenizer.json) to a temporary folder, and both sides load that folder, float32.

log-likelihood  lm-eval `simple_evaluate` of --task (default fpb_lm from configs/eval/lm_eval, the FPB test split,
                453 sentences x 3 choices; --limit N: the first N), num_fewshot 0, bootstrap_iters 0, with
                model "jaxfin" (jaxfin.eval.harness.JaxfinLM) and lm-eval's "hf" (HFLM, device cpu), both at
                --batch-size. examples/s = examples / the wall time of the whole simple_evaluate call; model_s is
                the part inside the model's loglikelihood (the rest, task building and metrics, is lm-eval's own
                and the same code on both sides). acc must come out identical (acc_equal).
generation      greedy, --gen-prompts prompts (the first FPB test sentences, BOS + text, the same ids on both
                sides) in batches of --batch-size, --max-new-tokens per row with no EOS stop on either side
                (jaxfin: no stop id; transformers: generation_config.eos_token_id None): tokens/s = generated
                tokens / the wall time of jaxfin.eval.generate.generate_full vs LlamaForCausalLM.generate (sdpa,
                left padding, one batch of all prompts). The first 4 generated tokens of every row must agree
                (first_tokens_agree; agree_prefix is each row's common prefix).

Each side is built and warmed up once, one after the other (one untimed evaluation and generation: jaxfin compiles
its programs for the batch shapes there; reported as first_call_s), then --rounds timed rounds alternate
(torch side, jaxfin, torch, ...; the idle side waits on a pipe). Per side the median over rounds; `ratio` = jaxfin /
other (examples/s, tokens/s: > 1 means jaxfin is faster), the median of the per-round ratios, with ratio_min /
ratio_max; target 2.0 and target_met for both. torch runs as many threads as cores (--torch-threads). Also: device
kind, versions, the 1-minute load average before and after (a shared machine).

Examples:
  jaxfin bench eval configs/tiny.yaml --rounds 3 --out benchmarks/results/bench_eval_tiny_cpu-2core.json
  jaxfin bench eval runs/cpt --limit 100 --json
"""


def add_eval_bench(sub) -> None:
    import argparse

    p = sub.add_parser(
        "eval",
        help="lm-eval log-likelihood examples/s (vs lm-eval's hf backend), generation tokens/s (vs transformers)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="HF folder, jaxfin checkpoint / run dir, or YAML config (random weights)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="with a config: dotted overrides")
    p.add_argument("--task", default="fpb_lm", help="lm-eval task name (default fpb_lm)")
    p.add_argument("--include-path", default=str(INCLUDE), help="lm-eval include path (default configs/eval/lm_eval)")
    p.add_argument("--limit", type=int, help="examples of the task (default all)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass, both sides (default 8)")
    p.add_argument("--gen-prompts", type=int, default=8, help="generation prompts (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generated tokens per row (default 128)")
    p.add_argument("--rounds", type=int, default=1, help="alternating timed rounds (default 1)")
    p.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: as many as cores)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    p.set_defaults(func=run_bench_eval)


# ---------------------------------------------------------------------------------------------- the model


def prepare_model(model: str, overrides: list[str], work: Path) -> tuple[Path, dict]:
    """(HF folder both sides load, what it is): an HF folder as is; a jaxfin checkpoint exported; a config's
    model.* shape initialised from train.seed and exported."""
    import jax

    from jaxfin.hf import is_hf_dir
    from jaxfin.model import Model, init_params
    from jaxfin.store import load_model, save_model

    path = Path(model)
    if path.is_dir():
        if overrides:
            raise ValueError("overrides apply to a config, not to a model folder")
        if is_hf_dir(path):
            return path, {"source": "hf", "path": str(path)}
        m = load_model(path)
        save_model(m, work / "hf", format="hf")
        return work / "hf", {"source": "jaxfin checkpoint", "path": str(path)}
    from jaxfin.config import load_config

    cfg = load_config(path, overrides)
    if not cfg.tokenizer:
        raise ValueError("the config sets no tokenizer (a SentencePiece .model or an HF tokenizer folder)")
    params = init_params(cfg.model, jax.random.PRNGKey(cfg.train.seed))
    save_model(Model(cfg.model, jax.device_get(params), cfg.tokenizer), work / "hf", format="hf")
    return work / "hf", {"source": "config (random weights)", "path": str(path), "seed": cfg.train.seed}


def generation_prompts(tokenizer, n: int) -> list[list[int]]:
    """BOS + text ids of the first n FPB test sentences (the shared data)."""
    from jaxfin.eval.task_base import default_data_dir

    with open(default_data_dir() / FPB_TEST, newline="") as f:
        texts = [row["sentence"] for row in csv.DictReader(f)][:n]
    if len(texts) < n:
        raise ValueError(f"--gen-prompts {n}: the FPB test split has {len(texts)} sentences")
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    return [bos + ids for ids in tokenizer.encode_batch(texts)]


# ---------------------------------------------------------------------------------------------- jaxfin


class JaxfinSide:
    """jaxfin's lm-eval model and generation on the HF folder, warmed up at construction."""

    def __init__(self, hf_dir: Path, spec: dict):
        from lm_eval.tasks import TaskManager

        import jaxfin
        from jaxfin.eval.generate import GenerationConfig
        from jaxfin.eval.harness import JaxfinLM

        t0 = time.perf_counter()
        self.spec = spec
        self.lm = JaxfinLM(pretrained=str(hf_dir), batch_size=spec["batch_size"], dtype="float32")
        self.stats = timed_loglikelihood(self.lm)
        m = jaxfin.load_model(hf_dir, compute_dtype="float32")
        # no stop id at all (no tokenizer, no model EOS): every row generates max_new_tokens, as on the torch side
        self.gen_model = dataclasses.replace(m, config=dataclasses.replace(m.config, eos_token_id=-1), hf_extra=None)
        self.gen_cfg = GenerationConfig(max_new_tokens=spec["max_new_tokens"])
        self.tm = TaskManager(include_path=spec["include_path"])
        self.setup_s = time.perf_counter() - t0
        self.first_loglik = self.evaluate()
        self.first_gen = self.generate()

    def evaluate(self) -> dict:
        return evaluate(self.lm, self.stats, self.tm, self.spec)

    def generate(self) -> dict:
        from jaxfin.eval.generate import generate_full

        start = time.time()
        t0 = time.perf_counter()
        gens = generate_full(self.gen_model, None, self.spec["prompt_ids"], self.gen_cfg,
                             batch_size=self.spec["batch_size"])  # fmt: skip
        dt = time.perf_counter() - t0
        ids = [g.tokens for g in gens]
        return {"s": dt, "tokens": sum(len(x) for x in ids), "rows": len(ids),
                "new_tokens": min(len(x) for x in ids), "ids": ids, "start": start, "end": time.time()}  # fmt: skip


# ---------------------------------------------------------------------------------------------- torch


class TorchWorker(Worker):
    """jaxfin/bench/torch_eval.py (lm-eval's hf backend, transformers generate), built and warmed up at start;
    `warmup()` its first calls, `round()` one timed round, `result()` the whole JSON."""

    SCRIPT, RESULT_KEY, END = "torch_eval.py", "versions", True

    def warmup(self) -> dict:
        return self.ask("warmup")


# ---------------------------------------------------------------------------------------------- both


def _agree_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _ratios(jx_rounds, other_rounds, key: str, rate) -> dict:
    """Per-round jaxfin / other rates and their median, min, max."""
    rs = [rate(j[key]) / rate(o[key]) for j, o in zip(jx_rounds, other_rounds)]
    return {"ratio": statistics.median(rs), "ratio_min": min(rs), "ratio_max": max(rs), "per_round": rs}


def _side_loglik(rounds: list[dict], first_s: float) -> dict:
    xs = [r["loglik"] for r in rounds]
    s = statistics.median(x["s"] for x in xs)
    model_s = statistics.median(x["model_s"] for x in xs)
    return {"examples": xs[-1]["examples"], "requests": xs[-1]["requests"], "s": s, "model_s": model_s,
            "examples_per_s": xs[-1]["examples"] / s, "model_examples_per_s": xs[-1]["examples"] / model_s,
            "acc": xs[-1]["acc"], "acc_norm": xs[-1]["acc_norm"], "first_call_s": first_s}  # fmt: skip


def _side_gen(rounds: list[dict], first_s: float) -> dict:
    xs = [r["generate"] for r in rounds]
    s = statistics.median(x["s"] for x in xs)
    return {"tokens": xs[-1]["tokens"], "rows": xs[-1]["rows"], "new_tokens_per_row": xs[-1]["new_tokens"], "s": s,
            "tokens_per_s": xs[-1]["tokens"] / s, "first_call_s": first_s}  # fmt: skip


def bench_eval(hf_dir: Path, *, task: str = "fpb_lm", include_path: str | Path = INCLUDE, limit: int | None = None,
               batch_size: int = 8, gen_prompts: int = 8, max_new_tokens: int = 128,
               rounds: int = 1, torch_threads: int | None = None) -> dict:  # fmt: skip
    """The JSON result of `jaxfin bench eval` (see its --help) on the HF folder `hf_dir`."""
    import jax

    from jaxfin.bench.train import model_summary, param_count
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval.task_base import default_data_dir
    from jaxfin.store import load_model

    if rounds < 1 or batch_size < 1 or gen_prompts < 1 or max_new_tokens < 1:
        raise ValueError("--rounds, --batch-size, --gen-prompts and --max-new-tokens must be >= 1")
    os.environ.setdefault("JAXFIN_SHARED_DATA", str(default_data_dir()))  # the task YAMLs' loader, both processes
    load_before = _load_average()
    cfg = load_model(hf_dir).config
    tok = load_tokenizer(hf_dir)
    prompt_ids = generation_prompts(tok, gen_prompts)
    spec = {"hf_dir": str(hf_dir), "task": task, "include_path": str(include_path), "limit": limit,
            "batch_size": batch_size, "prompt_ids": prompt_ids, "max_new_tokens": max_new_tokens,
            "pad_id": max(cfg.pad_token_id, 0), "threads": torch_threads or _cpu_count(), "rounds": rounds}  # fmt: skip
    worker = TorchWorker(spec)
    try:
        jx = JaxfinSide(hf_dir, spec)  # built and warmed up while the torch side only builds (imports, loads)
        worker.warmup()
        jx_rounds, pt_rounds = [], []
        for r in range(rounds):
            pt_rounds.append(worker.round())
            jx_rounds.append({"round": r, "loglik": jx.evaluate(), "generate": jx.generate()})
        pt = worker.result()
    except BaseException:
        if worker.proc.poll() is None:
            worker.proc.kill()
        raise
    devices = jax.devices()
    jl, pl = _side_loglik(jx_rounds, jx.first_loglik["s"]), _side_loglik(pt_rounds, pt["loglik_first_call_s"])
    jg, pg = _side_gen(jx_rounds, jx.first_gen["s"]), _side_gen(pt_rounds, pt["generate_first_call_s"])
    jl["setup_s"], pl["setup_s"] = jx.setup_s, pt["setup_s"]
    loglik = _ratios(jx_rounds, pt_rounds, "loglik", lambda x: x["examples"] / x["s"])
    model_ratio = _ratios(jx_rounds, pt_rounds, "loglik", lambda x: x["examples"] / x["model_s"])
    gen = _ratios(jx_rounds, pt_rounds, "generate", lambda x: x["tokens"] / x["s"])
    ids_j, ids_p = jx_rounds[-1]["generate"]["ids"], pt["generated_ids"]
    prefix = [_agree_prefix(a, b) for a, b in zip(ids_j, ids_p)]
    return {
        "benchmark": "eval",
        "model": model_summary(cfg),
        "params": param_count(cfg),
        "hf_dir": str(hf_dir),
        "batch_size": batch_size,
        "rounds_n": rounds,
        "loglik": {
            "task": task,
            "limit": limit,
            "num_fewshot": 0,
            "jaxfin": jl,
            "hf": pl,
            **loglik,
            "model_ratio": model_ratio["ratio"],
            "model_ratio_min": model_ratio["ratio_min"],
            "model_ratio_max": model_ratio["ratio_max"],
            "target": TARGET_RATIO,
            "target_met": loglik["ratio"] >= TARGET_RATIO,
            "acc_equal": jl["acc"] == pl["acc"] and jl["acc_norm"] == pl["acc_norm"],
            "same_work": jl["examples"] == pl["examples"] and jl["requests"] == pl["requests"],
        },
        "generate": {
            "prompts": gen_prompts,
            "prompt_tokens": [len(p) for p in prompt_ids],
            "max_new_tokens": max_new_tokens,
            "greedy": True,
            "stop_at_eos": False,
            "jaxfin": jg,
            "transformers": pg,
            **gen,
            "target": TARGET_RATIO,
            "target_met": gen["ratio"] >= TARGET_RATIO,
            "same_work": jg["tokens"] == pg["tokens"] == gen_prompts * max_new_tokens,
            "agree_prefix": prefix,
            "first_tokens_agree": min(prefix) >= min(AGREE_FIRST, max_new_tokens),
        },
        "rounds": [
            {
                "round": r,
                "jaxfin_loglik_s": j["loglik"]["s"],
                "hf_loglik_s": p["loglik"]["s"],
                "jaxfin_loglik_model_s": j["loglik"]["model_s"],
                "hf_loglik_model_s": p["loglik"]["model_s"],
                "loglik_ratio": lr,
                "jaxfin_generate_s": j["generate"]["s"],
                "transformers_generate_s": p["generate"]["s"],
                "generate_ratio": gr,
                "jaxfin_start": j["loglik"]["start"],
                "jaxfin_end": j["generate"]["end"],
                "torch_start": p["loglik"]["start"],
                "torch_end": p["generate"]["end"],
            }
            for r, (j, p, lr, gr) in enumerate(zip(jx_rounds, pt_rounds, loglik["per_round"], gen["per_round"]))
        ],  # fmt: skip
        "torch": {k: pt[k] for k in ("threads", "dtype", "attn_implementation")},
        "device": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "versions": {"jax": jax.__version__, **pt["versions"]},
        "host": platform.machine(),
        "host_cpus": _cpu_count(),
        # a shared machine: the 1-minute load average before the benchmark (other jobs) and after (ours included)
        "load_average_1m": [load_before, _load_average()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def format_summary(r: dict) -> str:
    m, ll, g = r["model"], r["loglik"], r["generate"]
    n = r["rounds_n"]

    def spread(x):
        return f", min {x['ratio_min']:.2f} max {x['ratio_max']:.2f} over {n} rounds" if n > 1 else ""

    def met(x):
        return f"target {x['target']}x {'met' if x['target_met'] else 'NOT met'}"

    j, h = ll["jaxfin"], ll["hf"]
    jg, tg = g["jaxfin"], g["transformers"]
    return "\n".join([
        f"model    {m['num_layers']} layers, hidden {m['hidden_size']}, {m['num_heads']}/{m['num_kv_heads']} heads, "
        f"vocab {m['vocab_size']:,}: {r['params'] / 1e6:,.2f}M params, float32 on {r['num_devices']} x "
        f"{r['device_kind']}; batch {r['batch_size']}; load average {r['load_average_1m']}",
        f"loglik   {ll['task']}: {j['examples']} examples, {j['requests']} requests (hf {h['examples']}, "
        f"{h['requests']}); acc jaxfin {j['acc']:.4f} hf {h['acc']:.4f} (equal: {ll['acc_equal']})",
        f"  jaxfin {j['examples_per_s']:8.1f} examples/s ({j['s']:.2f} s, model {j['model_s']:.2f} s; first call "
        f"{j['first_call_s']:.1f} s)",
        f"  hf     {h['examples_per_s']:8.1f} examples/s ({h['s']:.2f} s, model {h['model_s']:.2f} s; first call "
        f"{h['first_call_s']:.1f} s)",
        f"  ratio  {ll['ratio']:.2f}x{spread(ll)}; inside the model {ll['model_ratio']:.2f}x; {met(ll)}",
        f"generate {g['prompts']} prompts ({min(g['prompt_tokens'])}-{max(g['prompt_tokens'])} tokens) x "
        f"{g['max_new_tokens']} new tokens, greedy, no EOS stop; first {AGREE_FIRST} tokens agree: "
        f"{g['first_tokens_agree']} (common prefix per row {g['agree_prefix']})",
        f"  jaxfin       {jg['tokens_per_s']:8.1f} tokens/s ({jg['tokens']} tokens in {jg['s']:.2f} s; first call "
        f"{jg['first_call_s']:.1f} s)",
        f"  transformers {tg['tokens_per_s']:8.1f} tokens/s ({tg['tokens']} tokens in {tg['s']:.2f} s)",
        f"  ratio  {g['ratio']:.2f}x{spread(g)}; {met(g)}",
        f"versions {', '.join(f'{k} {v}' for k, v in r['versions'].items())}; torch {r['torch']['threads']} threads",
    ])  # fmt: skip


def run_bench_eval(args) -> int:
    with tempfile.TemporaryDirectory(prefix="jaxfin-bench-eval-") as tmp:
        hf_dir, source = prepare_model(args.model, list(args.overrides), Path(tmp))
        result = bench_eval(hf_dir, task=args.task, include_path=args.include_path, limit=args.limit,
                            batch_size=args.batch_size, gen_prompts=args.gen_prompts,
                            max_new_tokens=args.max_new_tokens, rounds=args.rounds,
                            torch_threads=args.torch_threads)  # fmt: skip
    result = {"model_source": source, **result}
    if source["source"] != "hf":
        result["hf_dir"] = "(temporary export)"
    return emit(result, args, format_summary)
