"""Typed configs: `load_config(path, overrides)` is the one entry point."""

from jaxfin.config.load import ConfigError, config_from_dict, load_config, valid_keys
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
    "config_from_dict",
    "load_config",
    "to_dict",
    "valid_keys",
]
