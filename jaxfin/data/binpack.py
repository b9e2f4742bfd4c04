"""Plan rows from document lengths (first-fit or best-fit), then gather them from a token cache.

Planning looks only at lengths, so it is cheap and can run ahead of training; a row plan is a list of
(doc, start, stop) pieces. Documents longer than a row are split into row-sized pieces, each its own segment
starting at position 0 (so no label or attention ever crosses a document or a row). Within a window of
`window` pieces (in stream order), pieces are placed largest first into the open row that fits them:
`first_fit` takes the oldest such row, `best_fit` the one with the least room left. A bigger window packs
tighter and reorders documents more.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

import numpy as np

Piece = tuple[int, int, int]  # (document index, start, stop) in tokens


def split_pieces(lengths: Iterable[int], seq_len: int, order: Iterable[int] | None = None) -> Iterator[Piece]:
    """Documents (in `order`) cut into pieces of at most seq_len tokens; 1-token tails have no target: dropped."""
    lengths = np.asarray(lengths)
    for d in range(len(lengths)) if order is None else order:
        n = int(lengths[d])
        for start in range(0, n, seq_len):
            stop = min(start + seq_len, n)
            if stop - start >= 2:
                yield int(d), start, stop


def _place(pieces: list[Piece], seq_len: int, method: str) -> list[list[Piece]]:
    rows: list[list[Piece]] = []
    room: list[int] = []  # per row
    by_room: list[tuple[int, int]] = []  # (room, row) sorted, for best-fit
    for p in sorted(pieces, key=lambda p: p[1] - p[2]):  # longest first
        n = p[2] - p[1]
        if method == "best_fit":
            i = bisect.bisect_left(by_room, (n, -1))
            if i < len(by_room):
                r_room, r = by_room.pop(i)
                rows[r].append(p)
                room[r] = r_room - n
                bisect.insort(by_room, (room[r], r))
                continue
        else:
            r = next((i for i, left in enumerate(room) if left >= n), None)
            if r is not None:
                rows[r].append(p)
                room[r] -= n
                continue
        rows.append([p])
        room.append(seq_len - n)
        if method == "best_fit":
            bisect.insort(by_room, (seq_len - n, len(rows) - 1))
    return rows


def plan_rows(pieces: Iterable[Piece], seq_len: int, method: str = "best_fit", window: int = 1000):
    """Yield row plans (lists of pieces), packing each window of pieces independently."""
    if method not in ("first_fit", "best_fit"):
        raise ValueError(f"packing method must be first_fit or best_fit, got '{method}'")
    buf: list[Piece] = []
    for p in pieces:
        buf.append(p)
        if len(buf) == window:
            yield from _place(buf, seq_len, method)
            buf = []
    if buf:
        yield from _place(buf, seq_len, method)


def gather_row(plan: list[Piece], cache, seq_len: int) -> dict[str, np.ndarray]:
    """One packed row in the batch layout (tokens, segment_ids, positions, loss_mask), padded to seq_len."""
    sizes = np.fromiter((stop - start for _, start, stop in plan), np.int64, len(plan))
    used = int(sizes.sum())
    tokens = np.zeros(seq_len, np.int32)
    tokens[:used] = np.concatenate([cache.doc(d)[start:stop] for d, start, stop in plan])
    segment_ids = np.zeros(seq_len, np.int32)
    segment_ids[:used] = np.repeat(np.arange(1, len(plan) + 1, dtype=np.int32), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    positions = np.zeros(seq_len, np.int32)
    positions[:used] = np.arange(used) - starts
    loss_mask = (segment_ids != 0).astype(np.int32)
    if cache.mask is not None:  # chat / pairs: only some tokens are targets
        loss_mask[:used] = np.concatenate([cache.loss_mask(d)[start:stop] for d, start, stop in plan])
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions, "loss_mask": loss_mask}


def efficiency(plans: list[list[Piece]], seq_len: int) -> float:
    """Non-pad fraction of the rows."""
    used = sum(stop - start for plan in plans for _, start, stop in plan)
    return used / max(len(plans) * seq_len, 1)
