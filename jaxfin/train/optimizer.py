"""AdamW with warm-up + cosine/linear decay and global-norm clipping; no weight decay on norms or biases."""

from __future__ import annotations

import jax
import optax

from jaxfin.config.schema import OptimizerConfig


def warmup_steps(cfg: OptimizerConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps >= 0 else int(round(cfg.warmup_ratio * total_steps))


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    warm = warmup_steps(cfg, total_steps)
    end = cfg.lr * cfg.min_lr_ratio
    decay_steps = max(total_steps - warm, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.min_lr_ratio)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(cfg.lr, end, decay_steps)
    else:
        decay = optax.constant_schedule(cfg.lr)
    if warm == 0:
        return decay
    # Step 0 gets lr/warm, not 0: a zero-lr first step would waste a batch.
    return optax.join_schedules([optax.linear_schedule(cfg.lr / warm, cfg.lr, warm - 1), decay], [warm])


def decay_mask(params):
    """True for weights that get weight decay: everything but norm scales and biases."""
    return jax.tree.map_with_path(lambda path, _: path[-1].key not in ("scale", "bias"), params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int, selection: dict | None = None):
    """Clipping + AdamW over the params. `selection` (jaxfin/train/trainable.py `selection`): only those params /
    layers are optimised; the rest get no optimizer state and zero updates (None = everything, as a plain chain)."""
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(
        optax.adamw(
            make_schedule(cfg, total_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    opt = optax.chain(*parts)
    if selection is None:
        return opt
    from jaxfin.train.trainable import select_trainable

    return select_trainable(opt, selection)
