"""Streaming merge execution: one output tensor at a time, read from the inputs' safetensors and written straight
into pre-planned output shards, so peak memory stays near a few tensors per input model.

Reading and writing are `jaxfin.hf.safetensors_io`: positioned file reads (no memory map, whose touched pages would
count as resident memory), and a writer that lays out each shard's header first (every output shape is known from
the plan), then streams the tensors' bytes in order. The per-tensor math is `jaxfin.merge.methods.merge_tensor`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxfin.hf.safetensors_io import FLOAT_DTYPES, SafetensorsReader, SafetensorsWriter, TensorSpec
from jaxfin.merge.config import MergeConfigError, MergePlan, OutSlice, resolve
from jaxfin.merge.tokenizer import VocabPlan, build_vocab, permute_rows, save_tokenizer

log = logging.getLogger(__name__)

LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
POST = (
    "model.norm.weight",
    "lm_head.weight",
)  # written after the layers, from the last slice, with t = 0 (mergekit 0.1.5)
EMBED = ("model.embed_tokens.weight", "lm_head.weight")
ARCH_KEYS = (
    "model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "tie_word_embeddings", "hidden_act", "rms_norm_eps",
)  # fmt: skip
ALL_INPUTS = {"linear", "passthrough"}  # methods without a base: every source (the base too) is an input


# ------------------------------------------------------------------------------------------------ planning


@dataclasses.dataclass
class TensorTask:
    name: str  # output HF name
    inputs: list[tuple[str, str]]  # (model ref, input tensor name), in slice source order
    t: float
    out_slice: OutSlice
    spec: TensorSpec


def _hf_config(path: Path) -> dict:
    f = path / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no config.json")
    return json.loads(f.read_text())


def _check_arch(plan: MergePlan, configs: dict[str, dict], vocab: VocabPlan | None) -> None:
    donor = plan.donor()
    keys = list(ARCH_KEYS) + ([] if vocab else ["vocab_size"]) + (["num_hidden_layers"] if plan.from_models else [])
    for m, cfg in configs.items():
        for key in keys:
            a, b = configs[donor].get(key), cfg.get(key)
            if a != b:
                hint = {
                    "vocab_size": "; set tokenizer_source (base, union or a model) to merge different vocabularies",
                    "num_hidden_layers": "; use slices with layer_range to choose layers",
                }.get(key, "")
                raise MergeConfigError(
                    f"cannot merge {donor} and {m}: {key} is {a!r} in {donor} but {b!r} in {m}{hint}"
                )


def as_hf_folder(ref: str, path: Path, tmp: Path) -> Path:
    """An HF folder for `path`: itself, or a jaxfin checkpoint converted into `tmp` (this loads it whole)."""
    from jaxfin.hf import is_hf_dir

    if is_hf_dir(path):
        return path
    import jaxfin

    log.info("%s is not a Hugging Face folder; converting it as a jaxfin checkpoint (loads it whole)", ref)
    out = tmp / re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
    try:
        jaxfin.save_model(jaxfin.load_model(path), out, format="hf")
    except (FileNotFoundError, ValueError) as e:
        raise MergeConfigError(
            f"model '{ref}' at {path}: neither a Hugging Face folder nor a jaxfin checkpoint ({e})"
        ) from None
    return out


def plan_tensors(
    plan: MergePlan, readers: dict[str, SafetensorsReader], configs: dict[str, dict], vocab
) -> tuple[list[TensorTask], int]:
    """The output tensors in order (pre weights, layers slice by slice, post weights) and the layer count."""
    slices = []
    for s in plan.slices:  # fill the `models:` form's layer ranges
        srcs = tuple(
            x if x.layer_range else dataclasses.replace(x, layer_range=(0, configs[x.model]["num_hidden_layers"]))
            for x in s.sources
        )
        for x in srcs:
            n = configs[x.model]["num_hidden_layers"]
            if x.layer_range[1] > n:
                raise MergeConfigError(
                    f"{plan.where}: layer_range {list(x.layer_range)} of {x.model} past its {n} layers"
                )
        slices.append(dataclasses.replace(s, sources=srcs))
    plan.slices = slices
    donor = plan.donor()
    layer_names: dict[str, dict[int, list[str]]] = {}
    for m, r in readers.items():
        per: dict[int, list[str]] = {}
        for n in r.names():
            if g := LAYER.match(n):
                per.setdefault(int(g.group(1)), []).append(g.group(2))
        layer_names[m] = per
    tasks: list[TensorTask] = []

    def out_dtype(m: str, name: str) -> str:
        if plan.out_dtype or plan.dtype:
            return plan.out_dtype or plan.dtype
        d = readers[m].dtype(name)
        if d not in FLOAT_DTYPES:
            raise MergeConfigError(f"{m}: tensor {name} is stored as {d}, not a float type")
        return d

    def add(name: str, inputs: list[tuple[str, str]], t: float, out_slice: OutSlice) -> None:
        shapes = {}
        for m, n in inputs:
            if n not in readers[m]:
                raise MergeConfigError(f"cannot merge: {m} has no tensor {n} (present in {inputs[0][0]})")
            shapes[m] = readers[m].shape(n)
        shape = shapes[inputs[0][0]]
        if vocab and name in EMBED:
            shape = (vocab.size, *shape[1:])
        elif len(set(shapes.values())) > 1:
            a, b = [m for m in shapes if shapes[m] != shape][0], inputs[0][0]
            raise MergeConfigError(f"cannot merge {b} and {a}: {name} has shape {shape} in {b} but {shapes[a]} in {a}")
        tasks.append(
            TensorTask(name, inputs, t, out_slice, TensorSpec(name, shape, out_dtype(inputs[0][0], inputs[0][1])))
        )

    def models_of(s: OutSlice) -> list[str]:
        return [x.model for x in s.sources]

    extra = [n for n in readers[donor].names() if not LAYER.match(n)]
    pre = [n for n in extra if n not in POST]
    post = [n for n in POST if n in readers[donor]]
    for n in pre:
        add(n, [(m, n) for m in models_of(slices[0])], 0.0, slices[0])
    k = 0
    for s in slices:
        length = s.sources[0].layer_range[1] - s.sources[0].layer_range[0]
        for i in range(length):
            t = i / (length - 1) if length > 1 else 1.0
            first = s.sources[0]
            for rest in layer_names[first.model].get(first.layer_range[0] + i, []):
                add(
                    f"model.layers.{k}.{rest}",
                    [(x.model, f"model.layers.{x.layer_range[0] + i}.{rest}") for x in s.sources],
                    t,
                    s,
                )
            k += 1
    for n in post:
        add(n, [(m, n) for m in models_of(slices[-1])], 0.0, slices[-1])
    return tasks, k


# ------------------------------------------------------------------------------------------------ running


def _merge_fn() -> Callable:
    from jaxfin.merge.methods import merge_tensor

    return merge_tensor


def _to_f32(x: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype:  # mergekit loads the inputs in `dtype`
        x = x.astype(FLOAT_DTYPES[dtype], copy=False)
    return x.astype(np.float32, copy=False)


def run_merge(
    plan: MergePlan,
    out_dir: str | Path,
    *,
    max_shard_size: int | str = "5GB",
    seed: int = 0,
    device: bool = False,
    out_format: str = "hf",
    merge_fn: Callable | None = None,
) -> dict:
    """Run a merge plan into `out_dir` (an HF folder, or a jaxfin checkpoint with out_format='jaxfin').
    Returns a summary (tensors, bytes read and written, seconds, layers, vocab size, files)."""
    if out_format not in ("hf", "jaxfin"):
        raise ValueError(f"format must be 'hf' or 'jaxfin', got '{out_format}'")
    from jaxfin.merge.methods import METHODS

    if plan.merge_method not in METHODS:
        raise MergeConfigError(f"{plan.where}: unknown merge_method '{plan.merge_method}'; known: {', '.join(METHODS)}")
    merge_fn = merge_fn or _merge_fn()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="jaxfin-merge-") as tmp:
        tmp = Path(tmp)
        for ref in plan.referenced_models():
            plan.paths[ref] = as_hf_folder(ref, plan.paths[ref], tmp)
        configs = {m: _hf_config(plan.paths[m]) for m in plan.referenced_models()}
        vocab = build_vocab(plan)
        _check_arch(plan, configs, vocab)
        readers = {m: SafetensorsReader(plan.paths[m]) for m in plan.referenced_models()}
        tasks, n_layers = plan_tensors(plan, readers, configs, vocab)
        hf_dir = out_dir if out_format == "hf" else tmp / "merged-hf"
        writer = SafetensorsWriter(hf_dir, [t.spec for t in tasks], max_shard_size)  # removes stale shards
        glob_names, model_names = plan.parameter_names()
        implicit = {x.model for s in plan.slices for x in s.sources if x.implicit}
        run = functools.partial(merge_fn, backend="jax") if device else merge_fn  # jit per options and shape
        read = 0

        def load(task: TensorTask):
            """(input models, their float32 arrays, base array, global params, per-input params) of one tensor."""
            nonlocal read
            base = task.out_slice.base_model or plan.base_model
            arrays = {}
            for m, n in task.inputs:
                x = readers[m].read(n)
                read += x.nbytes
                arrays[m] = _to_f32(x, plan.dtype)
            if vocab and task.name in EMBED:
                arrays = permute_rows(arrays, vocab)
            in_name = dict(task.inputs)
            if plan.merge_method in ALL_INPUTS or base not in arrays:  # the base joins only if listed
                inputs, base_x = [m for m in arrays if m not in implicit], None
            else:
                inputs, base_x = [m for m in arrays if m != base], arrays[base]
            params = {}
            for p in glob_names:
                if (v := resolve(plan, p, task.name, task.t, task.out_slice, None)) is not None:
                    params[p] = v
            model_params = []
            for m in inputs:
                mp = {}
                for p in model_names:
                    if (v := resolve(plan, p, in_name[m], task.t, task.out_slice, m)) is not None:
                        mp[p] = v
                model_params.append(mp)
            return inputs, arrays, base_x, params, model_params

        thresholds = _whole_model_thresholds(plan, tasks, load, seed)
        for task in tasks:
            inputs, arrays, base_x, params, model_params = load(task)
            for m, mp in zip(inputs, model_params, strict=True):
                mp.update(thresholds.get(m, {}))
            y = run(
                plan.merge_method, [arrays[m] for m in inputs], base_x, model_params, params, seed=seed, name=task.name
            )
            del arrays, base_x
            writer.write(task.name, np.asarray(y))
            del y
        files = writer.close()
        out_cfg = dict(configs[plan.donor()])
        out_cfg["num_hidden_layers"] = n_layers
        if vocab:
            out_cfg["vocab_size"] = vocab.size
        dtype = plan.out_dtype or plan.dtype
        if dtype:
            out_cfg["dtype" if "dtype" in out_cfg or "torch_dtype" not in out_cfg else "torch_dtype"] = dtype
        (hf_dir / "config.json").write_text(json.dumps(out_cfg, indent=2, sort_keys=True) + "\n")
        gen = plan.paths[plan.donor()] / "generation_config.json"
        if gen.is_file():
            shutil.copyfile(gen, hf_dir / "generation_config.json")
        files += ["config.json"] + save_tokenizer(vocab, plan, hf_dir)
        if out_format == "jaxfin":
            import jaxfin

            log.info("writing a jaxfin checkpoint: loading the merged HF model whole")
            model = jaxfin.load_model(hf_dir, param_dtype=dtype or writer.order[0][1].dtype)
            jaxfin.save_model(model, out_dir, format="jaxfin")
            files = sorted(p.name for p in out_dir.iterdir())
    secs = time.perf_counter() - t0
    return {
        "out_dir": str(out_dir),
        "format": out_format,
        "merge_method": plan.merge_method,
        "tensors": len(tasks),
        "layers": n_layers,
        "vocab_size": vocab.size if vocab else None,
        "bytes_read": read,
        "bytes_written": writer.written,
        "seconds": round(secs, 3),
        "files": files,
    }


SAMPLE = 1 << 22  # task-vector magnitudes kept per model for a whole-model threshold (16 MiB of float32)


def _whole_model_thresholds(plan: MergePlan, tasks: list[TensorTask], load: Callable, seed: int) -> dict:
    """`sparsify_scope: model` (a jaxfin global parameter) for ties / breadcrumbs / breadcrumbs_ties: the papers'
    trim over the whole model instead of per tensor. A first streaming pass samples |θ_i − base| of every merged
    tensor (all entries up to SAMPLE per model, else a uniform sample of that size), then each model's
    magnitude threshold(s) at its density go to merge_tensor as model parameters."""
    from jaxfin.merge.methods import abs_sample, breadcrumbs_thresholds, magnitude_threshold

    scope = plan.parameters.get("sparsify_scope", "tensor")
    if scope not in ("tensor", "model"):
        raise MergeConfigError(f"{plan.where}: sparsify_scope must be 'tensor' or 'model', got {scope!r}")
    if scope == "tensor":
        return {}
    if plan.merge_method not in ("ties", "breadcrumbs", "breadcrumbs_ties"):
        raise MergeConfigError(f"{plan.where}: sparsify_scope: model applies to ties, breadcrumbs, breadcrumbs_ties")
    total = sum(int(np.prod(t.spec.shape)) for t in tasks)
    fraction = min(1.0, SAMPLE / max(total, 1))
    samples: dict[str, list[np.ndarray]] = {}
    settings: dict[str, set] = {}
    for task in tasks:
        inputs, arrays, base_x, _, model_params = load(task)
        if base_x is None:
            raise MergeConfigError(f"{plan.where}: {plan.merge_method} needs base_model ({task.name} has none)")
        for m, mp in zip(inputs, model_params, strict=True):
            samples.setdefault(m, []).append(abs_sample(arrays[m] - base_x, fraction, seed=seed, name=task.name))
            settings.setdefault(m, set()).add((mp.get("density", 1.0), mp.get("gamma", 0.01)))
        del arrays, base_x
    out = {}
    for m, found in settings.items():
        if len(found) > 1:
            raise MergeConfigError(
                f"{plan.where}: sparsify_scope: model needs one density (and gamma) per model; {m} has {sorted(found)}"
            )
        density, gamma = found.pop()
        a = np.concatenate(samples.pop(m))
        if plan.merge_method == "ties":
            out[m] = {"magnitude_threshold": magnitude_threshold(a, float(density))}
        else:
            lo, hi = breadcrumbs_thresholds(a, float(density), float(gamma))
            out[m] = {"magnitude_threshold": lo, "outlier_threshold": hi}
    log.info("whole-model thresholds: %s", out)
    return out
