"""The batch: the one layout every objective, the loader, evaluation and the compiled steps share.

Rows are packed: several documents (or, for the preference objectives, the chosen and rejected completion of
each pair, as segments 2k+1 and 2k+2) side by side in one row of S tokens, padded at the end. Attention never
crosses a segment boundary and no target is predicted across one. The data pipeline writes these rows
(jaxfin/data/binpack.py), the loader stacks them into batches (jaxfin/data/loader.py), the model and the losses
read them. Here is the only place the fields are named.
"""

# No `from __future__ import annotations` here: TypedDict needs the NotRequired markers evaluated.
from typing import Any, NotRequired, TypedDict

import numpy as np

Array = Any  # numpy on the host, jax.Array on the devices (the same shapes and dtypes)


class Batch(TypedDict):
    """A packed batch of B rows of S tokens; every field [B, S] int32 unless said otherwise."""

    tokens: Array  # token ids; 0 on padding
    segment_ids: Array  # 1, 2, ... per packed document (or pair side) of the row; 0 = padding
    positions: Array  # position inside its own segment (0 at each segment's first token), for RoPE
    loss_mask: Array  # 1 where the token is a training target (every token for text; assistant / completion
    #                   tokens for chat and pairs); the token at t+1 is predicted at t when both are in one segment
    ref_logps: NotRequired[Array]  # [B, 2, P] float32: DPO's precomputed reference log-probs (chosen, rejected)
    #                                per pair slot of the row (objective.reference: precomputed; train/reference.py)
    source: NotRequired[Array]  # [B] int32: the data source of each row (the loader's, popped before the step)


# The fields every batch has, in the order above (a data source's row has exactly these).
BATCH_KEYS: tuple[str, ...] = tuple(k for k in Batch.__annotations__ if k in Batch.__required_keys__)
BATCH_DTYPE = np.int32
