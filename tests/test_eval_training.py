"""Evaluation during training: configured tasks run every N steps into metrics.jsonl, and the trainer keeps the
best model by a chosen metric (dev loss by default) in OUTPUT_DIR/best."""

from __future__ import annotations

import json

import numpy as np

from jaxfin.config import load_config
from jaxfin.model import load_model
from jaxfin.train import train
from tests.conftest import shared_data


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tasks_every_n_steps_and_best_model_by_metric(small_config, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFIN_SHARED_DATA", str(shared_data()))
    out = tmp_path / "run"
    overrides = [f"output_dir={out}", "train.steps=6", "train.dev_every=2", "train.log_every=3", "eval.every=3",
                 "eval.tasks=[fpb]", "eval.limit=6", "checkpoint.every=0"]  # fmt: skip
    train(load_config(small_config, overrides))
    recs = _records(out)
    evals = [r for r in recs if "eval/fpb/acc" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        for k in ("acc", "acc_norm", "f1_macro", "f1_weighted"):
            assert 0.0 <= r[f"eval/fpb/{k}"] <= 1.0
    devs = [(r["step"], r["dev_loss"]) for r in recs if "dev_loss" in r]
    assert [s for s, _ in devs] == [2, 4, 6]
    best = json.loads((out / "best" / "best.json").read_text())
    step, value = min(devs, key=lambda x: x[1])
    assert best == {"metric": "dev_loss", "value": value, "step": step}  # the same float, through JSON both ways
    kept = load_model(out / "best")  # a loadable model; at the last step it equals the run's final params
    final = load_model(out)
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax_leaves(kept.params), jax_leaves(final.params), strict=True)
    )
    assert same == (step == 6)

    # the best by a task metric, maximised
    out2 = tmp_path / "run2"
    train(load_config(small_config, [*overrides[1:], f"output_dir={out2}", "checkpoint.best_metric=eval/fpb/acc_norm",
                                     "checkpoint.best_mode=max"]))  # fmt: skip
    evals = [(r["step"], r["eval/fpb/acc_norm"]) for r in _records(out2) if "eval/fpb/acc_norm" in r]
    best = json.loads((out2 / "best" / "best.json").read_text())
    top = max(v for _, v in evals)
    assert best["metric"] == "eval/fpb/acc_norm" and best["value"] == top
    assert best["step"] == next(s for s, v in evals if v == top)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)
