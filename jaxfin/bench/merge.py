"""`jaxfin bench merge`: input GB/s and peak RSS of a merge, jaxfin vs mergekit on the same YAML.

Each side runs as its own child process (imports included in its wall time); its peak RSS is that child's
ru_maxrss from os.wait4. GB/s = bytes of input tensors read (jaxfin's count; mergekit reads the same tensors) /
wall seconds. `--synthetic` writes three random float32 Llamas (base + two fine-tunes) and a TIES YAML first.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """import json, sys
from jaxfin.merge.config import load_merge_config
from jaxfin.merge.engine import run_merge
s = run_merge(load_merge_config(sys.argv[1]), sys.argv[2], device=sys.argv[3] == "1")
print("JAXFIN_RESULT " + json.dumps(s))
"""


def _timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd`; wall seconds, peak RSS (bytes) of that child alone, return code and the tail of its output."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"wall_s": round(wall, 3), "peak_rss_bytes": ru.ru_maxrss * scale, "rc": p.returncode, "output": out}


def write_synthetic(root: Path, layers: int, hidden: int, intermediate: int, vocab: int) -> Path:
    """Three random float32 Llamas (base, a, b) and a TIES merge YAML over them; returns the YAML path."""
    from jaxfin.hf.safetensors_io import SafetensorsWriter, TensorSpec

    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 64),
        "num_key_value_heads": max(1, hidden // 64), "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "hidden_act": "silu", "max_position_embeddings": 2048, "torch_dtype": "float32",
    }  # fmt: skip
    for seed, name in enumerate(["base", "a", "b"]):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(cfg))
        rng = np.random.default_rng(seed)
        shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
        shapes["lm_head.weight"] = (vocab, hidden)
        for i in range(layers):
            p = f"model.layers.{i}."
            shapes |= {p + f"self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"}
            shapes |= {
                p + "mlp.gate_proj.weight": (intermediate, hidden),
                p + "mlp.up_proj.weight": (intermediate, hidden),
            }
            shapes |= {p + "mlp.down_proj.weight": (hidden, intermediate)}
            shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)}
        with SafetensorsWriter(d, [TensorSpec(k, s, "float32") for k, s in shapes.items()], None) as w:
            for k, s in shapes.items():  # one tensor in memory at a time
                w.write(k, rng.standard_normal(s, dtype=np.float32) * 0.02)
    yml = root / "ties.yaml"
    yml.write_text(
        f"models:\n  - model: {root / 'a'}\n    parameters: {{density: 0.5, weight: 0.5}}\n"
        f"  - model: {root / 'b'}\n    parameters: {{density: 0.5, weight: 0.5}}\n"
        f"merge_method: ties\nbase_model: {root / 'base'}\nparameters:\n  normalize: true\ndtype: float32\n"
    )
    return yml


def run_bench_merge(args) -> int:
    from jaxfin.bench.output import emit

    work = Path(tempfile.mkdtemp(prefix="jaxfin-bench-merge-"))
    try:
        config = Path(args.config) if args.config else None
        if args.synthetic:
            config = write_synthetic(work / "models", args.layers, args.hidden, args.intermediate, args.vocab)
        if config is None:
            raise ValueError("give MERGE.yaml or --synthetic")
        r = _timed([sys.executable, "-c", CHILD, str(config), str(work / "jaxfin_out"), "1" if args.device else "0"])
        if r["rc"] != 0:
            raise RuntimeError(f"jaxfin merge failed:\n{r['output'][-3000:]}")
        line = next(x for x in r["output"].splitlines() if x.startswith("JAXFIN_RESULT "))
        s = json.loads(line.split(" ", 1)[1])
        n = s["bytes_read"]
        res = {
            "benchmark": "merge", "config": str(config), "merge_method": s["merge_method"], "input_bytes": n,
            "output_bytes": s["bytes_written"], "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "jaxfin": {"wall_s": r["wall_s"], "merge_s": s["seconds"], "gb_per_s": round(n / 1e9 / r["wall_s"], 4),
                       "peak_rss_bytes": r["peak_rss_bytes"]},
        }  # fmt: skip
        if args.mergekit:
            m = _timed([args.mergekit, str(config), str(work / "mergekit_out"), "--no-copy-tokenizer", "--quiet"])
            if m["rc"] != 0:
                raise RuntimeError(f"mergekit failed:\n{m['output'][-3000:]}")
            res["mergekit"] = {"wall_s": m["wall_s"], "gb_per_s": round(n / 1e9 / m["wall_s"], 4),
                               "peak_rss_bytes": m["peak_rss_bytes"], "command": args.mergekit,
                               "version": _mergekit_version(args.mergekit)}  # fmt: skip
            res["speed_ratio"] = round(m["wall_s"] / r["wall_s"], 3)  # > 1: jaxfin faster
            res["peak_rss_ratio"] = round(r["peak_rss_bytes"] / m["peak_rss_bytes"], 3)  # < 1: jaxfin leaner
            res["max_abs_diff"] = _max_diff(work / "jaxfin_out", work / "mergekit_out")
        return emit(res, args, _summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mergekit_version(exe: str) -> str | None:
    """mergekit's version from the python next to its executable (its own venv)."""
    py = Path(exe).parent / "python"
    code = "import importlib.metadata as m; print(m.version('mergekit'), m.version('torch'))"
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True) if py.exists() else None
    return r.stdout.strip() if r and r.returncode == 0 else None


