"""GRPO in the trainer (its RL parts live in jaxfin/rl/): each step samples `num_generations` completions for
each of its prompts on the training mesh, scores them with the configured rewards, turns the rewards into
group-normalised advantages and makes `num_iterations` optimizer updates on those rows with the objective's clipped
surrogate (jaxfin/rl/losses.py via jaxfin/train/step.py). State, checkpoints, resume, LoRA / partial training,
logging and export are the trainer's own; a step's prompts and its sampling key are functions of (seed, step), so
a resumed run is exact.

Logged per step: rewards/<name> and reward (mean over completions; NaN where a reward could not score is left
out), reward_std, frac_reward_zero_std (groups that teach nothing), completion_len, completions_clipped (share
that hit max_new_tokens), kl and clip_frac (from the loss), rollout_tokens_per_s and generate_share (of the step's
wall time spent sampling). With data.dev prompts: dev_reward and dev_rewards/<name> of greedy completions every
train.dev_every steps.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxfin.config.schema import Config
from jaxfin.model import forward
from jaxfin.model.loss import token_logps
from jaxfin.parallel import global_batch, process_rows
from jaxfin.parallel.distributed import is_main
from jaxfin.rl.losses import group_advantages
from jaxfin.rl.prompts import PromptStream
from jaxfin.rl.rewards import nanmean, score
from jaxfin.rl.rollout import base_without_adapters, cut, rollout_key, sample, train_rows
from jaxfin.store.checkpoint import Checkpointer
from jaxfin.train.hooks import Loop
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.state import abstract_params, abstract_state, compile_train_step, init_state
from jaxfin.train.step import make_train_step
from jaxfin.train.trainable import selection, trainable_report


def extra_spec(cfg: Config) -> dict:
    """Per-row arrays the GRPO update reads beside the batch: (trailing shape, dtype) by name."""
    o, s = cfg.objective, cfg.data.seq_len
    spec = {"advantages": ((), np.float32)}
    if o.num_iterations > 1:
        spec["old_logps"] = ((s - 1,), np.float32)
    if o.beta:
        spec["ref_token_logps"] = ((s - 1,), np.float32)
    return spec


class GRPO:
    """The step function `(state, step) -> (state, metrics)` of a GRPO run, and its held-out evaluation."""

    def __init__(self, cfg: Config, stream: PromptStream, tokenizer, mesh, train_step, eos: tuple[int, ...]):
        self.cfg, self.stream, self.tok, self.mesh, self.eos = cfg, stream, tokenizer, mesh, eos
        self.train_step = train_step
        t = cfg.train
        self.rows = t.batch_size
        self.lo, self.hi = process_rows(mesh, t.batch_size)
        if jax.process_count() > 1:
            raise NotImplementedError("GRPO runs in one process for now (rewards are scored on the host that "
                                      "decodes them; gathering them across processes is not written yet)")  # fmt: skip
        model = cfg.model
        self._logps = jax.jit(lambda p, b: token_logps(forward(p, model, b["tokens"], b["segment_ids"],
                                                               b["positions"]), b)[0])  # fmt: skip

    def __call__(self, state, step: int):
        cfg, o, r = self.cfg, self.cfg.objective, self.cfg.objective.rollout
        t0 = time.time()
        idx = np.repeat(self.stream.indices(step), r.num_generations)
        prompts = [self.stream.ids[i] for i in idx]
        records = [self.stream.records[i] for i in idx]
        out, lengths = sample(cfg.model, state["params"], prompts, self.rows, rollout_key(cfg.train.seed, step),
                              self.eos, r)  # fmt: skip
        comps = [cut(out[i, : lengths[i]].tolist(), self.eos, self.tok, r.stop) for i in range(len(prompts))]
        t_gen = time.time() - t0
        total, means = score(cfg, records, [self.stream.texts[i] for i in idx], [c.text for c in comps])
        scorable = ~np.isnan(total)
        adv = np.asarray(group_advantages(np.nan_to_num(total), r.num_generations, o.scale_rewards))
        adv = np.where(scorable, adv, 0.0).astype(np.float32)  # an unscorable completion teaches nothing (TRL)
        batch = train_rows(prompts, [c.ids for c in comps], cfg.data.seq_len)
        batch["advantages"] = adv
        batch = global_batch(self.mesh, {k: v[self.lo : self.hi] for k, v in batch.items()}, self.rows)
        if o.num_iterations > 1:
            batch["old_logps"] = self._logps(state["params"], batch)
        if o.beta:
            ref = state["ref_params"] if "ref_params" in state else state["params"]
            batch["ref_token_logps"] = self._logps_ref(ref, batch)
        for _ in range(o.num_iterations):
            state, metrics = self.train_step(state, batch)
        jax.block_until_ready(metrics["loss"])
        elapsed = time.time() - t0
        groups = np.nan_to_num(total).reshape(-1, r.num_generations)
        n_gen = int(sum(len(c.ids) for c in comps))
        metrics = {
            **metrics,
            **means,
            "reward": nanmean(total),
            "reward_std": float(np.nanstd(total, ddof=1)) if scorable.sum() > 1 else 0.0,
            "frac_reward_zero_std": float(np.mean(groups.std(axis=1) == 0)),
            "completion_len": n_gen / len(comps),
            "completions_clipped": float(np.mean([c.reason == "length" for c in comps])),
            "rollout_tokens_per_s": n_gen / max(t_gen, 1e-9),
            "generate_share": t_gen / max(elapsed, 1e-9),
        }
        return state, metrics

    def _logps_ref(self, params, batch):
        p, c = base_without_adapters(params, self.cfg.model)
        if not hasattr(self, "_ref_fn"):
            self._ref_fn = jax.jit(lambda p, b: token_logps(forward(p, c, b["tokens"], b["segment_ids"],
                                                                    b["positions"]), b)[0])  # fmt: skip
        return self._ref_fn(p, batch)

    def dev_reward(self, state) -> dict:
        """dev_reward and dev_rewards/<name> of greedy completions of the held-out prompts."""
        cfg, r = self.cfg, self.cfg.objective.rollout
        texts = []
        ids = self.stream.dev_ids
        for start in range(0, len(ids), self.rows):
            chunk = ids[start : start + self.rows]
            out, lengths = sample(cfg.model, state["params"], chunk, self.rows, rollout_key(0, 0), self.eos, r,
                                  greedy=True)  # fmt: skip
            texts += [cut(out[i, : lengths[i]].tolist(), self.eos, self.tok, r.stop).text for i in range(len(chunk))]
        total, means = score(cfg, self.stream.dev_records, self.stream.dev_texts, texts)
        return {"dev_reward": nanmean(total), **{f"dev_{k}": v for k, v in means.items()}}


def setup_grpo(cfg: Config, stream: PromptStream, tokenizer, mesh, params, out, eos: tuple[int, ...]):
    """(Loop (restored when a checkpoint exists), step function, checkpointer, restored?, GRPO). The learning-rate
    schedule counts optimizer updates: train.steps x num_iterations."""
    t, o = cfg.train, cfg.objective
    updates = t.steps * o.num_iterations
    shapes = abstract_params(cfg.model)
    trained = selection(shapes, list(t.trainable), cfg.model)
    optimizer = make_optimizer(cfg.optimizer, updates, trained)
    schedule = make_schedule(cfg.optimizer, updates)
    state = init_state(cfg.model, o, optimizer, mesh, t.seed, params)
    if is_main():
        print(trainable_report(shapes, trained, optimizer), flush=True)
    ckpt = Checkpointer(out, cfg.checkpoint)
    loop = Loop(step=0, last_step=t.steps, state=state)
    restored = ckpt.restore(abstract_state(state))
    if restored is not None:
        loop.state, loop.meta = restored
        loop.meta.pop("data", None)
        loop.step = int(loop.meta.get("step", int(loop.state["step"]) // o.num_iterations))
        if is_main():
            print(f"resumed from {out / 'checkpoints' / str(loop.step)}", flush=True)
    t0 = time.time()
    step_fn = make_train_step(cfg.model, o, optimizer, schedule, t.micro_batches)
    train_step = compile_train_step(step_fn, mesh, loop.state, t.batch_size, cfg.data.seq_len, extra=extra_spec(cfg))
    if is_main():
        print(f"compiled the GRPO update in {time.time() - t0:.1f} s", flush=True)
    grpo = GRPO(cfg, stream, tokenizer, mesh, train_step, eos)
    return loop, grpo, ckpt, restored is not None
