"""PPO and LoRA in the RL trainer, end to end on a tiny model: the value head is added, trained and left out of the
Hugging Face export; with LoRA the reference is the base without adapters (no copy held: the first step's KL is
exactly 0, since fresh adapters change nothing) and the value head trains beside the adapters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin.store.checkpoint import restore_params
from jaxfin.train import train
from tests.rl_configs import tiny_rl_config


def _config(tmp_path, out: str, objective: str, extra: str = "", model: str = ""):
    return tiny_rl_config(tmp_path, out, objective, objective_extra=extra, model_extra=model)


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ppo_trains_a_value_head_and_exports_a_plain_causal_lm(tmp_path):
    import safetensors.numpy
    import transformers

    extra = "  ppo_epochs: 2\n  num_mini_batches: 2\n  missing_eos_penalty: 1.0\n  kl_coef: 0.1"
    train(tiny_rl_config(tmp_path, "ppo", "ppo", objective_extra=extra, top_extra=f"export_hf: {tmp_path / 'hf'}"))
    recs = _records(tmp_path / "ppo")
    for key in ("pg_loss", "vf_loss", "clip_frac", "vf_clip_frac", "approx_kl", "kl", "non_score_reward",
                "reward", "completion_len"):  # fmt: skip
        assert all(np.isfinite(r[key]) for r in recs), key
    assert recs[0]["kl"] == 0.0  # the first rollout's policy is the reference
    params = restore_params(tmp_path / "ppo")
    assert np.abs(np.asarray(params["value_head"]["kernel"])).max() > 0  # trained from zeros
    names = set()
    for f in (tmp_path / "hf").glob("*.safetensors"):
        names |= set(safetensors.numpy.load_file(f))
    assert names and not any("v_head" in n or "value" in n for n in names)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert type(model).__name__ == "LlamaForCausalLM"


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["grpo", "ppo"])
def test_lora_reference_is_the_base_without_adapters(tmp_path, objective):
    extra = "  beta: 0.1\n" if objective == "grpo" else ""
    cfg = _config(tmp_path, objective, objective, extra, model=", lora: {rank: 4, alpha: 8, targets: [q_proj, v_proj]}")
    assert cfg.model.lora.rank == 4
    train(cfg)
    recs = _records(tmp_path / objective)
    assert recs[0]["kl"] == 0.0 and recs[-1]["kl"] != 0.0  # B = 0 at the start: the policy is the base
    saved = (tmp_path / objective / "checkpoints/3/state/_METADATA").read_text()
    assert '"params' in saved and "ref_params" not in saved  # no copy of the weights in the state
    params = restore_params(tmp_path / objective)
    if objective == "ppo":
        assert np.abs(np.asarray(params["value_head"]["kernel"])).max() > 0  # trained beside the adapters
