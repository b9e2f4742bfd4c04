"""Jitted train and eval steps for every objective. An objective returns sums (loss, the count it is normalised
by, metric sums); gradient accumulation adds them over micro-batches and divides once, so the loss is the mean
over the whole global batch: per target token for next-token training, per pair for the preference objectives.

    next_token   CPT / SFT / joint: next-token cross-entropy on loss_mask tokens (jaxfin/model/loss.py)
    dpo          DPO family on packed pairs, reference log-probs from `ref_params` (a frozen copy of the initial
                 params), from the batch (`ref_logps`, precomputed in one pass), or none (reference-free)
    reward       Bradley-Terry reward model: score head at each sequence's last token
    grpo         GRPO's clipped surrogate on rollout rows (jaxfin/rl/): advantages [B] and, when needed, the
                 rollout's log-probs (`old_logps`) and the reference's (`ref_token_logps`) [B, S-1] in the batch
    ppo          PPO's clipped policy and value losses on rollout rows: old_logps, old_values, advantages and
                 returns [B, S-1] in the batch; values from the policy's value head

A mixture of experts adds its router loss (load balancing + z-loss, jaxfin/model/moe.py) to what training
minimises, per counted unit (`moe/router_loss`); the logged `loss` and the dev losses are the objective's alone.
The balance term E*sum(f*p) is not a sum over tokens, so with micro-batches each micro-batch is balanced on its own
(as in HF and MaxText): micro_batches changes an MoE's trajectory slightly, where it leaves a dense model's alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxfin.config.schema import ModelConfig, ObjectiveConfig
from jaxfin.model import forward, forward_with_values, scores
from jaxfin.model.batch import Batch
from jaxfin.model.loss import next_token_loss_sum, token_logps
from jaxfin.model.moe import router_loss, router_metrics
from jaxfin.model.params import param_axes
from jaxfin.parallel.rules import constrain_params
from jaxfin.rl.losses import grpo_loss, kl_estimator_of, ppo_loss
from jaxfin.train import preference
from jaxfin.train.trainable import apply_part_updates, trainable_part, with_trainable

COUNTED = {"next_token": "target_tokens", "dpo": "pairs", "reward": "pairs"}  # what a step's loss count counts


def _model_inputs(batch: Batch):
    return batch["tokens"], batch["segment_ids"], batch["positions"]


def reference_logps(params, model: ModelConfig, batch: Batch) -> dict:
    """The reference model's per-pair log-probs for a batch of packed pairs (no gradient)."""
    logits = forward(jax.lax.stop_gradient(params), model, *_model_inputs(batch))
    return jax.lax.stop_gradient(preference.pair_logps(logits, batch))


def _reference(model: ModelConfig, objective: ObjectiveConfig, batch: Batch, ref_params) -> dict | None:
    """Where DPO's reference log-probs come from (see ObjectiveConfig.reference)."""
    if objective.reference == "none":
        return None
    if objective.reference == "precomputed":
        p = batch["ref_logps"].shape[-1]  # [B, 2, P_cached]: pairs a row can hold are padded with zeros
        return {"chosen_logps": batch["ref_logps"][:, 0], "rejected_logps": batch["ref_logps"][:, 1], "pairs": p}
    return reference_logps(ref_params, model, batch)


def objective_sums(params, model: ModelConfig, objective: ObjectiveConfig, batch: Batch, ref_params=None,
                   dropout_rng=None):  # fmt: skip
    """(loss sum, normaliser count, {metric: sum}) of one (micro-)batch. `dropout_rng`: LoRA dropout (training).
    A mixture of experts' router metrics come as sums too (value x count), `moe/router_loss` among them."""
    kind = objective.type
    inputs = _model_inputs(batch)
    if kind == "reward":
        s = scores(params, model, *inputs, dropout_rng=dropout_rng)[..., 0]
        return preference.reward_loss(*preference.reward_scores_at_last_token(s, batch))
    if kind == "ppo":
        return _ppo_sums(params, model, objective, batch, dropout_rng)
    logits, stats = forward(params, model, *inputs, dropout_rng=dropout_rng, router_stats=True)
    if kind == "next_token":
        loss, count = next_token_loss_sum(logits, batch)
        metrics = {}
    elif kind == "grpo":
        logp, mask = rl_token_logps(logits, batch, objective)
        loss, count, metrics = grpo_loss(
            logp, batch.get("old_logps"), batch["advantages"], mask, loss_type=objective.loss_type,
            epsilon=objective.epsilon, epsilon_high=objective.epsilon_high, beta=objective.beta or 0.0,
            ref_logp=batch.get("ref_token_logps"), kl_estimator=kl_estimator_of(objective),
            max_completion_length=objective.rollout.max_new_tokens,
        )  # fmt: skip
    elif kind == "dpo":
        policy = preference.pair_logps(logits, batch)
        ref = _reference(model, objective, batch, ref_params)
        if ref is not None and "pairs" in ref:  # precomputed: only the first P_cached pairs of a row can exist
            p = ref.pop("pairs")
            policy = {k: v[:, :p] for k, v in policy.items()}
        loss, count, metrics = preference.dpo_loss(policy, ref, objective)
    else:
        raise ValueError(f"unknown objective '{kind}'")
    if stats:  # per-batch means, weighted by the count so that accumulation and the final division average them
        moe = {"moe/router_loss": router_loss(model, stats), **router_metrics(stats)}
        metrics = {**metrics, **{k: v * count for k, v in moe.items()}}
    return loss, count, metrics


