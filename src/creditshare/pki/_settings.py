"""The TLS block that service settings embed (``[tls]`` in a node or coordinator file)."""

from __future__ import annotations

import grpc
from pydantic import BaseModel, ConfigDict, FilePath

from creditshare.pki._grpc import channel_credentials, server_credentials

__all__ = ["TlsSettings"]


class TlsSettings(BaseModel):
    """Paths to a service's mTLS identity and the CA it trusts.

    Validation checks only that the three files exist, so a typo in a path fails
    when the settings load, at start-up. Whether the key matches the certificate
    is checked when the credentials are built (``server_credentials`` /
    ``channel_credentials``), which services also do at start-up.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca: FilePath
    cert: FilePath
    key: FilePath

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require clients certified by ``ca``."""
        return server_credentials(self.cert, self.key, self.ca)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials that trust ``ca`` and present this identity."""
        return channel_credentials(self.ca, self.cert, self.key)
