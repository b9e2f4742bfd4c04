"""GRPO in the trainer, end to end on a tiny model: rollouts on the mesh, rewards from a callable by import path,
the logged metrics, and exact resume (the prompts and the sampling key of a step are functions of the seed and the
step, so a run stopped after step 2 and resumed equals a run straight through)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin.config import load_config
from jaxfin.store.checkpoint import restore_params
from jaxfin.train import train
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"


def letter_e(prompts, completions, **fields):
    """A reward with spread: the share of 'e' among the completion's letters (None when it has none)."""
    out = []
    for c in completions:
        letters = [ch for ch in c.lower() if ch.isalpha()]
        out.append(None if not letters else letters.count("e") / len(letters))
    return out


def _config(tmp_path, out: str, steps: int):
    rows = [{"prompt": f"Company {i} reported results.", "answer": "positive"} for i in range(12)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / f"{out}.yaml").write_text(f"""
output_dir: {tmp_path / out}
tokenizer: {TOKENIZER}
model: {{family: llama, vocab_size: 1024, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2,
        num_kv_heads: 1, max_position_embeddings: 64, bos_token_id: 2, eos_token_id: 3, pad_token_id: 0,
        compute_dtype: float32}}
data: {{sources: [{{name: p, path: {tmp_path / "prompts.jsonl"}, kind: prompts}}],
       dev: [{{name: d, path: {tmp_path / "prompts.jsonl"}, kind: prompts, records: [0, 4]}}], seq_len: 48}}
objective:
  type: grpo
  rollout: {{num_generations: 4, max_new_tokens: 6, temperature: 1.0, prompt_template: "{{prompt}} Sentiment:"}}
  rewards: [{{type: callable, function: "tests.test_rl_grpo:letter_e"}}, {{type: choice, weight: 0.5,
             choices: [positive, negative]}}]
  beta: 0.05
  num_iterations: 2
optimizer: {{lr: 1.0e-2, warmup_steps: 0, schedule: constant}}
train: {{steps: {steps}, seed: 3, batch_size: 8, log_every: 1, dev_every: 2}}
checkpoint: {{every: 2, keep: 3, async_save: false, best_metric: ""}}
""")
    return load_config(tmp_path / f"{out}.yaml")


@pytest.mark.slow
def test_grpo_runs_logs_and_resumes_exactly(tmp_path):
    straight = train(_config(tmp_path, "straight", 4))
    assert straight["steps"] == 4
    recs = [json.loads(x) for x in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for key in ("rewards/callable", "rewards/choice", "reward", "kl", "clip_frac", "completion_len",
                "rollout_tokens_per_s", "generate_share", "frac_reward_zero_std"):  # fmt: skip
        assert all(key in r and np.isfinite(r[key]) for r in recs), key
    assert all(0 < r["completion_len"] <= 6 for r in recs)
    assert any(r["kl"] > 0 for r in recs[1:])  # the policy moved away from the frozen reference
    assert "dev_reward" in recs[1] and "dev_reward" not in recs[0]
    # beta > 0 without LoRA: the frozen reference is a copy in the state (with LoRA it is not: test_rl_ppo.py)
    assert "ref_params" in (tmp_path / "straight/checkpoints/4/state/_METADATA").read_text()

    train(_config(tmp_path, "resumed", 2))  # stops after step 2 with a checkpoint
    resumed = train(_config(tmp_path, "resumed", 4))  # the same run asked for 4 steps: resumes at 3
    assert resumed["steps"] == 4
    a, b = restore_params(tmp_path / "straight"), restore_params(tmp_path / "resumed")
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
        np.testing.assert_array_equal(x, y)
    later = [json.loads(x) for x in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in later] == [r["reward"] for r in recs]  # the same completions, step by step


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]
