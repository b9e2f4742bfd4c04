"""The prompts an RL run samples completions for: `kind: prompts` sources read once (bad records counted as for any
source), each prompt tokenized once, and the prompts of step s a pure function of (seed, s): each epoch is a fresh
permutation of all prompts, so a resumed run draws exactly the prompts it would have drawn (nothing to checkpoint).
"""

from __future__ import annotations

import numpy as np

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config, SourceConfig
from jaxfin.data import DataError
from jaxfin.data.sources import read_sources


def read_prompts(sources: list[SourceConfig], max_bad_fraction: float) -> list[dict]:
    """Every record of the `prompts` sources, in order, with `_loc` (file:line) and `_source` added."""
    other = [s.name or s.path for s in sources if s.kind != "prompts"]
    if other:
        raise DataError(f"RL objectives read `kind: prompts` sources (a prompt plus the fields the rewards read); "
                        f"these are not: {other}")  # fmt: skip
    docs, _ = read_sources(sources, max_bad_fraction=max_bad_fraction)
    return [{**d.data, "_loc": d.loc, "_source": d.source} for d in docs]


def _fill(template: str, record: dict):
    """The record's prompt through `rollout.prompt_template` (a conversation is used as it is)."""
    if not isinstance(record["prompt"], str) or template == "{prompt}":
        return record["prompt"]
    try:
        return template.format(**record)
    except (KeyError, IndexError) as e:
        raise DataError(
            f"{record['_loc']}: rollout.prompt_template names {e}, which this record does not have "
            f"(its fields: {sorted(k for k in record if not k.startswith('_'))})"
        ) from None


class PromptStream:
    """The training prompts (data.sources) and held-out prompts (data.dev) of an RL run, rendered to token ids."""

    def __init__(self, cfg: Config, tokenizer):
        from jaxfin.eval.generate import render_prompt

        d, r = cfg.data, cfg.objective.rollout
        weights = {s.weight for s in d.sources}
        if len(weights) > 1:
            raise ConfigError("RL prompt sources are drawn uniformly from all their prompts: different `weight`s "
                              f"({sorted(weights)}) are not supported yet; repeat or trim the files")  # fmt: skip
        self.records = read_prompts(d.sources, d.max_bad_fraction)
        self.dev_records = read_prompts(d.dev, d.max_bad_fraction) if d.dev else []
        if not self.records:
            raise DataError("the RL prompt sources hold no prompts")
        room = d.seq_len - r.max_new_tokens
        self.texts = [_fill(r.prompt_template, x) for x in self.records]  # as sampled from (for a reward model)
        self.dev_texts = [_fill(r.prompt_template, x) for x in self.dev_records]
        self.ids = [render_prompt(x, tokenizer, r.chat_template) for x in self.texts]
        self.dev_ids = [render_prompt(x, tokenizer, r.chat_template) for x in self.dev_texts]
        self.truncated = self._fit(room, tokenizer.bos_id)
        if self.truncated:
            (loc, n), *_ = self.truncated
            print(f"prompts: {len(self.truncated)} longer than data.seq_len - rollout.max_new_tokens = {room} tokens "
                  f"were cut to their last {room} (BOS kept; as TRL truncates), e.g. {loc} ({n} tokens)")  # fmt: skip
        self.seed = cfg.train.seed
        self.per_step = cfg.train.batch_size // r.num_generations
        self.dev = {}  # no next-token dev sets: the held-out reward is evaluated instead

    def _fit(self, room: int, bos: int | None) -> list[tuple[str, int]]:
        """Cut every prompt longer than `room` tokens to its end (the BOS kept first); [(location, tokens)] of those."""
        cut = []
        for recs, ids in ((self.records, self.ids), (self.dev_records, self.dev_ids)):
            for k, (rec, x) in enumerate(zip(recs, ids)):
                if len(x) > room:
                    cut.append((rec["_loc"], len(x)))
                    head = x[:1] if bos is not None and x[0] == bos else []
                    ids[k] = head + x[len(x) - room + len(head) :]
        return cut

    def indices(self, step: int) -> np.ndarray:
        """The prompt indices of step `step` (1-based): a slice of the concatenated epoch permutations."""
        n = len(self.records)
        start = (step - 1) * self.per_step
        out = []
        for i in range(start, start + self.per_step):
            epoch, j = divmod(i, n)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            out.append(int(perm[j]))
        return np.asarray(out)

    # what the trainer's hooks ask of a data stream
    def plan(self) -> dict:
        return {"prompts": len(self.records), "dev_prompts": len(self.dev_records), "stages": []}

    def mixture_metrics(self, step: int) -> dict:
        return {"epoch": (step * self.per_step) / len(self.records)}

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass

    def tokens_by_level(self, everywhere: bool = False) -> dict:
        return {}
