"""What a recipe writes for people: OUTPUT_DIR/report.md (each eval stage's table and checks) and `jaxfin recipe
status` (each stage, its state and headline metrics)."""

from __future__ import annotations

from pathlib import Path


def checks(report: dict, spec: dict) -> list[dict]:
    """The report's checks (module docstring) on an eval report: [{check, model, set, loss, against, ok}]."""
    loss = {m: {s: r["loss"] for s, r in sets.items()} for m, sets in report["text"].items()}
    experts, combined = spec.get("experts", {}), spec.get("combined", [])
    dense = [m for m in loss if m not in combined]
    out = []
    for e, s in experts.items():
        rival = min((m for m in dense if m != e), key=lambda m: loss[m][s], default=None)
        if rival is not None:
            out.append({"check": "expert best on its own set among the dense models", "model": e, "set": s,
                        "loss": loss[e][s], "against": rival, "against_loss": loss[rival][s],
                        "ok": loss[e][s] <= loss[rival][s]})  # fmt: skip
    for c in combined:
        for e, s in experts.items():
            out.append({"check": "combined model at least as good as the expert on its set", "model": c, "set": s,
                        "loss": loss[c][s], "against": e, "against_loss": loss[e][s],
                        "ok": loss[c][s] <= loss[e][s]})  # fmt: skip
    return out


def report_markdown(recipe: str, summaries: list[dict], evals: list[tuple[dict, dict, list[dict]]],
                    png: str | None = None) -> str:  # fmt: skip
    """report.md: the stages' times, then per eval stage (stage, its eval report, its checks) the table and checks."""
    from jaxfin.eval.report import wide_table

    lines = [f"# Recipe {recipe}", "", "| stage | seconds | tokens by domain level | cumulative data intensity | "
             "output |", "| --- | ---: | --- | ---: | --- |"]  # fmt: skip
    for s in summaries:
        tokens = " ".join(f"{k}: {v:,}" for k, v in (s.get("tokens_by_level") or {}).items())
        ci = f"{s['cumulative_intensity']:.4f}" if "cumulative_intensity" in s else ""
        lines.append(f"| {s['stage']} | {s['seconds']} | {tokens} | {ci} | `{s['output_dir']}` |")
    if png:
        lines += ["", f"![losses and bits per byte]({Path(png).name})"]
    for st, report, ch in evals:
        lines += ["", f"## {st['name']}: loss on each text set (nats per token; lower is better) and task accuracy", ""]
        lines += wide_table(report)
        if ch:
            lines += ["", "| check | model | set | loss | against | its loss | holds |",
                      "| --- | --- | --- | ---: | --- | ---: | --- |"]  # fmt: skip
            lines += [f"| {c['check']} | {c['model']} | {c['set']} | {c['loss']:.4f} | {c['against']} | "
                      f"{c['against_loss']:.4f} | {'yes' if c['ok'] else '**no**'} |" for c in ch]  # fmt: skip
        lines += ["", f"Every metric: `{Path(st['eval'].output_dir) / 'eval.md'}`."]
    return "\n".join(lines) + "\n"


def scores(report: dict) -> dict:
    """An eval report's headline numbers: bits_per_byte {model: {text set: value}}, tasks {model: {task: its
    first metric (acc, or the task's own)}} and, with pair sets, preference_accuracy {model: {pair set: value}}."""
    bpb = {m: {s: r["bits_per_byte"] for s, r in sets.items()} for m, sets in report["text"].items()}
    tasks = {}
    for m, per in (report.get("tasks") or {}).items():
        tasks[m] = {}
        for t, r in per.items():
            metrics = {k: v for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))}
            key = "acc" if "acc" in metrics else next(iter(metrics), None)
            if key is not None:
                tasks[m][f"{t} {key}"] = float(metrics[key])
    pairs = {m: {name: r["accuracy"] for name, r in sets.items()} for m, sets in (report.get("pairs") or {}).items()}
    return {"bits_per_byte": bpb, "tasks": tasks, **({"preference_accuracy": pairs} if pairs else {})}


# ------------------------------------------------------------------------------------------------ status


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def headline(kind: str, summary: dict) -> str:
    """A stage's headline metrics in one line."""
    if kind == "train":
        parts = [f"{summary.get('steps')} steps ({summary.get('stop_reason')})"]
        parts += [f"{k} {_fmt(summary[k])}" for k in ("dev_loss_first", "dev_loss_best") if summary.get(k) is not None]
        parts += [f"{k.replace('cumulative_intensity', 'intensity')} {summary[k]:.3f}" for k in summary
                  if k.startswith("cumulative_intensity")]  # fmt: skip
        return ", ".join(parts)
    if kind == "eval":
        ch = summary.get("checks") or []
        parts = [f"checks {sum(c['ok'] for c in ch)}/{len(ch)} hold"] if ch else []
        for m, sets in (summary.get("bits_per_byte") or {}).items():
            parts.append(f"{m} bits/byte " + " ".join(f"{s} {v:.3f}" for s, v in sets.items()))
        return "; ".join(parts)
    return ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items() if k not in ("output_dir", "checks")) or "built"


