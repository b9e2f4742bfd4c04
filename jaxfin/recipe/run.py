"""Running a recipe's stages in order, with OUTPUT_DIR/recipe_state.json saying which are done under which input
hash (so a rerun resumes, and a changed stage reruns with the stages that read it)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path

from jaxfin.config import ConfigError
from jaxfin.data.loader import level_intensity, merge_levels
from jaxfin.recipe.plan import agents_slots, load_recipe, substitute
from jaxfin.recipe.report import checks, plot_recipe, report_markdown, scores

STATE = "recipe_state.json"


def read_state(out: Path) -> dict:
    """{"recipe", "plan": [{name, kind, hash}] (the last run's stages, in order), "stages": {name: {kind, hash,
    state, summary, model, seconds, finished}}}."""
    f = out / STATE
    return json.loads(f.read_text()) if f.is_file() else {"plan": [], "stages": {}}


def _write_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    tmp.replace(out / STATE)  # atomic: a kill never leaves half a state file


def _build_once(stage_out: Path, build) -> dict:
    """build(DIR) into NAME.partial, renamed to stage_out when it finished: a killed build is redone, not kept. An
    existing stage_out is a finished build (the rename is its last step; a run killed before recording it, or a
    dir from before recipe_state.json): kept, with an empty summary."""
    if stage_out.exists():
        return {}
    partial = stage_out.with_name(stage_out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = build(partial)
    partial.rename(stage_out)
    return result


def _set_aside(stage_out: Path, log) -> None:
    """A stage's output made under other inputs -> NAME.stale (replacing an older one): rerun, nothing deleted
    that was current."""
    if not stage_out.exists():
        return
    stale = stage_out.with_name(stage_out.name + ".stale")
    shutil.rmtree(stale, ignore_errors=True)
    stage_out.rename(stale)
    log(f"stage '{stage_out.name}': its inputs changed; the old output moved to {stale}")


def _model_of(st: dict, stage_out: Path) -> dict:
    """The model a finished stage leaves: {"latest": path, "best": path or None}; an eval stage leaves none."""
    if st["kind"] in ("eval", "agents"):
        return {}
    if st["kind"] == "index":
        return {"index": str(stage_out)}
    if st["kind"] != "train":
        return {"latest": str(stage_out), "best": None}
    cfg = st["config"]
    best = Path(cfg.output_dir) / "best"
    return {"latest": cfg.export_hf or cfg.output_dir, "best": str(best) if (best / "config.json").is_file() else None,
            **({"adapter": cfg.export_peft} if cfg.export_peft else {})}  # fmt: skip


def _path(ref: dict, models: dict[str, dict], what: str = "model") -> str:
    """A resolved model reference -> its folder (a stage's best/ when asked for and it has one); `what`: adapter
    (a training stage's export_peft folder) or index (an index stage's) instead."""
    if "path" in ref:
        return ref["path"]
    m = models[ref["stage"]]
    if what != "model":
        if what not in m:
            raise ConfigError(f"stage '{ref['stage']}' leaves no {what}" + (" (set its export_peft)" if what ==
                              "adapter" else ""))  # fmt: skip
        return m[what]
    if "latest" not in m:
        raise ConfigError(f"stage '{ref['stage']}' leaves no model (an eval, index or agents stage)")
    return m["best"] if ref["checkpoint"] == "best" and m.get("best") else m["latest"]


def _merge(st: dict, models: dict, out_dir: Path) -> dict:
    from jaxfin.merge.config import parse_merge_config
    from jaxfin.merge.engine import run_merge

    data = substitute(st["merge"], dict(enumerate(st["refs"])), lambda r: _path(r, models))
    return run_merge(parse_merge_config(data, f"merge stage '{st['name']}'"), out_dir)


def _assemble(st: dict, models: dict, out_dir: Path) -> dict:
    """The moe stage: its mapping with stage names replaced by those stages' models -> jaxfin moe."""
    import yaml

    from jaxfin.merge.moe import assemble_moe, parse_moe_config

    spec, refs = st["moe"], st["model_refs"]
    spec = dict(spec, base_model=_path(refs[str(spec["base_model"])], models))
    spec["experts"] = [dict(e, source_model=_path(refs[str(e["source_model"])], models)) for e in spec["experts"]]
    plan = parse_moe_config(spec, f"moe stage ({out_dir})")
    plan.source = yaml.safe_dump(spec, sort_keys=False)
    assemble_moe(plan, out_dir)
    return {"experts": len(spec["experts"])}


def _index(st: dict, out_dir: Path) -> dict:
    from jaxfin.retrieval import build_index

    opts = dict(st["index"])
    return build_index(opts.pop("docs"), out_dir, **opts)


def _agents(st: dict, models: dict, out_dir: Path) -> dict:
    """The agents stage: its config with stages replaced by their models, adapters and index -> jaxfin agents,
    answers in OUT_DIR/agents.jsonl; with questions that carry an `answer`, how often it is found."""
    from jaxfin.config import build_section
    from jaxfin.eval.agents import AgentsConfig, run_agents

    data = copy.deepcopy(st["agents"])
    for (node, key, what), ref in zip(agents_slots(data), st["refs"]):
        node[key] = _path(ref, models, what)
    out_dir.mkdir(parents=True, exist_ok=True)
    data["output"] = str(out_dir / "agents.jsonl")
    cfg = build_section(AgentsConfig, data, f"agents stage '{st['name']}'")
    return agent_scores(run_agents(cfg), cfg)


def agent_scores(results: list[dict], cfg) -> dict:
    """{questions, and for questions with an `answer` (a questions_file .jsonl field): summary_accuracy (the answer
    string is in the summary), role_accuracy (in the answer of the role named like the question's `category`),
    retrieval_recall (in a passage retrieved for that role)}."""
    gold = []
    if cfg.questions_file.endswith(".jsonl"):
        rows = [json.loads(x) for x in Path(cfg.questions_file).read_text(encoding="utf-8").splitlines() if x.strip()]
        gold = [(r.get("answer"), r.get("category")) for r in rows]
    gold = ([(None, None)] * len(cfg.questions)) + gold  # read_questions: the inline questions come first
    out: dict = {"questions": len(results)}
    scored = [(r, a, c) for r, (a, c) in zip(results, gold) if a]
    if scored:
        norm = lambda t: "".join(str(t).split())  # noqa: E731
        out["summary_accuracy"] = sum(norm(a) in norm(r["summary"]) for r, a, _ in scored) / len(scored)
        own = [(r, a, c) for r, a, c in scored if c in r["answers"]]
        if own:
            out["role_accuracy"] = sum(norm(a) in norm(r["answers"][c]) for r, a, c in own) / len(own)
            with_passages = [(r, a, c) for r, a, c in own if (r.get("passages") or {}).get(c) is not None]
            if with_passages:
                out["retrieval_recall"] = sum(any(norm(a) in norm(p["text"]) for p in r["passages"][c])
                                              for r, a, c in with_passages) / len(with_passages)  # fmt: skip
    return out


def _evaluate(st: dict, models: dict) -> dict:
    from jaxfin.eval.run import evaluate

    cfg = st["eval"]
    named = [dataclasses.replace(m, path=_path(st["model_refs"][m.path], models)) for m in cfg.models]
    return evaluate(dataclasses.replace(cfg, models=named))


def _train(st: dict, models: dict) -> dict:
    from jaxfin.train import train

    cfg, prior = st["config"], st.get("prior_tokens")
    if st["start"] is not None:
        cfg = dataclasses.replace(cfg, init_from=_path(st["start"], models))
    if prior:  # the tokens its model was trained on before: the stage logs the cumulative data intensity
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prior_tokens={str(k): v for k, v in
                                                                                        prior.items()}))  # fmt: skip
    return train(cfg)


