"""A reward model as an RL reward (`objective.reward_model: DIR` or a reward `{type: model, path: DIR}`): a jaxfin
`reward` run, its export, or any Hugging Face `...ForSequenceClassification` folder with one label. Each completion
is scored as the reward objective trained it: BOS + prompt + completion + EOS in the reward model's own tokenizer,
the score head read at the last token (as transformers' *ForSequenceClassification reads it). The weights are put
on the devices once and the scoring is one jitted call per bucketed length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxfin.eval.generate import bucket, device_params, plain_params
from jaxfin.model import scores


class RewardModel:
    def __init__(self, path: str, batch_size: int = 16):
        import jaxfin
        from jaxfin.data.tokenizer import load_tokenizer

        model = jaxfin.load_model(path)
        if model.config.num_labels != 1:
            raise ValueError(f"reward model {path}: needs a score head of one output (num_labels 1); it has "
                             f"{model.config.num_labels or 'none (a causal LM)'}")  # fmt: skip
        if not model.tokenizer_dir:
            raise ValueError(f"reward model {path}: no tokenizer files beside the weights")
        params, self.cfg = plain_params(model)
        self.params = device_params(params)
        self.tok = load_tokenizer(model.tokenizer_dir)
        self.batch_size = batch_size
        cfg = self.cfg
        self._fn = jax.jit(lambda p, t, s, pos, last: jnp.take_along_axis(
            scores(p, cfg, t, s, pos)[..., 0], last[:, None], axis=1)[:, 0])  # fmt: skip

    def ids(self, prompt: str, completion: str) -> list[int]:
        bos = [self.tok.bos_id] if self.tok.bos_id is not None else []
        eos = [self.tok.eos_id] if self.tok.eos_id is not None else []
        return bos + self.tok.encode(prompt) + self.tok.encode(completion) + eos

    def score(self, prompts: list, completions: list[str]) -> np.ndarray:
        """[N] float64 scores of (prompt text, completion text) pairs."""
        for p in prompts:
            if not isinstance(p, str):
                raise ValueError("a reward model scores string prompts (BOS + prompt + completion + EOS, as the "
                                 "reward objective trains it); these prompts are conversations")  # fmt: skip
        seqs = [self.ids(p, c) for p, c in zip(prompts, completions)]
        limit = self.cfg.max_position_embeddings
        out = []
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start : start + self.batch_size]
            s = min(bucket(max(map(len, chunk))), limit)
            rows = self.batch_size
            tokens, seg, pos = (np.zeros((rows, s), np.int32) for _ in range(3))
            last = np.zeros((rows,), np.int32)
            for i, x in enumerate(chunk):
                x = x[-s:]  # longer than the reward model's context: its end is scored
                tokens[i, : len(x)], seg[i, : len(x)], pos[i, : len(x)] = x, 1, np.arange(len(x))
                last[i] = len(x) - 1
            out.append(np.asarray(self._fn(self.params, tokens, seg, pos, last))[: len(chunk)])
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0,), np.float64)
