"""`jaxfin compile CONFIG [key=value ...] --topology NAME`: does this config compile, and fit, on that target?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxfin.compile.hlo import KINDS


def add_compile_parser(sub) -> None:
    p = sub.add_parser(
        "compile",
        help="AOT-compile the train step for a TPU slice (or GPU node) that need not be here: memory, fit, roofline",
        description="Lower and compile the exact step `jaxfin train CONFIG` runs (state layout, objective, remat, "
        "attention backend, micro-batching) for --topology, with no device of that kind present: TPU slices need "
        "only the TPU build of jax (pip install 'jax[tpu]==<this jax>', libtpu) on a CPU host. Prints per-device "
        "memory (params, optimizer state, gradients/activations/temporaries) against the chip's HBM, FLOPs and "
        "bytes per step, the collectives, and a roofline bound on step time and MFU.",
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.batch_size=64")
    p.add_argument(
        "--topology",
        required=True,
        help="v5p-64, v6e-256, v5litepod-16, v4-32, libtpu's v5p:4x4x2, or cpu[:N] (this machine)",
    )
    p.add_argument("--num-slices", type=int, default=1, help="TPU slices joined over DCN (mesh.data spans them)")
    p.add_argument(
        "--max-batch",
        action="store_true",
        help="find the largest train.batch_size that fits, by bisection (one compile per try)",
    )
    p.add_argument("--dump-hlo", metavar="DIR", help="write the optimized HLO of the step to DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.set_defaults(func=run_compile)  # fmt: skip


def run_compile(args: argparse.Namespace) -> int:
    from jaxfin.compile.aot import compile_report, max_batch
    from jaxfin.compile.targets import parse_target
    from jaxfin.config import load_config

    cfg = load_config(args.config, args.overrides)
    target = parse_target(args.topology, args.num_slices)
    report = compile_report(cfg, target, dump_hlo=args.dump_hlo)
    if args.max_batch:
        print(f"--max-batch on {target.name}:", flush=True)
        report["max_batch"] = max_batch(cfg, target)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["compiled"] else 1


def format_report(r: dict) -> str:
    lines = [
        f"target   {r['target']} ({r['topology']}, {r['num_slices']} slice(s)): {r['devices']} x {r['device_kind']}, "
        f"mesh {r['mesh']}",
        f"step     {r['objective']}, batch {r['batch_size']} x {r['seq_len']} tokens, {r['micro_batches']} "
        f"micro-batch(es), remat {r['model']['remat']}, attention {r['model']['attention_backend']}, jax {r['jax']}",
    ]
    if not r["compiled"]:
        return "\n".join([*lines, f"NOT COMPILED: {r['error']}"])
    m = r["memory_gib"]
    lines.append(f"compiled in {r['compile_s']:.1f} s")
    lines.append(
        f"memory   {m['total']:.2f} GiB per device: params {m['params']:.2f}, reference {m['reference_params']:.2f}, "
        f"optimizer {m['optimizer_state']:.2f}, batch {m['batch']:.3f}, gradients/activations/temporaries "
        f"{m['gradients_activations_temporaries']:.2f}, code {m['code']:.3f}"
    )
    if m["hbm"] is not None:
        verdict = "FITS" if m["fits"] else "DOES NOT FIT"
        lines.append(f"         {verdict} in {m['hbm']:.0f} GiB HBM (headroom {m['headroom']:.2f} GiB)")
    if "per_step" in r:
        s, rf = r["per_step"], r["roofline"]
        lines.append(f"per step {s['flops'] / 1e12:.4g} TFLOP (model {s['model_flops'] / 1e12:.4g}), "
                     f"{s['bytes'] / 1e9:.4g} GB accessed, per device")  # fmt: skip
        coll = ", ".join(f"{k} {s['collectives'][k]['count']} ({s['collectives'][k]['bytes'] / 1e9:.3g} GB)"
                         for k in KINDS)  # fmt: skip
        lines.append(f"         collectives: {coll}")
        if rf["step_s"] is not None:
            ms = {k: 1e3 * rf[f"{k}_s"] for k in ("compute", "hbm", "collectives", "step")}
            lines.append(
                f"roofline compute {ms['compute']:.2f} ms, HBM {ms['hbm']:.2f} ms, collectives "
                f"{ms['collectives']:.2f} ms -> step >= {ms['step']:.2f} ms ({rf['dominant']} bound), "
                f"MFU <= {100 * rf['mfu_bound']:.1f}%"
            )
    if "max_batch" in r:
        lines.append(f"max batch {r['max_batch']['max_batch_size']} (train.batch_size) fits")
    if "hlo" in r:
        lines.append(f"HLO      {r['hlo']}")
    return "\n".join(lines)
