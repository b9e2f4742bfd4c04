"""Recipes: several stages run in order, each starting from an earlier one's result (configs/recipes/).

A recipe is a YAML file with one top-level key, `recipe`:

    recipe:
      output_dir: runs/recipes/NAME        # stage S writes to OUTPUT_DIR/S
      config: ../tiny.yaml                 # the base config of every training stage (relative to this file)
      stages:
        - name: cpt                        # a training stage: base config + `set` (nested keys or dotted ones)
          set: {train.steps: 200, data.sources: [...]}
        - name: expand                     # jaxfin.vocab.expand_vocab(PREVIOUS, OUT, ...)
          vocab_expand: {tokens: tokens.txt}  # or {mine: CORPUS, num: N}; any option of `jaxfin vocab expand`
        - name: dpo
          set: {objective.type: dpo, ...}  # init_from defaults to the previous stage's model
        - name: expert_a                   # `from: STAGE` starts from that stage's model instead of the previous
          from: cpt                        # one's: stages can branch (several experts from one base)
          set: {...}
        - name: moe                        # `jaxfin moe` (jaxfin/merge/moe.py): a mergekit-moe YAML, inline; a
          moe: {base_model: cpt, experts: [{source_model: expert_a, ...}, ...]}  # model that names a stage is its model
        - name: eval                       # `jaxfin eval` (jaxfin/eval/config.py), inline; a model that names a
          eval: {models: [cpt, expert_a, moe], text: [...], tasks: [fpb]}    # stage is that stage's model
          report: {experts: {expert_a: dev_a}, combined: [moe]}  # optional checks for report.md (below)

A stage's model: a training stage's `export_hf` when it has one, else its output dir (a run dir loads its latest
checkpoint); an expansion or moe stage's output dir (a Hugging Face folder). An eval stage has none: the stage
after it starts from the model before it. In a training stage, relative `export_hf` / `export_peft` paths are
inside the stage's output dir, and `init_from` (if set) wins over `from`. `output_dir=DIR` on the command line moves
the recipe's root; the other command-line overrides apply to every training stage (e.g. `train.steps=20` for a
smoke run), except `eval_stages.KEY=V`, which sets KEY of every eval stage (e.g. `eval_stages.max_docs=20`).

After the stages, OUTPUT_DIR/report.md has each eval stage's table (every model on every text set and task) and,
with `report`, its checks: each expert (`experts`: model -> its own text set) has the lowest loss on its own set
among the dense models (the eval's models not in `combined`), and each `combined` model's loss on every expert's
set is at most that expert's.

Rerunning a recipe resumes: a finished training stage restores its last checkpoint and stops at once, a finished
expansion or moe stage (its output dir exists; each is built in NAME.partial and renamed when done) is skipped,
and so is a finished eval stage (its eval.json exists).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path

import yaml

from jaxfin.config import ConfigError, build_section, merge_trees, parse_overrides, read_yaml_mapping, validate
from jaxfin.config.schema import Config
from jaxfin.vocab import expand_vocab, read_token_file

STAGE_KEYS = ("name", "from", "set", "vocab_expand", "moe", "eval", "report")
KINDS = ("vocab_expand", "moe", "eval")  # a stage with none of these is a training stage
REPORT_KEYS = ("experts", "combined")
EVAL_STAGES = "eval_stages."  # command-line prefix of the eval stages' keys (`eval.` is the training config's)


def is_recipe(path: str | Path) -> bool:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "recipe" in data


def _dotted(tree: dict) -> dict:
    """{'a.b': 1, 'c': {'d': 2}} -> {'a': {'b': 1}, 'c': {'d': 2}}."""
    out: dict = {}
    for k, v in tree.items():
        v = _dotted(v) if isinstance(v, dict) else v
        node = out
        *parents, last = str(k).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = merge_trees(node[last], v) if isinstance(v, dict) and isinstance(node.get(last), dict) else v
    return out


# vocab_expand's keys: expand_vocab's keyword arguments, with `tokens` a file of tokens (one a line)
VOCAB_EXPAND_KEYS = (
    "tokens", "mine", "num", "init", "seed", "noise_scale", "report_corpus", "field", "pad_to_multiple",
)  # fmt: skip


def _vocab_expand_options(spec, where: str) -> dict:
    """A stage's `vocab_expand` mapping -> expand_vocab keyword arguments (the token file read here)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping of expand options, e.g. {{tokens: FILE}} or {{mine: CORPUS, "
                          f"num: 500}}; got {spec!r}")  # fmt: skip
    unknown = sorted(set(spec) - set(VOCAB_EXPAND_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(VOCAB_EXPAND_KEYS)})")
    if ("tokens" in spec) == ("mine" in spec):
        raise ConfigError(f"{where}: give exactly one of 'tokens' (a file) and 'mine' (a corpus)")
    opts = dict(spec)
    if "tokens" in opts:
        opts["tokens"] = read_token_file(opts["tokens"])
    return opts


def _moe_spec(spec, where: str, stages: set[str]) -> dict:
    """A moe stage's mergekit-moe mapping, checked now (its stage models do not exist yet)."""
    from jaxfin.merge.moe import MoEConfigError, parse_moe_config

    try:
        parse_moe_config(spec, where, find_models=False)
    except MoEConfigError as e:
        raise ConfigError(str(e)) from None
    for ref in [spec["base_model"]] + [e["source_model"] for e in spec["experts"]]:
        _check_model(ref, stages, where)
    return spec


def _check_model(ref: str, stages: set[str], where: str) -> None:
    """A model a moe or eval stage names: an earlier stage, or a folder that exists."""
    if ref not in stages and not Path(ref).is_dir():
        raise ConfigError(f"{where}: model '{ref}' is neither an earlier stage ({', '.join(sorted(stages))}) "
                          f"nor a folder")  # fmt: skip


def _eval_models(models, where: str) -> list[dict]:
    if not isinstance(models, list):
        raise ConfigError(f"{where}.models: expected a list of stage names, paths or {{name, path}}")
    return [m if isinstance(m, dict) else {"name": Path(str(m)).name, "path": str(m)} for m in models]


def _eval_spec(spec, cli: dict, where: str, stages: set[str], out: Path, name: str):
    """A stage's `eval` mapping (+ `eval_stages.KEY` overrides) -> EvalConfig; its text sets' paths checked now."""
    from jaxfin.config.schema import SourceConfig
    from jaxfin.data.sources import SourceReport, read_source
    from jaxfin.eval.config import EvalConfig, validate_eval

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a jaxfin eval config mapping (models, text, tasks, ...)")
    data = merge_trees(spec, cli)
    data["models"] = _eval_models(data.get("models"), where)
    data["output_dir"] = str(out / name)
    try:
        cfg = build_section(EvalConfig, data, where)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    validate_eval(cfg)
    for ts in cfg.text:  # the path, format and fields (nothing is read yet)
        read_source(SourceConfig(name=ts.name, path=ts.path, format=ts.format, fields=dict(ts.fields)),
                    SourceReport(ts.name))  # fmt: skip
    for m in cfg.models:
        _check_model(m.path, stages, f"{where}.models")
    return cfg


def _report_spec(spec, where: str, cfg) -> dict:
    """A stage's `report` checks: experts (model -> its own text set) and combined (models)."""
    spec = spec or {}
    unknown = sorted(set(spec) - set(REPORT_KEYS))
    if unknown or not isinstance(spec.get("experts", {}), dict):
        raise ConfigError(f"{where}: expected {{experts: {{MODEL: TEXT_SET}}, combined: [MODEL, ...]}}")
    models, sets = {m.name for m in cfg.models}, {t.name for t in cfg.text}
    for m, s in spec.get("experts", {}).items():
        if m not in models or s not in sets:
            raise ConfigError(f"{where}.experts: '{m}: {s}' needs a model of the eval ({', '.join(sorted(models))}) "
                              f"and one of its text sets ({', '.join(sorted(sets))})")  # fmt: skip
    for m in spec.get("combined", []):
        if m not in models:
            raise ConfigError(f"{where}.combined: '{m}' is not a model of the eval")
    return {"experts": dict(spec.get("experts", {})), "combined": list(spec.get("combined", []))}


def _train_config(st: dict, base: dict, cli: dict, out: Path, where: str) -> tuple[Config, bool]:
    """A training stage's Config, and whether it sets its own init_from."""
    data = merge_trees(merge_trees(base, _dotted(st.get("set") or {})), cli)
    own_init = "init_from" in data
    data["output_dir"] = str(out / st["name"])
    for key in ("export_hf", "export_peft"):  # relative to the stage's output dir
        if data.get(key) and not Path(data[key]).is_absolute():
            data[key] = str(out / st["name"] / data[key])
    try:
        cfg = build_section(Config, data, where)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    validate(cfg)
    return cfg, own_init


def load_recipe(path: str | Path, overrides: list[str] = ()) -> tuple[Path, list[dict]]:
    """(output dir, stages), each stage {name, kind: train | vocab_expand | moe | eval, from: STAGE | None, and
    per kind: config (a Config, with init_from_set), vocab_expand (options), moe (the mapping), eval (an
    EvalConfig) and report}."""
    from jaxfin.eval.config import EvalConfig

    path = Path(path)
    spec = read_yaml_mapping(path).get("recipe")
    where = str(path)
    if not isinstance(spec, dict) or not spec.get("stages"):
        raise ConfigError(f"{where}: 'recipe' needs 'stages' (a list)")
    out = Path(spec.get("output_dir") or f"runs/recipes/{path.stem}")
    base: dict = {}
    if spec.get("config"):
        base = read_yaml_mapping(path.parent / spec["config"])
    ours = [o for o in overrides if o.startswith(EVAL_STAGES)]
    cli = parse_overrides([o for o in overrides if not o.startswith(EVAL_STAGES)])
    try:
        cli_eval = parse_overrides([o[len(EVAL_STAGES) :] for o in ours], EvalConfig, "max_docs=20")
    except ConfigError as e:
        raise ConfigError(f"{e} (after '{EVAL_STAGES}', a key of the eval stages)") from None
    if "output_dir" in cli:  # on the command line, output_dir is the recipe's root
        out = Path(cli.pop("output_dir"))
    stages, names = [], set()
    for i, st in enumerate(spec["stages"]):
        name = st.get("name") if isinstance(st, dict) else None
        if not name or name in names:
            raise ConfigError(f"{where}: recipe.stages[{i}] needs a unique 'name'")
        w = f"{where}: recipe.stages[{i}] ({name})"
        unknown = set(st) - set(STAGE_KEYS)
        if unknown:
            raise ConfigError(f"{w} has unknown keys {sorted(unknown)} (known: {', '.join(STAGE_KEYS)})")
        kinds = [k for k in KINDS if k in st]
        if len(kinds) > 1 or (kinds and "set" in st):
            raise ConfigError(f"{w}: a stage is one of: training (set), {', '.join(KINDS)}; it has {kinds}")
        kind = kinds[0] if kinds else "train"
        if st.get("from") is not None and (st["from"] not in names or kind in ("moe", "eval")):
            raise ConfigError(f"{w}.from: '{st['from']}' must name an earlier stage (moe and eval stages name their "
                              f"models instead)")  # fmt: skip
        if "report" in st and kind != "eval":
            raise ConfigError(f"{w}: 'report' belongs to an eval stage")
        stage = {"name": name, "kind": kind, "from": st.get("from")}
        if kind == "vocab_expand":
            stage["vocab_expand"] = _vocab_expand_options(st["vocab_expand"], f"{w}.vocab_expand")
        elif kind == "moe":
            stage["moe"] = _moe_spec(st["moe"], f"{w}.moe", names)
        elif kind == "eval":
            stage["eval"] = _eval_spec(st["eval"], cli_eval, f"{w}.eval", names, out, name)
            stage["report"] = _report_spec(st.get("report"), f"{w}.report", stage["eval"])
        else:
            stage["config"], stage["init_from_set"] = _train_config(st, base, cli, out, f"{where} stage '{name}'")
        stages.append(stage)
        names.add(name)
    return out, stages


# ------------------------------------------------------------------------------------------------ running


def _build_once(stage_out: Path, build) -> None:
    """build(DIR) into NAME.partial, renamed to stage_out when it finished: a killed build is redone, not kept."""
    if stage_out.exists():
        return
    partial = stage_out.with_name(stage_out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build(partial)
    partial.rename(stage_out)


def _assemble(spec: dict, models: dict[str, str], out_dir: Path) -> None:
    """The moe stage: its mapping with stage names replaced by those stages' models -> jaxfin moe."""
    from jaxfin.merge.moe import assemble_moe, parse_moe_config

    spec = dict(spec, base_model=models.get(spec["base_model"], spec["base_model"]))
    spec["experts"] = [dict(e, source_model=models.get(e["source_model"], e["source_model"])) for e in spec["experts"]]
    plan = parse_moe_config(spec, f"moe stage ({out_dir})")
    plan.source = yaml.safe_dump(spec, sort_keys=False)
    assemble_moe(plan, out_dir)


def _evaluate(st: dict, models: dict[str, str]) -> dict:
    """Run (or, if its eval.json exists, read back) an eval stage's report."""
    from jaxfin.eval.run import evaluate

    cfg = st["eval"]
    done = Path(cfg.output_dir) / "eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    named = [dataclasses.replace(m, path=models.get(m.path, m.path)) for m in cfg.models]
    return evaluate(dataclasses.replace(cfg, models=named))


def run_recipe(path: str | Path, overrides: list[str] = ()) -> list[dict]:
    """Run every stage in order and write OUTPUT_DIR/report.md; returns the stages' summaries."""
    from jaxfin.parallel.distributed import barrier, is_main
    from jaxfin.train import train

    out, stages = load_recipe(path, overrides)
    models: dict[str, str] = {}  # stage name -> its model
    previous = None  # the model the next stage starts from by default
    summaries, evals = [], []
    for i, st in enumerate(stages):
        name, stage_out = st["name"], out / st["name"]
        if is_main():
            print(f"=== recipe {Path(path).stem}: stage {i + 1}/{len(stages)} '{name}' -> {stage_out}", flush=True)
        t0 = time.time()
        start = models[st["from"]] if st["from"] else previous
        summary: dict = {"stage": name, "output_dir": str(stage_out)}
        if st["kind"] in KINDS:
            if st["kind"] == "vocab_expand" and start is None:
                raise ConfigError(f"{path}: stage '{name}' expands the previous stage's model; it has none")
            if is_main():
                if st["kind"] == "vocab_expand":
                    _build_once(stage_out, functools.partial(expand_vocab, start, **st["vocab_expand"]))
                elif st["kind"] == "moe":
                    _build_once(stage_out, functools.partial(_assemble, st["moe"], models))
                else:
                    report = _evaluate(st, models)
                    summary["checks"] = checks(report, st["report"])
                    evals.append((st, report, summary["checks"]))
            barrier(f"jaxfin-recipe-{name}")
            model = None if st["kind"] == "eval" else str(stage_out)
        else:
            cfg = st["config"]
            if start is not None and not st["init_from_set"]:
                cfg = dataclasses.replace(cfg, init_from=str(start))
            summary = {"stage": name, **train(cfg)}
            model = cfg.export_hf or cfg.output_dir
        summary["seconds"] = round(time.time() - t0, 1)
        summaries.append(summary)
        if model is not None:
            models[name] = previous = model
    if evals and is_main():
        (out / "report.md").write_text(report_markdown(Path(path).stem, summaries, evals))
        print(f"report: {out / 'report.md'}", flush=True)
    return summaries


# ------------------------------------------------------------------------------------------------ report


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


def report_markdown(recipe: str, summaries: list[dict], evals: list[tuple[dict, dict, list[dict]]]) -> str:
    """report.md: the stages' times, then per eval stage (stage, its eval report, its checks) the table and checks."""
    from jaxfin.eval.report import wide_table

    lines = [f"# Recipe {recipe}", "", "| stage | seconds | output |", "| --- | ---: | --- |"]
    lines += [f"| {s['stage']} | {s['seconds']} | `{s['output_dir']}` |" for s in summaries]
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
