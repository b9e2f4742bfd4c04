"""The `jaxfin` command. Each subcommand has --help; user mistakes print one clear line, not a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.steps=100")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "multi-host (bare nodes; also JAXFIN_COORDINATOR, JAXFIN_NUM_PROCESSES, JAXFIN_PROCESS_ID)"
    )
    g.add_argument("--coordinator", default=os.environ.get("JAXFIN_COORDINATOR"), help="HOST:PORT of process 0")
    g.add_argument("--num-processes", type=int, default=os.environ.get("JAXFIN_NUM_PROCESSES"))
    g.add_argument("--process-id", type=int, default=os.environ.get("JAXFIN_PROCESS_ID"))


def init_distributed(args) -> None:
    """Start jax.distributed when this is one process of several (explicit flags or environment variables)."""
    if args.coordinator or (args.num_processes or 1) > 1:
        import jax

        if args.coordinator is None or args.num_processes is None or args.process_id is None:
            raise ValueError("multi-host needs --coordinator, --num-processes and --process-id together")
        jax.distributed.initialize(args.coordinator, int(args.num_processes), int(args.process_id))


def run_train(args) -> int:
    import yaml

    from jaxfin.config import load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    init_distributed(args)
    from jaxfin.train import train

    train(cfg)
    return 0


def run_convert(args) -> int:
    from jaxfin.hf.cli import convert_main

    convert_main(args.src, args.dst)
    return 0


def build_parser(prog: str = "jaxfin") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="jaxfin: adapt Llama-family models to finance in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train (or resume) from a YAML config", description="Train or resume a run.")
    _add_run_args(p)
    _add_distributed_args(p)
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
    return parser


def run(argv: list[str] | None, parser: argparse.ArgumentParser) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if os.environ.get("JAXFIN_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
