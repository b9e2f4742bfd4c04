"""`jaxfin bench rl`: the benchmark's config (GRPO, synthetic prompts of one length, rows sized to them), the TRL
side's prompts and reward against jaxfin's own, and the CLI end to end against TRL's GRPOTrainer on a very small
model (both sides' settings and generated token counts equal, ratio = TRL step time / jaxfin step time)."""

from __future__ import annotations

import importlib.util
import json
import math
import os

import numpy as np
import pytest
from conftest import REPO

from jaxfin.bench.rl import BENCH_REWARD, bench_config, check_trl_comparable, format_summary, trl_spec
from jaxfin.bench.torch_rl import letter_share, make_reward
from jaxfin.cli import main
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.rl.prompts import PromptStream
from jaxfin.rl.rewards import score

TINY = REPO / "configs/tiny.yaml"
SMALL = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2", "model.num_heads=2",
         "model.num_kv_heads=1", "objective.rollout.num_generations=4", "objective.rollout.max_new_tokens=6",
         "train.batch_size=8"]  # fmt: skip
HAS_TRL = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "trl", "datasets"))


def test_bench_config_runs_grpo_on_synthetic_prompts_of_one_length(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # tiny.yaml's tokenizer path is relative to the repo
    cfg, notes = bench_config(TINY, SMALL, tmp_path)
    o = cfg.objective
    assert o.type == "grpo" and any("next_token -> grpo" in n for n in notes)
    assert [rw.function for rw in o.rewards] == [BENCH_REWARD] and cfg.data.dev == []
    stream = PromptStream(cfg, load_tokenizer(cfg.tokenizer))
    lengths = {len(x) for x in stream.ids}
    assert len(stream.ids) == 64 and len(lengths) == 1  # every step's prompts are as long on both sides
    assert cfg.data.seq_len == lengths.pop() + 6 and not stream.truncated  # rows hold prompt + completion exactly
    # a seq_len given on the command line is kept
    cfg2, _ = bench_config(TINY, [*SMALL, "data.seq_len=64"], tmp_path / "b")
    assert cfg2.data.seq_len == 64
    with pytest.raises(ValueError, match="PPO"):
        bench_config(TINY, [*SMALL, "objective.type=ppo", f"objective.rewards=[{{type: callable, function: "
                                                           f"'{BENCH_REWARD}'}}]"], tmp_path / "c")  # fmt: skip


def test_trl_side_draws_the_same_prompts_and_scores_as_jaxfin(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    rows = [{"prompt": f"Company {i} reported results.", "answer": "positive"} for i in range(10)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rewards = (f"[{{type: callable, function: '{BENCH_REWARD}'}}, {{type: choice, weight: 0.5, "
               f"choices: [positive, negative]}}]")  # fmt: skip
    over = [*SMALL, f"data.sources=[{{name: p, path: {tmp_path / 'p.jsonl'}, kind: prompts}}]",
            "objective.type=grpo", f"objective.rewards={rewards}",
            "objective.rollout.prompt_template='{prompt} Sentiment:'"]  # fmt: skip
    cfg, notes = bench_config(TINY, over, tmp_path / "w")
    assert not any("synthetic" in n for n in notes) and len(cfg.objective.rewards) == 2  # the config's own kept
    stream = PromptStream(cfg, load_tokenizer(cfg.tokenizer))
    spec = trl_spec(cfg, stream, tmp_path / "hf", steps=2, warmup=1, rounds=2, stop_at_eos=False)
    per = cfg.train.batch_size // 4
    assert len(spec["records"]) == 5 * per
    for step in range(1, 6):  # TRL, unshuffled, takes per_step records per step: jaxfin's prompts of that step
        got = spec["records"][(step - 1) * per : step * per]
        assert [r["prompt"] for r in got] == [stream.texts[i] for i in stream.indices(step)]
        assert [r["__bench_prompt"] for r in got] == [stream.records[i]["prompt"] for i in stream.indices(step)]
    texts = ["it was positive", "Negative, then positive", "", "xyz 12", "eeee", "neutral e", "POSITIVE", "a"]
    idx = np.repeat(stream.indices(1), 4)
    records = [stream.records[i] for i in idx]
    want, _ = score(cfg, records, [stream.texts[i] for i in idx], texts)
    reward = make_reward(spec["rewards"], ["prompt", "__bench_prompt", "answer"])
    got = reward(prompts=[stream.texts[i] for i in idx], completions=texts,
                 __bench_prompt=[r["prompt"] for r in records], answer=[r["answer"] for r in records],
                 completion_ids=[[0]] * 8, trainer_state=None)  # fmt: skip
    assert [math.nan if g is None else g for g in got] == pytest.approx(list(want), nan_ok=True)
    assert letter_share([], ["Eel", "", "12"]) == [2 / 3, None, None]


def test_compare_trl_refuses_what_trl_cannot_mirror(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg, _ = bench_config(TINY, [*SMALL, "model.lora.rank=4", "objective.rollout.stop=['.']"], tmp_path)
    with pytest.raises(ValueError, match="LoRA.*stop strings"):
        check_trl_comparable(cfg)


@pytest.mark.skipif(not HAS_TRL, reason="needs torch, transformers, datasets and trl")
def test_bench_rl_cli_against_trl(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the CLI may add GPU flags; restore after
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true"))
    out = tmp_path / "rl.json"
    rc = main(["bench", "rl", str(TINY), *SMALL[:-1], "--steps", "1", "--warmup", "1", "--compare-trl", "--json",
               "--out", str(out), SMALL[-1]])  # fmt: skip
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == r
    j, t = r["jaxfin"], r["trl"]
    for side in (j, t):
        assert math.isfinite(side["step_s"]) and side["step_s"] > 0
        assert 0 < side["generate_s"] < side["step_s"] and 0 < side["generate_share"] < 1
        assert side["rollout_tokens_per_s"] > 0 and len(side["step_times_s"]) == 1
    assert r["ratio"] == pytest.approx(t["step_s"] / j["step_s"], rel=1e-12)
    assert r["ratio_min"] == r["ratio"] == r["ratio_max"] and r["target"] == 1.5
    assert r["target_met"] == (r["ratio"] >= 1.5)
    # the same GRPO step on both sides: 2 prompts x 4 completions of exactly 6 tokens (no EOS stop), one update,
    # the same prompt token ids, the same number of parameters
    for side in (j, t):
        assert (side["completions"], side["num_generations"], side["max_new_tokens"]) == (8, 4, 6)
        assert side["tokens_generated"] == 8 * 6 and side["optimizer_steps_per_grpo_step"] == 1
    assert t["prompt_ids_match"] and t["params"] == r["params"]
    assert r["grpo"]["prompts_per_step"] == 2 and r["grpo"]["seq_len"] == r["grpo"]["prompt_tokens_max"] + 6
    assert t["threads"] == os.cpu_count() and t["compute_dtype"] == j["compute_dtype"] == "float32"
    q = r["rounds"][0]  # TRL's round ran before jaxfin's, not beside it
    assert q["trl_start"] < q["trl_end"] <= q["jaxfin_start"] < q["jaxfin_end"]
    assert r["device_kind"] == "cpu" and {"jax", "torch", "transformers", "trl"} <= set(r["versions"])
    text = format_summary(r)
    assert "ratio" in text and "trl" in text and "tokens/s" in text
