"""`jaxfin findings`: the seed systems' findings, reproduced in miniature on CPU with ../shared/data.

Three experiments run recipes (each rerun in one output dir, so the shared early stages train once and only the
arms rerun) and evaluate their models; each claim is a number computed from those evaluations, per seed, with
the mean, the sample standard deviation over seeds and whether the claimed direction holds. A claim that does not
reproduce is reported as such with its numbers.

    sec     configs/recipes/llama3_sec.yaml, replay 0.05 and 0, each seed: the instruct model, its CPT and the
            TIES merge on domain (held-out XBRL definitions, FPB news) and general (held-out books) bits/byte
      a     CPT lowers finance bits/byte: domain(cpt) - domain(instruct) < 0
      b     general replay reduces forgetting at a small domain cost: forgetting = general(cpt) -
            general(instruct); holds when forgetting(replay) < forgetting(no replay) on the mean and the domain
            cost domain(cpt, replay) - domain(cpt, no replay) is under a quarter of the CPT's domain gain
      c     TIES recovers most of the general loss and keeps most of the domain gain: recovered = (general(cpt) -
            general(merged)) / (general(cpt) - general(instruct)) > 0.5 and kept = (domain(instruct) -
            domain(merged)) / (domain(instruct) - domain(cpt)) > 0.5
    findap  configs/findings/findap.yaml, each seed: joint CPT+IT, CPT then IT (same data and steps), DPO + NLL
            from the joint model
      d     joint beats sequential on the finance tasks: mean accuracy over FPB, FiQA-SA, FOMC (log-likelihood)
      e     DPO + NLL raises held-out preference accuracy over the SFT model: accuracy(dpo) - accuracy(joint) > 0
            on HH-RLHF pairs 2000+ (reference-free, jaxfin/eval/pairs.py)
    vocab   configs/recipes/vocab_expanded.yaml up to stage 1, the embeddings alone or the full model, each seed
      f     tokens per Chinese character fall with the expansion, and the embeddings-only stage 1 loses less
            English (FPB sentences and WikiText-2 in bits/byte, against the base) than the full model
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

SEC = "configs/recipes/llama3_sec.yaml"
FINDAP = "configs/findings/findap.yaml"
VOCAB = "configs/recipes/vocab_expanded.yaml"
DATA = "../shared/data"
CLAIMS = {
    "a": ("sec", "CPT lowers finance bits/byte", "Llama-3-SEC, FinDAP"),
    "b": ("sec", "general replay reduces general forgetting against CPT without replay, at a small domain cost",
          "FinDAP CPT-Mix vs CPT-In; Llama-3-SEC 5% replay"),
    "c": ("sec", "TIES with the instruct model recovers most of the general bits/byte lost in CPT and keeps most "
          "of the domain gain", "Llama-3-SEC"),
    "d": ("findap", "joint CPT+IT beats CPT then IT on the finance tasks", "FinDAP"),
    "e": ("findap", "DPO + NLL raises held-out preference accuracy over SFT", "FinDAP"),
    "f": ("vocab", "vocabulary expansion cuts tokens per Chinese character, and an embeddings-only stage 1 loses "
          "less English than training the full model from the start", "XuanYuan-style"),
}  # fmt: skip
README_START, README_END = "<!-- findings:start -->", "<!-- findings:end -->"


def _text(name: str, path: str, domain: bool, **kw) -> dict:
    return {"name": name, "path": f"{DATA}/{path}", "domain": domain, **kw}


SEC_TEXT = [
    _text("xbrl_dev", "instructions/finlora_xbrl_term_test.jsonl", True, fields={"text": "output"}),
    _text(
        "fpb_news", "financial_phrasebank/gtfintechlab_allagree_test_seed5768.csv", True, fields={"text": "sentence"}
    ),
    _text("books_dev", "general_corpus_en/gutenberg_heldout.jsonl", False),
]
VOCAB_TEXT = [
    _text(
        "fpb_news", "financial_phrasebank/gtfintechlab_allagree_test_seed5768.csv", False, fields={"text": "sentence"}
    ),
    _text("wikitext", "wikitext2_general/wikitext2_valid.txt", False),
]
HH_DEV = {"name": "hh_dev", "path": f"{DATA}/preferences/hh_rlhf_harmless_base_test.jsonl", "records": [2000, None],
          "fields": {"prompt": "prompt", "chosen": "chosen_response", "rejected": "rejected_response"}}  # fmt: skip
TASKS = ["fpb", "fiqa_sa", "fomc"]


# ------------------------------------------------------------------------------------------------ running


def stage_model(out: Path, stage: str) -> str:
    """A finished stage's model folder, as the next stage would read it (its best/ when it has one)."""
    from jaxfin.recipe.run import read_state

    m = read_state(out)["stages"][stage]["model"]
    return m.get("best") or m["latest"]


