"""Read documents, tokenize, pack into fixed-length rows, and iterate batches with a checkpointable position.

This is the simple in-memory pipeline; the batch it yields is the one batch shape of jaxfin:
    tokens       int32 [B, S]
    segment_ids  int32 [B, S]   1, 2, ... per document in the row; 0 = padding
    positions    int32 [B, S]   0, 1, ... restarting at every document
    loss_mask    int32 [B, S]   1 where the token is a training target
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxfin.data.tokenizer import Tokenizer

FIELDS = ("tokens", "segment_ids", "positions", "loss_mask")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def read_documents(paths: list[str], text_field: str = "text") -> list[str]:
    """JSONL files (one object per line with `text_field`) or .txt files (one document per file)."""
    docs = []
    for p in map(Path, paths):
        if not p.is_file():
            raise DataError(f"data file not found: {p}")
        if p.suffix not in (".txt", ".jsonl", ".json"):
            raise DataError(f"{p}: unsupported data file type '{p.suffix}' (use .jsonl with a text field, or .txt)")
        try:
            docs.extend(_read_file(p, text_field))
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return docs


def _read_file(p: Path, text_field: str) -> list[str]:
    if p.suffix == ".txt":
        return [p.read_text(encoding="utf-8-sig")]
    docs = []
    with p.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                raise DataError(f"{p}:{n}: expected an object with a string field '{text_field}'")
            docs.append(obj[text_field])
    return docs


def tokenize_documents(docs: list[str], tok: Tokenizer, add_bos: bool, add_eos: bool) -> list[list[int]]:
    for name, flag, tid in (("add_bos", add_bos, tok.bos_id), ("add_eos", add_eos, tok.eos_id)):
        if flag and tid is None:
            raise DataError(f"data.{name} is true but the tokenizer at {tok.path} has no such token")
    bos = [tok.bos_id] if add_bos else []
    eos = [tok.eos_id] if add_eos else []
    return [bos + tok.encode(d) + eos for d in docs]


def pack(docs: list[list[int]], seq_len: int) -> dict[str, np.ndarray]:
    """Greedy in-order packing; a document longer than the room left continues in the next row as a new segment.

    Every piece of a split document starts at position 0, so no attention or label crosses a row or document.
    """
    if seq_len < 2:
        raise DataError(f"seq_len must be at least 2 (got {seq_len}): a row needs an input and a target")
    rows: list[dict[str, list[int]]] = []
    row = {k: [] for k in FIELDS}

    def flush():
        nonlocal row
        if row["tokens"]:
            pad = seq_len - len(row["tokens"])
            rows.append({k: v + [0] * pad for k, v in row.items()})
        row = {k: [] for k in FIELDS}

    for doc in docs:
        while doc:
            room = seq_len - len(row["tokens"])
            if room < 2:  # a 1-token piece has no target; start a new row instead
                flush()
                continue
            piece, doc = doc[:room], doc[room:]
            seg = (row["segment_ids"][-1] if row["segment_ids"] else 0) + 1
            row["tokens"] += piece
            row["segment_ids"] += [seg] * len(piece)
            row["positions"] += list(range(len(piece)))
            row["loss_mask"] += [1] * len(piece)
    flush()
    if not rows:
        raise DataError("no documents to pack")
    return {k: np.asarray([r[k] for r in rows], np.int32) for k in FIELDS}


class BatchIterator:
    """Shuffled epochs over packed rows; `state()`/`restore()` give the exact position for resume."""

    def __init__(self, rows: dict[str, np.ndarray], batch_size: int, seed: int, shuffle: bool = True):
        self.rows, self.batch_size, self.seed, self.shuffle = rows, batch_size, seed, shuffle
        self.num_rows = len(rows["tokens"])
        if self.num_rows < batch_size:
            raise DataError(f"only {self.num_rows} packed rows, fewer than one batch of {batch_size}")
        self.epoch, self.index = 0, 0

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def __next__(self) -> dict[str, np.ndarray]:
        if self.index + self.batch_size > self.num_rows:  # drop the ragged tail of an epoch
            self.epoch, self.index = self.epoch + 1, 0
        idx = self._order(self.epoch)[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return {k: v[idx] for k, v in self.rows.items()}

    def __iter__(self):
        return self

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "num_rows": self.num_rows}

    def restore(self, state: dict) -> None:
        if state.get("num_rows") != self.num_rows or state.get("seed") != self.seed:
            raise DataError(
                f"the checkpoint's data position was saved for {state.get('num_rows')} rows / seed "
                f"{state.get('seed')}, but the data now has {self.num_rows} rows / seed {self.seed}: "
                f"the training data changed since the checkpoint"
            )
        self.epoch, self.index = state["epoch"], state["index"]


def load_rows(paths: list[str], tok: Tokenizer, data_cfg) -> dict[str, np.ndarray]:
    docs = read_documents(paths, data_cfg.text_field)
    return pack(tokenize_documents(docs, tok, data_cfg.add_bos, data_cfg.add_eos), data_cfg.seq_len)
