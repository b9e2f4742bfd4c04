"""The training loop: `train(cfg)` runs (or resumes) the training a Config describes: next-token training (CPT on
text sources, instruction tuning on chat sources (assistant tokens only), or both mixed in one stream), the
preference objectives (DPO, reward model) on pairs, or RL (GRPO, jaxfin/rl/) on prompts."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import yaml

from jaxfin.config.choices import RL_OBJECTIVES
from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config, EvalDuringTrainingConfig, ModelConfig, to_dict
from jaxfin.data.tokenizer import Tokenizer, load_tokenizer
from jaxfin.eval.generate import stop_token_ids
from jaxfin.hf.tokenizer import copy_tokenizer_files
from jaxfin.model import Model
from jaxfin.parallel import global_batch, make_mesh, process_rows
from jaxfin.parallel.distributed import barrier, is_main, to_host
from jaxfin.rl.prompts import PromptStream
from jaxfin.store import load_model, save_model
from jaxfin.store.checkpoint import Checkpointer
from jaxfin.store.jaxfin_dir import write_model_json
from jaxfin.train import hooks
from jaxfin.train.data_stream import DataStream
from jaxfin.train.hooks import Hook, Loop, StopFlag
from jaxfin.train.logme import resolve_trainable
from jaxfin.train.metrics import MetricsWriter, Progress
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.rl import setup_rl
from jaxfin.train.state import (
    abstract_params,
    abstract_state,
    check_layout,
    compile_eval_step,
    compile_train_step,
    init_state,
)
from jaxfin.train.step import make_eval_step, make_train_step
from jaxfin.train.trainable import selection, trainable_report

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
    cfg = for_objective(cfg)
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


def for_objective(cfg: Config) -> Config:
    """The model the objective trains: a reward model has a score head (one output unless model.num_labels says),
    a PPO policy a value head."""
    if cfg.objective.type == "reward" and not cfg.model.num_labels:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_labels=1))
    if cfg.objective.type == "ppo" and not cfg.model.value_head:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, value_head=True))
    return cfg


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
    if want.value_head and not model.value_head:
        model = dataclasses.replace(model, value_head=True)
        dtype = jax.tree.leaves(params)[0].dtype
        params = {**params, "value_head": {"kernel": jnp.zeros((model.hidden_size, 1), dtype)}}
        print(f"objective {cfg.objective.type}: a value head (zeros) is added beside the LM head")
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


def _open_data(cfg: Config, tok: Tokenizer, rows: tuple[int, int]) -> DataStream:
    """Process 0 builds any missing token caches first; the others then open them (no duplicate tokenizing)."""
    if is_main():
        data = DataStream(cfg.data, cfg.train, cfg.objective.type, tok, rows)
        barrier("jaxfin-data-ready")
        return data
    barrier("jaxfin-data-ready")
    return DataStream(cfg.data, cfg.train, cfg.objective.type, tok, rows)


def train(cfg: Config) -> dict:
    """Train (or resume) and return a summary: steps run, first/last dev loss, stop reason."""
    stop = StopFlag()  # from the start: a SIGTERM while data loads or the step compiles is honoured too
    try:
        return _train(cfg, stop)
    finally:
        stop.restore()


def _train(cfg: Config, stop: StopFlag) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(cfg)
    mesh = make_mesh(cfg.mesh)
    rows = process_rows(mesh, cfg.train.batch_size)
    rl = cfg.objective.type in RL_OBJECTIVES
    # before the model: a data mistake should not wait for a big model to load
    data = PromptStream(cfg, tok) if rl else _open_data(cfg, tok, rows)
    cfg, params, hf_extra = _model(cfg, tok)
    check_layout(cfg.model, cfg.train, mesh)
    cfg, params = resolve_trainable(cfg, params, tok, out)  # `@logme:K` -> layers[...] from the initial weights
    if is_main():
        _write_run_files(cfg, tok, hf_extra, out)
        _report_plan(data.plan(), mesh, out)
    run = _setup_rl(cfg, data, tok, mesh, params, out, hf_extra) if rl else _setup(cfg, data, mesh, params, out)
    del params
    every_step = _hooks(cfg, run, data, tok, mesh, out, hf_extra, stop)
    dev = next((h for h in every_step if isinstance(h, hooks.DevEval)), None)
    loop = hooks.run(run.loop, run.step_fn, every_step)
    if is_main():
        print(f"{loop.stop_reason}: stopped at step {loop.step}; checkpoints in {out / 'checkpoints'}", flush=True)
        if loop.stop_reason == hooks.SIGTERM:
            print("rerun the same command to resume", flush=True)
    tokens = data.tokens_by_level(everywhere=True)  # what a recipe carries to the stages after this one
    return {
        "steps": loop.step,
        "stop_reason": loop.stop_reason,
        "tokens_by_level": {str(k): v for k, v in tokens.items()},
        "dev_loss_first": loop.meta["dev_first"],
        "dev_loss_last": None if dev is None else dev.last,
        "dev_loss_best": loop.meta["dev_best"],
        "output_dir": str(out),
    }


def _report_plan(plan: dict, mesh, out: Path) -> None:
    (out / "data_plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices, "
          f"{jax.process_count()} process(es)")  # fmt: skip
    for st in plan["stages"]:
        print(f"data plan: stage {st['stage']}: {st['rows']:,} rows, domain share {st['domain_share']:.3f}, "
              f"data intensity so far {st['cumulative']:.3f}")  # fmt: skip
    if plan.get("prior_tokens"):
        print(f"data plan: trained before (tokens by domain level): {plan['prior_tokens']}; the logged "
              f"cumulative_intensity counts them")  # fmt: skip


@dataclass
class _Run:
    """A run made ready to loop: the (restored) loop state, the compiled steps and what they read."""

    loop: Loop
    step_fn: object  # (state, step) -> (state, metrics)
    eval_step: object | None
    checkpointer: Checkpointer
    restored: bool
    dev_refs: dict | None
    dev_reward: object | None = None  # RL: state -> {dev_reward, ...} on the held-out prompts


def _setup_rl(cfg: Config, stream: PromptStream, tok: Tokenizer, mesh, params, out: Path, hf_extra) -> _Run:
    """An RL run (jaxfin/rl/loop.py): its step samples, scores and updates; the hooks are the trainer's own."""
    model = Model(cfg.model, None, str(out), hf_extra)
    eos = stop_token_ids(model, tok, cfg.objective.rollout.chat_template)
    loop, ckpt, restored, step = setup_rl(cfg, stream, tok, mesh, params, out, eos)
    return _Run(loop, step, None, ckpt, restored, None, step.dev_reward if stream.dev_records else None)


