"""Reading a recipe YAML into its stages (the format: jaxfin/recipe/__init__.py), every mistake named before a
stage runs, and each stage's input hash."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import yaml

from jaxfin.config import ConfigError, build_section, merge_trees, parse_overrides, read_yaml_mapping, validate
from jaxfin.config.schema import Config
from jaxfin.vocab import read_token_file

STAGE_KEYS = ("name", "from", "from_checkpoint", "set", "vocab_expand", "merge", "moe", "eval", "report", "index",
              "agents")  # fmt: skip
KINDS = ("vocab_expand", "merge", "moe", "eval", "index", "agents")  # a stage with none of these is a training stage
NO_MODEL = ("eval", "index", "agents")  # kinds that leave no model: the stage after one starts from the one before
RECIPE_KEYS = ("output_dir", "config", "base", "vars", "stages")
CHECKPOINTS = ("best", "latest")
REPORT_KEYS = ("experts", "combined")
EVAL_STAGES = "eval_stages."  # command-line prefix of the eval stages' keys (`eval.` is the training config's)
VARS = "vars."  # command-line prefix of the recipe's variables
VAR = re.compile(r"\$\{(\w+)\}")


def is_recipe(path: str | Path) -> bool:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "recipe" in data


def digest(obj) -> str:
    """A short stable hash of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settings(obj):
    """A config dataclass as the values it sets away from their defaults (nested, lists of sections item by item):
    what a stage's hash reads, so a field added to the schema with a default leaves the hashes of older recipes
    unchanged."""
    if dataclasses.is_dataclass(obj):
        default = type(obj)()
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value != getattr(default, f.name):
                out[f.name] = settings(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [settings(v) for v in obj]
    if isinstance(obj, dict):
        return {k: settings(v) for k, v in obj.items()}
    return obj


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


def _variables(spec: dict, overrides: list[str], where: str) -> dict:
    """recipe.vars with the command line's `vars.NAME=VALUE` (YAML-typed) applied."""
    values = spec.get("vars") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: recipe.vars must be a mapping of NAME: VALUE")
    values = dict(values)
    for o in overrides:
        key, _, text = o[len(VARS) :].partition("=")
        if key not in values:
            raise ConfigError(f"override '{o}': the recipe has no variable '{key}' (recipe.vars: "
                              f"{', '.join(values) or 'none'})")  # fmt: skip
        values[key] = yaml.safe_load(text)
    return values


def _fill(node, values: dict, where: str):
    """Every `${NAME}` in the stages replaced by recipe.vars' value: a whole string `${NAME}` by the value itself
    (a number stays a number), else inside the string as text."""
    if isinstance(node, dict):
        return {k: _fill(v, values, where) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values, where) for v in node]
    if not isinstance(node, str) or "${" not in node:
        return node
    for name in VAR.findall(node):
        if name not in values:
            raise ConfigError(
                f"{where}: '${{{name}}}' is not a variable of recipe.vars ({', '.join(values) or 'none'})"
            )
    whole = VAR.fullmatch(node)
    return values[whole.group(1)] if whole else VAR.sub(lambda m: str(values[m.group(1)]), node)


# ------------------------------------------------------------------------------------------- model references


class Refs:
    """How a stage names a model: an earlier stage (its name, or {stage: NAME, checkpoint: best|latest}), the
    recipe's base ({base: true}), or a folder. A reference resolves to {"stage", "checkpoint"} or {"path"}."""

    def __init__(self, base: str | None, stages: set[str], default_checkpoint: str = "best"):
        self.base, self.stages, self.checkpoint = base, stages, default_checkpoint

    def resolve(self, ref, where: str, must_exist: bool = True) -> dict:
        if isinstance(ref, dict):
            unknown = set(ref) - {"stage", "checkpoint", "base"}
            if unknown or ("stage" in ref) == ("base" in ref):
                raise ConfigError(f"{where}: a model reference is a stage name, a folder, {{stage: NAME, "
                                  f"checkpoint: best|latest}} or {{base: true}}; got {ref!r}")  # fmt: skip
            if "base" in ref:
                if ref["base"] is not True or not self.base:
                    raise ConfigError(f"{where}: {{base: true}} needs the recipe's `base` (a model folder)")
                return {"path": self.base}
            checkpoint = ref.get("checkpoint", self.checkpoint)
            if checkpoint not in CHECKPOINTS:
                raise ConfigError(f"{where}: checkpoint '{checkpoint}' is not one of {', '.join(CHECKPOINTS)}")
            name = ref["stage"]
            if name not in self.stages:
                raise ConfigError(f"{where}: stage '{name}' is not an earlier stage ({', '.join(sorted(self.stages))})")
            return {"stage": name, "checkpoint": checkpoint}
        ref = str(ref)
        if ref in self.stages:
            return {"stage": ref, "checkpoint": self.checkpoint}
        if must_exist and not Path(ref).is_dir():
            raise ConfigError(f"{where}: model '{ref}' is neither an earlier stage ({', '.join(sorted(self.stages))}) "
                              f"nor a folder")  # fmt: skip
        return {"path": ref}


