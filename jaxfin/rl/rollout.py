"""Rollouts on the training mesh: completions sampled by the KV-cache generator (jaxfin/eval/generate.py) from the
train state's own params, which stay where they are (LoRA adapters merged on the devices); only token ids come
back to the host, to be decoded, cut at stop strings and scored. Then the rows the update trains on: prompt +
completion per row in the one batch layout, the completion as the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from flax import traverse_util

from jaxfin.config.schema import ModelConfig
from jaxfin.eval.generate import bucket, decode_fn, left_pad
from jaxfin.model.lora import has_adapters, merge_adapters, without_lora
from jaxfin.model.params import ADAPTER_LEAVES

_MERGE: dict = {}


def plain(params, cfg: ModelConfig):
    """(params to sample with, their config): the adapters merged into the kernels on the devices, by one compiled
    program per model config (not an op dispatch per layer and kernel at every step)."""
    if cfg.lora.rank > 0 and has_adapters(params):
        k = repr(cfg)
        if k not in _MERGE:
            _MERGE[k] = jax.jit(lambda p: merge_adapters(p, cfg)[0])
        return _MERGE[k](params), without_lora(cfg)
    return params, cfg


def reference_config(cfg: ModelConfig) -> ModelConfig:
    """The reference policy's config: the same model, without LoRA adapters."""
    return without_lora(cfg) if cfg.lora.rank > 0 else cfg


def base_without_adapters(params, cfg: ModelConfig):
    """The base model's params: LoRA's reference policy, with no copy of any weight."""
    if cfg.lora.rank <= 0:
        return params
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] not in ADAPTER_LEAVES})


@dataclass
class Completion:
    ids: list[int]  # the generated tokens trained on: up to an EOS (kept) or the token that completes a stop string
    text: str  # decoded, EOS dropped, cut before the first stop string
    reason: str  # eos | stop | length


def cut(gen: list[int], eos: tuple[int, ...], tokenizer, stops: list[str]) -> Completion:
    """One row's generated ids -> Completion. A stop string ends the completion at the first token whose text
    completes it (that token kept, as transformers' stop strings do), and the text is cut before it."""
    body = [t for t in gen if t not in eos]
    text = tokenizer.decode(body)
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if hits:
        first = min(hits)
        n = next(n for n in range(1, len(body) + 1) if any(s and s in tokenizer.decode(body[:n]) for s in stops))
        return Completion(body[:n], text[:first], "stop")
    return Completion(gen, text, "eos" if gen and gen[-1] in eos else "length")


def sample(cfg: ModelConfig, params, prompt_ids: list[list[int]], rows: int, key, eos: tuple[int, ...],
           rollout, *, greedy: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(generated ids [rows, max_new], lengths [rows]) for left-padded prompts, on the devices of `params`."""
    p, c = plain(params, cfg)
    length = bucket(max(len(x) for x in prompt_ids))
    tokens, pad = left_pad(prompt_ids, length, rows)
    fn = decode_fn(c, rollout.max_new_tokens, greedy)
    knobs = (np.float32(rollout.temperature or 1.0), np.int32(rollout.top_k), np.float32(rollout.top_p))
    out, lengths, _ = fn(p, tokens, pad, key, np.asarray(eos or (-1,), np.int32), *knobs)
    return np.asarray(out), np.asarray(lengths)


def train_rows(prompts: list[list[int]], completions: list[list[int]], seq_len: int) -> dict[str, np.ndarray]:
    """The packed batch layout, one (prompt + completion) per row, right-padded: segment 1, positions from 0, the
    completion tokens as targets (loss_mask)."""
    b = len(prompts)
    out = {k: np.zeros((b, seq_len), np.int32) for k in ("tokens", "segment_ids", "positions", "loss_mask")}
    for i, (p, c) in enumerate(zip(prompts, completions)):
        n = len(p) + len(c)
        out["tokens"][i, :n] = p + c
        out["segment_ids"][i, :n] = 1
        out["positions"][i, :n] = np.arange(n)
        out["loss_mask"][i, len(p) : n] = 1
    return out


def rollout_key(seed: int, step: int):
    """The sampling key of step `step`: a function of the seed and the step alone, so a resumed run samples the
    same completions it would have sampled."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), step)


DEV_STREAM = 2**31 - 1  # a "step" no run reaches: the held-out evaluation's own noise


def dev_key(seed: int, chunk: int):
    """The sampling key of the held-out evaluation's chunk `chunk`: the same at every evaluation."""
    return jax.random.fold_in(rollout_key(seed, DEV_STREAM), chunk)
