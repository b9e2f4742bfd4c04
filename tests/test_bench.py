"""`jaxfin bench train`: the MFU FLOP count against the published Llama-3-8B size and an independent transformers
parameter count, the peak table against the vendors' published figures, and the CLI end to end against
transformers + torch on a very small model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import REPO

from jaxfin.bench import flops_params, flops_per_token, param_count, peak_tflops
from jaxfin.bench.train import format_summary
from jaxfin.cli import main
from jaxfin.config import load_config
from jaxfin.hf import config_to_hf

LLAMA3_8B_PARAMS = 8_030_261_248  # Meta's model card / HF: "8.03B"
LLAMA32_1B_PARAMS = 1_235_814_400  # HF: "1.24B"


def _torch_param_count(model_cfg) -> int:
    """Independent oracle: transformers' own LlamaForCausalLM of that shape, built on the meta device (no memory)."""
    import torch
    import transformers

    hf = config_to_hf(model_cfg)
    config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_flops_per_token_llama3_8b():
    m = load_config(REPO / "configs/llama-3-8b.yaml").model
    assert param_count(m) == LLAMA3_8B_PARAMS == _torch_param_count(m)
    embedding = 128256 * 4096  # 525M: the input table does no FLOPs; the untied LM head does
    assert flops_params(m) == LLAMA3_8B_PARAMS - embedding
    n = 7_504_924_672
    for seq in (2048, 8192):
        attn = 12 * 32 * 32 * 128 * seq  # 12 L H D S, halved by causal masking
        assert flops_per_token(m, seq) == pytest.approx(6 * n + attn / 2, rel=1e-12)
        assert flops_per_token(m, seq, causal=False) == pytest.approx(6 * n + attn, rel=1e-12)
    # at 8K context: 45.03 GFLOP of dense work + 6.44 GFLOP of (causal) attention per token
    assert flops_per_token(m, 8192) == pytest.approx(51.47e9, rel=1e-3)


def test_tied_embedding_counts_once_as_the_head():
    m = load_config(REPO / "configs/llama-3.2-1b.yaml").model
    assert m.tie_embeddings
    assert param_count(m) == LLAMA32_1B_PARAMS == _torch_param_count(m)
    assert flops_params(m) == LLAMA32_1B_PARAMS  # the shared matrix is the LM head's
    assert flops_per_token(m, 4096) == pytest.approx(6 * LLAMA32_1B_PARAMS + 6 * 16 * 32 * 64 * 4096)


# Dense bf16 peaks from the vendors' own documents, in the form they are printed there (independent of the table in
# jaxfin/bench/train.py): NVIDIA's data sheets print bf16 "with sparsity", twice the dense rate; AMD's MI250X sheet
# prints the whole package, two GCDs that JAX sees as two devices; Google's Cloud TPU pages print per chip. Where
# the architecture documents give them, the same peak is also units x dense bf16 FLOP per clock per unit x clock.
SPARSE = 2
PUBLISHED = {
    "NVIDIA H100 80GB HBM3": 1979 / SPARSE,  # H100 SXM data sheet: BF16 Tensor Core 1,979 TFLOPS (sparse)
    "NVIDIA H200": 1979 / SPARSE,  # H200 data sheet (SXM): 1,979 TFLOPS (sparse); the same GH100 SM count and clock
    "NVIDIA H100 PCIe": 1513 / SPARSE,  # H100 PCIe data sheet: 1,513 TFLOPS (sparse)
    "NVIDIA H100 NVL": 1671 / SPARSE,  # H100 NVL data sheet: 1,671 TFLOPS (sparse)
    "NVIDIA A100-SXM4-80GB": 624 / SPARSE,  # A100 data sheet: BFLOAT16 Tensor Core 312 | 624 TFLOPS (sparse)
    "NVIDIA A100 80GB PCIe": 624 / SPARSE,  # the same for the PCIe card (same SM count and boost clock)
    "AMD Instinct MI300X": 1307.4,  # MI300X data sheet: peak BF16 1307.4 TFLOPS (dense; 2614.9 with sparsity)
    "AMD Instinct MI250X": 383.0 / 2,  # MI250X data sheet: peak bfloat16 383.0 TFLOPS per package of 2 GCDs
    "TPU v4": 275.0,  # Cloud TPU v4 page: 275 bf16 TFLOPS per chip
    "TPU v5 lite": 197.0,  # Cloud TPU v5e page: 197 bf16 TFLOPS per chip (v5e reports "TPU v5 lite")
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,  # Cloud TPU v5p page: 459 bf16 TFLOPS per chip
    "TPU v5": 459.0,  # v5p reports "TPU v5"
    "TPU v6 lite": 918.0,  # Cloud TPU v6e (Trillium) page: 918 bf16 TFLOPS per chip
    "TPU v6e": 918.0,
}
FROM_ARCHITECTURE = {  # units x dense bf16 FLOP/clock/unit x clock (GHz), from the architecture white papers
    "NVIDIA H100 80GB HBM3": 132 * 4096 * 1.83,  # H100 white paper: 132 SMs, 4 tensor cores x 512 FMA, 1.83 GHz
    "NVIDIA A100-SXM4-80GB": 108 * 2048 * 1.41,  # A100 white paper: 108 SMs, 4 tensor cores x 256 FMA, 1.41 GHz
    "AMD Instinct MI300X": 304 * 2048 * 2.1,  # CDNA 3: 304 CUs at 2.1 GHz
    "AMD Instinct MI250X": 110 * 1024 * 1.7,  # CDNA 2: 110 CUs per GCD at 1.7 GHz
    "TPU v4": 2 * 4 * 128 * 128 * 2 * 1.05,  # TPU v4 paper: 2 TensorCores x 4 MXUs of 128x128 MACs, 1.05 GHz
}