def run_arm(recipe: str, overrides: list[str], until: str | None, models: dict[str, str], eval_dir: Path, *,
            text=(), tasks=(), pairs=()) -> dict:  # fmt: skip
    """One arm: run the recipe (up to `until`), then jaxfin eval of {name: stage} into eval_dir. Skipped, its report
    read back, when eval_dir holds an eval of the same stage inputs (the plan's hashes) and sets: a rerun of
    findings redoes only what is missing or changed."""
    from jaxfin.config import build_section
    from jaxfin.eval.config import EvalConfig, validate_eval
    from jaxfin.eval.run import evaluate
    from jaxfin.recipe.plan import digest, load_recipe
    from jaxfin.recipe.run import run_recipe

    out, stages = load_recipe(recipe, overrides)
    hashes = {st["name"]: st["hash"] for st in stages}
    spec = {"text": list(text), "tasks": list(tasks), "pairs": list(pairs), "seq_len": 128, "batch_size": 16,
            "max_docs": 200, "task_limit": 200, "output_dir": str(eval_dir)}  # fmt: skip
    key = digest({"eval": spec, "models": {n: hashes[st] for n, st in models.items()}})
    done, report = eval_dir / "inputs.hash", eval_dir / "eval.json"
    if done.is_file() and done.read_text() == key and report.is_file():
        return json.loads(report.read_text())
    run_recipe(recipe, overrides, until=until)
    data = {**spec, "models": [{"name": n, "path": stage_model(out, st)} for n, st in models.items()]}
    cfg = build_section(EvalConfig, data, "findings eval")
    validate_eval(cfg)
    result = evaluate(cfg, log=lambda m: None)
    done.write_text(key)
    return result


def _mean_bpb(report: dict, model: str, domain: bool) -> float:
    sets = [s["name"] for s in report["text_sets"] if s["domain"] == domain]
    return statistics.fmean(report["text"][model][s]["bits_per_byte"] for s in sets)


def run_sec(out: Path, seeds: list[int], overrides: list[str], replays=(0.05, 0.0), log=print) -> list[dict]:
    """Per (seed, replay): domain and general bits/byte of instruct, cpt and merged."""
    rows = []
    for seed in seeds:
        for replay in replays:
            log(f"findings sec: seed {seed}, replay {replay}")
            ov = [f"output_dir={out}", f"vars.replay={replay}", f"vars.seed={seed}", *overrides]
            models = {"instruct": "instruct", "cpt": "cpt", "merged": "merged"}
            rep = run_arm(SEC, ov, "merged", models, out / f"eval_seed{seed}_replay{replay}", text=SEC_TEXT)
            row = {"seed": seed, "replay": replay}
            for m in models:
                row[m] = {g: _mean_bpb(rep, m, g == "domain") for g in ("domain", "general")}
            rows.append(row)
    return rows


