"""Hardware targets: one cited TOML file per chip, validated on load, plus the fit estimate."""

from nalln.hardware_targets.registry import (
    BUILTIN_DIR,
    ENV_VAR,
    TargetRegistry,
    load_registry,
    load_target_file,
    user_dirs,
)
from nalln.hardware_targets.schema import (
    KNOWN_CONSTANTS,
    Constant,
    Target,
    TargetFileError,
)

__all__ = [
    "BUILTIN_DIR",
    "ENV_VAR",
    "KNOWN_CONSTANTS",
    "Constant",
    "Target",
    "TargetFileError",
    "TargetRegistry",
    "load_registry",
    "load_target_file",
    "user_dirs",
]
