"""The trainer's view of the data: batches by step, dev sets, and the mixture / data-intensity record.

Its checkpointed state is small: the step (the loader is a function of it), token counts per source so far
(for the realised mixture and the data intensity), and a fingerprint of the data plan, so a resumed run
refuses data that changed under it.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
import xxhash

from jaxfin.config.schema import DataConfig, TrainConfig
from jaxfin.data import DataError
from jaxfin.data.loader import Loader, Mixture, level_intensity, merge_levels, named, open_sources, stage_weights
from jaxfin.eval import judge  # noqa: F401  (registers the LLM quality judge with the data pipeline)
from jaxfin.model.batch import Batch


class DataStream:
    def __init__(self, data: DataConfig, train: TrainConfig, objective: str, tok, rows: tuple[int, int] | None = None):
        """The data of a run: `data`, and `train`'s seed, steps and batch size, for `objective` (objective.type).
        `rows`: the rows [lo, hi) of each global batch this process loads (default all; see process_rows)."""
        d, t = data, train
        if not d.sources:
            raise DataError("no training data: set data.sources (e.g. data.sources=[corpus.jsonl])")
        _check_kinds(d, objective)
        sources = named(d.sources, "data.sources")
        self.sources = open_sources(sources, tok, d, t.seed)
        self.names = [s.name for s in self.sources]
        self.level = np.array([int(s.domain) for s in sources], np.int64)  # domain level per source (0 = general)
        self.domain = (self.level >= 1).astype(float)  # what the data intensity counts
        self.prior = {int(k): int(v) for k, v in d.prior_tokens.items()}  # tokens of earlier stages, by level
        self.mixture = Mixture(self.sources, stage_weights(d, sources), d.mix_by, t.seed)
        self.loader = Loader(self.mixture, t.batch_size, rows)
        self.threads = d.loader_threads
        self.seq_len = d.seq_len
        self.dev = {s.name: s for s in open_sources(d.dev, tok, d, t.seed, "data.dev")} if d.dev else {}
        self._dev_batches: dict[str, list[dict]] | None = None
        plan = [(s.name, str(s.cache.path.name)) for s in self.sources] + [t.seed, d.seq_len, d.mix_by, d.packing]
        self.fingerprint = xxhash.xxh3_64_hexdigest(
            repr((plan, [s.probs.tolist() for s in self.mixture.stages])).encode()
        )
        self.tokens = np.zeros(len(self.sources), np.int64)  # non-pad tokens trained on, per source
        self.total_rows = t.steps * t.batch_size

    # ------------------------------------------------------------------------------------------- batches
    def iterate(self, start_step: int, stop_step: int) -> Iterator[Batch]:
        """Local batches for steps start_step+1 .. stop_step (1-based steps; loader steps are 0-based)."""
        for batch in self.loader.iterate(start_step, stop_step, threads=self.threads):
            src = batch.pop("source")
            # process-local counts; the mixture is the same on every process in expectation
            self.tokens += np.bincount(src, (batch["segment_ids"] != 0).sum(1), len(self.sources)).astype(np.int64)
            yield batch

    # ------------------------------------------------------------------------------------------- metrics
    def mixture_metrics(self, step: int) -> dict:
        """Realised token shares so far vs the requested shares of the current stage, and data intensity."""
        total = max(int(self.tokens.sum()), 1)
        stage = int(self.mixture.stage_of(np.array([step * self.loader.global_batch - 1]))[0])
        out = {"stage": stage, "data_intensity": float(self.tokens @ self.domain / total)}
        if self.prior or self.level.max(initial=0) >= 2:  # across the stages so far, and per level above 1
            out.update(level_intensity(merge_levels(self.prior, self.tokens_by_level())))
        for i, name in enumerate(self.names):
            out[f"mix/{name}"] = float(self.tokens[i] / total)
            out[f"mix_target/{name}"] = float(self.mixture.stages[stage].probs[i])
        return out

    def tokens_by_level(self, everywhere: bool = False) -> dict[int, int]:
        """Non-pad tokens trained on so far per domain level (this process's rows; `everywhere`: summed over
        the processes, a collective)."""
        counts = self.tokens
        if everywhere and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            counts = np.asarray(multihost_utils.process_allgather(counts)).reshape(-1, len(counts)).sum(0)
        return {int(lv): int(counts[self.level == lv].sum()) for lv in np.unique(self.level)}

    def plan(self) -> dict:
        """The requested data plan (written to OUTPUT_DIR/data_plan.json and printed at the start)."""
        return {
            "sources": [
                {"name": s.name, "domain": int(d), "tokens": s.cache.num_tokens, "sequences": len(s.cache),
                 "rows_per_epoch": s.rows_in_epoch(), "packing_efficiency": s.packing_efficiency,
                 **({"pairs": len(s.pairs), "truncated_pairs": s.pairs.truncated} if s.pairs is not None else {})}
                for s, d in zip(self.sources, self.level)
            ],
            "stages": [
                {**st, "probs": dict(zip(self.names, self.mixture.stages[st["stage"]].probs.tolist()))}
                for st in self.mixture.planned_intensity(self.domain, self.total_rows)
            ],
            **({"prior_tokens": {str(k): v for k, v in sorted(self.prior.items())}} if self.prior else {}),
        }  # fmt: skip

    # ------------------------------------------------------------------------------------------- dev
    def dev_batches(self, rows_per_batch: int, limit_rows: int) -> dict[str, list[Batch]]:
        """{name: [rows_per_batch, S] batches} per dev set: its first rows, a fixed set gathered once."""
        if self._dev_batches is None:
            self._dev_batches = {}
            for name, src in self.dev.items():
                n = min(limit_rows, src.rows_in_epoch())
                rows = [src.row(k) for k in range(n)]
                batches = []
                for i in range(0, n, rows_per_batch):
                    part = rows[i : i + rows_per_batch]
                    part += [{k: np.zeros_like(v) for k, v in part[0].items()}] * (rows_per_batch - len(part))
                    batches.append({k: np.stack([r[k] for r in part]) for k in part[0]})  # padding: no targets
                self._dev_batches[name] = batches
        return self._dev_batches

    # ------------------------------------------------------------------------------------------- state
    def state(self) -> dict:
        return {"fingerprint": self.fingerprint, "tokens": dict(zip(self.names, self.tokens.tolist()))}

    def restore(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint:
            raise DataError(
                "the training data or its mixture changed since the checkpoint was written (sources, their "
                "contents, tokenizer, seed, seq_len, packing or weights); start a new output_dir, or restore "
                "the data"
            )
        self.tokens = np.array([state["tokens"][n] for n in self.names], np.int64)


PREFERENCE_OBJECTIVES = ("dpo", "reward")


def _check_kinds(d: DataConfig, objective: str) -> None:
    """Pairs sources are for the preference objectives, which read nothing else (training and dev sets alike)."""
    srcs = [*(("data.sources", s) for s in d.sources), *(("data.dev", s) for s in d.dev)]
    pairs = [s.name or s.path for _, s in srcs if s.kind == "pairs"]
    prompts = [s.name or s.path for _, s in srcs if s.kind == "prompts"]
    if prompts:
        raise DataError(f"sources {prompts} are RL prompts (kind: prompts), which only objective.type=grpo reads")
    if objective not in PREFERENCE_OBJECTIVES:
        if pairs:  # next-token training on both completions of a pair would teach the rejected one too
            raise DataError(f"sources {pairs} are preference pairs, which the next-token trainer cannot use; "
                            "they are for the preference objectives (DPO, reward model)")  # fmt: skip
        return
    other = [f"{key}: {s.name or s.path} (kind {s.kind})" for key, s in srcs if s.kind != "pairs"]
    if other:
        raise DataError(
            f"objective.type={objective} trains on preference pairs only, but these sources are not "
            f"kind: pairs: {', '.join(other)}. Set `kind: pairs` on each (prompt, chosen, rejected; map columns "
            "with `fields`), or remove them; text and chat data are for objective.type=next_token"
        )