def merge_model_slots(data: dict):
    """(container, key) of every model a mergekit YAML names: base_model, models[i] (or its `model`), slices'
    sources and base_model, tokenizer_source / tokenizer.source (unless base or union)."""
    slots = [(data, "base_model")] if data.get("base_model") is not None else []
    for i, m in enumerate(data.get("models") or []):
        slots.append((m, "model") if isinstance(m, dict) and ("model" in m) else (data["models"], i))
    for s in data.get("slices") or []:
        if isinstance(s, dict):
            slots += [(src, "model") for src in s.get("sources") or [] if isinstance(src, dict) and "model" in src]
            if s.get("base_model") is not None:
                slots.append((s, "base_model"))
    tok = data.get("tokenizer")
    for node in (data, tok if isinstance(tok, dict) else {}):
        key = "tokenizer_source" if node is data else "source"
        if node.get(key) is not None and node[key] not in ("base", "union"):
            slots.append((node, key))
    return slots


def substitute(data, refs: dict[int, dict], paths) -> dict:
    """A copy of a mergekit mapping with each model slot's reference replaced by paths(its resolved reference)."""
    data = copy.deepcopy(data)
    for i, (node, key) in enumerate(merge_model_slots(data)):
        node[key] = paths(refs[i])
    return data


# ------------------------------------------------------------------------------------------- stage kinds

# vocab_expand's keys: expand_vocab's keyword arguments, with `tokens` a file of tokens (one a line)
VOCAB_SOURCES = ("tokens", "mine", "mine_chars")
VOCAB_EXPAND_KEYS = (
    *VOCAB_SOURCES, "num", "init", "seed", "noise_scale", "report_corpus", "field", "pad_to_multiple",
)  # fmt: skip


