"""LoRA and partial training end to end, through `jaxfin.train.train` and the recipe runner (issue 6, points 4
and 5): what a run saves (base weights untouched, optimizer state only for what is trained), what it exports
(merged HF model and PEFT adapter, checked with transformers / peft), which weights a trainable selection lets
change, a two-stage recipe that switches the trainable set, and a LoRA run with dropout that resumes exactly."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import warnings
from pathlib import Path

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import peft
import pytest
import torch
import transformers
import yaml
from flax.traverse_util import flatten_dict

import jaxfin
from jaxfin.config import load_config
from jaxfin.train import train
from tests.conftest import tiny_hf_llama
from tests.tolerances import assert_close_to_scale, rounding_tol

STEPS = 6
TOKENS = np.array([[2, 17, 301, 45, 999, 12, 7, 640, 88, 3, 150, 23, 511, 1000, 64, 5]])
# The tiny HF model: vocab of the demo tokenizer, hidden 32, 2 layers, GQA 4 query / 2 kv heads, MLP 64.
V, D, F, L, HQ, HKV = 1024, 32, 64, 2, 4, 2
# jaxfin vs torch logits: two implementations of the forward, 4 reductions a layer of <= F terms each (~5e-5 of
# max |logit|); a LoRA delta left out of an export moves them by > 1e-4
# (test_lora_run_keeps_base_weights_and_trains_adapters).
HF_TOL = rounding_tol(np.float32, F, depth=4 * L)
# Every run here: no dev set and no remat (less to compile), no warm-up (every step moves the weights visibly),
# checkpoints every 3 steps.
COMMON = [
    f"train.steps={STEPS}",
    "train.dev_every=0",
    "data.dev=",
    "checkpoint.every=3",
    "checkpoint.async_save=false",
    "optimizer.warmup_steps=0",
    "optimizer.lr=1e-2",
    "model.remat=none",
]
LORA = [
    "model.lora.rank=4",
    "model.lora.alpha=8",
    "model.lora.dropout=0.1",
    "model.lora.targets=[q_proj,v_proj,down_proj]",
]


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_base")
    hf = tiny_hf_llama(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=HQ,
                       num_key_value_heads=HKV, max_position_embeddings=64)  # fmt: skip
    hf.save_pretrained(path, safe_serialization=True)
    return path


def _flat(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flatten_dict(jax.device_get(params), sep="/").items()}


def _losses(run: Path) -> list[tuple[int, str]]:
    """(step, loss) per logged line, the loss as written (JSON text of the float, so equality is bitwise)."""
    return [(r["step"], repr(r["loss"])) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _saved_state(run: Path, step: int) -> dict:
    """The Orbax checkpoint `run/checkpoints/<step>/state` as it was written (params, opt_state, step, rng)."""
    mgr = ocp.CheckpointManager(run.absolute() / "checkpoints", item_names=("state", "meta"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Sharding info not provided": restore as saved
            return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
    finally:
        mgr.close()


def _moment_paths(opt_state) -> dict[str, tuple[int, ...]]:
    """'/'-joined param path -> shape of every Adam first moment (mu) in a saved optimizer state."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if "mu" in keys:
            out["/".join(keys[keys.index("mu") + 1 :])] = tuple(np.shape(leaf))
    return out


def _state_leaves(opt_state) -> list[str]:
    return [
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
        if np.ndim(leaf) > 0
    ]


def _torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.float().numpy()


