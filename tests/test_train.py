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
