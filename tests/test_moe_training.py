"""Training a mixture of experts through the one trainer, from a Mixtral folder transformers wrote: router-only
training (`@router`) moves nothing but the gates, LoRA on the experts moves nothing but the experts (merged on
export), full training resumes bitwise after a kill, and every export loads in transformers with jaxfin's logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import REPO
from tolerances import assert_close_to_scale, rounding_tol

import jaxfin
from jaxfin.config import load_config
from jaxfin.train import train

TOKENS = np.random.default_rng(0).integers(4, 1024, (2, 20))


@pytest.fixture(scope="module")
def hf_moe(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        vocab_size=1024, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
        bos_token_id=2, eos_token_id=3, router_aux_loss_coef=0.01,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("hf_moe")
    transformers.MixtralForCausalLM(cfg).save_pretrained(path)
    return path


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, framework="numpy") as h:
            out |= {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    return out


def _train(small_config, hf_moe, out: Path, *overrides: str):
    cfg = load_config(small_config, [f"output_dir={out}", f"init_from={hf_moe}", "train.steps=8", "optimizer.lr=1e-2",
                                     "optimizer.warmup_steps=0", f"export_hf={out / 'hf'}", *overrides])  # fmt: skip
    train(cfg)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _changed(before: dict, after: dict) -> set[str]:
    assert sorted(before) == sorted(after)
    return {k for k in before if not np.array_equal(before[k], after[k])}


def _transformers_logits_equal_jaxfin(path: Path) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor(TOKENS)).logits.numpy()
    got = np.asarray(jaxfin.load_model(path).logits(TOKENS))
    assert_close_to_scale(got, want, rounding_tol(np.float32, 64, depth=8))


def test_router_only_training_moves_only_the_gates(small_config, hf_moe, tmp_path):
    log = _train(small_config, hf_moe, tmp_path / "r", "train.trainable=['@router']")
    assert "moe/aux_loss" in log[0] and log[-1]["moe/dropped"] == 0
    changed = _changed(_tensors(hf_moe), _tensors(tmp_path / "r/hf"))
    gates = {f"model.layers.{i}.block_sparse_moe.gate.weight" for i in range(2)}
    assert changed == gates
    _transformers_logits_equal_jaxfin(tmp_path / "r/hf")


def test_lora_on_experts_moves_only_the_experts_and_merges_on_export(small_config, hf_moe, tmp_path):
    _train(small_config, hf_moe, tmp_path / "l", "model.lora.rank=4", "model.lora.alpha=8",
           "model.lora.targets=[gate_proj,up_proj,down_proj]")  # fmt: skip
    changed = _changed(_tensors(hf_moe), _tensors(tmp_path / "l/hf"))
    experts = {k for k in _tensors(hf_moe) if ".experts." in k}
    assert changed == experts  # every expert of every layer got its own adapter, nothing else moved
    _transformers_logits_equal_jaxfin(tmp_path / "l/hf")


def test_full_moe_training_resumes_bitwise(small_config, hf_moe, tmp_path):
    full = _train(small_config, hf_moe, tmp_path / "a", "checkpoint.every=4", "checkpoint.async_save=false")
    assert full[-1]["loss"] < full[0]["loss"]
    resumed = tmp_path / "b"  # the run as a kill after step 4 leaves it
    shutil.copytree(tmp_path / "a", resumed)
    shutil.rmtree(resumed / "checkpoints/8")
    shutil.rmtree(resumed / "hf")
    lines = (resumed / "metrics.jsonl").read_text().splitlines()[:4]
    (resumed / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    again = _train(small_config, hf_moe, resumed, "checkpoint.every=4", "checkpoint.async_save=false")
    assert [r["step"] for r in again] == list(range(1, 9))
    assert [repr(r["loss"]) for r in again] == [repr(r["loss"]) for r in full]  # bitwise
    assert [repr(r["moe/aux_loss"]) for r in again] == [repr(r["moe/aux_loss"]) for r in full]
    assert not _changed(_tensors(tmp_path / "a/hf"), _tensors(resumed / "hf"))
    _transformers_logits_equal_jaxfin(resumed / "hf")


def test_tiny_mixtral_config_trains(tmp_path):
    cfg = load_config(REPO / "configs/tiny-mixtral.yaml", [f"output_dir={tmp_path}", "train.steps=3",
                                                             "train.log_every=1", "checkpoint.every=0",
                                                             f"data.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    train(cfg)
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loads = [log[-1][f"moe/layer0/load/e{j}"] for j in range(8)]
    assert abs(sum(loads) - 1) < 1e-5 and log[-1]["moe/dropped"] == 0
