"""The chain PKI: mutual TLS between coordinator and nodes, and participant credentials.

Each regional chain has its own CA (``init_ca``), kept by the chain operator off
the coordinator host. Every party makes its own keys where they are used and
sends certificate signing requests (``request``); the CA checks and certifies
them (``sign``), so no private key is ever made at the CA or shipped:

- TLS certificates (ECDSA P-256) for nodes and the coordinator; services turn
  them into gRPC credentials (``server_credentials`` / ``channel_credentials``,
  or ``TlsSettings`` embedded in their settings);
- participant credentials (Ed25519, ``CREDENTIAL_EKU``): participant id, role
  and, for an enterprise, its USCC, which nodes check signed requests against
  (``CredentialVerifier``), with revocation delivered as a signed, numbered,
  dated list (``revoke`` / ``issue_revocation_list``).

Every file is checked when it is loaded, so misconfiguration stops a service at
start-up rather than failing handshakes mid-query. A coordinator serving
several chains needs a certificate from each chain CA it talks to (or nodes that
trust a bundle of CAs): trust never crosses a chain on its own.
"""

from creditshare.pki._ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CLOCK_SKEW,
    MAX_LEAF_DAYS,
    ORGANIZATION,
    CaFiles,
    Role,
    init_ca,
)
from creditshare.pki._credential import (
    CREDENTIAL_EKU,
    CREDENTIAL_ROLES,
    MAX_CERTIFICATE_BYTES,
    PARTICIPANT_ID,
    Credential,
    parse_credential,
)
from creditshare.pki._grpc import channel_credentials, server_credentials
from creditshare.pki._inspect import CertificateInfo, certificate_info, load_identity
from creditshare.pki._request import (
    REQUEST_ROLES,
    SIGNING_CSR_FILE,
    SIGNING_KEY_FILE,
    TLS_CSR_FILE,
    TLS_KEY_FILE,
    RequestFiles,
    request,
)
from creditshare.pki._revocation import (
    MAX_CRL_BYTES,
    REVOCATION_REASONS,
    RevocationList,
    Revoked,
    issue_revocation_list,
    revoke,
)
from creditshare.pki._settings import TlsSettings
from creditshare.pki._sign import SignedFiles, sign
from creditshare.pki._verifier import MAX_CREDENTIALS, CredentialVerifier

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CLOCK_SKEW",
    "CREDENTIAL_EKU",
    "CREDENTIAL_ROLES",
    "MAX_CERTIFICATE_BYTES",
    "MAX_CREDENTIALS",
    "MAX_CRL_BYTES",
    "MAX_LEAF_DAYS",
    "ORGANIZATION",
    "PARTICIPANT_ID",
    "REQUEST_ROLES",
    "REVOCATION_REASONS",
    "SIGNING_CSR_FILE",
    "SIGNING_KEY_FILE",
    "TLS_CSR_FILE",
    "TLS_KEY_FILE",
    "CaFiles",
    "CertificateInfo",
    "Credential",
    "CredentialVerifier",
    "RequestFiles",
    "RevocationList",
    "Revoked",
    "Role",
    "SignedFiles",
    "TlsSettings",
    "certificate_info",
    "channel_credentials",
    "init_ca",
    "issue_revocation_list",
    "load_identity",
    "parse_credential",
    "request",
    "revoke",
    "server_credentials",
    "sign",
]