def _setup(cfg: Config, data: DataStream, mesh, params, out: Path) -> _Run:
    """State (initialised or restored), the DPO reference table, and the train / eval steps compiled ahead (so
    the first tokens/s is not the compile time)."""
    t, main = cfg.train, is_main()
    shapes = abstract_params(cfg.model)
    trained = selection(shapes, list(t.trainable), cfg.model)
    optimizer = make_optimizer(cfg.optimizer, t.steps, trained)
    schedule = make_schedule(cfg.optimizer, t.steps)
    state = init_state(cfg.model, cfg.objective, optimizer, mesh, t.seed, params)
    if main:
        print(trainable_report(shapes, trained, optimizer), flush=True)

    ref_table = dev_refs = None
    if cfg.objective.type == "dpo" and cfg.objective.reference == "precomputed":
        from jaxfin.train.reference import precompute

        # before restoring: the reference is the initial model, also when a resumed run must rebuild its table
        ref_table, dev_refs = precompute(cfg.model, t, data, mesh, state, out)

    ckpt = Checkpointer(out, cfg.checkpoint)
    loop = Loop(step=0, last_step=t.steps, state=state)
    restored = ckpt.restore(abstract_state(state))
    if restored is not None:
        loop.state, loop.meta = restored
        data.restore(loop.meta.pop("data"))
        loop.step = int(loop.state["step"])
        if main:
            print(f"resumed from {out / 'checkpoints' / str(loop.step)}", flush=True)

    t0 = time.time()
    ref_pairs = 0 if ref_table is None else ref_table.shape[-1]
    step_fn = make_train_step(cfg.model, cfg.objective, optimizer, schedule, t.micro_batches)
    train_step = compile_train_step(step_fn, mesh, loop.state, t.batch_size, cfg.data.seq_len, ref_pairs)
    if main:
        print(f"compiled the train step in {time.time() - t0:.1f} s", flush=True)
    eval_step = None
    if data.dev:
        dev_pairs = 0 if dev_refs is None else cfg.data.seq_len // 2
        chunk = t.batch_size // t.micro_batches
        eval_step = compile_eval_step(make_eval_step(cfg.model, cfg.objective), mesh, loop.state, chunk,
                                      cfg.data.seq_len, dev_pairs)  # fmt: skip
    lo, hi = process_rows(mesh, t.batch_size)
    batches = data.iterate(loop.step, t.steps)

    def one_step(state, step):
        batch = next(batches)
        if ref_table is not None:
            batch["ref_logps"] = ref_table[step - 1, lo:hi]
        return train_step(state, global_batch(mesh, batch, t.batch_size))

    return _Run(loop, one_step, eval_step, ckpt, restored is not None, dev_refs)


