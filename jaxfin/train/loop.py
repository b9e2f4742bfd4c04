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

from jaxfin.config.load import ConfigError
from jaxfin.config.schema import Config, to_dict
from jaxfin.data.tokenizer import Tokenizer, load_tokenizer
from jaxfin.hf.tokenizer import copy_tokenizer_files
from jaxfin.model import Model, init_params, load_model
from jaxfin.model.store import FORMAT, MODEL_JSON, VERSION
from jaxfin.parallel import batch_sharding, global_batch, make_mesh, replicated
from jaxfin.train.checkpoint import Checkpointer
from jaxfin.train.data_stream import DataStream
from jaxfin.train.metrics import MetricsWriter, Progress
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.step import make_eval_step, make_train_step

log = logging.getLogger("jaxfin")


def _tokenizer(cfg: Config) -> Tokenizer:
    src = cfg.tokenizer or cfg.init_from
    if not src:
        raise ConfigError("set 'tokenizer' (a SentencePiece .model file or an HF tokenizer dir) or 'init_from'")
    return load_tokenizer(src)


def _model(cfg: Config, tok: Tokenizer) -> tuple[Config, dict, dict | None]:
    """The resolved config (architecture from init_from when given), the initial params and HF extras."""
    hf_extra = None
    if cfg.init_from:
        runtime = {k: getattr(cfg.model, k) for k in cfg.model.RUNTIME_KEYS}
        loaded = load_model(cfg.init_from, **runtime)
        cfg = dataclasses.replace(cfg, model=loaded.config)
        params, hf_extra = loaded.params, loaded.hf_extra
    else:
        params = init_params(cfg.model, jax.random.key(cfg.train.seed))
    if tok.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"the tokenizer at {tok.path} has {tok.vocab_size} tokens but model.vocab_size is {cfg.model.vocab_size}"
        )
    return cfg, params, hf_extra


def _write_run_files(cfg: Config, tok: Tokenizer, hf_extra: dict | None, out: Path) -> None:
    """Resolved config, model description and tokenizer: the run dir itself is a loadable model."""
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    desc = {"format": FORMAT, "version": VERSION, "model": to_dict(cfg.model)}
    if hf_extra:
        desc["hf"] = hf_extra
    (out / MODEL_JSON).write_text(json.dumps(desc, indent=2))
    copy_tokenizer_files(tok.path, out)


def _dev_losses(eval_step, params, data: DataStream, mesh, rows_per_batch: int, limit_rows: int) -> dict:
    """dev_loss (token mean over all dev sets) and dev_loss/<name> per dev set."""
    out, total, count = {}, 0.0, 0.0
    for name, batches in data.dev_batches(rows_per_batch, limit_rows).items():
        s = c = 0.0
        for b in batches:
            bs, bc = eval_step(params, global_batch(mesh, b))
            s, c = s + float(bs), c + float(bc)
        out[f"dev_loss/{name}"] = s / max(c, 1.0)
        total, count = total + s, count + c
    out["dev_loss"] = total / max(count, 1.0)
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


