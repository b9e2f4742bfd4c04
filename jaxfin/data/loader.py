"""The training loader: token caches -> packed rows -> a mixed, staged stream of global batches, on Grain.

The stream is a pure function of (seed, global row index), which is what makes it exact to resume and
independent of the number of processes:
- each source is an endless sequence of packed rows: epoch e shuffles that source's documents with
  (seed, source, e) and plans rows with first-/best-fit (jaxfin.data.binpack);
- global row i belongs to the stage whose row budget covers it (a stage's `tokens` / seq_len rows; the last
  stage goes on for ever) and is drawn from a source with that stage's probabilities, using a uniform number
  from (seed, chunk of i); it is that source's k-th row, k being how often the source was drawn before i;
- step t's global batch is rows [t*B, (t+1)*B); process p of P gathers rows [t*B + p*B/P, t*B + (p+1)*B/P).
The only loader state is therefore the step, saved with every checkpoint; Grain runs the gathering on
background threads with prefetch.

Mixing `by tokens` draws rows with probability proportional to the weights (rows hold ~seq_len tokens each);
`by examples` (FinDAP style) divides each weight by the source's mean documents per row, so the expected
number of documents per source follows the weights.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from jaxfin.data.binpack import PairView, efficiency, gather_pair_row, gather_row, pair_pieces, plan_rows, split_pieces
from jaxfin.data.cache import TokenCache
from jaxfin.model.batch import Batch

CHUNK = 1 << 16  # rows per block of source draws


class SourceRows:
    """One source's endless stream of packed rows; epochs are planned lazily (and thread-safely).

    A `pairs` source (preference data) is packed by pair: the unit shuffled and placed is a pair (its chosen and
    rejected sequences, consecutive segments of one row, never split; see jaxfin.data.binpack.PairView), so
    "documents" below means pairs for it. `pairs=None`: from the cache's recorded source kind.
    """

    def __init__(self, name: str, cache: TokenCache, seq_len: int, seed: int, method: str, window: int,
                 pairs: bool | None = None):  # fmt: skip
        self.name, self.cache, self.seq_len = name, cache, seq_len
        self.seed, self.method, self.window = seed, method, window
        if pairs is None:
            pairs = cache.meta.get("source", {}).get("kind") == "pairs"
        self.pairs = PairView(cache, seq_len) if pairs else None
        self._lengths = self.pairs.sizes if pairs else cache.doc_lengths()
        self._lock = threading.RLock()  # Grain gathers rows on several threads
        self._plans: dict[int, list] = {}
        self._ends: list[int] = []  # cumulative rows at the end of each planned epoch
        if not len(self._plan(0)):
            raise ValueError(f"source '{name}' has no document with a training target")

    def _plan(self, epoch: int) -> list:
        with self._lock:
            if epoch not in self._plans:
                rng = np.random.default_rng([self.seed, _stable_hash(self.name), epoch])
                order = rng.permutation(len(self._lengths))
                if self.pairs is not None:
                    pieces = pair_pieces(self.pairs, order)
                else:
                    pieces = split_pieces(self._lengths, self.seq_len, order)
                self._plans[epoch] = list(plan_rows(pieces, self.seq_len, self.method, self.window))
                for old in [e for e in self._plans if e < epoch - 1]:  # keep memory flat
                    del self._plans[old]
            return self._plans[epoch]

    def _epoch_of(self, k: int) -> tuple[int, int]:
        with self._lock:
            while not self._ends or self._ends[-1] <= k:
                e = len(self._ends)
                self._ends.append((self._ends[-1] if self._ends else 0) + len(self._plan(e)))
            e = int(np.searchsorted(self._ends, k, side="right"))
        return e, k - (self._ends[e - 1] if e else 0)

    def row(self, k: int) -> dict[str, np.ndarray]:
        epoch, j = self._epoch_of(k)
        if self.pairs is not None:
            return gather_pair_row(self._plan(epoch)[j], self.pairs, self.seq_len)
        return gather_row(self._plan(epoch)[j], self.cache, self.seq_len)

    def rows_in_epoch(self, epoch: int = 0) -> int:
        return len(self._plan(epoch))

    @functools.cached_property
    def packing_efficiency(self) -> float:
        """Non-pad fraction of the first epoch's rows."""
        return efficiency(self._plan(0), self.seq_len)

    @functools.cached_property
    def docs_per_row(self) -> float:
        plans = self._plan(0)
        return sum(len(p) for p in plans) / len(plans)


