"""GRPO and PPO learn: configs/rl/{grpo,ppo}_tiny.yaml, shortened (SFT 60 steps, RL 40 steps at a higher learning
rate), raise the held-out reward of the SFT model they start from on FPB sentiment labels (a verifiable reward:
the first label in the completion is the sentence's own). The 60-step SFT model mostly does not yet answer with a
label when sampled; RL on prompts whose labels SFT never saw teaches it to (the full configs, 150 + 150 steps,
raise greedy accuracy too: see their headers). The held-out sentences are the FPB test split, scored at step 0
(the SFT model) and every 20 steps, with a fixed sampling key per evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin.recipe import run_recipe
from tests.conftest import REPO, shared_data

SHORT = {"grpo_tiny": ["vars.lr=1e-3", "vars.G=8", "vars.rows=64"], "ppo_tiny": ["vars.lr=3e-4"]}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["grpo_tiny", "ppo_tiny"])
def test_rl_raises_the_held_out_reward(tmp_path, monkeypatch, recipe):
    fpb = shared_data() / "financial_phrasebank"
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    overrides = [f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", f"vars.fpb={fpb}",
                 "vars.sft_steps=60", "vars.steps=40", *SHORT[recipe]]  # fmt: skip
    summaries = {s["stage"]: s for s in run_recipe(f"configs/rl/{recipe}.yaml", overrides)}
    stage = recipe.split("_")[0]
    assert list(summaries) == ["sft", stage] and summaries[stage]["steps"] == 40
    recs = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in recs if "dev_reward" in r]
    assert [r["step"] for r in dev] == [0, 20, 40]  # step 0: the SFT model it started from
    start, end = dev[0], dev[-1]
    assert end["dev_reward_sampled"] >= start["dev_reward_sampled"] + 0.15, dev
    assert end["dev_reward"] >= start["dev_reward"] - 0.02, dev  # greedy answers no worse
    rollouts = [r["reward"] for r in recs if "reward" in r]
    assert np.mean(rollouts[-10:]) >= np.mean(rollouts[:10]) + 0.1  # the training reward climbs too
    assert (out / "report.png").stat().st_size > 0  # the curves, drawn
