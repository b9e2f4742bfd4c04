"""In-process training behaviour: early stopping on dev loss, the `jaxfin train` entry point."""

from __future__ import annotations

import json
import subprocess
import sys

from jaxfin.config import load_config
from jaxfin.train import train


def test_early_stop_when_dev_loss_stops_improving(small_config, tmp_path):
    # lr 0 keeps the params, so the dev loss never improves after the first evaluation.
    cfg = load_config(
        small_config, [f"output_dir={tmp_path}", "optimizer.lr=0", "train.patience=2", "train.dev_every=5"]
    )
    summary = train(cfg)
    assert summary["stop_reason"].startswith("early stop")
    assert summary["steps"] == 15  # evals at 5 (best), 10 (1 bad), 15 (2 bad -> stop)
    assert (tmp_path / "checkpoints" / "15").is_dir()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 15
    devs = [r["dev_loss"] for r in recs if "dev_loss" in r]
    assert len(devs) == 3 and devs[0] == devs[1] == devs[2]


def test_jaxfin_train_cli_matches_launch(small_config, tmp_path):
    """`jaxfin train` is the same entry as `python -m jaxfin.launch`: same losses for the same config."""
    runs = []
    for i, cmd in enumerate((["-m", "jaxfin.cli", "train"], ["-m", "jaxfin.launch"])):
        out = tmp_path / f"r{i}"
        args = [sys.executable, *cmd, str(small_config), f"output_dir={out}", "train.steps=5", "checkpoint.every=0"]
        p = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append([json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()])
    assert len(runs[0]) == 5 and runs[0] == runs[1]


def test_cpt_from_hf_checkpoint(small_config, tmp_path):
    """The user's path: init_from an HF Llama, train, export HF. The first logged loss equals the loss that
    transformers computes document by document on the same packed batch (packing, masks, normalisation and
    the model all checked at once); with lr 0 the exported weights are bitwise the imported ones."""
    import numpy as np
    import torch
    import transformers
    from safetensors.numpy import load_file

    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.train.data_stream import DataStream

    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500000.0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf_in")

    out = tmp_path / "run"
    cfg = load_config(
        small_config,
        [f"output_dir={out}", f"init_from={tmp_path / 'hf_in'}", f"export_hf={tmp_path / 'hf_out'}",
         "optimizer.lr=0", "train.steps=2", "checkpoint.every=0"],
    )  # fmt: skip
    train(cfg)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1

    tok = load_tokenizer(cfg.tokenizer)
    batch = DataStream(cfg, tok).loader.batch(0)  # the first step's rows (the loader is a function of the step)
    nll, count = 0.0, 0
    for r in range(cfg.train.batch_size):
        for s in set(batch["segment_ids"][r].tolist()) - {0}:
            doc = batch["tokens"][r][batch["segment_ids"][r] == s]
            with torch.no_grad():
                logp = torch.log_softmax(hf(torch.tensor(doc[None].astype(np.int64))).logits[0].double(), -1)
            nll -= logp[torch.arange(len(doc) - 1), torch.tensor(doc[1:].astype(np.int64))].sum().item()
            count += len(doc) - 1
    assert abs(first["loss"] - nll / count) < 1e-4

    src, dst = load_file(tmp_path / "hf_in" / "model.safetensors"), load_file(tmp_path / "hf_out" / "model.safetensors")
    assert sorted(src) == sorted(dst) and all(np.array_equal(src[k], dst[k]) for k in src)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf_out").eval()
    probe = torch.arange(4, 40)[None]
    with torch.no_grad():  # same weights and same config (rope_theta etc.) -> same logits
        assert torch.equal(again(probe).logits, hf(probe).logits)