def _stable_hash(name: str) -> int:
    return xxhash.xxh64_intdigest(name.encode())


@dataclass
class Stage:
    rows: int  # rows in this stage (math.inf for the last)
    probs: np.ndarray  # per source


class Mixture:
    """Which source (and which of its rows) each global row index comes from."""

    def __init__(self, sources: list[SourceRows], stages: list[tuple[int, dict[str, float]]], mix_by: str, seed: int):
        names = [s.name for s in sources]
        self.sources, self.seed = sources, seed
        self.stages = []
        for i, (tokens, weights) in enumerate(stages):
            unknown = set(weights) - set(names)
            if unknown:
                raise ValueError(f"data.stages[{i}].weights names unknown sources {sorted(unknown)}; have {names}")
            w = np.array([float(weights.get(n, 0.0)) for n in names])
            if mix_by == "examples":
                w = w / np.array([s.docs_per_row for s in sources])
            if w.sum() <= 0:
                raise ValueError(f"data.stages[{i}]: the weights must not all be zero")
            last = i == len(stages) - 1
            rows = math.inf if last else math.ceil(tokens / sources[0].seq_len)
            self.stages.append(Stage(rows, w / w.sum()))
        starts = np.cumsum([0] + [s.rows for s in self.stages[:-1]])
        self.stage_starts = starts
        self._cum = np.cumsum(np.stack([s.probs for s in self.stages]), axis=1)
        self._prefix: list[np.ndarray] = [np.zeros(len(sources), np.int64)]  # draws before each chunk
        self._lock = threading.Lock()

    def stage_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.stage_starts, rows, side="right") - 1

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a handful of chunks, for the Mixture's lifetime
    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each row, its ordinal within the chunk) for rows [c*CHUNK, (c+1)*CHUNK)."""
        rows = np.arange(c * CHUNK, (c + 1) * CHUNK)
        u = np.random.default_rng([self.seed, c]).random(CHUNK)
        src = (u[:, None] >= self._cum[self.stage_of(rows)]).sum(1).clip(0, len(self.sources) - 1)
        ordinal = np.zeros(CHUNK, np.int64)
        for s in range(len(self.sources)):
            idx = np.flatnonzero(src == s)
            ordinal[idx] = np.arange(len(idx))
        return src, ordinal

    def _prefix_at(self, c: int) -> np.ndarray:
        with self._lock:
            while len(self._prefix) <= c:
                src, _ = self._chunk(len(self._prefix) - 1)
                self._prefix.append(self._prefix[-1] + np.bincount(src, minlength=len(self.sources)))
            return self._prefix[c]

    def locate(self, i: int) -> tuple[int, int]:
        """Global row i -> (source index, that source's row number)."""
        c, j = divmod(i, CHUNK)
        src, ordinal = self._chunk(c)
        s = int(src[j])
        return s, int(self._prefix_at(c)[s] + ordinal[j])

    def planned_intensity(self, domain: np.ndarray, total_rows: int) -> list[dict]:
        """Requested domain share per stage and cumulative (domain tokens / all tokens so far)."""
        out, dom, tot = [], 0.0, 0.0
        for k, st in enumerate(self.stages):
            rows = min(st.rows, max(total_rows - self.stage_starts[k], 0))
            share = float(st.probs @ domain)
            dom, tot = dom + share * rows, tot + rows
            out.append({"stage": k, "rows": int(rows), "domain_share": share, "cumulative": dom / max(tot, 1)})
        return out


def merge_levels(*counts: dict) -> dict[int, int]:
    """Token counts by domain level ({level: tokens}, keys int or str) added up."""
    out: dict[int, int] = {}
    for c in counts:
        for k, v in c.items():
            out[int(k)] = out.get(int(k), 0) + int(v)
    return dict(sorted(out.items()))


def level_intensity(tokens_by_level: dict) -> dict[str, float]:
    """Cumulative data intensity of token counts by domain level (0 = general, 1 = domain, 2, 3, ... = more
    specialised, e.g. a bank's private documents): `cumulative_intensity` = share at level >= 1 (x2/(x1+x2) after
    general x1 then finance x2; (x2+x3)/(x1+x2+x3) after private x3), and `cumulative_intensity/levelL` = share at
    level >= L for each level L >= 2 present."""
    counts = merge_levels(tokens_by_level)
    total = max(sum(counts.values()), 1)
    out = {"cumulative_intensity": sum(v for k, v in counts.items() if k >= 1) / total}
    for lv in (k for k in counts if k >= 2):
        out[f"cumulative_intensity/level{lv}"] = sum(v for k, v in counts.items() if k >= lv) / total
    return out


class Loader:
    """Local batches for step t (this process's slice of the global batch), prefetched by Grain from `start`."""

    def __init__(self, mixture: Mixture, global_batch: int, rows: tuple[int, int] | None = None):
        """`rows` = [lo, hi): the rows of each global batch this process loads (default: all of them)."""
        self.mixture, self.global_batch = mixture, global_batch
        lo, hi = rows or (0, global_batch)
        self.offset, self.local = lo, hi - lo

    def batch(self, step: int) -> Batch:
        """Rows of step `step` (0-based), plus `source` (the source index of each row)."""
        rows, sources = [], []
        for i in range(step * self.global_batch + self.offset, step * self.global_batch + self.offset + self.local):
            s, k = self.mixture.locate(i)
            rows.append(self.mixture.sources[s].row(k))
            sources.append(s)
        out = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        out["source"] = np.asarray(sources, np.int32)
        return out

    def iterate(self, start: int, stop: int, threads: int = 2, prefetch: int = 4):
        """Batches for steps start..stop-1, gathered on Grain worker threads ahead of the train step."""
        import grain

        ds = grain.MapDataset.range(start, stop).map(self.batch)
        return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)))


