"""Preference objectives on packed pair rows: the DPO family and a Bradley-Terry reward model.

Layout (jaxfin.data.binpack.gather_pair_row): pair k of a row is segments 2k+1 (prompt + chosen) and 2k+2
(prompt + rejected); positions restart in each; loss_mask marks the completion tokens (and their EOS). A row of
S tokens holds at most P = S // 2 pairs, so every per-pair array here is [B, P] (static shapes); slots without a
pair are `valid == False` and count for nothing.

Everything returns *sums* over valid pairs plus the pair count, so the trainer divides once over the whole
global batch (all gradient-accumulation micro-batches), as for the next-token loss.

Loss semantics follow TRL's `DPOTrainer.dpo_loss` (Δ = (π_c − ref_c) − (π_r − ref_r), log-probs summed over
the completion tokens):
    sigmoid   −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)                 (ε = label_smoothing: conservative DPO)
    robust    ((1−ε)·(−logσ(βΔ)) + ε·logσ(−βΔ)) / (1−2ε)     (Chowdhury et al. 2024)
    hinge     relu(1 − βΔ)                                   (SLiC)
    ipo       (Δ − 1/(2β))²  with length-averaged log-probs (policy and reference)
reference None = reference-free (ref log-probs 0). nll_weight α adds α·(−π_c / |chosen|) per pair (the NLL of
the chosen completion, normalised per pair by its length: FinDAP / RPO-style). Reward metrics follow TRL:
rewards = β·(π − ref) (on the length-averaged log-probs for ipo, as TRL computes them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfin.config.choices import DPO_LOSSES
from jaxfin.model.batch import Batch
from jaxfin.model.loss import token_logps


def segment_sums(values, segment_ids, num_segments: int):
    """[B, S] values summed per segment id of the same row -> [B, num_segments] (ids >= num_segments dropped)."""
    return jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, num_segments))(values, segment_ids)


def num_pairs(seq_len: int) -> int:
    """Most pairs a row of seq_len tokens can hold (each pair is two segments of >= 1 token)."""
    return seq_len // 2


def _split_pairs(per_segment, p: int):
    """[B, S+1] per-segment values -> (chosen [B, P], rejected [B, P]): segments 2k+1 and 2k+2."""
    return per_segment[:, 1 : 2 * p : 2], per_segment[:, 2 : 2 * p + 1 : 2]


def pair_logps(logits, batch: Batch) -> dict:
    """Per-pair completion log-probs of packed pair rows, each [B, P] with P = S // 2:
    chosen_logps / rejected_logps (sums over the completion's target tokens), chosen_len / rejected_len (target
    counts, float32) and valid (bool: both sides have targets). A function of the row alone, so a reference
    model's values can be computed once per row and cached."""
    s = batch["tokens"].shape[1]
    p = num_pairs(s)
    logp, w = token_logps(logits, batch)
    seg = batch["segment_ids"][:, :-1]  # a target's segment = its predecessor's (equal where w > 0)
    sums = segment_sums(jnp.where(w > 0, logp, 0.0), seg, s + 1)
    counts = segment_sums(w, seg, s + 1)
    chosen, rejected = _split_pairs(sums, p)
    chosen_len, rejected_len = _split_pairs(counts, p)
    return {
        "chosen_logps": chosen,
        "rejected_logps": rejected,
        "chosen_len": chosen_len,
        "rejected_len": rejected_len,
        "valid": (chosen_len > 0) & (rejected_len > 0),
    }


def dpo_beta(cfg) -> float:
    """objective.beta, or DPO's default 0.1 when unset (a config not yet through validation)."""
    return 0.1 if cfg.beta is None else float(cfg.beta)


def _check(cfg) -> None:
    if cfg.loss not in DPO_LOSSES:
        raise ValueError(f"objective.loss must be one of {DPO_LOSSES}, got '{cfg.loss}'")
    if dpo_beta(cfg) <= 0:
        raise ValueError(f"objective.beta must be > 0, got {cfg.beta}")
    if not 0 <= cfg.label_smoothing < 0.5:
        raise ValueError(f"objective.label_smoothing must be in [0, 0.5), got {cfg.label_smoothing}")