@pytest.mark.parametrize("kind", sorted(PUBLISHED))
def test_peak_tflops_matches_published_figures(kind):
    """The peak used for MFU is the vendor's dense bf16 figure for that device. The documents print 3 to 5
    significant digits and the table 3 or 4 (989 for 989.4): they agree to <= half a unit in 275, 2e-3 relative."""
    assert peak_tflops(kind) == pytest.approx(PUBLISHED[kind], rel=2e-3)
    if kind in FROM_ARCHITECTURE:
        assert FROM_ARCHITECTURE[kind] / 1e3 == pytest.approx(PUBLISHED[kind], rel=2e-3)  # the two sources agree


@pytest.mark.parametrize("kind", ["cpu", "Some Future Chip", "NVIDIA GeForce RTX 4090", "TPU v3"])
def test_peak_tflops_unknown_device_is_none(kind):
    assert peak_tflops(kind) is None  # no MFU against a made-up peak


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warm", [0, 1, 5])
def test_torch_side_follows_jaxfins_lr_schedule(schedule, warm):
    from jaxfin.bench.torch_train import lr_factor
    from jaxfin.config.schema import OptimizerConfig
    from jaxfin.train.optimizer import make_schedule

    cfg = OptimizerConfig(lr=2e-3, schedule=schedule, warmup_steps=warm, min_lr_ratio=0.1)
    sched = make_schedule(cfg, 20)
    spec = {"schedule": schedule, "warmup_steps": warm, "total_steps": 20, "min_lr_ratio": 0.1}
    for step in range(25):  # optax in float32: a few ops, lr >= min_lr_ratio·peak (no cancellation); 1e-5 = 170u
        assert 2e-3 * lr_factor(step, spec) == pytest.approx(float(sched(step)), rel=1e-5), step


