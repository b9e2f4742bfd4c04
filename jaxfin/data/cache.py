"""On-disk token cache: one folder per (source content, tokenizer, policy), written once, then memory-mapped.

Layout of `CACHE_DIR/<name>-<key>/` (the layout of Megatron-style indexed datasets, in plain numpy):
    tokens.bin    every kept sequence's token ids back to back, BOS/EOS included (uint16 when the vocab fits,
                  else uint32), so reading a sequence is a slice of a memory map: no parsing, no copy
    offsets.npy   int64 [num_sequences + 1]; sequence i is tokens[offsets[i] : offsets[i + 1]]
    loss_mask.bin uint8, one per token, 1 = training target (chat and pairs sources; absent for text, where
                  every token is a target). See jaxfin.data.render for what each kind stores.
    meta.json     the key's inputs (files with size and content hash, tokenizer fingerprint, policy), counts
                  and the source report; written last, so a folder without it is an unfinished build
The folder is built under a temporary name and renamed into place, so a killed build never looks complete.
The key hashes file *contents* (xxh3-128), not names or times: a copied or touched file still hits the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import xxhash

CACHE_VERSION = 1
META = "meta.json"


def file_digest(path: Path, chunk: int = 1 << 23) -> str:
    h = xxhash.xxh3_128()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(files: list[Path], tokenizer_fingerprint: str, policy: dict) -> tuple[str, dict]:
    """(key, the inputs it was computed from). `policy`: everything else that changes the tokens."""
    files = sorted(files)
    inputs = {
        "version": CACHE_VERSION,
        "content": [{"bytes": f.stat().st_size, "xxh3_128": file_digest(f)} for f in files],
        "tokenizer": tokenizer_fingerprint,
        "policy": policy,
    }
    key = xxhash.xxh3_128(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return key, {**inputs, "files": [str(f) for f in files]}  # names recorded, not hashed


class TokenCache:
    """Read side: memory-mapped documents of one cache folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / META).is_file():
            raise FileNotFoundError(f"{self.path} is not a finished token cache (no {META})")
        self.meta = json.loads((self.path / META).read_text())
        self.offsets = np.load(self.path / "offsets.npy", mmap_mode="r")
        n = int(self.offsets[-1])
        dtype = np.dtype(self.meta["dtype"])
        self.tokens = np.memmap(self.path / "tokens.bin", dtype, "r", shape=(n,)) if n else np.zeros(0, dtype)
        mask = self.path / "loss_mask.bin"
        self.mask = np.memmap(mask, np.uint8, "r", shape=(n,)) if mask.is_file() and n else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def loss_mask(self, i: int) -> np.ndarray | None:
        """1 where the token is a training target; None when every token is."""
        return None if self.mask is None else self.mask[self.offsets[i] : self.offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))


def build_cache(
    sequences: Iterable[tuple[list[int], list[int] | None]],
    vocab_size: int,
    out: str | Path,
    *,
    meta: Callable[[], dict],
    progress_every_s: float = 10.0,
    label: str = "",
) -> TokenCache:
    """Write token sequences (with an optional per-token loss mask) in order into a new cache folder `out`.

    `meta()` is called once `sequences` is exhausted (so it may report what reading and filtering saw) and
    stored in meta.json. A loss mask is stored (loss_mask.bin, uint8) as soon as any sequence has one.
    """
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    lengths: list[int] = []
    masked = False
    t0 = last = time.time()
    with (tmp / "tokens.bin").open("wb") as f, (tmp / "loss_mask.bin").open("wb") as fm:
        for ids, mask in sequences:
            np.asarray(ids, dtype).tofile(f)
            if mask is not None and not masked:  # the earlier sequences were all targets
                np.ones(sum(lengths), np.uint8).tofile(fm)
                masked = True
            if masked:
                np.asarray(mask if mask is not None else [1] * len(ids), np.uint8).tofile(fm)
            lengths.append(len(ids))
            if progress_every_s and time.time() - last > progress_every_s:
                last = time.time()
                n = sum(lengths)
                print(
                    f"  {label}: {len(lengths):,} sequences, {n:,} tokens, {n / (last - t0):,.0f} tokens/s", flush=True
                )
    if not masked:
        (tmp / "loss_mask.bin").unlink()
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(tmp / "offsets.npy", offsets)
    info = {**meta(), "dtype": np.dtype(dtype).name, "num_docs": len(lengths), "num_tokens": int(offsets[-1])}
    info["loss_mask"], info["seconds"] = masked, round(time.time() - t0, 3)
    (tmp / META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if out.exists() and not (out / META).is_file():  # an unfinished build under the final name: replace it
        shutil.rmtree(out)
    try:
        tmp.rename(out)
    except OSError:  # another process finished the same cache first (same key, same content): use theirs
        if not (out / META).is_file():
            raise
        shutil.rmtree(tmp)
    return TokenCache(out)
