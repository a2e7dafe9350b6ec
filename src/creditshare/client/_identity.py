"""A participant's signing identity: its own Ed25519 key and the credentials the chain
operators' CAs issued for it.

The key is made on the participant's machine (``creditshare pki request``) and never
leaves it; only the credentials (certificates, public) travel, uploaded once to the
coordinator so it can relay them to the nodes that check every signed request.
A folder holds one identity: ``signing.key`` and one ``*.crt`` per chain CA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from creditshare.crypto import SigningKey
from creditshare.errors import ClientError, InvalidInputError, InvalidKeyError
from creditshare.pki import parse_credential

__all__ = ["Identity", "default_identity_dir"]

#: Credentials one identity folder may hold (one per chain CA, with room to renew).
_MAX_CREDENTIALS = 8


def default_identity_dir() -> Path | None:
    configured = os.environ.get("CREDITSHARE_IDENTITY")
    return Path(configured) if configured else None


@dataclass(frozen=True, slots=True)
class Identity:
    participant_id: str
    signing_key: SigningKey
    #: PEM or DER of each credential, as the CA issued them.
    credentials: tuple[bytes, ...]

    @classmethod
    def of(cls, signing_key: SigningKey, credentials: tuple[bytes, ...]) -> Identity:
        """An identity whose credentials all certify ``signing_key`` for one participant."""
        if not credentials:
            raise ClientError("an identity needs at least one credential from a chain CA")
        if len(credentials) > _MAX_CREDENTIALS:
            raise ClientError(f"an identity holds at most {_MAX_CREDENTIALS} credentials")
        ids = set()
        for data in credentials:
            try:
                credential = parse_credential(data)
            except InvalidInputError as exc:
                raise ClientError(f"not a creditshare credential: {exc}") from exc
            if credential.verify_key != signing_key.verify_key:
                raise ClientError(
                    f"a credential of {credential.participant_id!r} certifies another key "
                    "than this signing key"
                )
            ids.add(credential.participant_id)
        if len(ids) != 1:
            raise ClientError(f"the credentials name several participants: {sorted(ids)}")
        return cls(ids.pop(), signing_key, tuple(credentials))

    @classmethod
    def load(cls, folder: Path) -> Identity:
        """``folder/signing.key`` and every ``folder/*.crt`` (the CA copies ``ca*.crt`` aside)."""
        key_file = folder / "signing.key"
        try:
            key = SigningKey.from_pem(key_file.read_bytes())
        except FileNotFoundError:
            raise ClientError(
                f"{key_file} not found: make it with `creditshare pki request`"
            ) from None
        except InvalidKeyError as exc:
            raise ClientError(f"{key_file}: {exc}") from exc
        certs = sorted(p for p in folder.glob("*.crt") if not p.name.startswith("ca"))
        if not certs:
            raise ClientError(
                f"no credential (*.crt) in {folder}: send signing.csr to the chain operator "
                "and put the certificate it returns there"
            )
        return cls.of(key, tuple(p.read_bytes() for p in certs))