def _train(small_config, overrides) -> str:
    """Run train(cfg) in-process; returns what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        train(load_config(small_config, overrides))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- LoRA from HF


@pytest.fixture(scope="module")
def lora_run(small_config, hf_base, tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    run, export = d / "run", d / "hf_merged"
    printed = _train(small_config, [f"output_dir={run}", f"init_from={hf_base}", f"export_hf={export}", *COMMON, *LORA])
    return run, export, printed


def test_lora_run_keeps_base_weights_and_trains_adapters(lora_run, hf_base):
    from jaxfin.model.lora import split_adapters

    run, _, _ = lora_run
    model = jaxfin.load_model(run)
    assert model.config.lora.rank == 4 and sorted(model.config.lora.targets) == ["down_proj", "q_proj", "v_proj"]
    base, adapters = split_adapters(model.params)
    chex.assert_trees_all_equal(base, jaxfin.load_model(hf_base).params)  # LoRA training left the base weights
    assert sorted(adapters) == sorted(
        f"layers/{g}/{n}/{leaf}"
        for g, n in (("self_attn", "q_proj"), ("self_attn", "v_proj"), ("mlp", "down_proj"))
        for leaf in ("lora_a", "lora_b")
    )
    for path, x in adapters.items():
        if path.endswith("lora_b"):  # B starts at zero; training moved every layer's B
            x = np.asarray(x)
            assert all(np.abs(x[i]).max() > 0 for i in range(L)), path
    # the adapters matter: the adapted model's logits differ from the base's
    assert np.abs(np.asarray(model.logits(TOKENS)) - np.asarray(jaxfin.load_model(hf_base).logits(TOKENS))).max() > 1e-4


def test_lora_checkpoint_optimizer_state_holds_only_adapters(lora_run):
    run, _, _ = lora_run
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [3, 6]
    state = _saved_state(run, STEPS)
    assert int(state["step"]) == STEPS
    leaves = _state_leaves(state["opt_state"])
    assert leaves and all(re.search(r"/lora_[ab]$", p) for p in leaves), leaves
    params = _flat(state["params"])
    lora_shapes = {k: v.shape for k, v in params.items() if k.rsplit("/", 1)[-1] in ("lora_a", "lora_b")}
    assert len(lora_shapes) == 6
    assert _moment_paths(state["opt_state"]) == lora_shapes  # Adam's mu: one per adapter, shaped like it


def test_lora_report_states_the_optimizer_memory_saved(lora_run):
    _, _, printed = lora_run
    # counts written out: adapters of q (A [L,D,r], B [L,r,HQ*Dh]), v (B [L,r,HKV*Dh]), down (A [L,F,r], B [L,r,D])
    r, dh = 4, D // HQ
    lora = L * (D * r + r * HQ * dh + D * r + r * HKV * dh + F * r + r * D)
    per_layer = D * HQ * dh + 2 * D * HKV * dh + HQ * dh * D + 3 * D * F + 2 * D
    base = 2 * V * D + L * per_layer + D
    assert f"trainable: {lora:,} of {base + lora:,} parameters" in printed, printed
    assert f"frozen: {base:,}" in printed
    m = re.search(r"optimizer state: ([\d.,]+) MiB \(training everything: ([\d.,]+) MiB; saved", printed)
    assert m, printed
    mine, everything = float(m.group(1)), float(m.group(2))
    assert mine < everything
    # AdamW in float32: two moments per trained value
    assert everything == pytest.approx(round(2 * 4 * (base + lora) / 2**20, 2))
    assert mine == pytest.approx(round(2 * 4 * lora / 2**20, 2))


def test_lora_merged_export_matches_transformers(lora_run, hf_base):
    from safetensors.numpy import load_file

    run, export, _ = lora_run
    ours = np.asarray(jaxfin.load_model(run).logits(TOKENS))
    merged = transformers.AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32).eval()
    assert_close_to_scale(_torch_logits(merged), ours, HF_TOL)
    assert "lora" not in (export / "config.json").read_text()
    # untargeted tensors are exported bit-identical to the HF input; targeted ones changed by the merge
    src, dst = load_file(hf_base / "model.safetensors"), load_file(export / "model.safetensors")
    assert sorted(src) == sorted(dst)
    targeted = [k for k in src if any(f".{t}." in k for t in ("q_proj", "v_proj", "down_proj"))]
    assert len(targeted) == 3 * L
    for k in src:
        assert np.array_equal(src[k], dst[k]) == (k not in targeted), k


def test_lora_peft_adapter_from_the_run_loads_in_peft(lora_run, hf_base, tmp_path):
    from jaxfin.hf.peft import save_peft_adapter

    run, _, _ = lora_run
    model = jaxfin.load_model(run)
    save_peft_adapter(model, out_dir=tmp_path / "adapter", base_model_name_or_path=str(hf_base))
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (4, 8.0, 0.1)
    base = transformers.AutoModelForCausalLM.from_pretrained(hf_base, torch_dtype=torch.float32)
    assert_close_to_scale(_torch_logits(base), np.asarray(jaxfin.load_model(hf_base).logits(TOKENS)), HF_TOL)
    adapted = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert_close_to_scale(_torch_logits(adapted), np.asarray(model.logits(TOKENS)), HF_TOL)


def test_lora_run_preempted_resumes_to_the_same_losses(lora_run, small_config, hf_base, tmp_path, monkeypatch):
    """SIGTERM after step 4 (as a scheduler would): the run checkpoints step 4 and exits; rerunning the same
    config logs bitwise the losses of the uninterrupted run (LoRA dropout keys included) and ends with its
    weights."""
    import jaxfin.train.loop as loop

    ref_run, _, _ = lora_run
    run = tmp_path / "run"
    overrides = [f"output_dir={run}", f"init_from={hf_base}", *COMMON, *LORA]

    class Preempt(loop.MetricsWriter):
        def write(self, record):
            super().write(record)
            if record["step"] == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "MetricsWriter", Preempt)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        first = train(load_config(small_config, overrides))
    assert first["stop_reason"] == "SIGTERM" and first["steps"] == 4
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [3, 4]
    monkeypatch.undo()  # the rerun is a plain run

    printed = _train(small_config, overrides)
    assert f"resumed from {run / 'checkpoints' / '4'}" in printed
    ref = _losses(ref_run)
    assert [step for step, _ in ref] == list(range(1, STEPS + 1))
    assert _losses(run) == ref
    chex.assert_trees_all_equal(jaxfin.load_model(run).params, jaxfin.load_model(ref_run).params)


# ---------------------------------------------------------------------------------------------- partial training


def test_top_layer_only_changes_the_top_layer(small_config, hf_base, tmp_path):
    run = tmp_path / "run"
    printed = _train(small_config, [f"output_dir={run}", f"init_from={hf_base}", "train.trainable=['@top:1']", *COMMON])
    assert "[layers 1]" in printed
    init = _flat(jaxfin.load_model(hf_base).params)
    got = _flat(jaxfin.load_model(run).params)
    assert sorted(got) == sorted(init)
    for k in init:
        if k.startswith("layers/"):
            assert np.array_equal(got[k][0], init[k][0]), f"{k}: layer 0 changed"
            assert not np.array_equal(got[k][1], init[k][1]), f"{k}: layer 1 did not change"
        else:
            assert np.array_equal(got[k], init[k]), f"{k} changed"
    # the optimizer state holds one layer of each stacked leaf, and nothing else
    moments = _moment_paths(_saved_state(run, STEPS)["opt_state"])
    assert moments == {k: (1, *v.shape[1:]) for k, v in init.items() if k.startswith("layers/")}

    # a run killed between checkpoints 3 and 6 restores the layer-sliced optimizer state and ends the same
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    shutil.rmtree(killed / "checkpoints" / "6")
    printed = _train(
        small_config, [f"output_dir={killed}", f"init_from={hf_base}", "train.trainable=['@top:1']", *COMMON]
    )
    assert f"resumed from {killed / 'checkpoints' / '3'}" in printed
    assert _losses(killed) == _losses(run)
    chex.assert_trees_all_equal(_flat(jaxfin.load_model(killed).params), got)


def test_recipe_embeddings_stage_then_full_model(small_config, hf_base, tmp_path):
    """The vocabulary-expansion recipe's two training stages in miniature: stage 1 trains only the embeddings
    and the LM head (from an HF model), stage 2 starts from stage 1's run dir and trains everything."""
    from jaxfin.recipe import run_recipe

    out = tmp_path / "recipe_out"
    recipe = {
        "recipe": {
            "output_dir": str(out),
            "config": str(small_config),
            "stages": [
                {"name": "embeddings", "set": {"init_from": str(hf_base), "train.trainable": ["@embeddings"]}},
                {"name": "full", "set": {"train.trainable": []}},
            ],
        }
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summaries = run_recipe(path, COMMON)
    assert [s["stage"] for s in summaries] == ["embeddings", "full"]
    assert all(s["steps"] == STEPS and s["stop_reason"] == "steps" for s in summaries)

    init = _flat(jaxfin.load_model(hf_base).params)
    s1 = _flat(jaxfin.load_model(out / "embeddings").params)
    s2 = _flat(jaxfin.load_model(out / "full").params)
    assert sorted(s1) == sorted(init) == sorted(s2)
    changed = sorted(k for k in init if not np.array_equal(s1[k], init[k]))
    assert changed == ["embed_tokens/embedding", "lm_head/kernel"]
    unchanged = sorted(k for k in init if np.array_equal(s2[k], s1[k]))
    assert unchanged == [], f"stage 2 did not train {unchanged}"
    # stage 2 started from stage 1's result (the recipe's default init_from), not from the HF model
    resolved = yaml.safe_load((out / "full" / "config.yaml").read_text())
    assert Path(resolved["init_from"]) == out / "embeddings" and resolved["train"]["trainable"] == []
    moments = _moment_paths(_saved_state(out / "embeddings", STEPS)["opt_state"])
    assert sorted(moments) == ["embed_tokens/embedding", "lm_head/kernel"]
    assert sorted(_moment_paths(_saved_state(out / "full", STEPS)["opt_state"])) == sorted(init)