def train(cfg: Config) -> dict:
    """Train (or resume) and return a summary: steps run, first/last dev loss, stop reason."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(cfg)
    t = cfg.train
    data = DataStream(cfg, tok)  # before the model: a data mistake should not wait for a big model to load
    cfg, params, hf_extra = _model(cfg, tok)
    _write_run_files(cfg, tok, hf_extra, out)
    plan = data.plan()
    (out / "data_plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    for st in plan["stages"]:
        print(f"data plan: stage {st['stage']}: {st['rows']:,} rows, domain share {st['domain_share']:.3f}, "
              f"data intensity so far {st['cumulative']:.3f}")  # fmt: skip

    mesh = make_mesh(cfg.mesh)
    optimizer = make_optimizer(cfg.optimizer, t.steps)
    schedule = make_schedule(cfg.optimizer, t.steps)
    rep = replicated(mesh)
    init = jax.jit(
        lambda p: {
            "params": p,
            "opt_state": optimizer.init(p),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(t.seed)),
        },
        out_shardings=rep,
    )
    state = init(params)
    del params

    ckpt = Checkpointer(out, cfg.checkpoint)
    meta = {"dev_best": None, "dev_bad_evals": 0, "dev_first": None}
    restored = ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state))
    if restored is not None:
        state, meta = restored
        data.restore(meta["data"])
        print(f"resumed from {out / 'checkpoints' / str(int(state['step']))}", flush=True)
    start = int(state["step"])

    t0 = time.time()  # compile ahead, so the first tokens/s is not the compile time
    batch_shape = jax.ShapeDtypeStruct((t.batch_size, cfg.data.seq_len), jnp.int32, sharding=batch_sharding(mesh))
    train_step = (
        jax.jit(make_train_step(cfg.model, optimizer, schedule, t.micro_batches), donate_argnums=0)
        .lower(state, dict.fromkeys(("tokens", "segment_ids", "positions", "loss_mask"), batch_shape))
        .compile()
    )
    print(f"compiled the train step in {time.time() - t0:.1f} s", flush=True)
    eval_step = jax.jit(make_eval_step(cfg.model))
    metrics = MetricsWriter(out, start if restored is not None else None)
    progress = Progress(t.steps, start)
    stop = _StopFlag()
    reason, last_dev = "steps", None
    window_tokens, window_t0 = 0, time.time()
    step = start
    batches = data.iterate(start, t.steps)
    try:
        for step in range(start + 1, t.steps + 1):
            batch = next(batches)
            window_tokens += int((batch["segment_ids"] != 0).sum())
            state, m = train_step(state, global_batch(mesh, batch))
            rec = None
            if step % t.log_every == 0 or step == t.steps:
                rec = {k: float(v) for k, v in m.items()}
                now = time.time()
                rec.update(step=step, tokens_per_s=window_tokens / max(now - window_t0, 1e-9))
                rec.update(data.mixture_metrics(step))
                window_tokens, window_t0 = 0, now
            if data.dev and t.dev_every and (step % t.dev_every == 0 or step == t.steps):
                chunk = t.batch_size // t.micro_batches
                devs = _dev_losses(eval_step, state["params"], data, mesh, chunk, t.dev_batches * t.batch_size)
                last_dev = devs["dev_loss"]
                rec = rec or {"step": step, "loss": float(m["loss"]), "lr": float(m["lr"])}
                rec.update(devs)
                meta["dev_first"] = meta["dev_first"] if meta["dev_first"] is not None else last_dev
                if meta["dev_best"] is None or last_dev < meta["dev_best"]:
                    meta["dev_best"], meta["dev_bad_evals"] = last_dev, 0
                else:
                    meta["dev_bad_evals"] += 1
                window_t0 = time.time()  # keep eval time out of tokens/s
            if rec is not None:
                metrics.write({"step": rec.pop("step"), **rec})
                print(progress.line(step, rec), flush=True)
            if t.patience and meta["dev_bad_evals"] >= t.patience:
                reason = f"early stop: dev loss has not improved for {t.patience} evaluations"
            elif stop.set:
                reason = "SIGTERM"
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 or reason != "steps":
                ckpt.save(step, state, {**meta, "data": data.state(), "step": step})
            if reason != "steps":
                break
        if step == t.steps:
            ckpt.save(step, state, {**meta, "data": data.state(), "step": step}, force=True)
    finally:
        stop.restore()
        ckpt.close()
        metrics.close()
    print(f"{reason}: stopped at step {step}; checkpoints in {out / 'checkpoints'}", flush=True)
    if reason == "SIGTERM":
        print("rerun the same command to resume", flush=True)
    elif cfg.export_hf:
        Model(cfg.model, jax.device_get(state["params"]), str(out), hf_extra).save(cfg.export_hf, format="hf")
        print(f"exported a Hugging Face model to {cfg.export_hf}", flush=True)
    return {
        "steps": step,
        "stop_reason": reason,
        "dev_loss_first": meta["dev_first"],
        "dev_loss_last": last_dev,
        "dev_loss_best": meta["dev_best"],
        "output_dir": str(out),
    }
