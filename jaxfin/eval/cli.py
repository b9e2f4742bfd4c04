"""`jaxfin eval CONFIG.yaml [k=v ...]`: raw-text loss / perplexity / bits per byte, tasks, forgetting report."""

from __future__ import annotations

import sys


def run_eval_cli(args) -> int:
    import yaml

    from jaxfin.eval.config import load_eval_config
    from jaxfin.eval.run import evaluate

    cfg = load_eval_config(args.config, args.overrides)
    if args.print_config:
        import dataclasses

        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
        return 0
    report = evaluate(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    from jaxfin.eval.report import markdown

    print(markdown(report))
    files = report["files"]
    print(f"wrote {files['json']}, {files['markdown']}" + (f", {files['plot']}" if files["plot"] else ""))
    return 0


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="raw-text loss / perplexity / bits per byte, tasks, forgetting report",
        description="Evaluate every model of the config (jaxfin checkpoints, training run dirs or Hugging Face "
        "folders) on every raw-text set (loss in nats per token, token perplexity, bits per byte of UTF-8 text: "
        "comparable across tokenizers) and task, and lm-evaluation-harness tasks by name (the `lm_eval` section: "
        "the `jaxfin` lm-eval model, jaxfin/eval/harness.py; needs pip install jaxfin[eval]). With several "
        "models, deltas against the first (the base) per set, grouped into domain and general sets, and a plot. "
        "Each task result says its protocol: loglik (lm-eval conventions) or generative (FinBen: greedy, first "
        "label found; a classification task as NAME/generative, e.g. fpb/generative). `mesh` (training's mesh "
        "section, e.g. mesh.data=1 mesh.fsdp=-1) shards the weights and batches over the devices. "
        "Writes OUTPUT_DIR/eval.json, eval.md and forgetting.png, and prints the tables. Config keys: "
        "jaxfin/eval/config.py; samples: configs/eval/forgetting.yaml, configs/eval/finben.yaml.",
    )
    p.add_argument("config", help="eval YAML config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. max_docs=100 output_dir=out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_eval_cli)
