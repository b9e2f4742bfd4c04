"""Preference objectives end to end on real pairs (Anthropic HH-RLHF harmless-base, ../shared/data/preferences):
DPO raises held-out preference accuracy; a precomputed reference trains exactly like a frozen one; the reward model
learns the preference and exports as a LlamaForSequenceClassification that transformers scores the same way."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

import jaxfin
from jaxfin.config import load_config
from jaxfin.train import train
from tests.conftest import REPO, shared_data
from tests.tolerances import assert_close_to_scale, rounding_tol

FIELDS = {"prompt": "prompt", "chosen": "chosen_response", "rejected": "rejected_response"}


@pytest.fixture(scope="module")
def pairs_config(tmp_path_factory):
    """A small model on HH-RLHF pairs: the first 1,900 pairs to train, the rest held out."""
    d = tmp_path_factory.mktemp("pairs")
    lines = (shared_data() / "preferences" / "hh_rlhf_harmless_base_test.jsonl").read_text().splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:1900]) + "\n")
    (d / "dev.jsonl").write_text("\n".join(lines[1900:]) + "\n")
    cfg = {
        "tokenizer": str(REPO / "demo_data/tokenizer.model"),
        "model": {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
                  "num_kv_heads": 2, "max_position_embeddings": 512, "bos_token_id": 2, "eos_token_id": 3,
                  "pad_token_id": 0, "compute_dtype": "float32"},
        "objective": {"type": "dpo", "beta": 0.1, "reference": "frozen"},
        "data": {"seq_len": 256, "cache_dir": str(d / "cache"),
                 "sources": [{"name": "hh", "path": str(d / "train.jsonl"), "kind": "pairs", "fields": FIELDS}],
                 "dev": [{"name": "hh_dev", "path": str(d / "dev.jsonl"), "kind": "pairs", "fields": FIELDS}]},
        "optimizer": {"lr": 5.0e-4, "warmup_steps": 5, "schedule": "constant"},
        "train": {"steps": 60, "batch_size": 8, "log_every": 10, "dev_every": 30, "dev_batches": 16},
        "checkpoint": {"every": 0},
    }  # fmt: skip
    path = d / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_dpo_raises_held_out_preference_accuracy(pairs_config, tmp_path):
    """At step 0 the policy is the reference: every implicit reward is 0, the DPO loss is ln 2 and preferences
    are a coin toss. After 60 steps the held-out pairs are ranked well above chance."""
    train(load_config(pairs_config, [f"output_dir={tmp_path}"]))
    recs = _records(tmp_path)
    first = recs[0]
    assert first["step"] == 10 and first["pairs"] >= 8
    dev = [r for r in recs if "dev_loss" in r][-1]
    assert dev["dev_rewards/accuracy"] >= 0.6, dev  # 128 held-out pairs; chance is 0.5
    assert dev["dev_loss"] < math.log(2), dev
    assert dev["dev_rewards/margin"] > 0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin"):
        assert key in first and np.isfinite(first[key])


def test_precomputed_reference_trains_like_a_frozen_copy(pairs_config, tmp_path):
    """The same run with the reference held in memory, precomputed in one pass, and the latter resumed (the
    table is read back from its cache): the same losses and metrics, with the NLL term (alpha = 1) on."""
    common = ["train.steps=6", "train.log_every=1", "train.dev_every=3", "train.dev_batches=2", "checkpoint.every=3",
              "objective.nll_weight=1.0"]  # fmt: skip
    # Frozen and precomputed references are the same forward in two jitted programs, which XLA may fuse and order
    # differently: each logged value is a float32 reduction over the batch's <= batch_size * seq_len tokens, so the two
    # runs may differ by rounding_tol(float32, B*S) relative (~3e-5; the values are O(1), hence also absolute for the
    # margin, a difference of near-equal rewards). Measured: bitwise equal (AVX-512), <= 2e-7 relative (SSE4.2). A
    # reference taken from trained instead of initial weights moves the margin by ~1e-2 and the loss by ~1e-3.
    cfg = load_config(pairs_config)
    rel = float(rounding_tol(np.float32, cfg.train.batch_size * cfg.data.seq_len))
    runs = {}
    for ref in ("frozen", "precomputed"):
        out = tmp_path / ref
        train(load_config(pairs_config, [f"output_dir={out}", f"objective.reference={ref}", *common]))
        runs[ref] = _records(out)
    assert (tmp_path / "precomputed" / "reference_logps.npz").is_file()
    assert not (tmp_path / "frozen" / "reference_logps.npz").exists()
    for a, b in zip(runs["frozen"], runs["precomputed"], strict=True):
        for key in ("loss", "rewards/margin", "nll", "dev_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=rel, abs=rel), (key, a["step"])
    # resume the precomputed run from its step-3 checkpoint after deleting the later records' checkpoint
    import shutil

    shutil.rmtree(tmp_path / "precomputed" / "checkpoints" / "6")
    stamp = (tmp_path / "precomputed" / "reference_logps.npz").stat().st_mtime_ns
    train(load_config(pairs_config, [f"output_dir={tmp_path / 'precomputed'}", "objective.reference=precomputed",
                                     *common]))  # fmt: skip
    assert (tmp_path / "precomputed" / "reference_logps.npz").stat().st_mtime_ns == stamp  # cache reused
    resumed = _records(tmp_path / "precomputed")
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in runs["frozen"]], rel=rel)
    # resumed again with the table lost: it is rebuilt from the initial model, not from the step-3 weights
    shutil.rmtree(tmp_path / "precomputed" / "checkpoints" / "6")
    (tmp_path / "precomputed" / "reference_logps.npz").unlink()
    train(load_config(pairs_config, [f"output_dir={tmp_path / 'precomputed'}", "objective.reference=precomputed",
                                     *common]))  # fmt: skip
    rebuilt = _records(tmp_path / "precomputed")
    assert [r["loss"] for r in rebuilt] == pytest.approx([r["loss"] for r in runs["frozen"]], rel=rel)


def test_reference_cache_follows_the_initial_weights_not_their_path(pairs_config, tmp_path):
    """Rerunning a finished run keeps its table while init_from holds the same weights, and recomputes it when a
    different model was written over the same init_from path."""
    import jax

    from jaxfin.model import Model, init_params

    model_cfg = load_config(pairs_config).model
    init, out = tmp_path / "init", tmp_path / "run"
    run = [f"output_dir={out}", f"init_from={init}", "objective.reference=precomputed", "train.steps=2",
           "train.dev_batches=1"]  # fmt: skip
    seen = []
    for seed in (1, 1, 2):  # the same weights twice, then other weights at the same path
        jaxfin.save_model(Model(model_cfg, init_params(model_cfg, jax.random.key(seed))), init, format="hf")
        train(load_config(pairs_config, run))
        with np.load(out / "reference_logps.npz") as z:
            seen.append((str(z["key"]), z["train"].copy(), (out / "reference_logps.npz").stat().st_mtime_ns))
    assert seen[1][0] == seen[0][0] and seen[1][2] == seen[0][2]  # same weights: the cache is reused
    assert seen[2][0] != seen[0][0] and seen[2][2] != seen[0][2]  # new weights: recomputed...
    assert not np.allclose(seen[2][1], seen[0][1])  # ...and they are another model's log-probs


@pytest.mark.slow
def test_reward_model_learns_preferences_and_exports_for_transformers(pairs_config, tmp_path):
    import torch
    import transformers

    from jaxfin import load_model
    from jaxfin.model import scores

    out, hf_dir = tmp_path / "rm", tmp_path / "rm_hf"
    train(load_config(pairs_config, [f"output_dir={out}", "objective.type=reward", f"export_hf={hf_dir}"]))
    dev = [r for r in _records(out) if "dev_loss" in r][-1]
    assert dev["dev_rewards/accuracy"] >= 0.6, dev
    assert dev["dev_loss"] < math.log(2), dev

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification" and hf.config.num_labels == 1
    model = load_model(hf_dir)
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 1024, (3, 40))
    tokens[:, 0] = 2
    tokens[1, 30:] = 0  # right padding: transformers scores the last non-pad token
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits[:, 0].numpy()
    s = np.asarray(scores(model.params, model.config, tokens))[..., 0]
    got = np.array([s[0, 39], s[1, 29], s[2, 39]])
    cfg = load_config(pairs_config).model  # two implementations of one forward: 4 reductions a layer, <= F terms each
    assert_close_to_scale(got, expected, rounding_tol(np.float32, cfg.intermediate_size, depth=4 * cfg.num_layers))
