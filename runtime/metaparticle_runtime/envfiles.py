"""Secret environment variables delivered as files: one file per variable in `RuntimeConfig.env_dir`.

Deployers put secret values there (a Kubernetes Secret volume, files uploaded into a container)
instead of the container's configured environment, where `docker inspect` or a pod spec would show
them. The runtime loads them into `os.environ` before the user's function is imported, so code that
reads `os.environ` keeps working. A Kubernetes Secret volume's bookkeeping entries (`..data`,
timestamped directories) start with dots and are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_env_dir(directory: str) -> dict[str, str]:
    """The variables in `directory`: {file name: content}. A missing directory, a file that is not
    a valid variable name, or content that is not UTF-8 is a configuration error naming it."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"the secret environment directory {directory} does not exist")
    values: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_file():
            raise ConfigError(f"{entry} in the secret environment directory is not a file")
        if not _NAME.fullmatch(entry.name):
            raise ConfigError(f"{entry.name!r} in {directory} is not an environment variable name")
        try:
            values[entry.name] = entry.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{entry} is not UTF-8 text") from None
    return values


def load_env_dir(directory: str) -> list[str]:
    """Sets every variable of `directory` in `os.environ`; returns their names (never the values)."""
    values = read_env_dir(directory)
    os.environ.update(values)
    return sorted(values)
