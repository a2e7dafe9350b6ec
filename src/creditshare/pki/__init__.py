"""A small PKI for mutual TLS between the coordinator and the data nodes.

Each regional chain has its own CA (``init_ca``); the chain operator issues node
and coordinator certificates from it (``issue``); services turn those files into
gRPC credentials (``server_credentials`` / ``channel_credentials``, or
``TlsSettings`` embedded in their settings). Every file is checked when it is
loaded, so misconfiguration stops a service at start-up rather than failing
handshakes mid-query.

A coordinator serving several chains needs a certificate from each chain CA it
talks to (or nodes that trust a bundle of CAs): trust never crosses a chain on
its own.
"""

from creditshare.pki._grpc import channel_credentials, server_credentials
from creditshare.pki._inspect import CertificateInfo, certificate_info, load_identity
from creditshare.pki._issue import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CLOCK_SKEW,
    ORGANIZATION,
    CaFiles,
    IssuedFiles,
    Role,
    init_ca,
    issue,
)
from creditshare.pki._settings import TlsSettings

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CLOCK_SKEW",
    "ORGANIZATION",
    "CaFiles",
    "CertificateInfo",
    "IssuedFiles",
    "Role",
    "TlsSettings",
    "certificate_info",
    "channel_credentials",
    "init_ca",
    "issue",
    "load_identity",
    "server_credentials",
]
