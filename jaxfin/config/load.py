"""YAML + dotted `key=value` overrides -> typed dataclasses, refusing unknown keys and bad values early."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config
from jaxfin.config.validate import validate


def _fields(cls) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def valid_keys(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts (for messages and docs)."""
    keys = []
    for name, (_, tp) in _fields(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys.extend(valid_keys(tp, prefix + name + "."))
    return keys


def unknown_key_error(key: str, where: str, section_keys: list[str] | None = None) -> ConfigError:
    """`section_keys`: the valid keys next to the bad one (e.g. inside one `data.sources` item)."""
    keys = section_keys or valid_keys()
    if "." in key and key in keys:  # `model.lora:` as one YAML key: valid dotted, but a file nests its sections
        head, rest = key.split(".", 1)
        return ConfigError(f"{where}: '{key}' is a dotted key; in a YAML file nest it ({head}: {{{rest}: ...}}); "
                           f"dotted keys are for the command line (`{key}=...`) and recipe stages' `set`")  # fmt: skip
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not near:  # e.g. `trian.stpes`: match the last part against the last part of every key
        last = {k.rsplit(".", 1)[-1]: k for k in reversed(keys)}
        hit = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(last), n=1, cutoff=0.6)
        near = [last[hit[0]]] if hit else []
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"{where}: unknown config key '{key}'{hint}")


def _coerce(value: Any, tp, key: str, where: str):
    """Check/convert one leaf value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if value is None or value == "":  # `data.dev=` on the command line: an empty list
            return []
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce(v, value_tp, f"{key}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):  # e.g. one item of data.sources
        if isinstance(value, str) and "path" in _fields(tp):  # a plain path is shorthand for {path: ...}
            value = {"path": value}
        return build_section(tp, value, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args[:-1]:  # e.g. `int | bool`: the first type that takes the value
            with contextlib.suppress(ConfigError):
                return _coerce(value, a, key, where)
        return _coerce(value, args[-1], key, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, str):  # YAML reads "3e-4" and "1e3" as strings
        with contextlib.suppress(ValueError):
            value = float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
    return value


def build_section(cls, data: dict, where: str, prefix: str = ""):
    """A config dataclass (the whole Config or one section, e.g. FilterConfig) from a mapping: unknown keys refused
    naming the nearest valid one, values checked against the annotated types. `prefix`: the dotted key of `data`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    fields = _fields(cls)
    kwargs = {}
    for name, value in data.items():
        key = prefix + str(name)
        if name not in fields:
            raise unknown_key_error(key, where, None if cls is Config or "[" not in prefix else valid_keys(cls, prefix))
        _, tp = fields[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_section(tp, value or {}, where, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, key, where)
    return cls(**kwargs)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str], cls=Config, example: str = "train.steps=100") -> dict:
    """`key=value` items -> a nested dict of YAML values, every key checked against `cls`'s dotted keys."""
    keys = valid_keys(cls)
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. {example})")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in keys:
            raise unknown_key_error(key, "command line", keys)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            why = str(e).splitlines()[0]
            raise ConfigError(f"override '{item}': the value is not valid YAML ({why}); quote strings that start "
                              f"with '@', '*' or '&', e.g. train.trainable=['@router']") from None  # fmt: skip
        _set_dotted(tree, key, value)
    return tree


def merge_trees(base: dict, extra: dict) -> dict:
    """`extra` over `base`, section by section (nested dicts merged, everything else replaced)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_trees(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file ({} when empty); ConfigError if missing, invalid or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of config keys")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config file (or defaults) and apply `key=value` overrides; validate everything."""
    data: dict = {}
    where = "defaults"
    if path is not None:
        data = read_yaml_mapping(path)
        where = str(path)
    try:
        cfg = build_section(Config, data, where)
        if overrides:
            tree = merge_trees(dataclasses.asdict(cfg), parse_overrides(list(overrides)))
            cfg = build_section(Config, tree, "command line")
    except TypeError as e:  # e.g. a section given as a scalar
        raise ConfigError(f"{where}: {e}") from None
    validate(cfg)
    return cfg


def config_from_dict(data: dict, where: str = "dict") -> Config:
    cfg = build_section(Config, data, where)
    validate(cfg)
    return cfg
