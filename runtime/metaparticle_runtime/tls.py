"""Optional mutual TLS between roles: certificates from files (on Kubernetes, a mounted Secret)."""

from __future__ import annotations

import grpc


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def server_credentials(cert: str | None, key: str | None, ca: str | None) -> grpc.ServerCredentials | None:
    """TLS for the server; with a CA, clients must present a certificate it signed."""
    if not cert:
        return None
    ca_bytes = _read(ca)
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))],
        root_certificates=ca_bytes,
        require_client_auth=ca_bytes is not None,
    )


def channel_credentials(cert: str | None, key: str | None, ca: str | None) -> grpc.ChannelCredentials | None:
    """TLS for calls to peers, presenting our certificate when we have one."""
    if not ca and not cert:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )
