"""Typed configs: `load_config(path, overrides)` is the one entry point."""

from jaxfin.config.errors import ConfigError
from jaxfin.config.load import (
    build_section,
    config_from_dict,
    load_config,
    merge_trees,
    parse_overrides,
    read_yaml_mapping,
    unknown_key_error,
    valid_keys,
)
from jaxfin.config.schema import (
    CheckpointConfig,
    Config,
    DataConfig,
    MeshConfig,
    ModelConfig,
    OptimizerConfig,
    RopeScaling,
    TrainConfig,
    to_dict,
)
from jaxfin.config.validate import validate

__all__ = [
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RopeScaling",
    "TrainConfig",
    "build_section",
    "config_from_dict",
    "load_config",
    "merge_trees",
    "parse_overrides",
    "read_yaml_mapping",
    "to_dict",
    "unknown_key_error",
    "valid_keys",
    "validate",
]
