"""Shared test setup: a persistent XLA compilation cache, so the many small runs (and subprocesses) that compile
the same programs pay for compilation once per machine."""

import os
import tempfile
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxfin-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_config(tmp_path_factory):
    """A very small model on a slice of the shipped demo corpus, logging every step."""
    d = tmp_path_factory.mktemp("cfg")
    lines = (REPO / "demo_data/finance_train.jsonl").read_text().splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:150]) + "\n")
    (d / "dev.jsonl").write_text("\n".join(lines[150:170]) + "\n")
    cfg = yaml.safe_load((REPO / "configs/tiny.yaml").read_text())
    cfg["tokenizer"] = str(REPO / "demo_data/tokenizer.model")
    cfg["model"].update(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    cfg["data"].update(sources=[str(d / "train.jsonl")], dev=[str(d / "dev.jsonl")], seq_len=32)
    cfg["data"]["cache_dir"] = str(d / "cache")
    cfg["train"].update(steps=60, batch_size=4, log_every=1, dev_every=10, dev_batches=1)
    cfg["checkpoint"].update(every=4, keep=3, async_save=True)
    path = d / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def shared_data() -> Path:
    """The team's real test data ($JAXFIN_SHARED_DATA, default <repo>/../shared/data). Missing data fails the tests
    that need it instead of skipping them, so an empty checkout never passes as green."""
    path = Path(os.environ.get("JAXFIN_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path}: set JAXFIN_SHARED_DATA to the shared data folder")
    return path


def tiny_hf_llama(seed: int = 0, **overrides):
    """A tiny random transformers Llama in eval mode: vocab 1024 (the demo tokenizer's), bos 2, eos 3, hidden 32,
    2 layers, GQA 4/2; `overrides` are LlamaConfig fields. Save it with `save_pretrained` for jaxfin to load."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = dict(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, rope_theta=500000.0, bos_token_id=2,
               eos_token_id=3)  # fmt: skip
    return transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**{**cfg, **overrides})).eval()