def _hooks(cfg: Config, run: _Run, data: DataStream, tok: Tokenizer, mesh, out: Path, hf_extra, stop) -> list[Hook]:
    """What every step does, in order: log record, dev eval, task eval, best model, metrics file, SIGTERM,
    checkpoint; and at the end, the exports."""
    t, main = cfg.train, is_main()
    out_hooks: list[Hook] = [hooks.LogRecord(t.log_every, data.mixture_metrics)]
    if run.eval_step is not None and t.dev_every:
        chunk = t.batch_size // t.micro_batches

        def dev(state):
            return _dev_metrics(run.eval_step, state, data, mesh, chunk, t.dev_batches * t.batch_size, run.dev_refs)

        metric = cfg.checkpoint.best_metric or "dev_loss"  # patience watches what best/ keeps
        out_hooks.append(hooks.DevEval(dev, t.dev_every, t.patience, metric, cfg.checkpoint.best_mode))
    if run.dev_reward is not None and t.dev_every:
        out_hooks.append(hooks.TaskEval(run.dev_reward, t.dev_every, at_start=True))
    if cfg.eval.every and cfg.eval.tasks:
        tasks = lambda state: _eval_tasks(cfg.model, cfg.eval, state["params"], tok, out)  # noqa: E731
        out_hooks.append(hooks.TaskEval(tasks, cfg.eval.every))
    if cfg.checkpoint.best_metric:
        save = lambda state, best: _save_best(cfg.model, state["params"], best, out, hf_extra)  # noqa: E731
        out_hooks.append(hooks.KeepBest(cfg.checkpoint.best_metric, cfg.checkpoint.best_mode, save))
    if main:
        writer = MetricsWriter(out, run.loop.step if run.restored else None)  # a resumed run drops later records
        out_hooks.append(hooks.WriteMetrics(writer, Progress(t.steps, run.loop.step)))
    out_hooks.append(hooks.StopOnSignal(stop, _agree, jax.process_count()))
    out_hooks.append(hooks.Checkpoint(run.checkpointer, cfg.checkpoint.every, lambda: {"data": data.state()}))
    if cfg.export_hf or cfg.export_peft:
        out_hooks.append(hooks.AtEnd(lambda state: _export(cfg, state["params"], out, hf_extra)))
    return out_hooks


def _export(cfg: Config, params, out: Path, hf_extra) -> None:
    """export_hf / export_peft at the end of a run."""
    params = to_host(params)  # every process takes part in the gather; process 0 writes
    if is_main() and cfg.export_hf:
        save_model(Model(cfg.model, params, str(out), hf_extra), cfg.export_hf, format="hf")
        print(f"exported a Hugging Face model to {cfg.export_hf}", flush=True)
    if is_main() and cfg.export_peft:
        from jaxfin.hf.peft import save_peft_adapter

        save_peft_adapter(params, cfg.model, cfg.export_peft, base_model_name_or_path=cfg.init_from)
        print(f"exported the LoRA adapters as a PEFT adapter folder to {cfg.export_peft}", flush=True)


def _eval_tasks(model_cfg: ModelConfig, ev: EvalDuringTrainingConfig, params, tok: Tokenizer, out: Path) -> dict:
    """The configured evaluation tasks on the current params, as eval/<task>/<metric>. Every process runs them on
    its own devices from the gathered params (small, deterministic work), so all log and compare the same numbers
    without another exchange."""
    from jaxfin.eval.tasks import run_task

    model = Model(model_cfg, to_host(params), str(out))  # to_host is a collective: every process takes part
    res = {}
    for task in ev.tasks:
        r = run_task(model, tok, task, batch_size=ev.batch_size, limit=ev.limit or None)
        res.update({f"eval/{r['task']}/{k}": float(v) for k, v in r["metrics"].items()})
    return res


def _save_best(model_cfg: ModelConfig, params, best: dict, out: Path, hf_extra) -> None:
    """OUTPUT_DIR/best: the model with the best `checkpoint.best_metric` so far, as a Hugging Face dir (written by
    process 0 alone; LoRA adapters merged), with best.json saying which step and value."""
    host = to_host(params)  # a collective: every process takes part
    if is_main():
        save_model(Model(model_cfg, host, str(out), hf_extra), out / "best", format="hf")
        (out / "best" / "best.json").write_text(json.dumps(best, indent=2) + "\n")


def _agree(flag: bool) -> bool:
    """A SIGTERM seen by any process stops all of them at the same step (they must checkpoint together). With
    several processes this is a collective, so it is asked only on logged steps (already a sync point)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(jnp.asarray(flag)).any())
