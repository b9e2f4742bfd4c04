"""Classification metrics for the multiple-choice tasks, written out (no sklearn dependency).

Conventions (lm-evaluation-harness for the accuracies, scikit-learn for F1):

- `acc`: share of examples whose gold choice has the highest summed log-likelihood.
- `acc_norm`: the same with each choice's log-likelihood divided by the choice's length in characters
  (the harness divides by `len(choice)`, the choice string without the target delimiter).
- F1 is computed per class from the confusion counts: precision = tp / (tp + fp), recall = tp / (tp + fn),
  F1 = 2 p r / (p + r), each 0 where its denominator is 0 (a class never predicted gets precision 0 and F1 0).
  The classes are the union of the gold and predicted labels, as `sklearn.metrics.f1_score(labels=None)` uses.
  `f1_macro` is the plain mean over those classes, `f1_weighted` the mean weighted by gold support.
  There is no "binary" average: the harness's default `f1_score(average="binary")` is wrong for 3 classes.

Generative classification (FinBen / PIXIU conventions, `generative_classification_metrics`; followed file:
The-FinAI/PIXIU `src/tasks/flare.py`, class `Classification`, `process_results` and its aggregations): the
prediction is the first choice, in the order of the choice list, that occurs as a substring of the stripped,
lower-cased generation (`first_label_match`); none = "missing". Then, with scikit-learn as PIXIU uses it:

- `acc`: share of predictions equal to the gold (a missing prediction is wrong); `missing`: share of missing.
- `f1_weighted` / `f1_macro`: `f1_score(gold, pred, average="weighted" | "macro", labels=set(gold))`: the classes are
  the gold labels only, so a missing prediction (or a predicted class never gold) is an error against the gold
  class's recall and adds no class of its own.
- `mcc`: `matthews_corrcoef` with the gold labels numbered and every other prediction ("missing") mapped to -1.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first (as numpy.argmax)."""
    return int(np.argmax(np.asarray(values, dtype=np.float64)))


def per_class_f1(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> dict:
    """{label: {"precision", "recall", "f1", "support"}} over the union of gold and predicted labels."""
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    labels = sorted(set(gold) | set(pred), key=str)
    out = {}
    for c in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == c and p != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return out


def f1_scores(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> tuple[float, float]:
    """(macro F1, support-weighted F1)."""
    per = per_class_f1(gold, pred)
    if not per:
        return 0.0, 0.0
    macro = sum(v["f1"] for v in per.values()) / len(per)
    total = sum(v["support"] for v in per.values())
    weighted = sum(v["f1"] * v["support"] for v in per.values()) / total if total else 0.0
    return macro, weighted


def multiple_choice_metrics(
    loglikelihoods: Sequence[Sequence[float]],
    choices: Sequence[Sequence[str]],
    gold: Sequence[int],
) -> dict:
    """acc, acc_norm, f1_macro, f1_weighted (F1 over the acc predictions, labelled by choice string) and n.

    `loglikelihoods[i][j]`: summed log-likelihood of choice j of example i; `choices[i][j]` its string;
    `gold[i]`: the index of the right choice.
    """
    n = len(gold)
    if not (len(loglikelihoods) == len(choices) == n):
        raise ValueError("loglikelihoods, choices and gold must have one entry per example")
    if n == 0:
        return {"acc": 0.0, "acc_norm": 0.0, "f1_macro": 0.0, "f1_weighted": 0.0, "n": 0}
    pred = [argmax_first(ll) for ll in loglikelihoods]
    pred_norm = [
        argmax_first([v / max(len(c), 1) for v, c in zip(ll, ch, strict=True)])
        for ll, ch in zip(loglikelihoods, choices, strict=True)
    ]
    acc = sum(p == g for p, g in zip(pred, gold, strict=True)) / n
    acc_norm = sum(p == g for p, g in zip(pred_norm, gold, strict=True)) / n
    gold_labels = [ch[g] for ch, g in zip(choices, gold, strict=True)]
    pred_labels = [ch[p] for ch, p in zip(choices, pred, strict=True)]
    macro, weighted = f1_scores(gold_labels, pred_labels)
    return {"acc": acc, "acc_norm": acc_norm, "f1_macro": macro, "f1_weighted": weighted, "n": n}


MISSING = "missing"


def first_label_match(generation: str, choices: Sequence[str]) -> str | None:
    """PIXIU's rule: the first choice (in list order) whose lower-cased string is in the stripped, lower-cased
    generation; None when no choice occurs (a "missing" prediction). Returns the choice as written in `choices`."""
    text = generation.strip().lower()
    for c in choices:
        if c.lower() in text:
            return c
    return None


def generative_classification_metrics(gold: Sequence[str], pred: Sequence[str | None]) -> dict:
    """acc, missing, f1_weighted, f1_macro, mcc and n of generated labels (None = missing), as PIXIU aggregates
    them (see the module docstring). Labels compare case-insensitively, as PIXIU lower-cases both."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    n = len(gold)
    if n == 0:
        return {"acc": 0.0, "missing": 0.0, "f1_weighted": 0.0, "f1_macro": 0.0, "mcc": 0.0, "n": 0}
    g = [str(x).lower() for x in gold]
    p = [MISSING if x is None else str(x).lower() for x in pred]
    miss = [x is None for x in pred]
    acc = sum(a == b and not m for a, b, m in zip(g, p, miss, strict=True)) / n
    labels = sorted(set(g))
    ids = {label: i for i, label in enumerate(labels)}
    p_ids = [-1 if m else ids.get(b, -1) for b, m in zip(p, miss, strict=True)]
    p_str = [MISSING if i < 0 else labels[i] for i in p_ids]  # a prediction outside the gold labels: no class
    return {
        "acc": acc,
        "missing": sum(miss) / n,
        "f1_weighted": float(f1_score(g, p_str, average="weighted", labels=labels, zero_division=0)),
        "f1_macro": float(f1_score(g, p_str, average="macro", labels=labels, zero_division=0)),
        "mcc": float(matthews_corrcoef([ids[x] for x in g], p_ids)),
        "n": n,
    }
