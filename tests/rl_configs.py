"""The tiny GRPO / PPO run the RL trainer tests share: a 2-layer model on the demo tokenizer, 12 prompts, and a
reward with spread (`letter_e`, by import path)."""

from __future__ import annotations

import json

from jaxfin.config import load_config
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"


def letter_e(prompts, completions, **fields):
    """A reward with spread: the share of 'e' among the completion's letters (None when it has none)."""
    out = []
    for c in completions:
        letters = [ch for ch in c.lower() if ch.isalpha()]
        out.append(None if not letters else letters.count("e") / len(letters))
    return out


def tiny_rl_config(tmp_path, out: str, objective: str, *, steps: int = 3, seed: int = 1, dev_every: int = 0,
                   rollout: str = "", objective_extra: str = "", model_extra: str = "", top_extra: str = "",
                   rewards: str = '[{type: callable, function: "tests.rl_configs:letter_e"}]',
                   checkpoint: str = "{every: 0, keep: 1}"):  # fmt: skip
    """Write OUT.yaml under tmp_path (the run in tmp_path/OUT) and load it. With dev_every, prompts 0-3 are dev."""
    rows = [{"prompt": f"Company {i} reported results.", "answer": "positive"} for i in range(12)]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dev = f", dev: [{{name: d, path: {prompts}, kind: prompts, records: [0, 4]}}]" if dev_every else ""
    (tmp_path / f"{out}.yaml").write_text(f"""
output_dir: {tmp_path / out}
tokenizer: {TOKENIZER}
model: {{family: llama, vocab_size: 1024, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2,
        num_kv_heads: 1, max_position_embeddings: 64, bos_token_id: 2, eos_token_id: 3, pad_token_id: 0,
        compute_dtype: float32{model_extra}}}
data: {{sources: [{{name: p, path: {prompts}, kind: prompts}}]{dev}, seq_len: 48}}
objective:
  type: {objective}
  rollout: {{num_generations: 4, max_new_tokens: 6, temperature: 1.0{rollout}}}
  rewards: {rewards}
{objective_extra}
optimizer: {{lr: 1.0e-2, warmup_steps: 0, schedule: constant}}
train: {{steps: {steps}, seed: {seed}, batch_size: 8, log_every: 1, dev_every: {dev_every}}}
checkpoint: {{async_save: false, best_metric: "", {checkpoint.strip("{}")}}}
{top_extra}
""")
    return load_config(tmp_path / f"{out}.yaml")
