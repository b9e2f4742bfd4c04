"""`jaxfin compile`: the exact train step of a config, lowered and compiled ahead of time for a target that need not
be here (a TPU slice from libtpu's topology on a CPU host), and what the compiler says about it: per-device memory
and whether it fits, FLOPs and bytes per step, the collectives, and a roofline bound on step time and MFU.

The step is `jaxfin train`'s: the same Config resolution, state layout (jaxfin.train.state), objective, remat,
attention backend and micro-batching; only the arrays are abstract (nothing is allocated).

Per-step costs. XLA's cost analysis counts a while loop's body once, and the step has two loops (the scan over
layers, the scan over micro-batches), so the compiled step's own numbers miss (L - 1) layers. The costs therefore
come from small probe compiles of the same step with the layers unrolled (scan_layers=false) at 1 and 2 layers
(and 1 and 2 micro-batches when train.micro_batches > 1), extended exactly to L layers and M micro-batches: every
cost is a + b*L + c*M + d*L*M, the probes give the four numbers. tests/test_compile.py checks the extension against
XLA's analysis of the fully unrolled step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path

import jax

from jaxfin.compile.hlo import KINDS, collectives
from jaxfin.compile.targets import Target, devices
from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config
from jaxfin.parallel import batch_parallelism, batch_sharding, make_mesh, replicated
from jaxfin.train.loop import for_objective
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.state import abstract_params, abstract_train_state, batch_spec, check_layout
from jaxfin.train.step import make_train_step
from jaxfin.train.trainable import selection

GIB = 2**30


class CompileError(ConfigError):
    """The config does not compile for the target (the message names the setting to change)."""


def resolve(cfg: Config) -> Config:
    """The run's config as `jaxfin train` resolves it, without loading weights: the objective's head, and the
    architecture of an `init_from` Hugging Face dir (its config.json)."""
    if cfg.init_from:
        from jaxfin.hf.convert import config_from_hf, is_hf_dir

        if not is_hf_dir(cfg.init_from):
            raise ConfigError(f"init_from={cfg.init_from}: jaxfin compile reads a Hugging Face dir's config.json")
        cfg_json = Path(cfg.init_from) / "config.json"
        model = config_from_hf(json.loads(cfg_json.read_text()), str(cfg_json))
        runtime = {k: getattr(cfg.model, k) for k in cfg.model.RUNTIME_KEYS}
        model = dataclasses.replace(model, **runtime, lora=cfg.model.lora, num_labels=cfg.model.num_labels)
        cfg = dataclasses.replace(cfg, model=model)
    return for_objective(cfg)


def _ref_pairs(cfg: Config) -> int:
    """DPO with precomputed references reads ref_logps [rows, 2, P]; P = the most pairs a row can hold."""
    o = cfg.objective
    return cfg.data.seq_len // 2 if o.type == "dpo" and o.reference == "precomputed" else 0


def _lower(cfg: Config, mesh):
    """(jitted step lowered for the abstract state and batch, the abstract state)."""
    t = cfg.train
    check_layout(cfg.model, t, mesh)
    trained = selection(abstract_params(cfg.model), list(t.trainable), cfg.model)
    optimizer = make_optimizer(cfg.optimizer, t.steps, trained)
    step_fn = make_train_step(cfg.model, cfg.objective, optimizer, make_schedule(cfg.optimizer, t.steps),
                              t.micro_batches)  # fmt: skip
    state = abstract_train_state(cfg.model, cfg.objective, optimizer, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = jax.jit(step_fn, in_shardings=(shardings, batch_sharding(mesh)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)  # fmt: skip
    batch = batch_spec(mesh, t.batch_size, cfg.data.seq_len, _ref_pairs(cfg))
    with jax.set_mesh(mesh):  # also what tells the kernels and dtypes which platform they build for
        try:
            return step.lower(state, batch), state
        except ValueError as e:  # the kernels' shape / tiling checks
            raise CompileError(f"{cfg.model.attention_backend} attention (model.attention_backend): {e}") from None


def _compile(cfg: Config, mesh):
    """(compiled step, abstract state, seconds); out of memory -> (None, state, seconds, message)."""
    lowered, state = _lower(cfg, mesh)
    t0 = time.perf_counter()
    try:
        with jax.set_mesh(mesh):
            compiled = lowered.compile()
    except Exception as e:  # noqa: BLE001 - XLA raises one runtime error type for everything; sort it here
        msg = str(e)
        if "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower():
            return None, state, time.perf_counter() - t0, _oom_line(msg)
        raise CompileError(f"the compiler refused the step: {msg.strip().splitlines()[0][:600]}") from None
    return compiled, state, time.perf_counter() - t0, None


def _oom_line(msg: str) -> str:
    m = re.search(r"(Ran out of memory[^\n]*|[Uu]sed [\d.]+[GMK] of [\d.]+[GMK] hbm[^\n]*)", msg)
    return (m.group(1) if m else msg.strip().splitlines()[0])[:400]


def _per_device_bytes(tree) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def memory(compiled, state, cfg: Config, mesh, target: Target) -> dict:
    """Per-device bytes: what the compiled program holds (memory_analysis) split into the state's parts, and the
    fit against the chip's HBM."""
    m = compiled.memory_analysis()
    batch = batch_spec(mesh, cfg.train.batch_size, cfg.data.seq_len, _ref_pairs(cfg))
    total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    total += m.generated_code_size_in_bytes
    out = {
        "params": _per_device_bytes(state["params"]),
        "reference_params": _per_device_bytes(state.get("ref_params", {})),
        "optimizer_state": _per_device_bytes(state["opt_state"]),
        "batch": _per_device_bytes(batch),
        "gradients_activations_temporaries": m.temp_size_in_bytes,
        "outputs_not_aliased": m.output_size_in_bytes - m.alias_size_in_bytes,
        "code": m.generated_code_size_in_bytes,
        "total": total,
    }
    out = {k: v / GIB for k, v in out.items()}
    chip = target.chip
    out["hbm"] = None if chip is None else chip.hbm_gib
    out["fits"] = None if chip is None else total / GIB <= chip.hbm_gib
    out["headroom"] = None if chip is None else chip.hbm_gib - total / GIB
    return out


