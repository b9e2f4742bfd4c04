"""mergekit YAML -> a typed merge plan.

Accepts mergekit's MergeConfiguration files unchanged: `models` (with per-model `parameters`) or `slices` (with
`sources: [{model, layer_range: [a, b]}]`), `base_model`, `merge_method`, global `parameters`, `dtype`,
`out_dtype`, `tokenizer_source` / `tokenizer: {source, pad_to_multiple_of}`, `chat_template`.

Parameter values follow mergekit's `evaluate_setting`: a scalar; a list of numbers is a gradient spread over the
layers of the slice (t = i / (n_layers - 1), linear interpolation between the two nearest list entries; the
embedding, final norm and LM head see t = 0, as in mergekit 0.1.5); a list of non-numbers picks entry
int(t * (len - 1)); a list of `{filter, value}` entries takes the first whose filter is missing, '*' or a
substring of the tensor's Hugging Face name. Per-model values fall back to the slice's, then the global ones.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

TOP_KEYS = {
    "models", "slices", "modules", "merge_method", "base_model", "dtype", "out_dtype", "tokenizer_source",
    "tokenizer", "chat_template", "parameters",
}  # fmt: skip
DTYPES = {"float32", "bfloat16", "float16"}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


class MergeConfigError(ValueError):
    """A mistake in a merge YAML: says what, where and what to do."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One model's layers [start, end) feeding an output slice, with its per-model parameters."""

    model: str  # the model reference as written in the YAML (parameters and error messages use it)
    layer_range: tuple[int, int] | None  # None: all layers (`models:` form, filled in once the depth is known)
    parameters: dict[str, Any]
    implicit: bool = False  # the base_model, added to `models:` because the YAML does not list it


@dataclasses.dataclass(frozen=True)
class OutSlice:
    sources: tuple[Source, ...]
    base_model: str | None
    parameters: dict[str, Any]


@dataclasses.dataclass
class MergePlan:
    """The parsed YAML. `paths` maps each model reference to its local folder."""

    merge_method: str
    slices: list[OutSlice]
    base_model: str | None
    parameters: dict[str, Any]
    dtype: str | None
    out_dtype: str | None
    tokenizer_source: str | None  # 'base', 'union', a model reference, or None (copy the donor's tokenizer)
    pad_to_multiple_of: int | None
    chat_template: str | None
    paths: dict[str, Path]
    from_models: bool  # written as `models:` (one slice over all layers of every model)
    where: str = "merge config"

    def referenced_models(self) -> list[str]:
        """Every model, in YAML order (base first when given)."""
        out = [self.base_model] if self.base_model else []
        for s in self.slices:
            out += [src.model for src in s.sources]
        return list(dict.fromkeys(out))

    def donor(self) -> str:
        """The model whose config (and, without a tokenizer source, tokenizer) the output starts from."""
        return self.base_model or self.referenced_models()[0]

    def parameter_names(self) -> tuple[set[str], set[str]]:
        """(global names, per-model names) that appear anywhere in the YAML."""
        glob = set(self.parameters)
        per_model: set[str] = set()
        for s in self.slices:
            glob |= set(s.parameters)
            for src in s.sources:
                per_model |= set(src.parameters)
        return glob, per_model | glob


def evaluate_setting(tensor_name: str, setting: Any, t: float) -> Any:
    """mergekit's rule for one parameter value at one tensor (`t` in [0, 1] is the layer's place in its slice)."""
    if setting is None or isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        if all(isinstance(e, (bool, int, float, str)) for e in setting):
            return setting[int(t * (len(setting) - 1))]
        for cond in setting:
            flt = cond.get("filter")
            if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
                return evaluate_setting(tensor_name, cond["value"], t)
        return None
    if isinstance(setting, dict):  # a single {filter, value}
        return evaluate_setting(tensor_name, [setting], t)
    raise MergeConfigError(f"unexpected parameter value {setting!r}")


def resolve(plan: MergePlan, name: str, tensor_name: str, t: float, out_slice: OutSlice, model: str | None) -> Any:
    """One parameter for one tensor, like mergekit's ConfigReader.parameter: the model's own value in this
    slice, then the slice's, then the global one (None when unset)."""
    if model is not None:
        for s in out_slice.sources:
            if s.model == model and name in s.parameters:
                v = evaluate_setting(tensor_name, s.parameters[name], t)
                if v is not None:
                    return v
    for params in (out_slice.parameters, plan.parameters):
        if name in params:
            v = evaluate_setting(tensor_name, params[name], t)
            if v is not None:
                return v
    return None


# ------------------------------------------------------------------------------------------------ parsing


def _check_setting(value: Any, where: str) -> Any:
    """Validate one parameter setting; `{filter|pattern, value}` entries become dicts with 'filter' and 'value'."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise MergeConfigError(f"{where}: expected a number, a list or {{filter, value}} entries, got {value!r}")
    if all(not isinstance(e, (dict, list)) for e in value):
        return value
    out = []
    for i, e in enumerate(value):
        if not isinstance(e, dict) or "value" not in e:
            raise MergeConfigError(f"{where}[{i}]: a conditional entry needs 'value' (and optionally 'filter')")
        extra = set(e) - {"filter", "value", "pattern"}
        if extra:
            raise MergeConfigError(f"{where}[{i}]: unknown key(s) {sorted(extra)}; expected filter, value")
        flt = e.get("filter")
        if flt is None and "pattern" in e:  # old mergekit examples; current mergekit silently ignores the key
            flt = e["pattern"]
            log.warning("%s[%d]: 'pattern' is read as 'filter' (current mergekit ignores 'pattern')", where, i)
        out.append({"filter": None if flt is None else str(flt), "value": _check_setting(e["value"], where)})
    return out


def _params(d: Any, where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise MergeConfigError(f"{where}: 'parameters' must be a mapping, got {d!r}")
    return {str(k): _check_setting(v, f"{where}.parameters.{k}") for k, v in d.items()}


def _model_ref(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise MergeConfigError(f"{where}: 'model' must be a path, got {v!r}")
    if "+" in v and not Path(v).exists():
        raise MergeConfigError(f"{where}: '{v}' looks like model+LoRA, which jaxfin merge does not support")
    return v


def _dtype(v: Any, key: str, where: str) -> str | None:
    if v is None:
        return None
    d = _DTYPE_ALIASES.get(str(v), str(v))
    if d not in DTYPES:
        raise MergeConfigError(f"{where}: {key} '{v}' is not one of {', '.join(sorted(DTYPES))}")
    return d


def _find(ref: str, yaml_dir: Path) -> Path:
    for cand in (Path(ref).expanduser(), yaml_dir / ref):
        if cand.is_dir():
            return cand.resolve()
    raise FileNotFoundError(
        f"model '{ref}' is not a local folder (looked in the current directory and {yaml_dir}); jaxfin merge "
        f"reads local Hugging Face folders or jaxfin checkpoints and never downloads: fetch it first, e.g. "
        f"`huggingface-cli download {ref} --local-dir DIR`, and put DIR in the YAML"
    )


def parse_merge_config(data: Any, where: str = "merge config", base_dir: str | Path = ".",
                       find_models: bool = True) -> MergePlan:  # fmt: skip
    """A mergekit YAML (already loaded) -> MergePlan. Models are looked up as local folders (relative paths
    against the current directory, then against `base_dir`); find_models=False checks the YAML alone (a recipe's
    merge stage, whose models do not exist yet)."""
    if not isinstance(data, dict):
        raise MergeConfigError(f"{where}: expected a mapping with merge_method and models or slices")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise MergeConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    if data.get("modules"):
        raise MergeConfigError(f"{where}: 'modules' (multi-module architectures) is not supported; use models/slices")
    if "merge_method" not in data:
        raise MergeConfigError(f"{where}: 'merge_method' is missing")
    if bool(data.get("models")) == bool(data.get("slices")):
        raise MergeConfigError(f"{where}: give exactly one of 'models' or 'slices'")
    if data.get("tokenizer_source") is not None and data.get("tokenizer") is not None:
        raise MergeConfigError(f"{where}: give tokenizer_source or tokenizer, not both")
    base = data.get("base_model")
    base = _model_ref(base, f"{where}.base_model") if base is not None else None
    slices: list[OutSlice] = []
    if data.get("models"):
        sources = []
        for i, m in enumerate(data["models"]):
            w = f"{where}.models[{i}]"
            if isinstance(m, str):
                m = {"model": m}
            if not isinstance(m, dict) or "model" not in m:
                raise MergeConfigError(f"{w}: expected {{model: PATH, parameters: {{...}}}}")
            if set(m) - {"model", "parameters"}:
                raise MergeConfigError(f"{w}: unknown key(s) {sorted(set(m) - {'model', 'parameters'})}")
            sources.append(Source(_model_ref(m["model"], w), None, _params(m.get("parameters"), w)))
        if base and base not in {s.model for s in sources}:
            sources.append(Source(base, None, {}, implicit=True))  # as mergekit: the base joins the inputs
        slices.append(OutSlice(tuple(sources), None, {}))
    else:
        for i, s in enumerate(data["slices"]):
            w = f"{where}.slices[{i}]"
            if not isinstance(s, dict) or not s.get("sources"):
                raise MergeConfigError(f"{w}: expected {{sources: [{{model, layer_range: [a, b]}}]}}")
            extra = set(s) - {"sources", "base_model", "parameters", "residual_weight"}
            if extra:
                raise MergeConfigError(f"{w}: unknown key(s) {sorted(extra)}")
            if s.get("residual_weight") is not None:
                raise MergeConfigError(f"{w}: residual_weight is not supported")
            sources = []
            for j, src in enumerate(s["sources"]):
                ws = f"{w}.sources[{j}]"
                if not isinstance(src, dict) or "model" not in src or "layer_range" not in src:
                    raise MergeConfigError(f"{ws}: expected {{model: PATH, layer_range: [a, b]}}")
                lr = src["layer_range"]
                if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(x, int) for x in lr)):
                    raise MergeConfigError(f"{ws}: layer_range must be [start, end], got {lr!r}")
                if not 0 <= lr[0] < lr[1]:
                    raise MergeConfigError(f"{ws}: layer_range {lr} is empty or negative")
                sources.append(Source(_model_ref(src["model"], ws), (lr[0], lr[1]), _params(src.get("parameters"), ws)))
            lengths = {b - a for a, b in (x.layer_range for x in sources)}
            if len(lengths) > 1:
                raise MergeConfigError(f"{w}: all sources of a slice must have the same number of layers")
            sb = s.get("base_model")
            slices.append(OutSlice(tuple(sources), _model_ref(sb, w) if sb else None, _params(s.get("parameters"), w)))
    tok_source, pad = data.get("tokenizer_source"), None
    if data.get("tokenizer") is not None:
        tok = data["tokenizer"]
        if not isinstance(tok, dict):
            raise MergeConfigError(f"{where}.tokenizer: expected {{source: base|union|MODEL}}")
        if tok.get("tokens"):
            raise MergeConfigError(f"{where}.tokenizer.tokens: per-token embedding sources are not supported")
        extra = set(tok) - {"source", "tokens", "pad_to_multiple_of"}
        if extra:
            raise MergeConfigError(f"{where}.tokenizer: unknown key(s) {sorted(extra)}")
        tok_source, pad = tok.get("source"), tok.get("pad_to_multiple_of")
    plan = MergePlan(
        merge_method=str(data["merge_method"]),
        slices=slices,
        base_model=base,
        parameters=_params(data.get("parameters"), where),
        dtype=_dtype(data.get("dtype"), "dtype", where),
        out_dtype=_dtype(data.get("out_dtype"), "out_dtype", where),
        tokenizer_source=None if tok_source is None else str(tok_source),
        pad_to_multiple_of=pad,
        chat_template=data.get("chat_template"),
        paths={},
        from_models=bool(data.get("models")),
        where=where,
    )
    if not find_models:
        return plan
    base_dir = Path(base_dir)
    if plan.tokenizer_source not in (None, "base", "union"):
        plan.paths[plan.tokenizer_source] = _find(plan.tokenizer_source, base_dir)
    for ref in plan.referenced_models():
        plan.paths[ref] = _find(ref, base_dir)
    return plan


def load_merge_config(path: str | Path) -> MergePlan:
    """Read a mergekit YAML file into a MergePlan."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no merge config at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MergeConfigError(f"{path}: not valid YAML ({e})") from None
    return parse_merge_config(data, str(path), path.parent)