def _vocab_expand_options(spec, where: str) -> dict:
    """A stage's `vocab_expand` mapping -> expand_vocab keyword arguments (the token file read here)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping of expand options, e.g. {{tokens: FILE}}, {{mine: CORPUS, "
                          f"num: 500}} or {{mine_chars: CORPUS, num: 7000}}; got {spec!r}")  # fmt: skip
    unknown = sorted(set(spec) - set(VOCAB_EXPAND_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(VOCAB_EXPAND_KEYS)})")
    if sum(k in spec for k in VOCAB_SOURCES) != 1:
        raise ConfigError(f"{where}: give exactly one of 'tokens' (a file), 'mine' (a corpus: BPE pieces) and "
                          f"'mine_chars' (a corpus or a list of them: CJK characters)")  # fmt: skip
    opts = dict(spec)
    if "tokens" in opts:
        opts["tokens"] = read_token_file(opts["tokens"])
    return opts


def _merge_spec(spec, where: str, recipe_dir: Path, refs: Refs, values: dict) -> tuple[dict, list[dict]]:
    """A merge stage's mergekit YAML (a file, relative to the recipe, with the recipe's ${vars} filled in, or
    inline) -> (mapping, resolved model references in slot order); the YAML is checked now with its models
    unresolved."""
    from jaxfin.merge.config import MergeConfigError, parse_merge_config

    if isinstance(spec, str):
        path = recipe_dir / spec
        if not path.is_file():
            raise ConfigError(f"{where}: no merge YAML at {path} (a path relative to the recipe file)")
        where, spec = str(path), _fill(yaml.safe_load(path.read_text()), values, str(path))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mergekit YAML mapping (merge_method, models or slices, base_model)")
    resolved = [refs.resolve(node[key], f"{where}: {key}") for node, key in merge_model_slots(spec)]
    try:
        placeholder = dict(enumerate(resolved))  # each model as its stage name or path, not yet a folder
        parse_merge_config(substitute(spec, placeholder, lambda r: r.get("path") or r["stage"]), where,
                           find_models=False)  # fmt: skip
    except MergeConfigError as e:
        raise ConfigError(str(e)) from None
    return spec, resolved


def _moe_spec(spec, where: str, refs: Refs) -> tuple[dict, dict[str, dict]]:
    """A moe stage's mergekit-moe mapping, checked now (its stage models do not exist yet) -> (mapping, resolved
    reference of each model it names)."""
    from jaxfin.merge.moe import MoEConfigError, parse_moe_config

    try:
        parse_moe_config(spec, where, find_models=False)
    except MoEConfigError as e:
        raise ConfigError(str(e)) from None
    names = [spec["base_model"]] + [e["source_model"] for e in spec["experts"]]
    return spec, {str(m): refs.resolve(m, where) for m in names}


def _eval_spec(spec, cli: dict, where: str, refs: Refs, out: Path, name: str):
    """A stage's `eval` mapping (+ `eval_stages.KEY` overrides) -> (EvalConfig, resolved reference of each model
    path); its text sets' paths checked now."""
    from jaxfin.config.schema import SourceConfig
    from jaxfin.data.sources import SourceReport, read_source
    from jaxfin.eval.config import EvalConfig, validate_eval

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a jaxfin eval config mapping (models, text, tasks, ...)")
    data = merge_trees(spec, cli)
    models = data.get("models")
    if not isinstance(models, list):
        raise ConfigError(f"{where}.models: expected a list of stage names, paths or {{name, path}}")
    data["models"] = [m if isinstance(m, dict) else {"name": Path(str(m)).name, "path": str(m)} for m in models]
    data["output_dir"] = str(out / name)
    try:
        cfg = build_section(EvalConfig, data, where)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    validate_eval(cfg)
    for ts in cfg.text:  # the path, format and fields (nothing is read yet)
        read_source(SourceConfig(name=ts.name, path=ts.path, format=ts.format, fields=dict(ts.fields)),
                    SourceReport(ts.name))  # fmt: skip
    for ps in cfg.pairs:
        read_source(SourceConfig(name=ps.name, path=ps.path, format=ps.format, kind="pairs", fields=dict(ps.fields)),
                    SourceReport(ps.name))  # fmt: skip
    return cfg, {m.path: refs.resolve(m.path, f"{where}.models") for m in cfg.models}


def _index_spec(spec, where: str) -> dict:
    """An index stage's options (jaxfin.retrieval.build_index's keyword arguments, `docs` a path or a list)."""
    if not isinstance(spec, dict) or not spec.get("docs"):
        raise ConfigError(f"{where}: expected {{docs: [PATH, ...], chunk_chars: N, ...}} (the options of `jaxfin "
                          f"index build`)")  # fmt: skip
    docs = spec["docs"] if isinstance(spec["docs"], list) else [spec["docs"]]
    for d in docs:
        if not Path(str(d)).exists():
            raise ConfigError(f"{where}.docs: '{d}' does not exist")
    return dict(spec, docs=[str(d) for d in docs])


def agents_slots(spec: dict) -> list[tuple[dict, str, str]]:
    """(container, key, what) of every model, adapter and index an agents mapping names: `model`, each role's
    `model` and `adapter`, `retrieval.index`."""
    slots = [(spec, "model", "model")] if spec.get("model") else []
    for r in spec.get("roles") or []:
        if isinstance(r, dict):
            slots += [(r, k, k) for k in ("model", "adapter") if r.get(k)]
    ret = spec.get("retrieval")
    if isinstance(ret, dict) and ret.get("index"):
        slots.append((ret, "index", "index"))
    return slots


