"""In-process training behaviour: early stopping on dev loss, the `jaxfin train` entry point."""

from __future__ import annotations

import json
import subprocess
import sys

from tolerances import rounding_tol

from jaxfin.config import load_config
from jaxfin.train import train
from tests.conftest import tiny_hf_llama


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

    hf = tiny_hf_llama(max_position_embeddings=64)
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
    batch = DataStream(cfg.data, cfg.train, cfg.objective.type, tok).loader.batch(
        0
    )  # the first step's rows (the loader is a function of the step)
    nll, count = 0.0, 0
    for r in range(cfg.train.batch_size):
        for s in set(batch["segment_ids"][r].tolist()) - {0}:
            doc = batch["tokens"][r][batch["segment_ids"][r] == s]
            with torch.no_grad():
                logp = torch.log_softmax(hf(torch.tensor(doc[None].astype(np.int64))).logits[0].double(), -1)
            nll -= logp[torch.arange(len(doc) - 1), torch.tensor(doc[1:].astype(np.int64))].sum().item()
            count += len(doc) - 1
    # float32 loss vs a float64 log-softmax of torch's float32 logits: per target a logsumexp over V (depth 3 also
    # holds both models' logit rounding, max|logit| ~0.5), then a mean of `count` NLLs of ~7: ~1.2e-4. Measured 5e-7,
    # one ulp of the loss; jaxfin in float64 is within 1e-9 of torch (whose norms and RoPE stay float32)
    tol = rounding_tol(np.float32, cfg.model.vocab_size, depth=3) + rounding_tol(np.float32, count) * nll / count
    assert abs(first["loss"] - nll / count) < tol

    src, dst = load_file(tmp_path / "hf_in" / "model.safetensors"), load_file(tmp_path / "hf_out" / "model.safetensors")
    assert sorted(src) == sorted(dst) and all(np.array_equal(src[k], dst[k]) for k in src)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf_out").eval()
    probe = torch.arange(4, 40)[None]
    with torch.no_grad():  # same weights and same config (rope_theta etc.) -> same logits
        assert torch.equal(again(probe).logits, hf(probe).logits)


def test_two_sources_two_stages_resume_mid_run(tmp_path):
    """A rising domain share (50% -> 90%) over a general replay source: stages switch at their token budget,
    the realised mixture and data intensity are logged, and a run preempted (SIGTERM) and restarted logs
    exactly what an uninterrupted run logs."""
    import os
    import signal
    import threading
    import time

    from conftest import REPO, shared_data

    data = shared_data()
    fin, gen = tmp_path / "fin.jsonl", tmp_path / "gen.jsonl"
    fin.write_text("\n".join((data / "finance_corpus_en/beige_book_2014_2020.jsonl").read_text().splitlines()[:60]))
    books = (data / "general_corpus_en/gutenberg_train.jsonl").read_text().splitlines()[:2]
    gen.write_text("\n".join(json.dumps({"text": json.loads(b)["text"][:50_000]}) for b in books))
    rows_per_step, seq, stage1 = 4, 32, "{fin: 9, gen: 1}"
    overrides = [
        f"tokenizer={REPO / 'demo_data/tokenizer.model'}",
        "model.vocab_size=1024", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2",
        "model.num_heads=4", "model.num_kv_heads=2", "model.bos_token_id=2", "model.eos_token_id=3",
        f"data.sources=[{{name: fin, path: {fin}}}, {{name: gen, path: {gen}, domain: false}}]",
        f"data.stages=[{{tokens: {20 * rows_per_step * seq}, weights: {{fin: 1, gen: 1}}}}, {{weights: {stage1}}}]",
        f"data.seq_len={seq}", f"data.cache_dir={tmp_path / 'cache'}", f"train.batch_size={rows_per_step}",
        "train.steps=40", "train.log_every=1", "train.dev_every=0", "checkpoint.every=5", "optimizer.lr=3e-3",
    ]  # fmt: skip

    def records(run):
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in recs]

    train(load_config(None, [f"output_dir={tmp_path / 'a'}", *overrides]))
    ref = records(tmp_path / "a")
    assert [r["stage"] for r in ref] == [0] * 20 + [1] * 20
    assert {r["mix_target/fin"] for r in ref[:20]} == {0.5} and {r["mix_target/fin"] for r in ref[20:]} == {0.9}
    assert all(r["data_intensity"] == r["mix/fin"] for r in ref)  # fin is the only domain source
    assert ref[19]["data_intensity"] < ref[-1]["data_intensity"]  # the domain share rises in stage 1

    run_b = tmp_path / "b"

    def preempt():  # SIGTERM this process once step 27 is logged, as a scheduler would
        while not (run_b / "metrics.jsonl").exists() or len((run_b / "metrics.jsonl").read_text().splitlines()) < 27:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    first = train(load_config(None, [f"output_dir={run_b}", *overrides]))
    assert first["stop_reason"] == "SIGTERM" and 27 <= first["steps"] < 40
    train(load_config(None, [f"output_dir={run_b}", *overrides]))
    assert records(run_b) == ref
