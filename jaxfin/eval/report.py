"""Tables and the forgetting report: per-model metrics, deltas against the first (base) model, a PNG plot."""

from __future__ import annotations

import math
from pathlib import Path

DELTA_KEYS = ("loss", "bits_per_byte")
PROTOCOL_NOTE = (
    "Protocols: `loglik` = the choice with the highest log-likelihood (lm-evaluation-harness conventions); "
    "`generative` = greedy generation scored FinBen-style (first label found, missing rate; or the task's metric)."
)


def forgetting(results: dict, models: list[str], sets: list[dict]) -> dict:
    """{model: {set: {d_loss, d_bits_per_byte}}} for every model after the first, and group means.

    `results`: {model: {set: metrics}}; `sets`: [{name, domain}] in config order. A delta is model - base, so a
    positive delta on a general set is forgetting and a negative one on a domain set is domain gain. Loss deltas
    compare only between models with the same tokenizer; bits-per-byte deltas always do.
    """
    base = models[0]
    out: dict = {"base": base, "per_set": {}, "groups": {}}
    for m in models[1:]:
        per = {}
        for s in sets:
            a, b = results[base].get(s["name"]), results[m].get(s["name"])
            if a is None or b is None:
                continue
            per[s["name"]] = {f"d_{k}": b[k] - a[k] for k in DELTA_KEYS}
        out["per_set"][m] = per
        groups = {}
        for group, is_domain in (("domain", True), ("general", False)):
            names = [s["name"] for s in sets if bool(s["domain"]) == is_domain and s["name"] in per]
            if names:
                groups[group] = {f"mean_d_{k}": sum(per[n][f"d_{k}"] for n in names) / len(names) for k in DELTA_KEYS}
        out["groups"][m] = groups
    return out


def _f(x, digits=4, signed=False) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    """The whole report as markdown: text metrics, forgetting deltas, task metrics (each with the protocol that
    produced it)."""
    lines = []
    sets = report["text_sets"]
    if sets:
        lines += ["## Raw text", "", "| model | set | group | loss | ppl | bits/byte | tokens | bytes |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for m in report["models"]:
            for s in sets:
                r = report["text"][m["name"]].get(s["name"])
                if r:
                    group = "domain" if s["domain"] else "general"
                    lines.append(
                        f"| {m['name']} | {s['name']} | {group} | {_f(r['loss'])} | {_f(r['ppl'], 2)} | "
                        f"{_f(r['bits_per_byte'])} | {r['tokens']} | {r['bytes']} |"
                    )
        lines.append("")
    fg = report.get("forgetting")
    if fg and fg["per_set"]:
        lines += [f"## Forgetting: deltas against `{fg['base']}` (model - base; lower is better)", "",
                  "| model | set | group | Δ loss | Δ bits/byte |", "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
        for m, per in fg["per_set"].items():
            for domain in (True, False):
                for s in sets:
                    if bool(s["domain"]) == domain and s["name"] in per:
                        d = per[s["name"]]
                        group = "domain" if domain else "general"
                        lines.append(f"| {m} | {s['name']} | {group} | {_f(d['d_loss'], signed=True)} | "
                                     f"{_f(d['d_bits_per_byte'], signed=True)} |")  # fmt: skip
            for group, g in fg["groups"][m].items():
                lines.append(f"| {m} | **mean** | {group} | {_f(g['mean_d_loss'], signed=True)} | "
                             f"{_f(g['mean_d_bits_per_byte'], signed=True)} |")  # fmt: skip
        lines += ["", "Δ loss compares only models with the same tokenizer; Δ bits/byte compares any two.", ""]
    prefs = report.get("pairs") or {}
    if prefs:
        lines += ["## Preference pairs (chosen more likely than rejected; higher is better)", "",
                  "| model | set | accuracy | per-token accuracy | mean margin (nats) | pairs |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for m, sets in prefs.items():
            for name, r in sets.items():
                lines.append(f"| {m} | {name} | {_f(r['accuracy'])} | {_f(r['accuracy_norm'])} | "
                             f"{_f(r['margin'], signed=True)} | {r['pairs']} |")  # fmt: skip
        lines.append("")
    tasks = report.get("tasks") or {}
    rows = [(m, t) for m in tasks for t in tasks[m]]
    if rows:
        lines += ["## Tasks", "", "| model | task | protocol | metric | value | n |",
                  "| --- | --- | --- | --- | ---: | ---: |"]  # fmt: skip
        for m, t in rows:
            r = tasks[m][t]
            protocol = r.get("protocol", "")
            for k, v in (r.get("metrics") or {}).items():
                value = _f(float(v)) if isinstance(v, (int, float)) else str(v)
                lines.append(f"| {m} | {t} | {protocol} | {k} | {value} | {r.get('n', '')} |")
        lines += ["", PROTOCOL_NOTE, ""]
    return "\n".join(lines)


def wide_table(report: dict, task_metric: str = "acc") -> list[str]:
    """One row per model: its loss on each text set, then `task_metric` on each task (markdown lines)."""
    sets = [s["name"] for s in report["text_sets"]]
    tasks = list(dict.fromkeys(t for per in (report.get("tasks") or {}).values() for t in per))
    head = ["model"] + sets + [f"{t} {task_metric}" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for m in report["models"]:
        name = m["name"]
        cells = [_f(report["text"][name][s]["loss"]) if s in report["text"][name] else "" for s in sets]
        for t in tasks:
            v = ((report.get("tasks") or {}).get(name, {}).get(t, {}).get("metrics") or {}).get(task_metric)
            cells.append("" if v is None else _f(float(v), 3))
        lines.append("| " + " | ".join([name] + cells) + " |")
    return lines


def plot_forgetting(report: dict, path: str | Path) -> str | None:
    """Grouped bars: Δ bits per byte against the base, one group per text set (domain sets first), one bar per
    model. Returns the path, or None when there is nothing to compare (one model)."""
    fg = report.get("forgetting")
    if not fg or not fg["per_set"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sets = sorted(report["text_sets"], key=lambda s: not s["domain"])
    names = [s["name"] for s in sets]
    models = list(fg["per_set"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names) + 2), 4))
    x = np.arange(len(names))
    for i, m in enumerate(models):
        vals = [fg["per_set"][m].get(n, {}).get("d_bits_per_byte", np.nan) for n in names]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=m)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{s['name']}\n({'domain' if s['domain'] else 'general'})" for s in sets])
    ax.set_ylabel(f"Δ bits per byte vs {fg['base']}")
    ax.set_title("Domain gain (< 0 on domain sets) and forgetting (> 0 on general sets)")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
