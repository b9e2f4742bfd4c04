"""Jitted train and eval steps. Gradient accumulation sums losses, gradients and target counts over
micro-batches and divides once, so the loss is the token mean over the whole global batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxfin.config.schema import ModelConfig
from jaxfin.model import forward
from jaxfin.parallel.rules import constrain_params
from jaxfin.train.loss import next_token_loss_sum


def _loss_sum(params, model_cfg: ModelConfig, batch):
    logits = forward(params, model_cfg, batch["tokens"], batch["segment_ids"], batch["positions"])
    return next_token_loss_sum(logits, batch)


def make_train_step(model_cfg: ModelConfig, optimizer, schedule, micro_batches: int):
    grad_fn = jax.value_and_grad(lambda p, b: _loss_sum(p, model_cfg, b), has_aux=True)

    def train_step(state, batch):
        params = state["params"]
        # micro-batch m = rows m, m+M, m+2M, ...: every device keeps its own rows (no resharding between micro-batches)
        micro = jax.tree.map(lambda x: x.reshape(-1, micro_batches, *x.shape[1:]).swapaxes(0, 1), batch)

        def accumulate(carry, mb):
            grads, loss, count = carry
            (mb_loss, n), g = grad_fn(params, mb)
            grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g)
            return (grads, loss + mb_loss, count + n), None

        zeros = constrain_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
        if micro_batches == 1:  # same result; skipping the scan roughly halves compile time on CPU
            (grads, loss, count), _ = accumulate((zeros, 0.0, 0.0), jax.tree.map(lambda x: x[0], micro))
        else:
            (grads, loss, count), _ = jax.lax.scan(accumulate, (zeros, 0.0, 0.0), micro)
        count = jnp.maximum(count, 1.0)
        grads = constrain_params(jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, params))
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        metrics = {
            "loss": loss / count,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
            "target_tokens": count,
            "tokens": jnp.sum(batch["segment_ids"] != 0),  # non-padding input tokens of the global batch
        }
        return new_state, metrics

    return train_step


def make_eval_step(model_cfg: ModelConfig):
    def eval_step(params, batch):
        return _loss_sum(params, model_cfg, batch)

    return eval_step
