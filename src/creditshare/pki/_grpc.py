"""gRPC credentials for mutual TLS between the coordinator and the data nodes.

Both helpers read and cross-check the files first (``load_identity``), so a
misconfigured service fails at start-up with a ConfigurationError naming the
file; gRPC itself would accept the bytes and only fail each handshake later.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

from creditshare.errors import ConfigurationError
from creditshare.pki._inspect import is_ca, load_certificate_bundle, load_identity

__all__ = ["channel_credentials", "server_credentials"]


def _trusted_roots(path: Path) -> bytes:
    """PEM of every CA certificate in ``path``; a bundle may trust several chains."""
    certificates = load_certificate_bundle(path, "CA certificate")
    for certificate in certificates:
        if not is_ca(certificate):
            raise ConfigurationError(
                f"{path} holds a certificate that is not a CA "
                f"({certificate.subject.rfc4514_string()}); point at the chain's ca.crt"
            )
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def server_credentials(cert: Path, key: Path, client_ca: Path) -> grpc.ServerCredentials:
    """Credentials for a node's gRPC server that admit only clients ``client_ca`` issued.

    ``require_client_auth=True`` is the point: a caller without a certificate
    from the chain CA does not get past the handshake, before any servicer runs.
    """
    cert_pem, key_pem = load_identity(cert, key)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=_trusted_roots(client_ca),
        require_client_auth=True,
    )


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """Credentials for the coordinator's channel to a node: trust ``ca``, present ``cert``.

    gRPC checks the server certificate's SubjectAlternativeName against the host
    part of the target the channel dials, so dial a node by a name or address
    that was in ``hosts`` when its certificate was issued.
    """
    cert_pem, key_pem = load_identity(cert, key)
    return grpc.ssl_channel_credentials(
        root_certificates=_trusted_roots(ca),
        private_key=key_pem,
        certificate_chain=cert_pem,
    )