def _max_diff(a: Path, b: Path) -> float:
    """Largest |jaxfin − mergekit| over all output tensors (a check that both did the same merge)."""
    from jaxfin.hf.safetensors_io import SafetensorsReader

    ra, rb = SafetensorsReader(a), SafetensorsReader(b)
    worst = 0.0
    for name in ra.names():
        x, y = ra.read(name).astype(np.float32), rb.read(name).astype(np.float32)
        worst = max(worst, float(np.max(np.abs(x - y))))
    return worst


def _summary(r: dict) -> str:
    j = r["jaxfin"]
    lines = [
        f"merge {r['merge_method']} of {r['input_bytes'] / 1e9:.3f} GB inputs ({r['config']})",
        f"  jaxfin:   {j['wall_s']:.2f} s wall ({j['merge_s']:.2f} s merging), {j['gb_per_s']:.3f} GB/s, "
        f"peak RSS {j['peak_rss_bytes'] / 2**20:.0f} MiB",
    ]
    if "mergekit" in r:
        m = r["mergekit"]
        lines.append(
            f"  mergekit: {m['wall_s']:.2f} s wall, {m['gb_per_s']:.3f} GB/s, "
            f"peak RSS {m['peak_rss_bytes'] / 2**20:.0f} MiB"
        )
        lines.append(
            f"  speed jaxfin/mergekit x{r['speed_ratio']}, peak RSS jaxfin/mergekit x{r['peak_rss_ratio']}, "
            f"max |diff| {r['max_abs_diff']:.2e}"
        )
    return "\n".join(lines)


def add_merge_bench(sub) -> None:
    import argparse

    p = sub.add_parser(
        "merge",
        help="merge GB/s and peak RSS (vs mergekit)",
        description=__doc__ + "\nExamples:\n  jaxfin bench merge --synthetic --mergekit /tmp/mk/bin/mergekit-yaml\n"
        "  jaxfin bench merge MERGE.yaml --json --out merge.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="mergekit YAML (or --synthetic)")
    p.add_argument("--synthetic", action="store_true", help="write 3 random Llamas and a TIES YAML to merge")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--mergekit", metavar="MERGEKIT_YAML", help="mergekit-yaml executable to compare with")
    p.add_argument("--device", action="store_true", help="jaxfin merges on the default JAX device")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    p.set_defaults(func=lambda a: run_bench_merge(a))
