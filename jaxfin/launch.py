"""`python -m jaxfin.launch CONFIG.yaml [key=value ...]`: initialise multi-host JAX if asked, then train."""

from __future__ import annotations

import argparse
import sys

from jaxfin.cli import add_distributed_args, add_run_args, run, run_train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxfin.launch",
        description="Run a training config on this host (or, with the multi-host flags, as one process of many).",
        epilog="XLA flags are added to XLA_FLAGS (jaxfin/parallel/xla_flags.py): on GPUs, overlapping and combining "
        "collectives; on CPU, no YNNPACK fusions. A flag you set yourself wins, JAXFIN_XLA_FLAGS=0 turns them off. "
        "Pod scripts: launch/README.md.",
    )
    add_run_args(p)
    add_distributed_args(p)
    p.set_defaults(func=run_train)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