def named(sources: list, key: str) -> list:
    """Sources with a name (default: the file or folder name without suffix); names must be unique."""
    from jaxfin.data.sources import default_source_name

    out = [s if s.name else dataclasses.replace(s, name=default_source_name(s.path)) for s in sources]
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"'{key}' has several sources named {dup}; give them distinct `name`s")
    return out


def open_sources(sources: list, tok, data_cfg, seed: int, key: str = "data.sources") -> list[SourceRows]:
    """Prepare (or reuse) each source's token cache and open it as a stream of packed rows."""
    from jaxfin.data.prepare import prepare_source

    rows = []
    for src in named(sources, key):
        rep = prepare_source(
            src, tok, Path(data_cfg.cache_dir), data_cfg.filters, max_bad_fraction=data_cfg.max_bad_fraction
        )
        dropped = ", ".join(f"{r} {n:,}" for r, n in sorted(rep["dropped"].items())) or "none"
        state = "cached" if rep["reused"] else "tokenized"
        rows.append(SourceRows(src.name, TokenCache(rep["cache"]), data_cfg.seq_len, seed, data_cfg.packing,
                               data_cfg.pack_window, pairs=src.kind == "pairs"))  # fmt: skip
        packed = f"{rows[-1].rows_in_epoch():,} rows/epoch, packing efficiency {rows[-1].packing_efficiency:.3f}"
        if rows[-1].pairs is not None:
            view = rows[-1].pairs
            packed += (f"; {len(view):,} pairs, {view.truncated:,} of them longer than seq_len {data_cfg.seq_len} "
                       "and truncated (the prompt's start and the completions' ends cut)")  # fmt: skip
        counts = f"{rep['kept']:,} docs, {rep['sequences']:,} sequences, {rep['tokens']:,} tokens ({state})"
        print(f"{key} {src.name}: {counts}; dropped: {dropped}; {packed}")
    return rows


def stage_weights(data_cfg, sources: list) -> list[tuple[int, dict[str, float]]]:
    """(token budget, weights) per stage; no stages = one stage with each source's own weight."""
    own = {s.name: s.weight for s in named(sources, "data.sources")}
    return [(st.tokens, st.weights or own) for st in data_cfg.stages] or [(0, own)]
