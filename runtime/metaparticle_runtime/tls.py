"""Optional mutual TLS between roles: certificates from files (on Kubernetes, a mounted Secret)."""

from __future__ import annotations

import grpc


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def server_credentials(cert: str | None, key: str | None, ca: str | None) -> grpc.ServerCredentials | None:
    """Mutual TLS for the server: clients must present a certificate the CA signed (always)."""
    if not cert:
        return None
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))],
        root_certificates=_read(ca),
        require_client_auth=True,
    )


def channel_credentials(cert: str | None, key: str | None, ca: str | None) -> grpc.ChannelCredentials | None:
    """TLS for calls to peers, presenting our certificate when we have one."""
    if not ca and not cert:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )
