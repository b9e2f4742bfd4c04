"""A reward model as an RL reward: each (prompt, completion) scored as the reward objective trains it (BOS + prompt
+ completion + EOS, the score at the last token), equal to transformers' LlamaForSequenceClassification on the
same tokens, and combined with a rule reward by `jaxfin.rl.loop.score`."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import sentencepiece as spm

import jaxfin
from jaxfin.config.schema import Config, ModelConfig, ObjectiveConfig, RewardConfig
from jaxfin.model import Model
from jaxfin.model.init import init_params
from jaxfin.rl.reward_model import RewardModel
from jaxfin.rl.rewards import score
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"
PROMPTS = ["Revenue rose 12% on strong demand. Sentiment:", "The bank cut its outlook. Sentiment:", "Flat."]
COMPLETIONS = [" positive", " negative and more words here", " neutral"]


def _reward_dir(tmp_path):
    cfg = ModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, max_position_embeddings=64, compute_dtype="float32", num_labels=1,
                      bos_token_id=2, eos_token_id=3, pad_token_id=0)  # fmt: skip
    params = init_params(cfg, jax.random.key(0))
    jaxfin.save_model(Model(cfg, params, str(TOKENIZER)), tmp_path / "rm", format="hf")
    return tmp_path / "rm"


def test_reward_model_scores_equal_transformers(tmp_path):
    import torch
    import transformers

    path = _reward_dir(tmp_path)
    got = RewardModel(str(path), batch_size=2).score(PROMPTS, COMPLETIONS)  # two batches, the second part-filled
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    want = []
    for p, c in zip(PROMPTS, COMPLETIONS):
        ids = [sp.bos_id(), *sp.encode(p), *sp.encode(c), sp.eos_id()]
        with torch.no_grad():
            want.append(float(hf(torch.tensor([ids])).logits[0, 0]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(got, 4))) == 3  # the scores differ: a wrong position would not pass by accident


def test_reward_model_combines_with_rules(tmp_path):
    path = _reward_dir(tmp_path)
    choice = RewardConfig(type="choice", choices=["positive", "negative"], weight=2.0)
    objective = ObjectiveConfig(type="grpo", reward_model=str(path), rewards=[choice])
    cfg = dataclasses.replace(Config(), objective=objective)
    records = [{"answer": "positive"}, {"answer": "positive"}, {"answer": "neutral"}]
    total, means = score(cfg, records, PROMPTS, [c.strip() for c in COMPLETIONS])
    rm = RewardModel(str(path)).score(PROMPTS, [c.strip() for c in COMPLETIONS])
    np.testing.assert_allclose(total, 2.0 * np.array([1.0, 0.0, 0.0]) + rm, rtol=1e-6)
    assert means["rewards/choice"] == 1 / 3 and np.isclose(means["rewards/reward_model"], rm.mean())
