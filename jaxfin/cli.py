"""The `jaxfin` command. Each subcommand has --help; user mistakes print one clear line, not a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from jaxfin.config.choices import CHAT_TEMPLATES

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see configs/), or a recipe of several stages (configs/recipes/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.steps=100")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "multi-host",
        "Bare nodes: give all three (or JAXFIN_COORDINATOR, JAXFIN_NUM_PROCESSES, JAXFIN_PROCESS_ID). TPU pods, "
        "SLURM and Kubernetes Indexed Jobs are detected (see launch/README.md).",
    )
    g.add_argument("--coordinator", help="HOST:PORT of process 0")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)


def init_distributed(args) -> None:
    """Our XLA flags (before the backend starts), then jax.distributed when this is one process of several
    (flags, environment, or a detected cluster)."""
    from jaxfin.parallel.distributed import initialize
    from jaxfin.parallel.xla_flags import apply_xla_flags

    apply_xla_flags()
    initialize(args.coordinator, args.num_processes, args.process_id)


def run_train(args) -> int:
    import yaml

    from jaxfin.config import load_config, to_dict
    from jaxfin.recipe import is_recipe, load_recipe, run_recipe

    if is_recipe(args.config):  # several stages, each from the previous one's result
        if args.print_config:
            for st in load_recipe(args.config, args.overrides)[1]:
                if st["kind"] == "train":
                    body = to_dict(st["config"])
                else:
                    body = {st["kind"]: to_dict(st["eval"]) if st["kind"] == "eval" else st[st["kind"]]}
                print(yaml.safe_dump({st["name"]: body}, sort_keys=False), end="")
            return 0
        init_distributed(args)
        for s in run_recipe(args.config, args.overrides):
            print(json.dumps(s))
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    init_distributed(args)
    from jaxfin.train import train

    train(cfg)
    return 0


def run_convert(args) -> int:
    from jaxfin.store.convert import convert_main

    convert_main(args.src, args.dst)
    return 0


def _source(arg: str, args, fields: dict):
    """`[NAME=]PATH` -> a SourceConfig (the name defaults to the file or folder name)."""
    from jaxfin.config.schema import SourceConfig
    from jaxfin.data.sources import default_source_name

    name, _, path = arg.rpartition("=")
    name = name or default_source_name(path)
    return SourceConfig(name=name, path=path, kind=args.kind, fields=fields, chat_template=args.chat_template)


def run_data_prepare(args) -> int:
    import yaml

    from jaxfin.config import build_section
    from jaxfin.config.schema import FilterConfig
    from jaxfin.data.prepare import format_report, prepare
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval import judge  # noqa: F401  (registers the LLM quality judge)

    fields = dict(f.split("=", 1) for f in args.field)
    filters = {}
    for item in args.filter:
        if "=" not in item:
            raise ValueError(f"--filter '{item}' must look like key=value (e.g. min_keyword_hits=3)")
        k, v = item.split("=", 1)
        *sections, k = k.split(".")  # quality_model.keep_top=0.32: a nested section
        node = filters
        for sec in sections:
            node = node.setdefault(sec, {})
        try:
            node[k] = yaml.safe_load(v)
        except yaml.YAMLError:  # e.g. [@finance]: '@' cannot start a plain YAML scalar
            node[k] = [x.strip() for x in v.strip("[]").split(",")] if v.startswith("[") else v
    filter_cfg = build_section(FilterConfig, filters, "--filter")
    sources = [_source(s, args, fields) for s in args.sources]
    tok = load_tokenizer(args.tokenizer, threads=args.threads)
    reports = prepare(sources, tok, args.out, filter_cfg, max_bad_fraction=args.max_bad_fraction)
    print(json.dumps(reports, indent=2) if args.json else format_report(reports))
    return 0


def run_data_train_quality(args) -> int:
    from jaxfin.data.quality import parse_features, parse_ngrams, read_texts, train_quality

    fields = dict(f.split("=", 1) for f in args.field)
    ngrams, n_features = parse_ngrams(args.ngrams), parse_features(args.features)
    pos, neg = (read_texts(p, fields, args.max_bad_fraction) for p in (args.pos, args.neg))
    meta = train_quality(pos, neg, args.out, n_features=n_features, ngrams=ngrams, dev_fraction=args.dev_fraction,
                         seed=args.seed)  # fmt: skip
    dev = meta["dev"]
    auc = "n/a" if dev["auc"] is None else f"{dev['auc']:.4f}"
    print(f"{len(pos)} positive, {len(neg)} negative documents; dev ({dev['examples']}): accuracy "
          f"{dev['accuracy']:.4f}, AUC {auc}; saved to {args.out}")  # fmt: skip
    return 0


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="data preparation", description="Data preparation commands.")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "prepare",
        help="filter, dedup and tokenize sources into the token cache, with a report",
        description="Read each SOURCE ([NAME=]PATH: a JSONL / Parquet / CSV / .txt / HTML (main text) / PDF file, a "
        "folder of such files or a datasets save_to_disk folder, or a glob), drop bad input and filtered documents, "
        "dedup, optionally keep the best by a quality model (--filter quality_model.KEY=VALUE), tokenize into "
        "OUT/<name>-<key>/ and print what was read, kept and dropped (by reason), per source. A second run with "
        "the same inputs, tokenizer and settings reuses the cache.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model file or HF tokenizer folder")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--kind", default="text", choices=["text", "chat", "pairs"], help="document kind of every SOURCE")
    p.add_argument(
        "--chat-template", default="tokenizer", choices=CHAT_TEMPLATES,
        help="for chat sources: the tokenizer's own chat_template or a built-in one",
    )  # fmt: skip
    p.add_argument("--field", action="append", default=[], metavar="OURS=THEIRS", help="field mapping, e.g. text=body")
    p.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE",
        help="filter setting (jaxfin/config/schema.py FilterConfig), e.g. min_keyword_hits=3 keywords=[@finance] "
        "quality=true near_dedup=true quality_model.path=DIR quality_model.keep_top=0.32",
    )  # fmt: skip
    p.add_argument("--max-bad-fraction", type=float, default=0.01, help="stop if more bad records than this")
    p.add_argument("--threads", type=int, default=None, help="tokenizer threads (default: all cores)")
    p.set_defaults(func=run_data_prepare)
    p = dsub.add_parser(
        "train-quality",
        help="train a document quality classifier (for filters.quality_model)",
        description="Fit logistic regression on hashed word n-grams (CJK: character n-grams) to tell POS documents "
        "from NEG documents (each a file, folder or glob in any format `data prepare` reads), print the accuracy "
        "and AUC on a held-out dev split, and save OUT/model.npz + OUT/meta.json (no pickle). Use it with "
        "`--filter quality_model.path=OUT --filter quality_model.keep_top=0.32`.",
    )
    p.add_argument("pos", metavar="POS", help="documents of the quality to keep")
    p.add_argument("neg", metavar="NEG", help="documents of the quality to drop")
    p.add_argument("--out", required=True, help="folder to write the classifier to")
    p.add_argument("--field", action="append", default=[], metavar="OURS=THEIRS", help="field mapping, e.g. text=body")
    p.add_argument("--ngrams", default="1,2", help="word n-gram sizes, comma-separated (default: 1,2)")
    p.add_argument("--features", default="2**20", help="hashed feature count, e.g. 2**20 (default)")
    p.add_argument("--dev-fraction", type=float, default=0.1, help="share held out for accuracy/AUC (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev split")
    p.add_argument("--max-bad-fraction", type=float, default=0.01, help="stop if more bad records than this")
    p.set_defaults(func=run_data_train_quality)


def build_parser(prog: str = "jaxfin") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="jaxfin: adapt Llama-family models to finance in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train (or resume) from a YAML config", description="Train or resume a run.")
    add_run_args(p)
    add_distributed_args(p)
    p.set_defaults(func=run_train)
    p = sub.add_parser(
        "convert",
        help="Hugging Face dir <-> jaxfin checkpoint (format detected)",
        description="Convert SRC to DST. SRC a Hugging Face dir -> DST a jaxfin checkpoint dir; SRC a jaxfin "
        "checkpoint or a training run dir (its latest checkpoint) -> DST a Hugging Face dir.",
    )
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=run_convert)
    _add_data_parser(sub)
    from jaxfin.scaling.cli import add_scaling_parser

    add_scaling_parser(sub)
    from jaxfin.bench.cli import add_bench_parser

    add_bench_parser(sub)
    from jaxfin.compile.cli import add_compile_parser

    add_compile_parser(sub)
    from jaxfin.vocab.cli import add_vocab_parser

    add_vocab_parser(sub)
    from jaxfin.merge.cli import add_merge_parser, add_moe_parser

    add_merge_parser(sub)
    add_moe_parser(sub)
    from jaxfin.eval.cli import add_eval_parser

    add_eval_parser(sub)
    from jaxfin.eval.generate_cli import add_generate_parser

    add_generate_parser(sub)
    from jaxfin.eval.agents import add_agents_parser

    add_agents_parser(sub)
    from jaxfin.retrieval.cli import add_index_parser

    add_index_parser(sub)
    from jaxfin.recipe.cli import add_findings_parser, add_recipe_parser

    add_recipe_parser(sub)
    add_findings_parser(sub)
    from jaxfin.train.logme import add_select_layers_parser

    add_select_layers_parser(sub)
    return parser


def run(argv: list[str] | None, parser: argparse.ArgumentParser) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(parser, argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if os.environ.get("JAXFIN_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, except that `key=value` overrides may also come after options (`CONFIG --json k=v`): argparse
    ends a positional `nargs="*"` list at the first option, and `parse_intermixed_args` does not work with
    subcommands. Anything else left over is still an error."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
