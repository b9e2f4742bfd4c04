"""Evaluation during training: configured tasks run every N steps into metrics.jsonl, and the trainer keeps the
best model by a chosen metric (dev loss by default) in OUTPUT_DIR/best."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tolerances import rounding_tol

import jaxfin
from jaxfin import load_model
from jaxfin.config import load_config
from jaxfin.train import train
from tests.conftest import REPO, shared_data

SP_MODEL = REPO / "demo_data/tokenizer.model"  # small_config's tokenizer


def _fpb_metrics_by_torch(model, hf_dir, limit):
    """Independent recomputation of the fpb metrics of `model`: its HF export scored by transformers (each choice's
    summed log-likelihood of [BOS] + context + " " + choice, tokenised whole-then-split by sentencepiece), the
    predictions by numpy argmax, the metrics by scikit-learn. The prompts, choices and gold come from the task
    (their rendering is checked against the data files in test_eval_tasks). Also returns the smallest margin
    between an example's best and second-best score, over the scores' float32 rounding bound."""
    import sentencepiece as spm
    import torch
    import transformers
    from sklearn.metrics import accuracy_score, f1_score

    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval.tasks import run_task

    examples = run_task(model, load_tokenizer(SP_MODEL), "fpb", limit=limit)["examples"]
    jaxfin.save_model(model, hf_dir, format="hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    pred, pred_norm, margin = [], [], float("inf")
    for ex in examples:
        start = 1 + len(sp.encode(ex["context"]))
        seqs = [[sp.bos_id(), *sp.encode(ex["context"] + " " + c)] for c in ex["choices"]]
        width = max(map(len, seqs))  # right padding: a causal model's earlier positions do not see it
        with torch.no_grad():
            logits = hf(torch.tensor([q + [0] * (width - len(q)) for q in seqs])).logits.double()
        logp = torch.log_softmax(logits, -1)
        ll = np.array([sum(logp[r, t - 1, q[t]].item() for t in range(start, len(q))) for r, q in enumerate(seqs)])
        # float32, two programs (jaxfin, torch): per target depth 4L+2 reductions of <= max(width, V) terms,
        # relative to max(1, max |logit|) (a logsumexp's error is absolute), times the targets summed
        per_target = rounding_tol(
            np.float32, max(width, hf.config.vocab_size), depth=4 * hf.config.num_hidden_layers + 2
        )
        tol = per_target * max(1.0, float(logits.abs().max())) * max(len(q) - start for q in seqs)
        # (acc_norm's scores are divided by len(choice) >= 1, their error too: the same tol is conservative there)
        for scores, out in ((ll, pred), (ll / [len(c) for c in ex["choices"]], pred_norm)):
            top2 = np.sort(scores)[-2:]
            margin = min(margin, (top2[1] - top2[0]) / tol)
            out.append(int(np.argmax(scores)))
    gold = [ex["gold"] for ex in examples]
    gold_labels = [ex["choices"][g] for ex, g in zip(examples, gold)]
    pred_labels = [ex["choices"][p] for ex, p in zip(examples, pred)]
    metrics = {
        "acc": accuracy_score(gold, pred),
        "acc_norm": accuracy_score(gold, pred_norm),
        "f1_macro": f1_score(gold_labels, pred_labels, average="macro", zero_division=0.0),
        "f1_weighted": f1_score(gold_labels, pred_labels, average="weighted", zero_division=0.0),
    }
    return metrics, margin, len(examples)


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
    # the step-6 evaluation is of the final params (the run's end): the same metrics recomputed from them here
    want, margin, n = _fpb_metrics_by_torch(load_model(out), tmp_path / "final_hf", limit=6)
    assert n == 6 and margin > 2  # each prediction decided by > 2x the programs' rounding (measured: 1500x)
    for k, v in want.items():  # float64 arithmetic on <= 6 counts either side: float64 rounding only
        assert evals[1][f"eval/fpb/{k}"] == pytest.approx(v, abs=1e-12), k
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
