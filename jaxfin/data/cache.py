"""On-disk token cache: one folder per (source content, tokenizer, policy), written once, then memory-mapped.

Layout of `CACHE_DIR/<name>-<key>/` (the layout of Megatron-style indexed datasets, in plain numpy):
    tokens.bin    every kept document's token ids back to back, BOS/EOS included (uint16 when the vocab fits,
                  else uint32), so reading a document is a slice of a memory map: no parsing, no copy
    offsets.npy   int64 [num_docs + 1]; document i is tokens[offsets[i] : offsets[i + 1]]
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
from collections.abc import Callable, Iterable, Iterator
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

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_cache(
    texts: Iterable[str],
    tokenizer,
    out: str | Path,
    *,
    add_bos: bool,
    add_eos: bool,
    meta: Callable[[], dict],
    batch_size: int = 512,
    progress_every_s: float = 10.0,
    label: str = "",
) -> TokenCache:
    """Tokenize `texts` (in order) into a new cache folder `out`; `meta()` (called once `texts` is exhausted, so
    it may report what the reading and filtering saw) is stored in meta.json."""
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    bos = [tokenizer.bos_id] if add_bos else []
    eos = [tokenizer.eos_id] if add_eos else []
    lengths: list[int] = []
    t0 = last = time.time()
    with (tmp / "tokens.bin").open("wb") as f:
        for batch in _batches(texts, batch_size):
            ids = [bos + x + eos for x in tokenizer.encode_batch(batch)]
            lengths.extend(map(len, ids))
            np.fromiter((t for x in ids for t in x), dtype, sum(map(len, ids))).tofile(f)
            if progress_every_s and time.time() - last > progress_every_s:
                last = time.time()
                n = sum(lengths)
                print(f"  {label}: {len(lengths):,} docs, {n:,} tokens, {n / (last - t0):,.0f} tokens/s", flush=True)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(tmp / "offsets.npy", offsets)
    info = {**meta(), "dtype": np.dtype(dtype).name, "num_docs": len(lengths), "num_tokens": int(offsets[-1])}
    info["seconds"] = round(time.time() - t0, 3)
    (tmp / META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if out.exists():  # an unfinished build under the final name (no meta.json): replace it
        shutil.rmtree(out)
    tmp.rename(out)
    return TokenCache(out)
