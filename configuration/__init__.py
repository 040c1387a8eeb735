"""The configuration floor: one flat YAML file validated once, at the edge, into a ``Config``."""

from configuration.loading import (
    DEFAULT_CONFIG,
    TEMPLATE_PATH,
    apply_overrides,
    configured_output_path,
    load_config,
    read_yaml,
    read_yaml_file,
    validate_config,
)
from configuration.schema import REDACTED, SECRET_KEYS, Config, NormParams

__all__ = [
    "DEFAULT_CONFIG",
    "REDACTED",
    "SECRET_KEYS",
    "TEMPLATE_PATH",
    "Config",
    "NormParams",
    "apply_overrides",
    "configured_output_path",
    "load_config",
    "read_yaml",
    "read_yaml_file",
    "validate_config",
]