def dpo_loss(policy: dict, reference: dict | None, cfg):
    """(loss sum, number of valid pairs, {metric: sum over valid pairs}) for one (micro-)batch.

    `policy`: pair_logps of the trained model; `reference`: a dict with chosen_logps / rejected_logps ([B, P],
    *sums* over the completion, e.g. pair_logps of the reference model or a precomputed table), or None for
    reference-free. `cfg`: ObjectiveConfig (loss, beta, label_smoothing, nll_weight). Metrics: rewards/chosen,
    rewards/rejected, rewards/accuracy, rewards/margin, logps/chosen, logps/rejected, nll; divide by the count.
    """
    _check(cfg)
    beta, eps = dpo_beta(cfg), float(cfg.label_smoothing)
    valid = policy["valid"]
    lc = jnp.maximum(policy["chosen_len"], 1.0)  # safe denominators: invalid slots are masked below
    lr = jnp.maximum(policy["rejected_len"], 1.0)
    pc, pr = policy["chosen_logps"], policy["rejected_logps"]
    if reference is None:
        rc, rr = jnp.zeros_like(pc), jnp.zeros_like(pr)
    else:
        rc, rr = reference["chosen_logps"].astype(jnp.float32), reference["rejected_logps"].astype(jnp.float32)
    if cfg.loss == "ipo":  # IPO compares length-averaged log-probs
        pc, pr, rc, rr = pc / lc, pr / lr, rc / lc, rr / lr
    chosen_ratio, rejected_ratio = pc - rc, pr - rr
    delta = chosen_ratio - rejected_ratio
    z = beta * delta
    if cfg.loss == "sigmoid":
        losses = -(1 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)
    elif cfg.loss == "robust":
        losses = (-(1 - eps) * jax.nn.log_sigmoid(z) + eps * jax.nn.log_sigmoid(-z)) / (1 - 2 * eps)
    elif cfg.loss == "hinge":
        losses = jax.nn.relu(1 - z)
    else:  # ipo
        losses = (delta - 1 / (2 * beta)) ** 2
    nll = -policy["chosen_logps"] / lc
    if cfg.nll_weight:
        losses = losses + float(cfg.nll_weight) * nll
    reward_c = jax.lax.stop_gradient(beta * chosen_ratio)
    reward_r = jax.lax.stop_gradient(beta * rejected_ratio)

    def total(x):
        return jnp.sum(jnp.where(valid, x, 0.0))

    metrics = {
        "rewards/chosen": total(reward_c),
        "rewards/rejected": total(reward_r),
        "rewards/accuracy": total((reward_c > reward_r).astype(jnp.float32)),
        "rewards/margin": total(reward_c - reward_r),
        "logps/chosen": total(jax.lax.stop_gradient(policy["chosen_logps"])),
        "logps/rejected": total(jax.lax.stop_gradient(policy["rejected_logps"])),
        "nll": total(jax.lax.stop_gradient(nll)),
    }
    return total(losses), jnp.sum(valid.astype(jnp.float32)), metrics


def segment_last_tokens(batch: Batch):
    """[B, S] bool: the last token of each non-padding segment."""
    seg = batch["segment_ids"]
    nxt = jnp.concatenate([seg[:, 1:], jnp.zeros_like(seg[:, :1])], axis=1)
    return (seg != 0) & (nxt != seg)


def reward_scores_at_last_token(scores, batch: Batch):
    """Reward-model scores [B, S] (one per position) -> (chosen [B, P], rejected [B, P], valid [B, P] bool):
    each sequence's score at its last token (its EOS, unless the pair was truncated), as transformers'
    *ForSequenceClassification reads it."""
    s = batch["segment_ids"].shape[1]
    p = num_pairs(s)
    last = segment_last_tokens(batch)
    sums = segment_sums(jnp.where(last, scores.astype(jnp.float32), 0.0), batch["segment_ids"], s + 1)
    present = segment_sums(last.astype(jnp.float32), batch["segment_ids"], s + 1)
    chosen, rejected = _split_pairs(sums, p)
    has_c, has_r = _split_pairs(present, p)
    return chosen, rejected, (has_c > 0) & (has_r > 0)


def reward_loss(chosen, rejected, valid):
    """Pairwise Bradley-Terry: (sum of −logσ(s_c − s_r) over valid pairs, their count, {metric: sum}) with
    rewards/chosen, rewards/rejected, rewards/accuracy (s_c > s_r) and rewards/margin (s_c − s_r)."""
    margin = chosen - rejected

    def total(x):
        return jnp.sum(jnp.where(valid, x, 0.0))

    sg = jax.lax.stop_gradient
    metrics = {
        "rewards/chosen": total(sg(chosen)),
        "rewards/rejected": total(sg(rejected)),
        "rewards/accuracy": total((margin > 0).astype(jnp.float32)),
        "rewards/margin": total(sg(margin)),
    }
    return total(-jax.nn.log_sigmoid(margin)), jnp.sum(valid.astype(jnp.float32)), metrics