def _costs_of(compiled) -> dict[str, float]:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    text = compiled.as_text()
    out = {"flops": float(ca.get("flops", 0.0)), "bytes": float(ca.get("bytes accessed", 0.0)),
           "loops": float(len(re.findall(r" while\(", text)))}  # fmt: skip
    for kind, c in collectives(text).items():
        out[f"{kind}.count"], out[f"{kind}.bytes"] = float(c["count"]), c["bytes"]
    return out


def step_costs(cfg: Config, mesh) -> dict[str, float]:
    """Per-device FLOPs, bytes accessed and collectives of one whole step, from the probe compiles (module doc)."""
    t = cfg.train
    mb_rows = t.batch_size // t.micro_batches
    ms = (1, 2) if t.micro_batches > 1 else (1,)
    probe = {}
    for m in ms:
        for layers in (1, 2):
            c = dataclasses.replace(
                cfg,
                model=dataclasses.replace(cfg.model, num_layers=layers, scan_layers=False),
                train=dataclasses.replace(t, micro_batches=m, batch_size=mb_rows * m),
            )
            compiled, _, _, oom = _compile(c, mesh)
            if compiled is None:
                raise CompileError(f"a {layers}-layer probe of the step does not fit either: {oom}")
            probe[m, layers] = _costs_of(compiled)
    loops = max(p["loops"] for p in probe.values())
    L, M = cfg.model.num_layers, t.micro_batches
    out = {}
    for key in probe[1, 1]:
        per_layer = {m: probe[m, 2][key] - probe[m, 1][key] for m in ms}
        at = {m: probe[m, 1][key] + (L - 1) * per_layer[m] for m in ms}  # cost at L layers, m micro-batches
        out[key] = at[1] + (M - 1) * (at[2] - at[1]) if M > 1 else at[1]
    out["loops"] = loops  # while loops left in the probes (counted once each): > 0 means the costs are lower bounds
    return out


def model_flops_per_device(cfg: Config, num_devices: int) -> float:
    """The model FLOPs of a step (6N + attention per token, jaxfin bench train's accounting), per device."""
    from jaxfin.bench.train import flops_per_token

    return flops_per_token(cfg.model, cfg.data.seq_len) * cfg.train.batch_size * cfg.data.seq_len / num_devices


def roofline(costs: dict, target: Target, model_flops: float) -> dict:
    """Lower bounds on the step time from each resource alone (compute at peak, HBM traffic at full bandwidth,
    collectives at the chip's link bandwidth), the step bound (their max: everything overlapped) and the MFU that
    bound allows."""
    chip = target.chip
    if chip is None:
        return {"dominant": None, "step_s": None, "mfu_bound": None}
    comm = sum(costs[f"{k}.bytes"] for k in KINDS)
    terms = {
        # XLA's count, or the model's own FLOPs where that is more: loops XLA makes itself (a collective matmul's
        # ring steps) are counted once in the probes too, so the HLO figure can fall short; both are lower bounds
        "compute": max(costs["flops"], model_flops) / (chip.peak_tflops * 1e12),
        "hbm": costs["bytes"] / (chip.hbm_gbps * 1e9),
        "collectives": comm / (chip.link_gbps * 1e9),
    }
    step = max(terms.values())
    return {
        **{f"{k}_s": v for k, v in terms.items()},
        "dominant": max(terms, key=terms.get),
        "step_s": step,
        "mfu_bound": model_flops / (chip.peak_tflops * 1e12 * step) if step else None,
    }


