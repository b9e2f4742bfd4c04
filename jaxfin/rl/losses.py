"""The RL losses as pure functions of per-token arrays: GRPO (TRL's `loss_type`s), PPO's clipped policy and value
losses, GAE, whitening and the KL estimators. Proven equal to TRL's own code in tests/test_rl_losses.py.

Every per-token array is [B, T] over the completion tokens (T = the row's targets, aligned as
`jaxfin.model.loss.token_logps`: entry t is the log-prob of token t+1); `mask` is 1 on the completion tokens that
count (EOS included) and 0 on prompt and padding. Loss functions return what the trainer's objectives return —
(loss sum, count, {metric: sum}) — so that gradient accumulation adds them over micro-batches and divides once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfin.config.choices import KL_ESTIMATORS, SCALE_REWARDS
from jaxfin.config.choices import RL_LOSS_TYPES as LOSS_TYPES


def kl_estimator_of(objective) -> str:
    """objective.kl_estimator, or TRL's default for the objective: k3 for GRPO, k1 for PPO."""
    return objective.kl_estimator or ("k1" if objective.type == "ppo" else "k3")


def kl_estimate(logp, ref_logp, estimator: str = "k3"):
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman, "Approximating KL
    divergence"): k1 = log p - log q (unbiased, noisy, can be negative), k3 = (q/p - 1) - log(q/p) (unbiased,
    always >= 0), with p the policy and q the reference. TRL's GRPO uses k3; its PPO either."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return jnp.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator '{estimator}' (use one of: {', '.join(KL_ESTIMATORS)})")


def group_advantages(rewards, num_generations: int, scale: str = "group", eps: float = 1e-4):
    """GRPO's advantages [N] for rewards [N] of N/G prompts x G completions (a prompt's completions adjacent):
    reward minus its group's mean, divided by the group's (or the whole batch's) sample std + eps, or not divided
    (`none`, Dr. GRPO). As TRL: Bessel-corrected std, eps 1e-4."""
    if scale not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards '{scale}' (use one of: {', '.join(SCALE_REWARDS)})")
    groups = rewards.reshape(-1, num_generations)
    adv = (groups - groups.mean(axis=1, keepdims=True)).reshape(-1)
    if scale == "none":
        return adv
    std = groups.std(axis=1, ddof=1, keepdims=True) if scale == "group" else rewards.std(ddof=1)
    std = jnp.broadcast_to(std, groups.shape).reshape(-1)
    return adv / (std + eps)


