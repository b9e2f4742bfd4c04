"""GRPO in the trainer, end to end on a tiny model: rollouts on the mesh, rewards from a callable by import path,
the logged metrics, and exact resume (the prompts and the sampling key of a step are functions of the seed and the
step, so a run stopped after step 2 and resumed equals a run straight through)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin.store.checkpoint import restore_params
from jaxfin.train import train
from tests.rl_configs import tiny_rl_config


def _config(tmp_path, out: str, steps: int):
    rewards = '[{type: callable, function: "tests.rl_configs:letter_e"}, ' \
              "{type: choice, weight: 0.5, choices: [positive, negative]}]"  # fmt: skip
    rollout, extra = ', prompt_template: "{prompt} Sentiment:"', "  beta: 0.05\n  num_iterations: 2"
    return tiny_rl_config(tmp_path, out, "grpo", steps=steps, seed=3, dev_every=2, rewards=rewards,
                          rollout=rollout, objective_extra=extra, checkpoint="{every: 2, keep: 3}")  # fmt: skip


@pytest.mark.slow
def test_grpo_runs_logs_and_resumes_exactly(tmp_path):
    straight = train(_config(tmp_path, "straight", 4))
    assert straight["steps"] == 4
    start, *recs = [json.loads(x) for x in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
    assert start["step"] == 0 and {"dev_reward", "dev_reward_sampled"} <= set(start)  # the starting model's
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
    _, *later = [json.loads(x) for x in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in later] == [r["reward"] for r in recs]  # the same completions, step by step


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]
