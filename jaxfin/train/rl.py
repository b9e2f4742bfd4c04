"""RL in the trainer (its parts live in jaxfin/rl/): each step samples completions for its prompts on the training
mesh, scores them with the configured rewards and updates the policy, with the same state, checkpoints, resume,
LoRA / partial training, logging and export as every other objective. A step's prompts and its sampling key are
functions of (seed, step), so a resumed run is exact.

    grpo  `num_generations` completions per prompt; group-normalised advantages; `num_iterations` updates on the
          rows with the clipped surrogate (old log-probs from the rollout when > 1; the reference's when beta > 0)
    ppo   the policy's value head scores every position at the rollout; per-token rewards (-kl_coef x KL to the
          reference, the score on the last completion token); GAE, whitened advantages; `ppo_epochs` passes of
          `num_mini_batches` shuffled updates with the clipped policy and value losses

Log-probs are of the sampling distribution, logits / rollout.temperature, as TRL computes them. Logged per step:
rewards/<name> and reward (the mean over completions; NaN where a reward could not score is left out),
reward_std, frac_reward_zero_std (GRPO groups that teach nothing), completion_len, completions_clipped (share that
hit max_new_tokens), the loss's own metrics (kl, clip_frac; PPO: pg_loss, vf_loss, vf_clip_frac, approx_kl),
PPO's kl (per completion, summed over its tokens) and non_score_reward, rollout_tokens_per_s and generate_share
(of the step's wall time spent sampling). With data.dev prompts, every train.dev_every steps and for the
starting model (the step-0 record): dev_reward and dev_rewards/<name> of greedy completions, and
dev_reward_sampled of one completion per prompt sampled as the rollouts are.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxfin.config.schema import Config
from jaxfin.model import forward, forward_with_values
from jaxfin.parallel import global_batch, process_rows
from jaxfin.parallel.distributed import is_main
from jaxfin.rl.losses import gae, group_advantages, kl_estimate, kl_estimator_of, masked_whiten, ppo_rewards
from jaxfin.rl.prompts import PromptStream
from jaxfin.rl.rewards import nanmean, score
from jaxfin.rl.rollout import base_without_adapters, cut, dev_key, reference_config, rollout_key, sample, train_rows
from jaxfin.store.checkpoint import Checkpointer
from jaxfin.train.hooks import Loop
from jaxfin.train.optimizer import make_optimizer, make_schedule
from jaxfin.train.state import abstract_params, abstract_state, compile_train_step, init_state
from jaxfin.train.step import make_train_step, rl_token_logps
from jaxfin.train.trainable import selection, trainable_report


def updates_per_step(cfg: Config) -> int:
    o = cfg.objective
    return o.ppo_epochs * o.num_mini_batches if o.type == "ppo" else o.num_iterations


def update_rows(cfg: Config) -> int:
    """Rows of one optimizer update: the whole rollout batch (GRPO) or one PPO mini-batch."""
    o = cfg.objective
    return cfg.train.batch_size // (o.num_mini_batches if o.type == "ppo" else 1)


def extra_spec(cfg: Config) -> dict:
    """Per-row arrays an RL update reads beside the batch: name -> (trailing shape, dtype)."""
    o, s = cfg.objective, cfg.data.seq_len
    if o.type == "ppo":
        return {k: ((s - 1,), np.float32) for k in ("old_logps", "old_values", "advantages", "returns")}
    spec = {"advantages": ((), np.float32)}
    if o.num_iterations > 1:
        spec["old_logps"] = ((s - 1,), np.float32)
    if o.beta:
        spec["ref_token_logps"] = ((s - 1,), np.float32)
    return spec


class RLStep:
    """The step function `(state, step) -> (state, metrics)` of a GRPO or PPO run, and its held-out evaluation."""

    def __init__(self, cfg: Config, stream: PromptStream, tokenizer, mesh, train_step, eos: tuple[int, ...]):
        self.cfg, self.stream, self.tok, self.mesh, self.eos = cfg, stream, tokenizer, mesh, eos
        self.train_step = train_step
        self.rows = cfg.train.batch_size
        self.lo, self.hi = process_rows(mesh, self.rows)
        if jax.process_count() > 1:
            raise NotImplementedError("RL runs in one process for now (rewards are scored on the host that decodes "
                                      "them; gathering them across processes is not written yet)")  # fmt: skip
        o, model = cfg.objective, cfg.model
        ref_model = reference_config(model)
        inputs = lambda b: (b["tokens"], b["segment_ids"], b["positions"])  # noqa: E731
        self._logps = jax.jit(lambda p, b: rl_token_logps(forward(p, model, *inputs(b)), b, o)[0])
        self._ref_logps = jax.jit(lambda p, b: rl_token_logps(forward(p, ref_model, *inputs(b)), b, o)[0])
        if o.type == "ppo":
            self._ppo_rollout = jax.jit(lambda p, ref, b, s: self._ppo_arrays(p, ref, b, s))

    def _reference(self, state):
        """The reference policy's params: the frozen copy, or the base without its LoRA adapters (no copy)."""
        params = state["ref_params"] if "ref_params" in state else state["params"]
        return base_without_adapters(params, self.cfg.model)

    def __call__(self, state, step: int):
        cfg, r = self.cfg, self.cfg.objective.rollout
        t0 = time.perf_counter()
        idx = np.repeat(self.stream.indices(step), r.num_generations)
        prompts = [self.stream.ids[i] for i in idx]
        out, lengths = sample(cfg.model, state["params"], prompts, self.rows, rollout_key(cfg.train.seed, step),
                              self.eos, r)  # fmt: skip
        comps = [cut(out[i, : lengths[i]].tolist(), self.eos, self.tok, r.stop) for i in range(len(prompts))]
        t_gen = time.perf_counter() - t0
        records = [self.stream.records[i] for i in idx]
        total, means = score(cfg, records, [self.stream.texts[i] for i in idx], [c.text for c in comps])
        rows = train_rows(prompts, [c.ids for c in comps], cfg.data.seq_len)
        update = self._grpo if cfg.objective.type == "grpo" else self._ppo
        state, metrics = update(state, step, rows, total, comps)
        jax.block_until_ready(metrics["loss"])
        elapsed = time.perf_counter() - t0
        n_gen = int(sum(len(c.ids) for c in comps))
        scorable = ~np.isnan(total)
        metrics = {
            **metrics,
            **means,
            "reward": nanmean(total),
            "reward_std": float(np.nanstd(total, ddof=1)) if scorable.sum() > 1 else 0.0,
            "completion_len": n_gen / len(comps),
            "completions_clipped": float(np.mean([c.reason == "length" for c in comps])),
            "rollout_tokens_per_s": n_gen / max(t_gen, 1e-9),
            "generate_share": t_gen / max(elapsed, 1e-9),
        }
        return state, metrics

    def _global(self, rows: dict) -> dict:
        n = len(next(iter(rows.values())))
        lo, hi = process_rows(self.mesh, n)
        return global_batch(self.mesh, {k: v[lo:hi] for k, v in rows.items()}, n)

    def _grpo(self, state, step, rows, total, comps):
        o, g = self.cfg.objective, self.cfg.objective.rollout.num_generations
        scorable = ~np.isnan(total)
        adv = np.asarray(group_advantages(np.nan_to_num(total), g, o.scale_rewards))
        rows["advantages"] = np.where(scorable, adv, 0.0).astype(np.float32)  # unscorable: teaches nothing (TRL)
        batch = self._global(rows)
        if o.num_iterations > 1:
            batch["old_logps"] = self._logps(state["params"], batch)
        if o.beta:
            batch["ref_token_logps"] = self._ref_logps(self._reference(state), batch)
        for _ in range(o.num_iterations):
            state, metrics = self.train_step(state, batch)
        groups = np.nan_to_num(total).reshape(-1, g)
        return state, {**metrics, "frac_reward_zero_std": float(np.mean(groups.std(axis=1) == 0))}

    def _ppo_arrays(self, params, ref_params, batch, scores):
        """At the rollout: old log-probs and values, per-token rewards, GAE advantages (whitened) and returns."""
        o, model = self.cfg.objective, self.cfg.model
        inputs = (batch["tokens"], batch["segment_ids"], batch["positions"])
        logits, values = forward_with_values(params, model, *inputs)
        logp, mask = rl_token_logps(logits, batch, o)
        ref_model = reference_config(model)
        ref_logp = rl_token_logps(forward(ref_params, ref_model, *inputs), batch, o)[0]
        est = kl_estimator_of(o)
        rewards, non_score = ppo_rewards(scores, logp, ref_logp, mask, kl_coef=o.kl_coef, kl_estimator=est)
        if o.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
        values = values[:, :-1] * mask
        adv, returns = gae(rewards, values, o.gamma, o.lam)
        adv = masked_whiten(adv, mask) * mask
        kl = (kl_estimate(logp, ref_logp, est) * mask).sum(-1)
        arrays = {"old_logps": logp, "old_values": values, "advantages": adv, "returns": returns}
        return arrays, {"kl": kl.mean(), "non_score_reward": non_score.sum(-1).mean()}

    def _ppo(self, state, step, rows, total, comps):
        o = self.cfg.objective
        scores = np.nan_to_num(total).astype(np.float32)  # a completion no reward could score gets 0
        if o.missing_eos_penalty is not None:
            scores -= np.float32(o.missing_eos_penalty) * np.array([c.reason == "length" for c in comps])
        batch = self._global(rows)
        arrays, stats = self._ppo_rollout(state["params"], self._reference(state), batch, jnp.asarray(scores))
        host = {**rows, **{k: np.asarray(v) for k, v in arrays.items()}}  # rollout data, not weights
        n, per = self.rows, self.rows // o.num_mini_batches
        rng = np.random.default_rng([self.cfg.train.seed, step])  # the shuffles are a function of the step too
        for _ in range(o.ppo_epochs):
            order = rng.permutation(n)
            for m in range(o.num_mini_batches):
                pick = np.sort(order[m * per : (m + 1) * per])
                state, metrics = self.train_step(state, self._global({k: v[pick] for k, v in host.items()}))
        return state, {**metrics, **{k: float(v) for k, v in stats.items()}}

    def dev_reward(self, state) -> dict:
        """On the held-out prompts: dev_reward and dev_rewards/<name> of greedy completions, and
        dev_reward_sampled of one completion each sampled as the rollouts are (the policy's expected reward)."""
        greedy, means = self._dev_scores(state, greedy=True)
        sampled, _ = self._dev_scores(state, greedy=False)
        return {"dev_reward": greedy, **{f"dev_{k}": v for k, v in means.items()}, "dev_reward_sampled": sampled}

    def _dev_scores(self, state, greedy: bool) -> tuple[float, dict]:
        cfg, r = self.cfg, self.cfg.objective.rollout
        texts = []
        ids = self.stream.dev_ids
        for n, start in enumerate(range(0, len(ids), self.rows)):
            chunk = ids[start : start + self.rows]
            key = dev_key(cfg.train.seed, n)  # every evaluation draws the same noise
            out, lengths = sample(cfg.model, state["params"], chunk, self.rows, key, self.eos, r, greedy=greedy)
            texts += [cut(out[i, : lengths[i]].tolist(), self.eos, self.tok, r.stop).text for i in range(len(chunk))]
        total, means = score(cfg, self.stream.dev_records, self.stream.dev_texts, texts)
        return nanmean(total), means


def setup_rl(cfg: Config, stream: PromptStream, tokenizer, mesh, params, out, eos: tuple[int, ...]):
    """(Loop (restored when a checkpoint exists), checkpointer, restored?, RLStep). The learning-rate schedule
    counts optimizer updates: train.steps x the updates per step."""
    t, o = cfg.train, cfg.objective
    updates = t.steps * updates_per_step(cfg)
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
        loop.step = int(loop.meta.get("step", int(loop.state["step"]) // updates_per_step(cfg)))
        if is_main():
            print(f"resumed from {out / 'checkpoints' / str(loop.step)}", flush=True)
    t0 = time.time()
    step_fn = make_train_step(cfg.model, o, optimizer, schedule, t.micro_batches)
    train_step = compile_train_step(step_fn, mesh, loop.state, update_rows(cfg), cfg.data.seq_len,
                                    extra=extra_spec(cfg))  # fmt: skip
    if is_main():
        print(f"compiled the {o.type.upper()} update in {time.time() - t0:.1f} s", flush=True)
    return loop, ckpt, restored is not None, RLStep(cfg, stream, tokenizer, mesh, train_step, eos)