def status_rows(out: Path, state: dict, planned: list[dict] | None = None) -> list[dict]:
    """[{stage, kind, state, seconds, headline}] in the recipe's order: the planned stages (a recipe file, loaded),
    else those of the last run. A stage done under other inputs than planned is `changed` (the next run reruns
    it), one never started `pending`."""
    plans = {s["name"]: s for s in planned or state.get("plan", [])}
    rows = []
    for name, plan in plans.items():
        rec, kind = state["stages"].get(name), plan["kind"]
        if rec is None:
            st = "partial" if (out / name).exists() or (out / f"{name}.partial").exists() else "pending"
        elif rec["hash"] != plan["hash"]:
            st = "changed"
        else:
            st = rec["state"]
        summary = (rec or {}).get("summary") or {}
        rows.append({"stage": name, "kind": kind, "state": st, "seconds": (rec or {}).get("seconds"),
                     "headline": headline(kind, summary) if rec and rec["state"] == "done" else ""})  # fmt: skip
    return rows


def status_table(rows: list[dict]) -> str:
    head = ("stage", "kind", "state", "seconds", "headline")
    cells = [[str(r[h] if r[h] is not None else "") for h in head] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join([fmt.format(*head), *(fmt.format(*c) for c in cells)])


# ------------------------------------------------------------------------------------------------ plot


def _curves(stage_dir: Path) -> tuple[list, list, list]:
    """(steps, train losses, [(step, dev loss)]) of a training stage's metrics.jsonl."""
    import json

    steps, loss, dev = [], [], []
    f = stage_dir / "metrics.jsonl"
    for line in f.read_text().splitlines() if f.is_file() else []:
        r = json.loads(line)
        if "loss" in r:
            steps.append(r["step"])
            loss.append(r["loss"])
        if "dev_loss" in r:
            dev.append((r["step"], r["dev_loss"]))
    return steps, loss, dev


def _rewards(stage_dir: Path) -> dict[str, list] | None:
    """An RL stage's curves from its metrics.jsonl: {reward: [(step, mean reward of the step's rollouts)],
    dev_reward: [(step, greedy held-out reward)], dev_reward_sampled: [...]}; None for other stages."""
    import json

    f = stage_dir / "metrics.jsonl"
    recs = [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []
    if not any("reward" in r for r in recs):
        return None
    keys = ("reward", "dev_reward", "dev_reward_sampled")
    return {k: [(r["step"], r[k]) for r in recs if k in r] for k in keys}


def _plot_rewards(ax, rewards: dict[str, dict]) -> None:
    """The RL stages' rewards: the rollouts' (a 10-step moving mean) and the held-out prompts' (greedy, sampled)."""
    import numpy as np

    for n, c in rewards.items():
        steps, vals = zip(*c["reward"])
        k = min(10, len(vals))
        line = ax.plot(steps[k - 1 :], np.convolve(vals, np.ones(k) / k, "valid"), label=f"{n} rollouts")[0]
        for key, style, what in (("dev_reward", "o-", "held-out, greedy"), ("dev_reward_sampled", "s--",
                                                                             "held-out, sampled")):  # fmt: skip
            if c[key]:
                ax.plot(*zip(*c[key]), style, color=line.get_color(), alpha=0.8, label=f"{n} {what}")
    ax.set(xlabel="step", ylabel="reward (mean per completion)", title="RL stages: reward")
    ax.legend(fontsize=7, ncol=3)


def plot_recipe(out: Path, kinds: dict[str, str], evals: list[tuple[dict, dict, list]]) -> str | None:
    """OUTPUT_DIR/report.png: each training stage's train and dev loss, stage after stage on one step axis (a
    stage's own tokenizer and data: compare shapes, not levels across stages); the RL stages' rewards (rollouts,
    held-out greedy and sampled) instead of their losses; and each eval stage's bits per byte per model and text
    set. None when there is nothing to plot."""
    trained = [n for n, k in kinds.items() if k == "train"]
    rewards = {n: c for n in trained if (c := _rewards(out / n)) is not None}
    curves = {n: _curves(out / n) for n in trained if n not in rewards}
    curves = {n: c for n, c in curves.items() if c[0]}
    if not curves and not rewards and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = (1 if curves else 0) + (1 if rewards else 0) + len(evals)
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3.6 * panels), squeeze=False)
    axes = list(axes[:, 0])
    if curves:
        ax, offset = axes.pop(0), 0
        for n, (steps, loss, dev) in curves.items():
            line = ax.plot([offset + s for s in steps], loss, label=f"{n} train")[0]
            if dev:
                ax.plot([offset + s for s, _ in dev], [v for _, v in dev], "o--", color=line.get_color(),
                        label=f"{n} dev")  # fmt: skip
            offset += steps[-1]
            ax.axvline(offset, color="grey", linewidth=0.6)
        ax.set(xlabel="step (stages one after another)", ylabel="loss (nats per token)", title="Training stages")
        ax.legend(fontsize=7, ncol=2)
    if rewards:
        _plot_rewards(axes.pop(0), rewards)
    for ax, (st, report, _) in zip(axes, evals):
        sets = sorted(report["text_sets"], key=lambda s: not s["domain"])
        models = [m["name"] for m in report["models"]]
        x, width = np.arange(len(sets)), 0.8 / max(len(models), 1)
        for i, m in enumerate(models):
            vals = [report["text"][m].get(s["name"], {}).get("bits_per_byte", np.nan) for s in sets]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=m)
        ax.set_xticks(x, [f"{s['name']}\n({'domain' if s['domain'] else 'general'})" for s in sets])
        ax.set(ylabel="bits per byte (lower is better)", title=f"Eval stage '{st['name']}'")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "report.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
