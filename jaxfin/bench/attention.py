"""`jaxfin bench attention`: forward and forward+backward TFLOP/s of the attention backends, side by side.

FLOP convention: forward = 4·B·Hq·S²·D (QKᵀ and PV), halved for causal; forward+backward = 3.5 x forward
(FlashAttention convention: backward = 2.5 x forward). Packed rows (documents of --doc-len tokens) are counted
with the SAME dense-causal FLOPs, so a kernel that skips masked blocks shows a higher effective TFLOP/s.
"""

from __future__ import annotations

import statistics
import time

from jaxfin.bench.output import emit

FLOP_CONVENTION = (
    "forward = 4*B*Hq*S^2*D, halved for causal; forward+backward = 3.5 x forward (backward = 2.5 x forward); "
    "packed rows use the same dense-causal count (effective TFLOP/s)"
)


def attention_flops(b: int, s: int, hq: int, d: int, causal: bool = True) -> float:
    f = 4.0 * b * hq * s * s * d
    return f / 2 if causal else f


def _time(fn, args, iters: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_one(backend, b, s, hq, hkv, d, dtype, doc_len, iters) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxfin.kernels.attention import attention

    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (b, s, hq, d), dtype)
    k = jax.random.normal(kk, (b, s, hkv, d), dtype)
    v = jax.random.normal(kv, (b, s, hkv, d), dtype)
    seg = None
    if doc_len:
        seg = jnp.broadcast_to((jnp.arange(s, dtype=jnp.int32) // doc_len) + 1, (b, s))

    def fwd(q, k, v):
        return attention(q, k, v, segment_ids=seg, causal=True, backend=backend)

    def loss(q, k, v):
        return jnp.sum(fwd(q, k, v).astype(jnp.float32))

    fwd_j = jax.jit(fwd)
    bwd_j = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    flops = attention_flops(b, s, hq, d, causal=True)
    t_f = _time(fwd_j, (q, k, v), iters)
    t_fb = _time(bwd_j, (q, k, v), iters)
    return {
        "fwd_s": t_f,
        "fwd_bwd_s": t_fb,
        "fwd_tflops": flops / t_f / 1e12,
        "fwd_bwd_tflops": 3.5 * flops / t_fb / 1e12,
    }


def bench_attention(seq_lens, backends, head_dim, heads, kv_heads, batch_tokens, doc_len, dtype_name, iters) -> dict:
    import jax
    import jax.numpy as jnp

    dtype = {"bfloat16": jnp.bfloat16, "float16": jnp.float16, "float32": jnp.float32}[dtype_name]
    dev = jax.devices()[0]
    rows = []
    for s in seq_lens:
        b = max(1, batch_tokens // s)
        for layout, dl in (("dense", 0), ("packed", doc_len)):
            row = {"seq_len": s, "batch": b, "layout": layout, "doc_len": dl or None, "backends": {}}
            for be in backends:
                try:
                    row["backends"][be] = bench_one(be, b, s, heads, kv_heads, head_dim, dtype, dl, iters)
                except Exception as e:  # OOM, unsupported shape: record it and go on
                    row["backends"][be] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            ref = row["backends"].get("cudnn", {})
            if "fwd_s" in ref:
                for be, r in row["backends"].items():
                    if be != "cudnn" and "fwd_s" in r:
                        r["speedup_vs_cudnn"] = {
                            "fwd": ref["fwd_s"] / r["fwd_s"],
                            "fwd_bwd": ref["fwd_bwd_s"] / r["fwd_bwd_s"],
                        }
            rows.append(row)
    return {
        "benchmark": "attention",
        "flop_convention": FLOP_CONVENTION,
        "causal": True,
        "head_dim": head_dim,
        "heads": heads,
        "kv_heads": kv_heads,
        "batch_tokens": batch_tokens,
        "dtype": dtype_name,
        "iters": iters,
        "device": dev.platform,
        "device_kind": dev.device_kind,
        "jax": jax.__version__,
        "note": "CPU numbers are only a smoke test" if dev.platform == "cpu" else "",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }


def format_summary(r: dict) -> str:
    lines = [
        f"attention, causal, D={r['head_dim']}, {r['heads']}/{r['kv_heads']} heads, {r['dtype']} on {r['device_kind']}"
        f" (jax {r['jax']}); TFLOP/s fwd / fwd+bwd. {r['note']}"
    ]
    for row in r["results"]:
        cells = []
        for be, x in row["backends"].items():
            cells.append(f"{be}: error" if "error" in x else f"{be}: {x['fwd_tflops']:.3g} / {x['fwd_bwd_tflops']:.3g}")
        lines.append(f"S={row['seq_len']:>6} B={row['batch']:>3} {row['layout']:<6}  " + "   ".join(cells))
    return "\n".join(lines)


def run_bench_attention(args) -> int:
    import jax

    from jaxfin.kernels.attention import BACKENDS

    on_cpu = jax.default_backend() == "cpu"
    if args.seq_lens:
        seq_lens = [int(x) for x in args.seq_lens.split(",")]
    else:
        seq_lens = [256, 512] if on_cpu else [1024 * 2**i for i in range(5)]
    if args.backends:
        backends = [x.strip() for x in args.backends.split(",")]
    else:
        backends = ["xla"] if on_cpu else (["xla", "cudnn"] if jax.default_backend() == "gpu" else ["xla"])
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown attention backend(s) {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
    batch_tokens = args.batch_tokens or (1024 if on_cpu else 16384)
    result = bench_attention(
        seq_lens, backends, args.head_dim, args.heads, args.kv_heads, batch_tokens, args.doc_len, dtype, args.iters
    )
    return emit(result, args, format_summary)
