"""The `jaxfin eval` runner: every model x every raw-text set (and task), then eval.json, eval.md and
forgetting.png (with two or more models) in output_dir."""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

from jaxfin.eval.config import EvalConfig
from jaxfin.eval.pairs import pair_metrics
from jaxfin.eval.report import forgetting, markdown, plot_forgetting
from jaxfin.eval.text import read_texts, text_metrics


def _tokenizer(cfg: EvalConfig, model, name: str):
    from jaxfin.data.tokenizer import load_tokenizer

    path = cfg.tokenizer or model.tokenizer_dir
    if not path:
        raise FileNotFoundError(f"model '{name}' has no tokenizer files; set `tokenizer` in the eval config")
    return load_tokenizer(path)


def read_pairs(ps, max_docs: int = 0) -> list[dict]:
    """A pair set's (prompt, chosen, rejected) documents, its first max_docs (0 = all)."""
    from jaxfin.config.schema import SourceConfig
    from jaxfin.data.sources import SourceReport, check_bad_fraction, read_source

    src = SourceConfig(name=ps.name, path=ps.path, format=ps.format, kind="pairs", fields=dict(ps.fields),
                       records=list(ps.records))  # fmt: skip
    report = SourceReport(ps.name)
    pairs = []
    for doc in read_source(src, report):
        pairs.append(doc.data)
        if max_docs and len(pairs) >= max_docs:
            break
    check_bad_fraction(report, 0.01)
    if not pairs:
        raise ValueError(f"pairs {ps.name}: no preference pairs in {ps.path}")
    return pairs


def _jsonable(x):
    """numpy scalars and arrays (e.g. in task results) as plain JSON values."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def evaluate(cfg: EvalConfig, log: Callable[[str], None] = print) -> dict:
    """Run everything the config asks for; write and return the report (see module docstring)."""
    import jaxfin
    from jaxfin.eval.sharding import eval_mesh, shard_model

    out_dir = Path(cfg.output_dir)
    for m in cfg.models:  # fail before hours of work on the first models
        if not Path(m.path).is_dir():
            raise FileNotFoundError(f"model '{m.name}': no model directory at {m.path}")
    mesh = eval_mesh(cfg.mesh)  # None on one device
    if mesh is not None:
        log(f"mesh {dict(mesh.shape)}: params laid out by the training rules, batches split over data x fsdp x expert")
    texts = {}
    for ts in cfg.text:  # read (and check) the data before loading any model
        texts[ts.name] = read_texts(ts, cfg.max_docs)
        log(f"text set {ts.name}: {len(texts[ts.name])} documents ({'domain' if ts.domain else 'general'})")
    pair_sets = {ps.name: read_pairs(ps, cfg.max_docs) for ps in cfg.pairs}
    for name, pairs in pair_sets.items():
        log(f"pairs {name}: {len(pairs)} preference pairs")
    runtime = {} if cfg.compute_dtype == "auto" else {"compute_dtype": cfg.compute_dtype}
    results: dict = {}
    tasks: dict = {}
    prefs: dict = {}
    for m in cfg.models:
        t0 = time.time()
        log(f"model {m.name}: loading {m.path}")
        model = shard_model(jaxfin.load_model(m.path, mesh, **runtime), mesh)  # each device gets only its shards
        tok = _tokenizer(cfg, model, m.name)
        results[m.name] = {}
        for ts in cfg.text:
            r = text_metrics(model, tok, texts[ts.name], seq_len=cfg.seq_len, batch_size=cfg.batch_size, log=log,
                             label=f"{m.name}/{ts.name}")  # fmt: skip
            results[m.name][ts.name] = r
            log(f"  {m.name} / {ts.name}: loss {r['loss']:.4f}  ppl {r['ppl']:.2f}  "
                f"bits/byte {r['bits_per_byte']:.4f}  ({r['tokens']} tokens, {r['bytes']} bytes)")  # fmt: skip
        prefs[m.name] = {}
        for name, pairs in pair_sets.items():
            r = pair_metrics(model, tok, pairs, seq_len=cfg.seq_len, batch_size=cfg.batch_size)
            prefs[m.name][name] = r
            log(f"  {m.name} / {name}: preference accuracy {r['accuracy']:.4f} (per token {r['accuracy_norm']:.4f}) "
                f"over {r['pairs']} pairs")  # fmt: skip
        if cfg.tasks:
            from jaxfin.eval.tasks import run_task  # the task runner lives in its own module

            tasks[m.name] = {}
            for task in cfg.tasks:
                log(f"  {m.name}: task {task}")
                r = run_task(model, tok, task, batch_size=cfg.batch_size, limit=cfg.task_limit or None)
                tasks[m.name][r.get("task", task)] = r
                log(f"  {m.name} / {r.get('task', task)}: {json.dumps(r.get('metrics', {}), default=_jsonable)}")
        if cfg.lm_eval.tasks:  # lm-evaluation-harness tasks by name, the `jaxfin` lm-eval model on this model
            from jaxfin.eval.harness import run_lm_eval

            log(f"  {m.name}: lm-eval tasks {', '.join(cfg.lm_eval.tasks)}")
            lm_tasks = run_lm_eval(model, tok, cfg.lm_eval, batch_size=cfg.batch_size, log=log)
            tasks.setdefault(m.name, {}).update(lm_tasks)
        log(f"model {m.name}: done in {time.time() - t0:.1f}s")
        del model
        gc.collect()
    sets = [{"name": t.name, "path": t.path, "domain": t.domain, "documents": len(texts[t.name])} for t in cfg.text]
    report = {
        "config": dataclasses.asdict(cfg),
        "models": [{"name": m.name, "path": m.path} for m in cfg.models],
        "text_sets": sets,
        "text": results,
        "forgetting": forgetting(results, [m.name for m in cfg.models], sets) if len(cfg.models) > 1 else None,
        "tasks": tasks,
        "pairs": prefs if cfg.pairs else {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(report)
    png = plot_forgetting(report, out_dir / "forgetting.png") if cfg.text else None
    report["files"] = {"json": str(out_dir / "eval.json"), "markdown": str(out_dir / "eval.md"), "plot": png}
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    (out_dir / "eval.md").write_text(md + "\n")
    return report
