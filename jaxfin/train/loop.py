"""The training loop: `train(cfg)` runs (or resumes) next-token training described by a Config: CPT on text
sources, instruction tuning on chat sources (assistant tokens only), or both mixed in one stream."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import yaml

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config, to_dict
from jaxfin.data.tokenizer import Tokenizer, load_tokenizer
from jaxfin.hf.tokenizer import copy_tokenizer_files
from jaxfin.model import Model
from jaxfin.parallel import global_batch, make_mesh, process_rows
from jaxfin.parallel.distributed import barrier, is_main, to_host
from jaxfin.store import load_model, save_model
from jaxfin.store.checkpoint import Checkpointer
from jaxfin.store.jaxfin_dir import write_model_json
from jaxfin.train.data_stream import DataStream
from jaxfin.train.metrics import MetricsWriter, Progress
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.state import (
    abstract_params,
    abstract_state,
    check_layout,
    compile_eval_step,
    compile_train_step,
    init_state,
)
from jaxfin.train.step import make_eval_step
from jaxfin.train.trainable import trainable_report, trainable_selection

log = logging.getLogger("jaxfin")


def _tokenizer(cfg: Config) -> Tokenizer:
    src = cfg.tokenizer or cfg.init_from
    if not src:
        raise ConfigError("set 'tokenizer' (a SentencePiece .model file or an HF tokenizer dir) or 'init_from'")
    return load_tokenizer(src)


def _model(cfg: Config, tok: Tokenizer) -> tuple[Config, dict | None, dict | None]:
    """The resolved config (architecture from init_from when given), the loaded params (None: initialise from
    train.seed on the mesh) and HF extras."""
    params = hf_extra = None
    if cfg.objective.type == "reward" and not cfg.model.num_labels:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_labels=1))
    if cfg.init_from:
        runtime = {k: getattr(cfg.model, k) for k in cfg.model.RUNTIME_KEYS}
        loaded = load_model(cfg.init_from, **runtime)
        cfg, params = _adapt_loaded(cfg, loaded.config, loaded.params)
        hf_extra = loaded.hf_extra
    if tok.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"the tokenizer at {tok.path} has {tok.vocab_size} tokens but model.vocab_size is {cfg.model.vocab_size}"
        )
    return cfg, params, hf_extra


def _adapt_loaded(cfg: Config, loaded_cfg, params: dict) -> tuple[Config, dict]:
    """A loaded model made fit for this run: a score head for a reward model started from a causal LM (as
    transformers' AutoModelForSequenceClassification does), fresh LoRA adapters when the run asks for them."""
    want = cfg.model
    model = loaded_cfg
    key = jax.random.key(cfg.train.seed)
    if want.num_labels and not model.num_labels:
        model = dataclasses.replace(model, num_labels=want.num_labels)
        params = {k: v for k, v in params.items() if k != "lm_head"}
        std = model.init_std * jax.random.normal(jax.random.fold_in(key, 1), (model.hidden_size, want.num_labels))
        params["score"] = {"kernel": std.astype(jax.tree.leaves(params)[0].dtype)}
        print(f"objective {cfg.objective.type}: a new score head of {want.num_labels} output(s) replaces the LM head")
    if want.lora.rank and not model.lora.rank:
        from jaxfin.model.lora import add_adapters

        model = dataclasses.replace(model, lora=want.lora)
        params = add_adapters(params, model, jax.random.fold_in(key, 2))
    return dataclasses.replace(cfg, model=model), params


def _write_run_files(cfg: Config, tok: Tokenizer, hf_extra: dict | None, out: Path) -> None:
    """Resolved config, model description and tokenizer: the run dir itself is a loadable model."""
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    write_model_json(out, cfg.model, hf_extra)
    copy_tokenizer_files(tok.path, out)


def _dev_metrics(eval_step, state, data: DataStream, mesh, rows_per_batch: int, limit_rows: int, dev_refs) -> dict:
    """dev_loss (mean over all dev sets: per target token, or per pair for preference objectives), dev_loss/<name>
    per dev set, and the objective's metrics over all dev sets as dev_<metric> (e.g. dev_rewards/accuracy)."""
    out, total, count, sums = {}, 0.0, 0.0, {}
    lo, hi = process_rows(mesh, rows_per_batch)
    extra = [state["ref_params"]] if "ref_params" in state else []
    for name, batches in data.dev_batches(rows_per_batch, limit_rows).items():
        s = c = 0.0
        for i, b in enumerate(batches):
            local = {k: v[lo:hi] for k, v in b.items()}
            if dev_refs is not None:
                local["ref_logps"] = dev_refs[name][i][lo:hi]
            bs, bc, bm = eval_step(state["params"], global_batch(mesh, local, rows_per_batch), *extra)
            s, c = s + float(bs), c + float(bc)
            for k, v in bm.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        out[f"dev_loss/{name}"] = s / max(c, 1.0)
        total, count = total + s, count + c
    out["dev_loss"] = total / max(count, 1.0)
    out.update({f"dev_{k}": v / max(count, 1.0) for k, v in sums.items()})
    return out


class _StopFlag:
    """SIGTERM (preemption) asks the loop to checkpoint and exit cleanly at the next step boundary."""

    def __init__(self):
        self.set = False
        self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.set = True

    def restore(self):
        signal.signal(signal.SIGTERM, self.previous)


def _open_data(cfg: Config, tok: Tokenizer, rows: tuple[int, int]) -> DataStream:
    """Process 0 builds any missing token caches first; the others then open them (no duplicate tokenizing)."""
    if is_main():
        data = DataStream(cfg, tok, rows)
        barrier("jaxfin-data-ready")
        return data
    barrier("jaxfin-data-ready")
    return DataStream(cfg, tok, rows)


def train(cfg: Config) -> dict:
    """Train (or resume) and return a summary: steps run, first/last dev loss, stop reason."""
    stop = _StopFlag()  # from the start: a SIGTERM while data loads or the step compiles is honoured too
    try:
        return _train(cfg, stop)
    finally:
        stop.restore()


def _train(cfg: Config, stop: _StopFlag) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    main = is_main()
    tok = _tokenizer(cfg)
    t = cfg.train
    mesh = make_mesh(cfg.mesh)
    rows = process_rows(mesh, t.batch_size)
    data = _open_data(cfg, tok, rows)  # before the model: a data mistake should not wait for a big model to load
    cfg, params, hf_extra = _model(cfg, tok)
    check_layout(cfg, mesh)
    plan = data.plan()
    if main:
        _write_run_files(cfg, tok, hf_extra, out)
        (out / "data_plan.json").write_text(json.dumps(plan, indent=2) + "\n")
        print(f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices, "
              f"{jax.process_count()} process(es)")  # fmt: skip
        for st in plan["stages"]:
            print(f"data plan: stage {st['stage']}: {st['rows']:,} rows, domain share {st['domain_share']:.3f}, "
                  f"data intensity so far {st['cumulative']:.3f}")  # fmt: skip

    shapes = abstract_params(cfg)
    selection = trainable_selection(shapes, cfg)
    optimizer = make_optimizer(cfg.optimizer, t.steps, selection)
    schedule = make_schedule(cfg.optimizer, t.steps)
    state = init_state(cfg, optimizer, mesh, params)
    del params
    if main:
        print(trainable_report(shapes, selection, optimizer), flush=True)

    ref_table = dev_refs = None
    if cfg.objective.type == "dpo" and cfg.objective.reference == "precomputed":
        from jaxfin.train.reference import precompute

        # before restoring: the reference is the initial model, also when a resumed run must rebuild its table
        ref_table, dev_refs = precompute(cfg, data, mesh, state, out)

    ckpt = Checkpointer(out, cfg.checkpoint)
    meta = {"dev_best": None, "dev_bad_evals": 0, "dev_first": None}
    restored = ckpt.restore(abstract_state(state))
    if restored is not None:
        state, meta = restored
        data.restore(meta["data"])
        if main:
            print(f"resumed from {out / 'checkpoints' / str(int(state['step']))}", flush=True)
    start = int(state["step"])

    chunk = t.batch_size // t.micro_batches
    t0 = time.time()  # compile ahead, so the first tokens/s is not the compile time
    ref_pairs = 0 if ref_table is None else ref_table.shape[-1]
    train_step = compile_train_step(cfg, optimizer, schedule, mesh, state, ref_pairs)
    if main:
        print(f"compiled the train step in {time.time() - t0:.1f} s", flush=True)
    dev_pairs = 0 if dev_refs is None else cfg.data.seq_len // 2
    eval_step = (
        compile_eval_step(make_eval_step(cfg), mesh, state, chunk, cfg.data.seq_len, dev_pairs) if data.dev else None
    )
    metrics = MetricsWriter(out, start if restored is not None else None) if main else None
    progress = Progress(t.steps, start)
    reason, last_dev = "steps", None
    window_tokens, window_t0 = 0, time.time()
    step = start
    batches = data.iterate(start, t.steps)
    try:
        for step in range(start + 1, t.steps + 1):
            batch = next(batches)
            if ref_table is not None:
                batch["ref_logps"] = ref_table[step - 1, rows[0] : rows[1]]
            state, m = train_step(state, global_batch(mesh, batch, t.batch_size))
            window_tokens = window_tokens + m["tokens"]  # on device: no sync per step
            rec = None
            if step % t.log_every == 0 or step == t.steps:
                rec = {k: float(v) for k, v in m.items() if k != "tokens"}
                now = time.time()
                rec.update(step=step, tokens_per_s=float(window_tokens) / max(now - window_t0, 1e-9))
                rec.update(data.mixture_metrics(step))
                window_tokens, window_t0 = 0, now
            if data.dev and t.dev_every and (step % t.dev_every == 0 or step == t.steps):
                devs = _dev_metrics(eval_step, state, data, mesh, chunk, t.dev_batches * t.batch_size, dev_refs)
                last_dev = devs["dev_loss"]
                rec = rec or {"step": step, "loss": float(m["loss"]), "lr": float(m["lr"])}
                rec.update(devs)
                meta["dev_first"] = meta["dev_first"] if meta["dev_first"] is not None else last_dev
                if meta["dev_best"] is None or last_dev < meta["dev_best"]:
                    meta["dev_best"], meta["dev_bad_evals"] = last_dev, 0
                else:
                    meta["dev_bad_evals"] += 1
                window_t0 = time.time()  # keep eval time out of tokens/s
            if cfg.eval.every and cfg.eval.tasks and (step % cfg.eval.every == 0 or step == t.steps):
                rec = rec or {"step": step, "loss": float(m["loss"]), "lr": float(m["lr"])}
                rec.update(_eval_tasks(cfg, state["params"], tok, out))
                window_t0 = time.time()
            if rec is not None:
                _keep_best(cfg, state["params"], rec, meta, out, hf_extra)
            if rec is not None and main:
                metrics.write({"step": rec.pop("step"), **rec})
                print(progress.line(step, rec), flush=True)
            if t.patience and meta["dev_bad_evals"] >= t.patience:
                reason = f"early stop: dev loss has not improved for {t.patience} evaluations"
            elif (rec is not None or jax.process_count() == 1) and _agree(stop.set):
                reason = "SIGTERM"
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 or reason != "steps":
                ckpt.save(step, state, {**meta, "data": data.state(), "step": step})
            if reason != "steps":
                break
        if step == t.steps:
            ckpt.save(step, state, {**meta, "data": data.state(), "step": step}, force=True)
    finally:
        ckpt.close()
        if metrics is not None:
            metrics.close()
    if main:
        print(f"{reason}: stopped at step {step}; checkpoints in {out / 'checkpoints'}", flush=True)
    if reason == "SIGTERM":
        if main:
            print("rerun the same command to resume", flush=True)
    elif cfg.export_hf or cfg.export_peft:
        params = to_host(state["params"])  # every process takes part in the gather; process 0 writes
        if main and cfg.export_hf:
            save_model(Model(cfg.model, params, str(out), hf_extra), cfg.export_hf, format="hf")
            print(f"exported a Hugging Face model to {cfg.export_hf}", flush=True)
        if main and cfg.export_peft:
            from jaxfin.hf.peft import save_peft_adapter

            save_peft_adapter(params, cfg.model, cfg.export_peft, base_model_name_or_path=cfg.init_from)
            print(f"exported the LoRA adapters as a PEFT adapter folder to {cfg.export_peft}", flush=True)
    return {
        "steps": step,
        "stop_reason": reason,
        "dev_loss_first": meta["dev_first"],
        "dev_loss_last": last_dev,
        "dev_loss_best": meta["dev_best"],
        "output_dir": str(out),
    }


def _eval_tasks(cfg: Config, params, tok: Tokenizer, out: Path) -> dict:
    """The configured evaluation tasks on the current params, as eval/<task>/<metric>. Every process runs them on
    its own devices from the gathered params (small, deterministic work), so all log and compare the same numbers
    without another exchange."""
    from jaxfin.eval.tasks import run_task

    model = Model(cfg.model, to_host(params), str(out))  # to_host is a collective: every process takes part
    res = {}
    for task in cfg.eval.tasks:
        r = run_task(model, tok, task, batch_size=cfg.eval.batch_size, limit=cfg.eval.limit or None)
        res.update({f"eval/{r['task']}/{k}": float(v) for k, v in r["metrics"].items()})
    return res


def _keep_best(cfg: Config, params, rec: dict, meta: dict, out: Path, hf_extra) -> None:
    """OUTPUT_DIR/best: the model with the best `checkpoint.best_metric` so far, as a Hugging Face dir (written by
    process 0 alone; LoRA adapters merged), with best.json saying which step and value."""
    name = cfg.checkpoint.best_metric
    if not name or name not in rec:
        return
    value, best = float(rec[name]), meta.get("best")
    better = best is None or (value < best["value"] if cfg.checkpoint.best_mode == "min" else value > best["value"])
    if not better:
        return
    host = to_host(params)
    meta["best"] = {"metric": name, "value": value, "step": int(rec["step"])}
    if is_main():
        save_model(Model(cfg.model, host, str(out), hf_extra), out / "best", format="hf")
        (out / "best" / "best.json").write_text(json.dumps(meta["best"], indent=2) + "\n")


def _agree(flag: bool) -> bool:
    """A SIGTERM seen by any process stops all of them at the same step (they must checkpoint together). With
    several processes this is a collective, so it is asked only on logged steps (already a sync point)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(jnp.asarray(flag)).any())
