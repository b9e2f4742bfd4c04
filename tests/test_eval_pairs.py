"""Held-out preference accuracy (jaxfin/eval/pairs.py) against transformers: each pair's completion log-probs
written out with torch on the same tokens, so accuracy, per-token accuracy and margin equal the oracle's; and the
`pairs:` section of `jaxfin eval` end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers
import yaml
from conftest import REPO, shared_data

import jaxfin
from jaxfin.cli import main
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.eval.config import PairSet
from jaxfin.eval.pairs import pair_metrics
from jaxfin.eval.run import read_pairs

DEMO_SPM = REPO / "demo_data/tokenizer.model"
FIELDS = {"prompt": "prompt", "chosen": "chosen_response", "rejected": "rejected_response"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs_model")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # far from init: clear margins
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(DEMO_SPM, path / "tokenizer.model")
    return path, model


def _pairs(n=24):
    ps = PairSet(name="hh", path=str(shared_data() / "preferences/hh_rlhf_harmless_base_test.jsonl"),
                 fields=FIELDS, records=[2000, None])  # fmt: skip
    return read_pairs(ps, n)


def _oracle(hf, pairs, seq_len):
    """Per pair: sum and count of log p(completion + EOS | BOS + prompt), left-truncated to the same width."""
    sp = spm.SentencePieceProcessor(model_file=str(DEMO_SPM))
    seqs = []
    for p in pairs:
        prompt = [sp.bos_id(), *sp.encode(p["prompt"])]
        for side in ("chosen", "rejected"):
            comp = [*sp.encode(p[side]), sp.eos_id()]
            seqs.append((prompt + comp, [0] * len(prompt) + [1] * len(comp)))
    width = min(seq_len, -(-max(len(t) for t, _ in seqs) // 16) * 16)
    out = []
    for t, m in seqs:
        t, m = t[-width:], m[-width:]
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([t])).logits[0].double(), -1)
        lp = logp[torch.arange(len(t) - 1), torch.tensor(t[1:])].numpy()
        w = np.array(m[1:], bool)
        out.append((lp[w].sum(), w.sum()))
    s = np.array(out)
    c, r = s[0::2], s[1::2]
    return {"accuracy": np.mean(c[:, 0] > r[:, 0]), "accuracy_norm": np.mean(c[:, 0] / c[:, 1] > r[:, 0] / r[:, 1]),
            "margin": np.mean(c[:, 0] - r[:, 0])}  # fmt: skip


@pytest.mark.parametrize("seq_len", [1024, 64])  # whole pairs / left-truncated ones
def test_preference_accuracy_matches_transformers(tiny, seq_len):
    path, hf = tiny
    pairs = _pairs()
    want = _oracle(hf, pairs, seq_len)
    got = pair_metrics(jaxfin.load_model(path, compute_dtype="float32"), load_tokenizer(str(path)), pairs,
                       seq_len=seq_len, batch_size=5)  # fmt: skip
    assert got["pairs"] == len(pairs)
    assert got["accuracy"] == want["accuracy"] and got["accuracy_norm"] == want["accuracy_norm"]
    assert 0 < got["accuracy"] < 1  # both outcomes occur: a swapped chosen/rejected would show
    np.testing.assert_allclose(got["margin"], want["margin"], rtol=1e-4, atol=1e-3)


def test_eval_config_pairs_section(tiny, tmp_path):
    path, _ = tiny
    cfg = {"models": [str(path)], "output_dir": str(tmp_path / "out"), "max_docs": 10, "seq_len": 64,
           "pairs": [{"name": "hh_dev", "path": str(shared_data() / "preferences/hh_rlhf_harmless_base_test.jsonl"),
                      "fields": FIELDS, "records": [2000, None]}]}  # fmt: skip
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["eval", str(tmp_path / "e.yaml")]) == 0
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    r = report["pairs"][path.name]["hh_dev"]
    assert r["pairs"] == 10 and 0 <= r["accuracy"] <= 1
    assert "## Preference pairs" in (tmp_path / "out" / "eval.md").read_text()
