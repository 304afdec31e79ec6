"""Per-target specs: pure functions of a Topology and the deployment settings (no Pulumi, no I/O)."""

from typing import Any, Mapping

#: Where a container finds the user's secret env values, one file per variable (RuntimeConfig.env_dir).
ENV_DIR = "/run/metaparticle/env"
#: Where a container's persistent data volume is mounted (`ctx.storage` with storage=): the image
#: has it, owned by the runtime's user, so a new Docker volume starts out writable by it.
DATA_DIR = "/var/lib/metaparticle/data"
#: The operations port of every container: GET /metrics (Prometheus) and GET /healthz (the replica's health).
OPS_PORT = 9090


def split_env(env: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The user's `env=` as (plain values, secret values): strings and numbers may sit in a
    container's configured environment; anything else (a Pulumi Output, maybe secret) never does,
    and reaches the function as a file in the runtime's `env_dir` instead."""
    plain: dict[str, str] = {}
    hidden: dict[str, Any] = {}
    for key in sorted(env):
        value = env[key]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            plain[key] = str(value)
        else:
            hidden[key] = value
    return plain, hidden
