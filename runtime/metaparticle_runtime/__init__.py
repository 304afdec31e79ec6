"""The shared metaparticle runtime: one gRPC service, served by every role of every pattern.

Roles: the function server (runs the user's function), the spread router, the shard router and the
scatter/gather root. The entry role also serves JSON over HTTP. Everything is configured by
environment variables (see `config.RuntimeConfig`), so the same runtime runs as a local process, a
container or a Kubernetes pod. Install it alone (no Pulumi) for images.
"""

SERVICE_NAME = "metaparticle.v1.Function"
CALL_METHOD = f"/{SERVICE_NAME}/Call"
ERROR_METADATA_KEY = "mp-error-bin"
#: A leaf call's id, and the mark of its hedge: a replica already running that id refuses the hedge.
CALL_ID_METADATA_KEY = "mp-call-id"
HEDGE_METADATA_KEY = "mp-hedge"

__all__ = ["SERVICE_NAME", "CALL_METHOD", "ERROR_METADATA_KEY", "CALL_ID_METADATA_KEY", "HEDGE_METADATA_KEY"]