def rl_token_logps(logits, batch: Batch, objective: ObjectiveConfig):
    """(log-probs [B, S-1], target weights) under the sampling distribution: logits / rollout.temperature, as TRL's
    GRPO and PPO compute them (the ratio and the KL are then of the policy that sampled)."""
    t = objective.rollout.temperature
    return token_logps(logits / t if t > 0 else logits, batch)


def _ppo_sums(params, model: ModelConfig, objective: ObjectiveConfig, batch: Batch, dropout_rng):
    """PPO's clipped policy + value loss on rollout rows carrying old_logps, old_values, advantages and returns
    [B, S-1] (jaxfin/train/rl.py); the value head reads the same decoder pass as the LM head."""
    logits, values = forward_with_values(params, model, *_model_inputs(batch), dropout_rng=dropout_rng)
    logp, mask = rl_token_logps(logits, batch, objective)
    return ppo_loss(logp, batch["old_logps"], batch["advantages"], values[:, :-1] * mask, batch["old_values"],
                    batch["returns"], mask, cliprange=objective.epsilon, cliprange_value=objective.cliprange_value,
                    vf_coef=objective.vf_coef)  # fmt: skip


def make_train_step(model: ModelConfig, objective: ObjectiveConfig, optimizer, schedule, micro_batches: int = 1):
    """The train step for `optimizer` from make_optimizer, over a global batch split into `micro_batches`
    (train.micro_batches). With a trainable selection (partial training, LoRA) the gradients, accumulation buffers
    and optimizer update cover only the trained values: frozen weights are constants to XLA."""
    axes = param_axes(model)  # gradients laid out like the params
    sel = getattr(optimizer, "selection", None)
    inner = optimizer if sel is None else optimizer.inner
    dropout = model.lora.rank > 0 and model.lora.dropout > 0

    def sums(part, params, mb, ref_params, rng):
        full = part if sel is None else with_trainable(params, part, sel)
        loss, count, metrics = objective_sums(full, model, objective, mb, ref_params, rng)
        return loss + metrics.get("moe/router_loss", 0.0), (count, loss, metrics)

    grad_fn = jax.value_and_grad(sums, has_aux=True)

    def train_step(state, batch: Batch):
        params = state["params"]
        part = params if sel is None else trainable_part(params, sel)
        ref_params = state.get("ref_params")
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"]) if dropout else None
        # micro-batch m = rows m, m+M, m+2M, ...: every device keeps its own rows (no resharding between micro-batches)
        micro = jax.tree.map(lambda x: x.reshape(-1, micro_batches, *x.shape[1:]).swapaxes(0, 1), batch)

        def micro_step(m, mb):
            rng = None if key is None else jax.random.fold_in(key, m)
            (_, (n, loss, metrics)), g = grad_fn(part, params, mb, ref_params, rng)
            return constrain_params(jax.tree.map(lambda x: x.astype(jnp.float32), g), axes), loss, n, metrics

        totals = micro_step(0, jax.tree.map(lambda x: x[0], micro))
        if micro_batches > 1:  # the others added in a scan (a Python loop would compile M copies of the model)

            def accumulate(carry, xs):
                return jax.tree.map(jnp.add, carry, micro_step(*xs)), None

            rest = (jnp.arange(1, micro_batches), jax.tree.map(lambda x: x[1:], micro))
            totals, _ = jax.lax.scan(accumulate, totals, rest)
        grads, loss, count, msums = totals
        count = jnp.maximum(count, 1.0)
        grads = constrain_params(jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, part), axes)
        updates, opt_state = inner.update(grads, state["opt_state"], part)
        new_params = optax.apply_updates(params, updates) if sel is None else apply_part_updates(params, updates, sel)
        new_state = {**state, "params": new_params, "opt_state": opt_state, "step": state["step"] + 1}
        metrics = {
            "loss": loss / count,
            **{k: v / count for k, v in msums.items()},
            "grad_norm": optax.tree.norm(grads),  # of the trained values
            "lr": schedule(state["step"]),
            COUNTED.get(objective.type, "loss_count"): count,
            "tokens": jnp.sum(batch["segment_ids"] != 0),  # non-padding input tokens of the global batch
        }
        return new_state, metrics

    return train_step


def make_eval_step(model: ModelConfig, objective: ObjectiveConfig):
    """(loss sum, count, {metric: sum}) of a batch; the caller divides the totals."""

    def eval_step(params, batch: Batch, ref_params=None):
        return objective_sums(params, model, objective, batch, ref_params)

    return eval_step