def test_bench_train_cli_against_torch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the CLI may add GPU flags; restore after
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true"))
    out = tmp_path / "bench.json"
    overrides = ["model.num_layers=1", "data.seq_len=32", "train.batch_size=2"]
    # the last override comes after the options: it must apply too
    rc = main(["bench", "train", str(REPO / "configs/tiny.yaml"), *overrides[:2], "--steps", "2", "--compare-torch",
               "--rounds", "3", "--json", "--out", str(out), overrides[2]])  # fmt: skip
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == r
    for key in ("tokens_per_s", "step_time_s", "step_time_mean_s", "compile_s", "mfu", "peak_tflops", "flops_per_token",
                "peak_memory_bytes", "peak_memory_kind", "device_kind", "num_devices", "jax", "params"):  # fmt: skip
        assert key in r, key
    assert r["overrides"] == overrides and r["tokens_per_step"] == 64 and r["steps"] == 2
    assert r["tokens_per_s"] > 0 and r["torch_tokens_per_s"] > 0
    # three alternating rounds: torch's round r ends before jaxfin's starts, which ends before torch's next one
    rounds = r["rounds"]
    assert [q["round"] for q in rounds] == [0, 1, 2]
    for q, nxt in zip(rounds, rounds[1:] + [None]):
        assert q["torch_start"] < q["torch_end"] <= q["jaxfin_start"] < q["jaxfin_end"]
        assert nxt is None or q["jaxfin_end"] <= nxt["torch_start"]
        assert q["ratio"] == pytest.approx(q["jaxfin_tokens_per_s"] / q["torch_tokens_per_s"], rel=1e-12)
    ratios = sorted(q["ratio"] for q in rounds)
    assert (r["ratio_min"], r["ratio"], r["ratio_max"]) == (ratios[0], ratios[1], ratios[2])
    assert r["tokens_per_s"] == sorted(q["jaxfin_tokens_per_s"] for q in rounds)[1]
    assert r["torch_tokens_per_s"] == sorted(q["torch_tokens_per_s"] for q in rounds)[1]
    assert r["device"] == "cpu" and r["mfu"] is None and r["peak_tflops"] is None
    assert r["peak_memory_kind"].startswith("host peak RSS") and r["peak_memory_bytes"] > 0
    t = r["torch"]
    assert t["params"] == r["params"] == param_count(load_config(REPO / "configs/tiny.yaml", overrides).model)
    assert t["threads"] == os.cpu_count() and t["compute_dtype"] == "float32" and t["attn_implementation"] == "sdpa"
    assert len(t["step_times_s"]) == len(r["step_times_s"]) == 2 * 3
    for q, tq in zip(rounds, t["rounds"]):  # each round's tokens/s from its own median step time
        assert q["torch_tokens_per_s"] == pytest.approx(64 / float(np.median(tq["step_times_s"])), rel=1e-12)
    # both sides train the same thing: random tokens over a 1024 vocabulary start near ln(1024) = 6.93, and
    # 1 + 2 x 3 steps on one fixed batch bring both down by about as much
    assert abs(r["loss"] - t["loss"]) < 0.5 and 4.5 < r["loss"] < 6.9
    text = format_summary(r)
    assert "tokens/s" in text and "ratio" in text and "MFU     n/a" in text


def test_compare_torch_without_torch_is_a_message(monkeypatch, capsys):
    import jaxfin.bench.train as bench

    monkeypatch.setattr(bench, "torch_available", lambda: False)
    monkeypatch.setattr(bench, "bench_jaxfin", lambda *a, **k: pytest.fail("must refuse before benchmarking"))
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    assert main(["bench", "train", str(REPO / "configs/tiny.yaml"), "--compare-torch"]) == 2
    assert "error: --compare-torch needs torch and transformers" in capsys.readouterr().err


def _gemm_floor_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cpu_gemm_floor", REPO / "benchmarks" / "cpu_gemm_floor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("overrides", [[], ["model.tie_embeddings=true", "model.num_kv_heads=4"]])
def test_cpu_gemm_floor_lists_every_matmul_of_the_step(overrides):
    """The GEMM list's FLOPs equal the training FLOPs formula (6N + full, unmasked attention) minus the norm scales,
    the only parameters outside a matmul; remat adds exactly the layers' forward GEMMs (2N_layers + attention)."""
    cfg = load_config(REPO / "configs" / "tiny.yaml", overrides)
    m, s = cfg.model, cfg.data.seq_len
    tokens = cfg.train.batch_size * s
    gemms = _gemm_floor_module().step_gemms(cfg)
    total = sum(g["gflop"] * g["count"] for g in gemms) * 1e9
    norms = 2 * m.num_layers * m.hidden_size + m.hidden_size
    assert total == pytest.approx(tokens * (flops_per_token(m, s, causal=False) - 6 * norms), rel=1e-9)
    recomputed = sum(g["gflop"] * g["count"] for g in gemms if g["fwd"]) * 1e9
    layer_params = flops_params(m) - norms - m.hidden_size * m.vocab_size
    attn = 4 * m.num_layers * m.num_heads * m.head_size * s
    assert recomputed == pytest.approx(tokens * (2 * layer_params + attn), rel=1e-9)