def run_findap(out: Path, seeds: list[int], overrides: list[str], log=print) -> list[dict]:
    """Per seed: mean task accuracy and held-out preference accuracy of joint, sequential (it_second) and dpo."""
    rows = []
    for seed in seeds:
        log(f"findings findap: seed {seed}")
        models = {"joint": "joint", "sequential": "it_second", "dpo": "dpo"}
        rep = run_arm(FINDAP, [f"output_dir={out}", f"vars.seed={seed}", *overrides], None, models,
                      out / f"eval_seed{seed}", tasks=TASKS, pairs=[HH_DEV])  # fmt: skip
        row = {"seed": seed}
        for m in models:
            accs = {t: float(rep["tasks"][m][t]["metrics"]["acc"]) for t in TASKS}
            row[m] = {"tasks": accs, "task_mean": statistics.fmean(accs.values()),
                      "preference_accuracy": rep["pairs"][m]["hh_dev"]["accuracy"]}  # fmt: skip
        rows.append(row)
    return rows


def run_vocab(out: Path, seeds: list[int], overrides: list[str], log=print) -> dict:
    """Tokens per Chinese character before and after the expansion, and per (seed, arm) English bits/byte of
    stage 1 against the base."""
    rows = []
    for seed in seeds:
        for arm, trainable in (("embeddings", '["@embeddings"]'), ("full", "[]")):
            log(f"findings vocab: seed {seed}, stage 1 trains {arm}")
            ov = [f"output_dir={out}", f"vars.stage1_trainable={trainable}", f"vars.seed={seed}", *overrides]
            rep = run_arm(VOCAB, ov, "stage1", {"base": "base", "stage1": "stage1"}, out / f"eval_seed{seed}_{arm}",
                          text=VOCAB_TEXT)  # fmt: skip
            rows.append({"seed": seed, "arm": arm, "base_english": _mean_bpb(rep, "base", False),
                         "english": _mean_bpb(rep, "stage1", False)})  # fmt: skip
    tpc = json.loads((out / "expand" / "vocab_expand.json").read_text())["tokens_per_char"]
    return {"tokens_per_char": {"before": tpc["before"], "after": tpc["after"]}, "rows": rows}


# ------------------------------------------------------------------------------------------------ claims


def _verdict(values: list[float], sign: int) -> str:
    """yes: every seed moves in the claimed direction (sign +1: up, -1: down); unclear: the mean does but some
    seed does not (a difference inside the run-to-run spread); no: the mean does not."""
    agree = [v * sign > 0 for v in values]
    if all(agree):
        return "yes"
    return "unclear" if statistics.fmean(values) * sign > 0 else "no"


def _both(*verdicts: str) -> str:
    return "no" if "no" in verdicts else "unclear" if "unclear" in verdicts else "yes"


def _spread(values: list[float]) -> dict:
    return {"per_seed": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}  # fmt: skip


def _arm(rows: list[dict], replay: float) -> list[dict]:
    return [r for r in rows if r["replay"] == replay]


def claim_a(sec: list[dict]) -> dict:
    d = _spread([r["cpt"]["domain"] - r["instruct"]["domain"] for r in _arm(sec, 0.05)])
    return {"measured": {"domain_bpb_change": d}, "key": "domain_bpb_change", "verdict": _verdict(d["per_seed"], -1),
            "summary": f"domain bits/byte {d['mean']:+.3f} after CPT"}  # fmt: skip