def _lineage_of(st: dict, lineage: dict[str, dict]) -> dict:
    """{"tokens": {level: n}, "last": training stage} of the model a stage starts from: the tokens by domain level
    it was trained on through the chain of stages it descends from (a vocabulary expansion passes them on), and
    the last training stage of that chain. A merge, an MoE assembly, the base or an outside model start afresh."""
    start = (st.get("start") or {}).get("stage")
    if st["kind"] not in ("train", "vocab_expand") or start not in lineage:
        return {"tokens": {}, "last": None}
    return lineage[start]


def _intensity(st: dict, summary: dict, before: dict) -> dict:
    """A training stage's tokens by domain level and the cumulative data intensity after it (summary keys)."""
    if st["kind"] != "train" or "tokens_by_level" not in summary:
        return {}
    total = merge_levels(before["tokens"], summary["tokens_by_level"])
    return {"after": before["last"], "cumulative_tokens_by_level": {str(k): v for k, v in total.items()},
            **level_intensity(total)}  # fmt: skip


def _run_stage(st: dict, models: dict, stage_out: Path) -> dict:
    """Run one stage (training on every process; the others on the main one) -> its summary."""
    from jaxfin.parallel.distributed import barrier, is_main
    from jaxfin.vocab import expand_vocab

    if st["kind"] == "train":
        return _train(st, models)
    summary: dict = {}
    if is_main():
        if st["kind"] == "vocab_expand":
            summary = _build_once(stage_out, functools.partial(expand_vocab, _path(st["start"], models),
                                                               **st["vocab_expand"]))  # fmt: skip
        elif st["kind"] == "merge":
            summary = _build_once(stage_out, functools.partial(_merge, st, models))
        elif st["kind"] == "moe":
            summary = _build_once(stage_out, functools.partial(_assemble, st, models))
        elif st["kind"] == "index":
            summary = _build_once(stage_out, functools.partial(_index, st))
        elif st["kind"] == "agents":
            summary = _build_once(stage_out, functools.partial(_agents, st, models))
        else:
            report = _evaluate(st, models)
            summary = {"checks": checks(report, st["report"]), **scores(report)}
    barrier(f"jaxfin-recipe-{st['name']}")
    return summary


