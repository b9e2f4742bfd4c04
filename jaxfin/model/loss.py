"""Next-token loss on packed rows: a target counts only inside its own document and where loss_mask is set. A
function of the model's logits, shared by training (train/step.py, train/preference.py) and eval (eval/text.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfin.model.batch import Batch


def target_weights(batch: Batch) -> jnp.ndarray:
    """[B, S-1] weights for predicting token t+1 at position t: same non-pad segment and a training target."""
    seg = batch["segment_ids"]
    same_doc = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    return (same_doc & (batch["loss_mask"][:, 1:] != 0)).astype(jnp.float32)


def token_logps(logits, batch: Batch):
    """(log-prob of each next token [B, S-1], its target weight [B, S-1]): position t predicts token t+1. The
    log-softmax is taken only at the target (logit - logsumexp), never materialised over the vocabulary."""
    logits = logits[:, :-1].astype(jnp.float32)
    picked = jnp.take_along_axis(logits, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1), target_weights(batch)


def next_token_loss_sum(logits, batch: Batch):
    """(sum of token losses, number of target tokens); divide once over the whole global batch."""
    logp, w = token_logps(logits, batch)
    return -jnp.sum(logp * w), jnp.sum(w)
