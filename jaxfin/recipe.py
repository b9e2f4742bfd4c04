"""Recipes: several stages run in order, each starting from the previous one's result (configs/recipes/).

A recipe is a YAML file with one top-level key, `recipe`:

    recipe:
      output_dir: runs/recipes/NAME        # stage S writes to OUTPUT_DIR/S
      config: ../tiny.yaml                 # the base config of every stage (relative to this file)
      stages:
        - name: cpt                        # a training stage: base config + `set` (nested keys or dotted ones)
          set: {train.steps: 200, data.sources: [...]}
        - name: expand                     # jaxfin.vocab.expand_vocab(PREVIOUS, OUT, ...) (PREVIOUS: the previous
                                           # stage's export_hf when it has one, else its output dir)
          vocab_expand: {tokens: tokens.txt}  # or {mine: CORPUS, num: N}; any option of `jaxfin vocab expand`
        - name: dpo
          set: {objective.type: dpo, ...}  # init_from defaults to the previous stage's output

In a stage, relative `export_hf` / `export_peft` paths are inside the stage's output dir, and `output_dir=DIR` on
the command line moves the recipe's root. A training stage's `init_from` is the previous stage's output (a run
dir loads its latest checkpoint, an expansion stage's output is a Hugging Face dir) unless the stage sets it.
Command-line overrides apply to every training stage (e.g. `train.steps=20` for a smoke run). Rerunning a recipe
resumes: a finished training stage restores its last checkpoint and stops at once, a finished expansion (its
output dir exists) is skipped.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import yaml

from jaxfin.config import ConfigError, build_section, merge_trees, parse_overrides, read_yaml_mapping, validate
from jaxfin.config.schema import Config
from jaxfin.vocab import expand_vocab, read_token_file


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


def load_recipe(path: str | Path, overrides: list[str] = ()) -> tuple[Path, list[dict]]:
    """(output dir, stages), each stage {name, config: Config | None, vocab_expand: dict | None}."""
    path = Path(path)
    spec = read_yaml_mapping(path).get("recipe")
    where = str(path)
    if not isinstance(spec, dict) or not spec.get("stages"):
        raise ConfigError(f"{where}: 'recipe' needs 'stages' (a list)")
    out = Path(spec.get("output_dir") or f"runs/recipes/{path.stem}")
    base: dict = {}
    if spec.get("config"):
        base = read_yaml_mapping(path.parent / spec["config"])
    cli = parse_overrides(list(overrides))
    if "output_dir" in cli:  # on the command line, output_dir is the recipe's root
        out = Path(cli.pop("output_dir"))
    stages, names = [], set()
    for i, st in enumerate(spec["stages"]):
        name = st.get("name") if isinstance(st, dict) else None
        if not name or name in names:
            raise ConfigError(f"{where}: recipe.stages[{i}] needs a unique 'name'")
        names.add(name)
        unknown = set(st) - {"name", "set", "vocab_expand"}
        if unknown:
            raise ConfigError(f"{where}: recipe.stages[{i}] ({name}) has unknown keys {sorted(unknown)}")
        if "vocab_expand" in st:
            opts = _vocab_expand_options(st["vocab_expand"], f"{where}: recipe.stages[{i}] ({name}).vocab_expand")
            stages.append({"name": name, "config": None, "vocab_expand": opts})
            continue
        data = merge_trees(merge_trees(base, _dotted(st.get("set") or {})), cli)
        data["output_dir"] = str(out / name)
        for key in ("export_hf", "export_peft"):  # relative to the stage's output dir
            if data.get(key) and not Path(data[key]).is_absolute():
                data[key] = str(out / name / data[key])
        try:
            cfg = build_section(Config, data, f"{where} stage '{name}'")
        except TypeError as e:
            raise ConfigError(f"{where} stage '{name}': {e}") from None
        validate(cfg)
        stages.append({"name": name, "config": cfg, "vocab_expand": None, "init_from": "init_from" in data})
    return out, stages


def run_recipe(path: str | Path, overrides: list[str] = ()) -> list[dict]:
    """Run every stage in order; returns the stages' summaries."""
    from jaxfin.parallel.distributed import barrier, is_main
    from jaxfin.train import train

    out, stages = load_recipe(path, overrides)
    previous = previous_hf = None  # the previous stage's output (and its Hugging Face export, if it wrote one)
    summaries = []
    for i, st in enumerate(stages):
        stage_out = out / st["name"]
        if is_main():
            print(
                f"=== recipe {Path(path).stem}: stage {i + 1}/{len(stages)} '{st['name']}' -> {stage_out}", flush=True
            )
        t0 = time.time()
        if st["vocab_expand"] is not None:
            if previous is None:
                raise ConfigError(f"{path}: stage '{st['name']}' expands the previous stage's model; it has none")
            if not stage_out.exists() and is_main():
                expand_vocab(previous_hf or previous, stage_out, **st["vocab_expand"])
            barrier(f"jaxfin-recipe-{st['name']}")
            summaries.append({"stage": st["name"], "output_dir": str(stage_out)})
            previous_hf = stage_out
        else:
            cfg = st["config"]
            if previous is not None and not st["init_from"]:
                cfg = dataclasses.replace(cfg, init_from=str(previous))
            summaries.append({"stage": st["name"], **train(cfg)})
            previous_hf = cfg.export_hf or None
        summaries[-1]["seconds"] = round(time.time() - t0, 1)
        previous = stage_out
    return summaries
