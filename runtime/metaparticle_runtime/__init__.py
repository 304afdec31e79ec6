"""The shared metaparticle runtime: one gRPC service, served by every role of every pattern.

Roles: the function server (runs the user's function), the spread router, the shard router and the
scatter/gather root. The entry role also serves JSON over HTTP. Everything is configured by
environment variables (see `config.RuntimeConfig`), so the same runtime runs as a local process, a
container or a Kubernetes pod. Install it alone (no Pulumi) for images.
"""

SERVICE_NAME = "metaparticle.v1.Function"
CALL_METHOD = f"/{SERVICE_NAME}/Call"
ERROR_METADATA_KEY = "mp-error-bin"

__all__ = ["SERVICE_NAME", "CALL_METHOD", "ERROR_METADATA_KEY"]
