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

from jaxfin.model.batch import BATCH_DTYPE, Batch

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


def gather_row(plan: list[Piece], cache, seq_len: int) -> Batch:
    """One packed row in the batch layout (jaxfin/model/batch.py; fields [S]), padded to seq_len."""
    sizes = np.fromiter((stop - start for _, start, stop in plan), np.int64, len(plan))
    used = int(sizes.sum())
    tokens = np.zeros(seq_len, BATCH_DTYPE)
    tokens[:used] = np.concatenate([cache.doc(d)[start:stop] for d, start, stop in plan])
    segment_ids = np.zeros(seq_len, BATCH_DTYPE)
    segment_ids[:used] = np.repeat(np.arange(1, len(plan) + 1, dtype=np.int32), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    positions = np.zeros(seq_len, BATCH_DTYPE)
    positions[:used] = np.arange(used) - starts
    loss_mask = (segment_ids != 0).astype(BATCH_DTYPE)
    if cache.mask is not None:  # chat / pairs: only some tokens are targets
        loss_mask[:used] = np.concatenate([cache.loss_mask(d)[start:stop] for d, start, stop in plan])
    return Batch(tokens=tokens, segment_ids=segment_ids, positions=positions, loss_mask=loss_mask)


def efficiency(plans: list[list[Piece]], seq_len: int) -> float:
    """Non-pad fraction of the rows."""
    used = sum(stop - start for plan in plans for _, start, stop in plan)
    return used / max(len(plans) * seq_len, 1)


# ------------------------------------------------------------------------------------------- preference pairs
# A pairs cache stores each pair as two sequences next to each other, chosen first (jaxfin.data.render):
# BOS + prompt + chosen + EOS and BOS + prompt + rejected + EOS, the completion (and EOS) as targets. The unit of
# packing is the pair: both sequences go into the same row as consecutive segments (pair k of a row = segments
# 2k+1 and 2k+2), and a pair is never split across rows.


class PairView:
    """Pair-level view of a pairs token cache: pair j = cache sequences 2j (chosen) and 2j+1 (rejected).

    A pair whose two sequences together are longer than seq_len is truncated to fit, TRL-style: the prompt
    keeps its first token (BOS) and its *end*, the completions keep their *start* (so a truncated completion
    loses its EOS). The prompt (the same in both sequences) is first cut to at most seq_len // 4 tokens, then
    the completions to what is left (the shorter one whole if it fits in half, else both to half), then the
    prompt takes back whatever room the completions left. `truncated` counts such pairs; none is dropped.
    """

    def __init__(self, cache, seq_len: int):
        if seq_len < 4:
            raise ValueError(f"seq_len {seq_len} is too short for preference pairs (at least 4 tokens)")
        lengths = np.asarray(cache.doc_lengths(), np.int64)
        if len(lengths) % 2:
            raise ValueError(f"{cache.path}: a pairs cache must hold an even number of sequences, has {len(lengths)}")
        self.cache, self.seq_len = cache, seq_len
        targets = _mask_sums(cache, lengths)
        self.lengths = lengths.reshape(-1, 2)  # [pairs, side]
        self.prompt = self.lengths - targets.reshape(-1, 2)  # leading non-target tokens of each side
        # per pair and side: (prompt tokens kept, completion tokens kept); a side is the prompt's first token
        # (when any prompt is cut), the prompt's last tokens, then the completion's first tokens
        self.keep = np.stack([self.prompt, self.lengths - self.prompt], axis=-1)
        over = np.flatnonzero(self.lengths.sum(1) > seq_len)
        for j in over:
            self.keep[j] = _truncate(self.prompt[j], self.lengths[j] - self.prompt[j], seq_len)
        self.truncated = len(over)
        self.sizes = self.keep.sum((1, 2))  # tokens of each pair in a row

    def __len__(self) -> int:
        return len(self.sizes)

    def side(self, j: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, loss_mask) of side s (0 chosen, 1 rejected) of pair j, truncated as planned."""
        d = 2 * j + s
        tokens, mask = self.cache.doc(d), self.cache.loss_mask(d)
        if mask is None:
            mask = np.ones(len(tokens), np.uint8)
        p, c = (int(x) for x in self.keep[j, s])
        full_p = int(self.prompt[j, s])
        if p == full_p:
            idx = np.arange(p + c)
        else:  # first token (BOS), then the last p - 1 prompt tokens, then the completion's start
            idx = np.concatenate([[0], np.arange(full_p - (p - 1), full_p + c)]) if p else np.arange(full_p, full_p + c)
        return np.asarray(tokens[idx]), np.asarray(mask[idx])


def _mask_sums(cache, lengths: np.ndarray, block: int = 1 << 24) -> np.ndarray:
    """Target tokens per sequence (all of them when the cache has no loss mask), in blocks of sequences."""
    if cache.mask is None:
        return lengths.copy()
    out = np.zeros(len(lengths), np.int64)
    offsets = np.asarray(cache.offsets)
    i = 0
    while i < len(lengths):  # ~block tokens at a time, so memory stays flat on a big cache
        j = max(int(np.searchsorted(offsets, offsets[i] + block, side="right")) - 1, i + 1)
        j = min(j, len(lengths))
        chunk = np.asarray(cache.mask[offsets[i] : offsets[j]], np.int64)
        csum = np.concatenate([[0], np.cumsum(chunk)])
        out[i:j] = csum[offsets[i + 1 : j + 1] - offsets[i]] - csum[offsets[i:j] - offsets[i]]
        i = j
    return out


def _truncate(prompt: np.ndarray, completion: np.ndarray, seq_len: int) -> np.ndarray:
    """[[prompt kept, completion kept] per side] for a pair over seq_len (see PairView)."""
    p_full = int(prompt.max())
    p = min(p_full, seq_len // 4)
    budget = seq_len - 2 * p
    c, r = int(completion[0]), int(completion[1])
    if c + r > budget:
        short = min(c, r)
        if short <= budget // 2:
            c, r = (c, budget - c) if c == short else (budget - r, r)
        else:
            c = r = budget // 2
    p = min(p_full, (seq_len - c - r) // 2)  # the prompt takes back the room the completions left
    return np.array([[min(p, int(prompt[0])), c], [min(p, int(prompt[1])), r]])


def pair_pieces(view: PairView, order: Iterable[int] | None = None) -> Iterator[Piece]:
    """One piece (pair, 0, its size in tokens) per pair, in `order`; plan_rows packs them like documents."""
    for j in range(len(view)) if order is None else order:
        yield int(j), 0, int(view.sizes[j])


def gather_pair_row(plan: list[Piece], view: PairView, seq_len: int) -> Batch:
    """One packed row of pairs: pair k of the plan = segments 2k+1 (chosen) and 2k+2 (rejected), positions
    restarting at 0 in each, loss_mask as rendered; padding is segment 0 with no targets."""
    tokens = np.zeros(seq_len, BATCH_DTYPE)
    segment_ids = np.zeros(seq_len, BATCH_DTYPE)
    positions = np.zeros(seq_len, BATCH_DTYPE)
    loss_mask = np.zeros(seq_len, BATCH_DTYPE)
    at = 0
    for k, (j, _, _) in enumerate(plan):
        for s in (0, 1):
            t, m = view.side(j, s)
            n = len(t)
            tokens[at : at + n] = t
            segment_ids[at : at + n] = 2 * k + 1 + s
            positions[at : at + n] = np.arange(n)
            loss_mask[at : at + n] = m
            at += n
    return Batch(tokens=tokens, segment_ids=segment_ids, positions=positions, loss_mask=loss_mask)