def _agents_spec(spec, where: str, refs: Refs, kinds: dict[str, str]) -> tuple[dict, list[dict]]:
    """An agents stage's mapping (jaxfin/eval/agents.py's config; a model, adapter or index may be an earlier
    stage: a training stage's model or its `export_peft` adapter, an index stage's index) -> (mapping, resolved
    reference per slot), checked now with placeholders for the stages' outputs."""
    from jaxfin.eval.agents import AgentsConfig

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be an agents config mapping (model, roles, questions_file, retrieval, ...)")
    resolved = []
    for node, key, what in agents_slots(spec):
        ref = refs.resolve(node[key], f"{where}: {what}", must_exist=False)
        if "stage" in ref and (kinds[ref["stage"]] == "index") != (what == "index"):
            raise ConfigError(f"{where}: {what} '{ref['stage']}' is a {kinds[ref['stage']]} stage")
        if "path" in ref and not Path(ref["path"]).exists():
            raise ConfigError(f"{where}: {what} '{ref['path']}' is neither an earlier stage nor a folder")
        resolved.append(ref)
    data = copy.deepcopy(spec)
    for (node, key, _), ref in zip(agents_slots(data), resolved):
        node[key] = ref.get("path") or ref["stage"]
    data.pop("output", None)
    try:
        cfg = build_section(AgentsConfig, data, where)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not cfg.model or not cfg.roles or not (cfg.questions or cfg.questions_file):
        raise ConfigError(f"{where}: needs 'model', 'roles' and 'questions' or 'questions_file'")
    return spec, resolved


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


# ------------------------------------------------------------------------------------------- the recipe


def _stage(st, i: int, where: str, ctx: dict) -> dict:
    """One stage's plan: {name, kind, from_checkpoint, start (a resolved reference or None), the kind's spec,
    refs (the resolved references it reads), hash}."""
    name = st.get("name") if isinstance(st, dict) else None
    if not name or name in ctx["names"]:
        raise ConfigError(f"{where}: recipe.stages[{i}] needs a unique 'name'")
    w = f"{where}: recipe.stages[{i}] ({name})"
    unknown = set(st) - set(STAGE_KEYS)
    if unknown:
        raise ConfigError(f"{w} has unknown keys {sorted(unknown)} (known: {', '.join(STAGE_KEYS)})")
    kinds = [k for k in KINDS if k in st]
    if len(kinds) > 1 or (kinds and "set" in st):
        raise ConfigError(f"{w}: a stage is one of: training (set), {', '.join(KINDS)}; it has {kinds}")
    kind = kinds[0] if kinds else "train"
    checkpoint = st.get("from_checkpoint", "best")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"{w}.from_checkpoint: '{checkpoint}' is not one of {', '.join(CHECKPOINTS)}")
    if st.get("from") is not None and (st["from"] not in ctx["names"] or kind not in ("train", "vocab_expand")):
        raise ConfigError(f"{w}.from: '{st['from']}' must name an earlier stage (merge, moe, eval and agents stages "
                          f"name their models instead)")  # fmt: skip
    if "report" in st and kind != "eval":
        raise ConfigError(f"{w}: 'report' belongs to an eval stage")
    refs = Refs(ctx["base"], ctx["names"], checkpoint)
    stage: dict = {"name": name, "kind": kind, "from": st.get("from"), "from_checkpoint": checkpoint}
    if kind in ("train", "vocab_expand"):  # these start from a model: `from`, else the previous, else the base
        previous = st.get("from") or ctx["previous"]
        stage["start"] = refs.resolve(previous, w) if previous else ({"path": ctx["base"]} if ctx["base"] else None)
        stage["refs"] = [stage["start"]] if stage["start"] else []
    if kind == "vocab_expand":
        stage["vocab_expand"] = spec = _vocab_expand_options(st["vocab_expand"], f"{w}.vocab_expand")
        if stage["start"] is None:
            raise ConfigError(f"{w}: expands the previous stage's model; it has none (and the recipe no `base`)")
    elif kind == "merge":
        stage["merge"], stage["refs"] = _merge_spec(st["merge"], f"{w}.merge", ctx["dir"], refs, ctx["vars"])
        spec = stage["merge"]
    elif kind == "moe":
        stage["moe"], stage["model_refs"] = _moe_spec(st["moe"], f"{w}.moe", refs)
        stage["refs"], spec = list(stage["model_refs"].values()), stage["moe"]
    elif kind == "index":
        stage["index"] = spec = _index_spec(st["index"], f"{w}.index")
        stage["refs"] = []
    elif kind == "agents":
        stage["agents"], stage["refs"] = _agents_spec(st["agents"], f"{w}.agents", refs, ctx["kinds"])
        spec = stage["agents"]
    elif kind == "eval":
        stage["eval"], stage["model_refs"] = _eval_spec(
            st["eval"], ctx["cli_eval"], f"{w}.eval", refs, ctx["out"], name
        )
        stage["report"] = _report_spec(st.get("report"), f"{w}.report", stage["eval"])
        stage["refs"], spec = list(stage["model_refs"].values()), [settings(stage["eval"]), stage["report"]]
    else:
        stage["config"], stage["init_from_set"] = _train_config(st, ctx["config"], ctx["cli"], ctx["out"],
                                                                f"{where} stage '{name}'")  # fmt: skip
        if stage["init_from_set"]:
            stage["start"], stage["refs"] = None, []
        spec = settings(stage["config"])
    upstream = [[r, ctx["hashes"][r["stage"]]] if "stage" in r else [r] for r in stage["refs"]]
    stage["hash"] = digest({"kind": kind, "spec": spec, "upstream": upstream})
    return stage


