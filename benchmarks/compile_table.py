"""The README's `jaxfin compile` table: Llama-3.2-1B, Llama-3-8B and Llama-3-70B (configs/) x {v5p-64, v6e-256,
v5litepod-16} x {FSDP, FSDP x TP} at seq 8192, Mixtral-8x7B on v5p-64 with 8-way expert parallelism x FSDP,
compiled deviceless on this CPU host, and the largest batch that fits for 8B on v5p-64.

Needs the TPU build of the project's jax in the running interpreter (`make compile-venv` builds one;
/tmp/jaxfin-tpu/bin/python benchmarks/compile_table.py). Each cell is one `jaxfin compile` report, written to
benchmarks/results/compile_<model>_<topology>_<layout>.json (kept; rerun with --force to redo), and the table is
printed as Markdown from those files.

Every cell: global batch = one row of 8192 tokens per chip, remat full, the Pallas attention kernel (Mosaic),
float32 params and Adam state, bfloat16 compute. FSDP x TP puts 4 chips on `tensor`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = {"llama-3.2-1b": "configs/llama-3.2-1b.yaml", "llama-3-8b": "configs/llama-3-8b.yaml",
          "llama-3-70b": "configs/llama-3-70b.yaml"}  # fmt: skip
TOPOLOGIES = ("v5p-64", "v6e-256", "v5litepod-16")
LAYOUTS = {"fsdp": ["mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1"],
           "fsdp_tp4": ["mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=4"]}  # fmt: skip
COMMON = ["data.seq_len=8192", "model.remat=full", "model.attention_backend=pallas", "train.micro_batches=1"]
# Mixture-of-experts cells (model, topology, layout): expert parallelism over 8 chips, FSDP over the rest
MOE_MODELS = {"mixtral-8x7b": "configs/mixtral-8x7b.yaml"}
MOE_LAYOUTS = {"ep8_fsdp": ["mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1", "mesh.expert=8"]}
MOE_CELLS = [("mixtral-8x7b", "v5p-64", "ep8_fsdp")]


def cell(model: str, topology: str, layout: str, force: bool) -> dict:
    from jaxfin.compile import compile_report, parse_target
    from jaxfin.config import load_config

    path = RESULTS / f"compile_{model}_{topology}_{layout}.json"
    if path.exists() and not force:
        r = json.loads(path.read_text())
        if "per_step" in r:  # the bound's arithmetic as it is now
            r["roofline"] = _roofline(r)
            path.write_text(json.dumps(r, indent=2) + "\n")
        return r
    target = parse_target(topology)
    chips = _chips(target)
    layouts, models = {**LAYOUTS, **MOE_LAYOUTS}, {**MODELS, **MOE_MODELS}
    overrides = [*COMMON, *layouts[layout], f"train.batch_size={chips}", "model.max_position_embeddings=8192"]
    t0 = time.time()
    try:
        r = compile_report(load_config(REPO / models[model], overrides), target)
    except Exception as e:  # noqa: BLE001 - a cell that cannot compile is a result too
        r = {"target": topology, "compiled": False, "error": f"{type(e).__name__}: {e}"}
    r.update(model=model, layout=layout, overrides=overrides, wall_s=time.time() - t0, host=_host())
    path.write_text(json.dumps(r, indent=2) + "\n")
    print(f"{model} {topology} {layout}: {'compiled' if r['compiled'] else r['error'][:200]} "
          f"({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    return r


# MaxText's published v6e-256 runs (AI-Hypercomputer/maxtext benchmarks/maxtext_trillium_model_configs.py:
# llama3-8b-8192 and llama3-70b-8192, ici_fsdp_parallelism=-1, max_target_length 8192, flash attention): the same
# model, slice and rows per chip here, to compare whether it fits and in how much memory.
MAXTEXT = {"llama-3-8b": 8, "llama-3-70b": 2}  # per_device_batch_size


def maxtext_cell(model: str, force: bool) -> dict:
    from jaxfin.compile import compile_report, parse_target
    from jaxfin.config import load_config

    path = RESULTS / f"compile_{model}_v6e-256_fsdp_maxtext_batch.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    overrides = [*COMMON, *LAYOUTS["fsdp"], f"train.batch_size={256 * MAXTEXT[model]}"]
    t0 = time.time()
    r = compile_report(load_config(REPO / MODELS[model], overrides), parse_target("v6e-256"), costs=False)
    r.update(model=model, layout="fsdp", overrides=overrides, maxtext_per_device_batch=MAXTEXT[model],
             wall_s=time.time() - t0, host=_host())  # fmt: skip
    path.write_text(json.dumps(r, indent=2) + "\n")
    return r


def max_batch_cell(force: bool) -> dict:
    from jaxfin.compile import max_batch, parse_target
    from jaxfin.config import load_config

    path = RESULTS / "compile_llama-3-8b_v5p-64_fsdp_max_batch.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    overrides = [*COMMON, *LAYOUTS["fsdp"], "train.batch_size=32"]
    t0 = time.time()
    r = max_batch(load_config(REPO / MODELS["llama-3-8b"], overrides), parse_target("v5p-64"))
    r.update(model="llama-3-8b", target="v5p-64", layout="fsdp", overrides=overrides, wall_s=time.time() - t0,
             host=_host())  # fmt: skip
    path.write_text(json.dumps(r, indent=2) + "\n")
    return r


def _chips(target) -> int:
    from jaxfin.compile.targets import devices

    return len(devices(target))


def _host() -> dict:
    import os
    import platform

    import jax

    return {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__}


def _roofline(r: dict) -> dict:
    """The roofline from the cell's stored per-step costs (so a change to the bound's arithmetic needs no recompile)."""
    from jaxfin.compile import aot, parse_target

    s = r["per_step"]
    costs = {
        "flops": s["flops"],
        "bytes": s["bytes"],
        **{f"{k}.bytes": v["bytes"] for k, v in s["collectives"].items()},
    }
    return aot.roofline(costs, parse_target(r["target"]), s["model_flops"])


def table(rows: list[dict]) -> str:
    head = ("| model | slice | layout | compiled | GiB/device | fits (HBM) | MFU bound | dominant | compile s |\n"
            "|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    out = [head]
    for r in rows:
        if not r["compiled"]:
            if "out of memory" not in r.get("error", ""):
                out.append(f"| {r['model']} | {r['target']} | {r['layout']} | no: {r['error'][:80]} | | | | | |")
                continue
            need = r["memory_gib"].get("temporaries_needed")
            hbm = r["chip"]["hbm_gib"]
            out.append(f"| {r['model']} | {r['target']} | {r['layout']} | no (out of memory) | "
                       f"> {need:.1f} (temporaries alone) | no ({hbm:.0f}) | | | |")  # fmt: skip
            continue
        m, rf = r["memory_gib"], _roofline(r)
        out.append(
            f"| {r['model']} | {r['target']} | {r['layout']} | yes | {m['total']:.1f} | "
            f"{'yes' if m['fits'] else 'no'} ({m['hbm']:.0f}) | {100 * rf['mfu_bound']:.0f}% | {rf['dominant']} | "
            f"{r['compile_s']:.0f} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="recompile cells whose JSON exists")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--topologies", nargs="*", default=list(TOPOLOGIES))
    ap.add_argument("--no-max-batch", action="store_true")
    ap.add_argument("--no-moe", action="store_true", help="leave out the Mixtral-8x7B cell")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [cell(m, t, lay, args.force) for m in args.models for t in args.topologies for lay in LAYOUTS]
    rows += [cell(m, t, lay, args.force) for m, t, lay in MOE_CELLS if not args.no_moe]
    print(table(rows))
    if not args.no_max_batch:
        mb = max_batch_cell(args.force)
        print(f"\nLlama-3-8B on v5p-64 (FSDP, seq 8192): largest train.batch_size that fits = {mb['max_batch_size']}")
    print("\nMaxText's v6e-256 batches (rows of 8192 per chip), compiled here:")
    for model in MAXTEXT:
        r = maxtext_cell(model, args.force)
        m = r.get("memory_gib", {})
        got = f"{m['total']:.1f} GiB/device, fits: {m['fits']}" if r["compiled"] else r["error"][:160]
        print(f"  {model}, {MAXTEXT[model]} rows/chip (batch {256 * MAXTEXT[model]}): {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
