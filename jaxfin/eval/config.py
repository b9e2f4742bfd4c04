"""`jaxfin eval` config: models x raw-text sets (+ tasks), YAML with dotted `key=value` overrides.

```yaml
models:                      # the first one is the base the forgetting report compares against
  - {name: base, path: runs/base}
  - runs/cpt                 # a plain path: named after its folder
text:                        # raw-text sets (a file, folder or glob; formats as for data.sources)
  - {name: fed, path: data/fed.jsonl, domain: true}
  - {name: wiki, path: data/wiki.txt, domain: false}
pairs:                       # preference pairs: how often chosen is more likely than rejected (eval/pairs.py)
  - {name: hh_dev, path: data/hh.jsonl, fields: {chosen: chosen_response, rejected: rejected_response},
     records: [2000, null]}
tasks: []                    # task YAML paths or built-in names (jaxfin.eval.tasks)
lm_eval:                     # lm-evaluation-harness tasks by name, through the `jaxfin` lm-eval model (eval/harness.py)
  tasks: [fpb_lm, hellaswag] # lm-eval task names, tags or groups; [] = none
  include_path: configs/eval/lm_eval   # extra task YAML folder ("" = lm-eval's own tasks only)
  num_fewshot: null          # null = each task's default
  limit: 0                   # examples per task; 0 = all
seq_len: 1024
batch_size: 8
max_docs: 0                  # per text set; 0 = all
output_dir: eval_out
tokenizer: ""                # "" = each model's own tokenizer
mesh: {data: -1, fsdp: 1, tensor: 1, expert: 1}   # as training's `mesh`; e.g. {data: 1, fsdp: -1}: weights split
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from jaxfin.config import (
    ConfigError,
    MeshConfig,
    build_section,
    merge_trees,
    parse_overrides,
    read_yaml_mapping,
    unknown_key_error,
    valid_keys,
)


@dataclass
class ModelEntry:
    name: str = ""  # default: the folder name
    path: str = ""  # a jaxfin checkpoint, a training run dir (latest checkpoint) or a Hugging Face dir


@dataclass
class TextSet:
    """One raw-text set: a source of kind text (see SourceConfig), and whether it is domain or general text."""

    name: str = ""
    path: str = ""
    format: str = "auto"  # auto | jsonl | parquet | csv | text | hf_disk
    fields: dict[str, str] = field(default_factory=dict)  # e.g. {text: body}
    domain: bool = True
    records: list[int | None] = field(default_factory=list)  # [start, end]: only these documents (a held-out split)


@dataclass
class PairSet:
    """Preference pairs (a source of kind pairs, see SourceConfig) for held-out preference accuracy
    (jaxfin/eval/pairs.py)."""

    name: str = ""
    path: str = ""
    format: str = "auto"
    fields: dict[str, str] = field(default_factory=dict)  # e.g. {chosen: chosen_response, rejected: ...}
    records: list[int | None] = field(default_factory=list)  # [start, end]: only these pairs (a held-out split)


@dataclass
class LmEvalSection:
    """lm-evaluation-harness tasks run by name with the `jaxfin` lm-eval model (jaxfin/eval/harness.py): lm-eval's
    own task registry plus `include_path` (e.g. configs/eval/lm_eval: FPB, FiQA-SA, FOMC on the shared data)."""

    tasks: list[str] = field(default_factory=list)
    include_path: str = ""
    num_fewshot: int | None = None
    limit: int = 0  # examples per task; 0 = all
    max_length: int = 0  # context tokens; 0 = the model's max_position_embeddings (as lm-eval's hf backend)


@dataclass
class EvalConfig:
    models: list[ModelEntry] = field(default_factory=list)
    text: list[TextSet] = field(default_factory=list)
    pairs: list[PairSet] = field(default_factory=list)  # preference accuracy (chosen more likely than rejected)
    tasks: list[str] = field(default_factory=list)
    lm_eval: LmEvalSection = field(default_factory=LmEvalSection)  # lm-eval tasks by name (see LmEvalSection)
    seq_len: int = 1024  # tokens per packed row (longer documents are scored in overlapping windows)
    batch_size: int = 8  # rows per forward pass
    max_docs: int = 0  # first documents of each text set; 0 = all
    task_limit: int = 0  # examples per task; 0 = all
    output_dir: str = "eval_out"
    tokenizer: str = ""  # "" = each model's own tokenizer; else a .model file or HF tokenizer folder for all
    compute_dtype: str = "auto"  # auto (float32 on CPU, bfloat16 on accelerators) | float32 | bfloat16
    # the device mesh, as training's `mesh` (jaxfin/parallel): params laid out by the training rules (fsdp / tensor
    # split the weights), batches split over data x fsdp x expert. Default: every device on `data` (weights
    # replicated); a model too big for one device: {data: 1, fsdp: -1}
    mesh: MeshConfig = field(default_factory=MeshConfig)


def _check_top(data: dict, where: str) -> None:
    keys = valid_keys(EvalConfig)
    for k in data:
        if k not in keys:
            raise unknown_key_error(str(k), where, keys)
    for section in ("lm_eval", "mesh"):  # nested keys against this config's own, not the training config's
        for k in data.get(section) if isinstance(data.get(section), dict) else ():
            if f"{section}.{k}" not in keys:
                raise unknown_key_error(f"{section}.{k}", where, keys)


def _derive_names(cfg: EvalConfig) -> None:
    for i, m in enumerate(cfg.models):
        if not m.path:
            raise ConfigError(f"'models[{i}]' needs a path")
        m.name = m.name or Path(m.path.rstrip("/")).name or f"model{i}"
    for i, t in enumerate(cfg.text):
        if not t.path:
            raise ConfigError(f"'text[{i}]' needs a path")
        if not t.name:
            from jaxfin.data.sources import default_source_name

            t.name = default_source_name(t.path)
    for i, t in enumerate(cfg.pairs):
        if not t.path:
            raise ConfigError(f"'pairs[{i}]' needs a path")
        if not t.name:
            from jaxfin.data.sources import default_source_name

            t.name = default_source_name(t.path)
    for what, names in (("models", [m.name for m in cfg.models]), ("text", [t.name for t in cfg.text]),
                        ("pairs", [t.name for t in cfg.pairs])):  # fmt: skip
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"'{what}' names must be unique; repeated: {', '.join(dup)} (set `name`)")


def validate_eval(cfg: EvalConfig) -> None:
    if not cfg.models:
        raise ConfigError("'models' is empty: give at least one model path (the first is the base)")
    if not cfg.text and not cfg.tasks and not cfg.pairs and not cfg.lm_eval.tasks:
        raise ConfigError("nothing to evaluate: set 'text' (raw-text sets), 'pairs', 'tasks' and/or 'lm_eval.tasks'")
    if cfg.lm_eval.limit < 0 or cfg.lm_eval.max_length < 0:
        raise ConfigError("'lm_eval.limit' and 'lm_eval.max_length' must be >= 0 (0 = all / the model's)")
    if cfg.lm_eval.num_fewshot is not None and cfg.lm_eval.num_fewshot < 0:
        raise ConfigError("'lm_eval.num_fewshot' must be >= 0 (or null: each task's default)")
    if cfg.lm_eval.include_path and not Path(cfg.lm_eval.include_path).is_dir():
        raise ConfigError(f"'lm_eval.include_path': no folder at {cfg.lm_eval.include_path}")
    if cfg.seq_len < 2:
        raise ConfigError("'seq_len' must be at least 2")
    if cfg.batch_size < 1:
        raise ConfigError("'batch_size' must be at least 1")
    if cfg.max_docs < 0 or cfg.task_limit < 0:
        raise ConfigError("'max_docs' and 'task_limit' must be >= 0 (0 = all)")
    if cfg.compute_dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError("'compute_dtype' must be one of auto, float32, bfloat16")
    _derive_names(cfg)


def load_eval_config(path: str | Path, overrides: list[str] = ()) -> EvalConfig:
    """YAML file + `key=value` overrides (top-level keys, e.g. max_docs=100 or models=[a,b]) -> EvalConfig."""
    data = read_yaml_mapping(path)
    _check_top(data, str(path))
    try:
        cfg = build_section(EvalConfig, data, str(path))
        if overrides:
            tree = parse_overrides(list(overrides), EvalConfig, "max_docs=100")
            cfg = build_section(EvalConfig, merge_trees(dataclasses.asdict(cfg), tree), "command line")
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
    validate_eval(cfg)
    return cfg