def load_recipe(path: str | Path, overrides: list[str] = ()) -> tuple[Path, list[dict]]:
    """(output dir, stages): each stage {name, kind: train | vocab_expand | merge | moe | eval, from,
    from_checkpoint, start (training and vocab_expand: the model it starts from), refs (every model it reads, as
    resolved references), hash, and per kind: config (a Config) with init_from_set, vocab_expand (options), merge
    (the mergekit mapping), moe (the mapping) and model_refs, eval (an EvalConfig), model_refs and report}."""
    from jaxfin.eval.config import EvalConfig

    path = Path(path)
    spec = read_yaml_mapping(path).get("recipe")
    where = str(path)
    if not isinstance(spec, dict) or not spec.get("stages"):
        raise ConfigError(f"{where}: 'recipe' needs 'stages' (a list)")
    unknown = sorted(set(spec) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: recipe has unknown keys {unknown} (known: {', '.join(RECIPE_KEYS)})")
    ours = [o for o in overrides if o.startswith(EVAL_STAGES)]
    values = _variables(spec, [o for o in overrides if o.startswith(VARS)], where)
    spec = dict(spec, base=_fill(spec.get("base"), values, f"{where}: recipe.base"))
    if spec["base"] and not Path(spec["base"]).is_dir():
        raise ConfigError(f"{where}: recipe.base '{spec['base']}' is not a model folder")
    cli = parse_overrides([o for o in overrides if not o.startswith((EVAL_STAGES, VARS))])
    try:
        cli_eval = parse_overrides([o[len(EVAL_STAGES) :] for o in ours], EvalConfig, "max_docs=20")
    except ConfigError as e:
        raise ConfigError(f"{e} (after '{EVAL_STAGES}', a key of the eval stages)") from None
    out = Path(cli.pop("output_dir", None) or spec.get("output_dir") or f"runs/recipes/{path.stem}")
    ctx = {
        "out": out, "dir": path.parent, "base": spec.get("base"), "cli": cli, "cli_eval": cli_eval,
        "config": read_yaml_mapping(path.parent / spec["config"]) if spec.get("config") else {},
        "names": set(), "previous": None, "hashes": {}, "vars": values, "kinds": {},
    }  # fmt: skip
    stages = []
    for i, st in enumerate(_fill(spec["stages"], values, f"{where}: recipe.stages")):
        stage = _stage(st, i, where, ctx)
        stages.append(stage)
        ctx["names"].add(stage["name"])
        ctx["hashes"][stage["name"]] = stage["hash"]
        ctx["kinds"][stage["name"]] = stage["kind"]
        if stage["kind"] not in NO_MODEL:  # e.g. an eval stage has no model: the next starts from the one before it
            ctx["previous"] = stage["name"]
    return out, stages