def claim_b(sec: list[dict]) -> dict:
    rep, none = _arm(sec, 0.05), _arm(sec, 0.0)
    forget = {k: [r["cpt"]["general"] - r["instruct"]["general"] for r in rows] for k, rows in
              (("replay", rep), ("no_replay", none))}  # fmt: skip
    less = _spread([a - b for a, b in zip(forget["replay"], forget["no_replay"])])
    cost = _spread([a["cpt"]["domain"] - b["cpt"]["domain"] for a, b in zip(rep, none)])
    gain = -statistics.fmean(r["cpt"]["domain"] - r["instruct"]["domain"] for r in none)
    small = _verdict([0.25 * gain - c for c in cost["per_seed"]], 1)  # each seed's cost under a quarter of the gain
    return {"measured": {"forgetting_change": less, "forgetting_replay": _spread(forget["replay"]),
                         "forgetting_no_replay": _spread(forget["no_replay"]), "domain_cost": cost,
                         "domain_gain_no_replay": gain},
            "key": "forgetting_change", "verdict": _both(_verdict(less["per_seed"], -1), small),
            "summary": f"general forgetting {statistics.fmean(forget['replay']):+.3f} with replay vs "
                       f"{statistics.fmean(forget['no_replay']):+.3f} without; domain cost {cost['mean']:+.3f} "
                       f"(gain {gain:.3f})"}  # fmt: skip


def claim_c(sec: list[dict]) -> dict:
    rows = _arm(sec, 0.05)
    recovered = _spread([(r["cpt"]["general"] - r["merged"]["general"]) / (r["cpt"]["general"] -
                         r["instruct"]["general"]) for r in rows])  # fmt: skip
    kept = _spread([(r["instruct"]["domain"] - r["merged"]["domain"]) / (r["instruct"]["domain"] -
                    r["cpt"]["domain"]) for r in rows])  # fmt: skip
    most = [_verdict([v - 0.5 for v in m["per_seed"]], 1) for m in (recovered, kept)]  # "most": over half
    return {"measured": {"domain_gain_kept": kept, "general_loss_recovered": recovered}, "key": "domain_gain_kept",
            "verdict": _both(*most),
            "summary": f"{recovered['mean']:.0%} of the general loss recovered (over 100%: general text better "
                       f"than the instruct model's), {kept['mean']:.0%} of the domain gain kept"}  # fmt: skip


def _versus(rows: list[dict], better: str, worse: str, value) -> tuple[dict, dict, dict]:
    """(better - worse per seed, better, worse) of value(row[model]) over the seeds' rows."""
    a, b = (_spread([value(r[m]) for r in rows]) for m in (better, worse))
    return _spread([x - y for x, y in zip(a["per_seed"], b["per_seed"])]), a, b


def claim_d(findap: list[dict]) -> dict:
    d, joint, seq = _versus(findap, "joint", "sequential", lambda m: m["task_mean"])
    return {"measured": {"task_accuracy_joint_minus_sequential": d, "joint": joint, "sequential": seq},
            "key": "task_accuracy_joint_minus_sequential", "verdict": _verdict(d["per_seed"], 1),
            "summary": f"mean accuracy on FPB, FiQA-SA, FOMC: joint {joint['mean']:.3f}, sequential "
                       f"{seq['mean']:.3f} ({d['mean']:+.3f})"}  # fmt: skip


def claim_e(findap: list[dict]) -> dict:
    d, dpo, sft = _versus(findap, "dpo", "joint", lambda m: m["preference_accuracy"])
    return {"measured": {"preference_accuracy_dpo_minus_sft": d, "sft": sft, "dpo": dpo},
            "key": "preference_accuracy_dpo_minus_sft", "verdict": _verdict(d["per_seed"], 1),
            "summary": f"held-out preference accuracy: SFT {sft['mean']:.3f}, DPO {dpo['mean']:.3f} "
                       f"({d['mean']:+.3f})"}  # fmt: skip


def claim_f(vocab: dict) -> dict:
    tpc = vocab["tokens_per_char"]
    by = {arm: [r["english"] - r["base_english"] for r in vocab["rows"] if r["arm"] == arm] for arm in
          ("embeddings", "full")}  # fmt: skip
    d = _spread([a - b for a, b in zip(by["embeddings"], by["full"])])
    fewer = "yes" if tpc["after"] < tpc["before"] else "no"
    return {"measured": {"embeddings_minus_full": d, "tokens_per_char": tpc,
                         "english_loss_embeddings_only": _spread(by["embeddings"]),
                         "english_loss_full": _spread(by["full"])},
            "key": "embeddings_minus_full", "verdict": _both(fewer, _verdict(d["per_seed"], -1)),
            "summary": f"tokens/char {tpc['before']:.3f} -> {tpc['after']:.3f}; English bits/byte lost "
                       f"{statistics.fmean(by['embeddings']):+.3f} (embeddings only) vs "
                       f"{statistics.fmean(by['full']):+.3f} (full)"}  # fmt: skip