def mesh_for(cfg: Config, target: Target):
    return make_mesh(cfg.mesh, devices(target))


def compile_report(cfg: Config, target: Target, dump_hlo: str | None = None, costs: bool = True) -> dict:
    """Compile the step for `target` and describe it (see the module docstring); `costs=False` skips the probes
    (memory and fit only, as --max-batch needs)."""
    cfg = resolve(cfg)
    mesh = mesh_for(cfg, target)
    compiled, state, seconds, oom = _compile(cfg, mesh)
    n = mesh.size
    out = {
        "target": target.name,
        "topology": target.topology,
        "num_slices": target.num_slices,
        "chip": None if target.chip is None else dataclasses.asdict(target.chip),
        "devices": n,
        "device_kind": mesh.devices.flat[0].device_kind,
        "mesh": dict(mesh.shape),
        "model": {
            k: getattr(cfg.model, k)
            for k in (
                "num_layers",
                "hidden_size",
                "num_heads",
                "num_kv_heads",
                "vocab_size",
                "remat",
                "attention_backend",
            )
        },  # fmt: skip
        "objective": cfg.objective.type,
        "batch_size": cfg.train.batch_size,
        "micro_batches": cfg.train.micro_batches,
        "seq_len": cfg.data.seq_len,
        "jax": jax.__version__,
        "compiled": compiled is not None,
        "compile_s": seconds,
    }
    if compiled is None:
        need = re.search(r"required for HLO temporaries \(([\d.]+)G\)", oom)
        temporaries = float(need.group(1)) if need else None  # XLA's G: GiB
        hint = (
            "lower train.batch_size (or raise train.micro_batches), model.remat=full, "
            "model.attention_backend=pallas, or split more (mesh.fsdp, mesh.tensor)"
        )
        out.update(error=f"out of memory: {oom}; {hint}", memory_gib={"fits": False, "temporaries_needed": temporaries})
        return out
    out["memory_gib"] = memory(compiled, state, cfg, mesh, target)
    if dump_hlo:
        path = Path(dump_hlo)
        path.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]", "_", target.name)
        (path / f"train_step.{name}.hlo.txt").write_text(compiled.as_text())
        out["hlo"] = str(path / f"train_step.{name}.hlo.txt")
    if costs:
        c = step_costs(cfg, mesh)
        mflops = model_flops_per_device(cfg, n)
        out["per_step"] = {"flops": c["flops"], "model_flops": mflops, "bytes": c["bytes"],
                           "loops_counted_once": int(c["loops"]),
                           "collectives": {k: {"count": int(round(c[f"{k}.count"])), "bytes": c[f"{k}.bytes"]}
                                           for k in KINDS}}  # fmt: skip
        out["roofline"] = roofline(c, target, mflops)
    return out


def max_batch(cfg: Config, target: Target, limit: int = 1 << 16) -> dict:
    """The largest train.batch_size that compiles and fits, by bisection over multiples of what the mesh needs
    (batch parallelism x micro-batches); each try is one compile."""
    cfg = resolve(cfg)
    if target.chip is None:
        raise ConfigError("--max-batch needs a target with known HBM (a TPU or GPU topology), not cpu")
    mesh = mesh_for(cfg, target)
    unit = batch_parallelism(mesh) * cfg.train.micro_batches
    tries = []

    def fits(k: int) -> bool:
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=k * unit))
        r = compile_report(c, target, costs=False)
        ok = bool(r["compiled"] and r["memory_gib"]["fits"])
        tries.append({"batch_size": k * unit, "fits": ok,
                      "total_gib": r.get("memory_gib", {}).get("total")})  # fmt: skip
        print(f"  batch_size {k * unit}: {'fits' if ok else 'does not fit'}", flush=True)
        return ok

    if not fits(1):
        return {"max_batch_size": 0, "tries": tries}
    lo, hi = 1, 2
    while hi * unit <= limit and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"max_batch_size": lo * unit, "unit": unit, "tries": tries}
