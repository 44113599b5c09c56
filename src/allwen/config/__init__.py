"""Configuration: one pydantic schema, YAML files and presets, ``--set`` overrides."""

from allwen.config.load import (
    ConfigError,
    config_to_yaml,
    expand_scenarios,
    list_presets,
    load_config,
    preset_summary,
)
from allwen.config.schema import Config

__all__ = [
    "Config",
    "ConfigError",
    "config_to_yaml",
    "expand_scenarios",
    "list_presets",
    "load_config",
    "preset_summary",
]