def grpo_loss(logp, old_logp, advantages, mask, *, loss_type: str = "dapo", epsilon: float = 0.2,
              epsilon_high: float | None = None, beta: float = 0.0, ref_logp=None, kl_estimator: str = "k3",
              max_completion_length: int | None = None):  # fmt: skip
    """GRPO's clipped surrogate on one (micro-)batch of B completions: per token
    -min(r A, clip(r, 1 - eps, 1 + eps_high) A) + beta KL, r = exp(logp - old_logp), A = the completion's advantage
    [B], aggregated as TRL's `loss_type`:
        grpo     mean over completions of each one's token mean        (sum of those, count = B)
        bnpo     token mean of this micro-batch                        (that mean, count = 1: each micro-batch weighs
                                                                        the same, as TRL normalises per micro-batch)
        dr_grpo  token sum / (B x max_completion_length)               (sum / L, count = B)
        dapo     token mean over the whole global batch                (token sum, count = tokens)
    `old_logp` None: the rollout's own policy (one iteration per rollout batch), so r = 1 with its gradient.
    Returns (loss sum, count, metric sums weighted like the loss: kl, clip_frac, clip_low, clip_high)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown GRPO loss_type '{loss_type}' (use one of: {', '.join(LOSS_TYPES)})")
    eps_low, eps_high = epsilon, epsilon if epsilon_high is None else epsilon_high
    mask = mask.astype(logp.dtype)
    old_logp = jax.lax.stop_gradient(logp) if old_logp is None else old_logp
    adv = advantages[:, None]
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    kl = None
    if beta:
        kl = kl_estimate(logp, ref_logp, kl_estimator)
        per_token = per_token + beta * kl
    rows, tokens = jnp.asarray(mask.shape[0], logp.dtype), mask.sum()
    if loss_type == "grpo":
        loss, count = ((per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)).sum(), rows
    elif loss_type == "bnpo":
        loss, count = (per_token * mask).sum() / jnp.maximum(tokens, 1.0), jnp.ones((), logp.dtype)
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type dr_grpo needs max_completion_length (the constant it divides by)")
        loss, count = (per_token * mask).sum() / max_completion_length, rows
    else:
        loss, count = (per_token * mask).sum(), tokens
    low = (ratio < 1 - eps_low) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)
    token_mean = lambda x: (x * mask).sum() / jnp.maximum(tokens, 1.0) * count  # noqa: E731 (weighted like loss)
    metrics = {"clip_frac": token_mean(low | high), "clip_low": token_mean(low), "clip_high": token_mean(high)}
    if kl is not None:
        metrics["kl"] = token_mean(kl)
    return loss, count, metrics


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def masked_whiten(x, mask, shift_mean: bool = True):
    """(x - mean) / sqrt(var + 1e-8) over the masked entries, var Bessel-corrected (TRL's `masked_whiten`);
    `shift_mean=False` adds the mean back (reward whitening)."""
    mask = mask.astype(x.dtype)
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean(jnp.square(x - mean), mask) * n / (n - 1)
    out = (x - mean) * jax.lax.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards, values, gamma: float = 1.0, lam: float = 0.95):
    """(advantages, returns) [B, T] by generalised advantage estimation: delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lam A_{t+1}, V_T = 0 past the end; returns = A + V. Positions past a completion's end
    must hold reward 0 and value 0 (they then add nothing to earlier positions), as TRL's PPO masks them."""
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = rewards + gamma * next_values - values

    def back(carry, delta):
        carry = delta + gamma * lam * carry
        return carry, carry

    _, adv = jax.lax.scan(back, jnp.zeros_like(deltas[:, 0]), deltas.T, reverse=True)
    adv = adv.T
    return adv, adv + values


def ppo_rewards(scores, logp, ref_logp, mask, *, kl_coef: float = 0.05, kl_estimator: str = "k1"):
    """Per-token rewards [B, T] of PPO: -kl_coef x KL estimate on every completion token, plus the sequence score
    [B] on its last completion token (the EOS when it has one). TRL adds the score one position past the last
    token instead (`sequence_lengths_p1`), where the policy emitted nothing; here it lands on the action that
    earned it, so with gamma = 1 every token's return is the same score minus the KL still to come."""
    mask = mask.astype(logp.dtype)
    non_score = -kl_coef * kl_estimate(logp, ref_logp, kl_estimator) * mask
    idx = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(mask > 0, idx, -1), axis=1)
    return non_score + scores[:, None] * (idx[None] == last[:, None]), non_score


def ppo_loss(logp, old_logp, advantages, values, old_values, returns, mask, *, cliprange: float = 0.2,
             cliprange_value: float = 0.2, vf_coef: float = 0.1):  # fmt: skip
    """PPO's clipped policy loss plus vf_coef x the clipped value loss on one (micro-)batch, token means over
    `mask` as TRL's PPO (pg: masked mean of max(-A r, -A clip(r)); vf: 0.5 x masked mean of
    max((V - R)^2, (clip(V, V_old +- c) - R)^2)). Returns (loss, count = 1, metric sums: pg_loss, vf_loss,
    clip_frac, vf_clip_frac, approx_kl): one weight per micro-batch, as TRL averages per micro-batch."""
    mask = mask.astype(logp.dtype)
    ratio = jnp.exp(logp - old_logp)
    pg1, pg2 = -advantages * ratio, -advantages * jnp.clip(ratio, 1 - cliprange, 1 + cliprange)
    pg_loss = masked_mean(jnp.maximum(pg1, pg2), mask)
    v_clipped = jnp.clip(values, old_values - cliprange_value, old_values + cliprange_value)
    vf1, vf2 = jnp.square(values - returns), jnp.square(v_clipped - returns)
    vf_loss = 0.5 * masked_mean(jnp.maximum(vf1, vf2), mask)
    loss = pg_loss + vf_coef * vf_loss
    metrics = {"pg_loss": pg_loss, "vf_loss": vf_loss, "clip_frac": masked_mean(pg2 > pg1, mask),
               "vf_clip_frac": masked_mean(vf2 > vf1, mask),
               "approx_kl": 0.5 * masked_mean(jnp.square(logp - old_logp), mask)}  # fmt: skip
    return loss, jnp.ones((), logp.dtype), metrics