def run_findings(out: str | Path = "runs/findings", claims: str = "abcdef", seeds: int = 3,
                 overrides: list[str] = (), log=print) -> dict:  # fmt: skip
    """Run the experiments the claims need, compute each claim and write OUT/findings.json and findings.md."""
    unknown = sorted(set(claims) - set(CLAIMS))
    if unknown or not claims:
        raise ValueError(f"claims: unknown {unknown}; known: {''.join(CLAIMS)}")
    out, t0 = Path(out), time.time()
    need = {CLAIMS[c][0] for c in claims}
    seed_list, ov = list(range(seeds)), list(overrides)
    data: dict = {}
    if "sec" in need:
        data["sec"] = run_sec(out / "sec", seed_list, ov, (0.05, 0.0) if "b" in claims else (0.05,), log)
    if "findap" in need:
        data["findap"] = run_findap(out / "findap", seed_list, ov, log)
    if "vocab" in need:
        data["vocab"] = run_vocab(out / "vocab", seed_list, ov, log)
    fns = {"a": claim_a, "b": claim_b, "c": claim_c, "d": claim_d, "e": claim_e, "f": claim_f}
    results = []
    for c in claims:
        exp, text, source = CLAIMS[c]
        r = fns[c](data[exp])
        results.append({"claim": c, "text": text, "source": source, **r, "holds": r["verdict"] == "yes"})
    report = {"claims": results, "experiments": data, "seeds": seed_list, "overrides": ov,
              "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "findings.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "findings.md").write_text(markdown(report))
    log(f"findings: {out / 'findings.md'} ({report['seconds']:.0f} s)")
    return report


def table(report: dict) -> str:
    """The findings table (markdown): claim, source, measured, the key measure per seed, verdict."""
    lines = ["| | claim | source | measured (mean over seeds) | per seed (± sample std) | holds |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for c in report["claims"]:
        key = c["measured"][c["key"]]
        spread = f"{c['key']}: " + ", ".join(f"{v:+.3f}" for v in key["per_seed"])
        if key["std"] is not None:
            spread += f" (± {key['std']:.3f})"
        verdict = c["verdict"] if c["verdict"] == "yes" else f"**{c['verdict']}**"
        lines.append(f"| {c['claim']} | {c['text']} | {c['source']} | {c['summary']} | {spread} | {verdict} |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    seeds = ", ".join(map(str, report["seeds"]))
    lines = ["# Seed findings, reproduced in miniature", "",
             f"`jaxfin findings` on {report['date']}: seeds {seeds}, {report['seconds']:.0f} s on CPU"
             + (f", overrides {' '.join(report['overrides'])}" if report["overrides"] else "") + ".", "",
             table(report), "", "Holds: yes when every seed moves in the claimed direction, unclear when the mean "
             "does but a seed does not (inside the run-to-run spread), no when the mean does not.",
             "Every number per seed: findings.json."]  # fmt: skip
    return "\n".join(lines) + "\n"


def update_readme(readme: str | Path, report: dict) -> None:
    """Replace the README's block between the findings markers with this report's table."""
    path = Path(readme)
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path}: no {README_START} ... {README_END} block to replace")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    seeds = len(report["seeds"])
    block = (f"{README_START}\n`make findings` ({report['date']}, {seeds} seeds, {report['seconds'] / 60:.0f} min on "
             f"this project's 2-core CPU):\n\n{table(report)}\n{README_END}")  # fmt: skip
    path.write_text(head + block + tail)