def _headline(summary) -> dict:
    """What of a stage's summary goes into the state file: its headline numbers (scalars, the checks, the eval
    scores by model), not its file lists or reports."""
    keep = ("steps", "stop_reason", "dev_loss_first", "dev_loss_last", "dev_loss_best", "tensors", "experts",
            "added", "vocab_size", "checks", "bits_per_byte", "tasks", "preference_accuracy",
            "tokens_by_level", "passages", "documents", "questions", "summary_accuracy", "role_accuracy",
            "retrieval_recall")  # fmt: skip
    return {k: v for k, v in (summary or {}).items() if k in keep}


def run_recipe(path: str | Path, overrides: list[str] = (), until: str | None = None) -> list[dict]:
    """Run every stage not yet done under its current inputs, in order (up to and including `until`, when given);
    write OUTPUT_DIR/report.md; returns the stages' summaries (a stage done before: its recorded one). A training
    stage stopped by SIGTERM ends the run (rerun the command to resume it)."""
    from jaxfin.parallel.distributed import barrier, is_main
    from jaxfin.train.hooks import SIGTERM

    log = (lambda m: print(m, flush=True)) if is_main() else (lambda m: None)
    out, stages = load_recipe(path, overrides)
    if until is not None:
        names = [s["name"] for s in stages]
        if until not in names:
            raise ConfigError(f"{path}: no stage '{until}' to run until (stages: {', '.join(names)})")
        stages = stages[: names.index(until) + 1]
    state = read_state(out)
    state.update(recipe=str(path), plan=[{"name": s["name"], "kind": s["kind"], "hash": s["hash"]} for s in stages])
    models: dict[str, dict] = {}
    lineage: dict[str, dict] = {}  # per stage: tokens by domain level its model has been trained on, cumulative
    summaries, evals = [], []
    for i, st in enumerate(stages):
        name, stage_out = st["name"], out / st["name"]
        rec = state["stages"].get(name)
        head = f"=== recipe {Path(path).stem}: stage {i + 1}/{len(stages)} '{name}' ({st['kind']})"
        before = _lineage_of(st, lineage)
        if rec and rec["hash"] == st["hash"] and rec["state"] == "done":
            log(f"{head}: done before (inputs {st['hash']}), skipped")
            # what it leaves, from its plan (a record written by an older jaxfin may lack a key, e.g. `adapter`)
            models[name] = {**rec["model"], **_model_of(st, stage_out)}
            summary = {"stage": name, **rec["summary"], "seconds": rec["seconds"]}
        else:
            log(f"{head} -> {stage_out}")
            if rec and rec["hash"] != st["hash"] and is_main():
                _set_aside(stage_out, log)
            barrier(f"jaxfin-recipe-{name}-start")
            if is_main():
                state["stages"][name] = {"kind": st["kind"], "hash": st["hash"], "state": "running"}
                _write_state(out, state)
            t0 = time.time()
            result = _run_stage({**st, "prior_tokens": before["tokens"]}, models, stage_out)
            models[name] = _model_of(st, stage_out)
            summary = {"stage": name, "output_dir": str(stage_out), **_headline(result),
                       **_intensity(st, result, before), "seconds": round(time.time() - t0, 1)}  # fmt: skip
            if "cumulative_intensity" in summary:
                log(f"stage '{name}': tokens by domain level {summary['tokens_by_level']}; cumulative data "
                    f"intensity {summary['cumulative_intensity']:.4f}")  # fmt: skip
            stopped = result.get("stop_reason") == SIGTERM
            if is_main():
                state["stages"][name] = {
                    "kind": st["kind"], "hash": st["hash"], "state": "stopped" if stopped else "done",
                    "summary": {k: v for k, v in summary.items() if k not in ("stage", "seconds")},
                    "model": models[name], "seconds": summary["seconds"],
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                }  # fmt: skip
                _write_state(out, state)
            if stopped:
                log(f"stage '{name}' stopped by SIGTERM; rerun the same command to resume it")
                return summaries + [summary]
        if "cumulative_tokens_by_level" in summary:
            lineage[name] = {"tokens": {int(k): v for k, v in summary["cumulative_tokens_by_level"].items()},
                             "last": name}  # fmt: skip
        else:
            lineage[name] = before
        summaries.append(summary)
        if st["kind"] == "eval" and is_main():
            evals.append((st, json.loads((stage_out / "eval.json").read_text()), summary.get("checks", [])))
    if is_main():
        png = plot_recipe(out, {s["name"]: s["kind"] for s in stages}, evals)
        if evals:
            (out / "report.md").write_text(report_markdown(Path(path).stem, summaries, evals, png))
            log(f"report: {out / 'report.md'}")
        if png:
            log(f"chart: {png}")
    return summaries
