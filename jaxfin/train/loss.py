"""Next-token loss on packed rows: a target counts only inside its own document and where loss_mask is set."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def target_weights(batch) -> jnp.ndarray:
    """[B, S-1] weights for predicting token t+1 at position t: same non-pad segment and a training target."""
    seg = batch["segment_ids"]
    same_doc = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    return (same_doc & (batch["loss_mask"][:, 1:] != 0)).astype(jnp.float32)


def next_token_loss_sum(logits, batch):
    """(sum of token losses, number of target tokens); divide once over the whole global batch."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    targets = batch["tokens"][:, 1:]
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    w = target_weights(batch)
    return jnp.sum(nll * w), jnp.sum(w)
