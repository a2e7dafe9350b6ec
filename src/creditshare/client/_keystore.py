"""Local key handling: the requester's Paillier private key lives in one file it owns.

The key is generated on the requester's machine and written with mode 0600; it
is never sent anywhere. Only the public modulus travels with a query.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from creditshare.crypto import MIN_KEY_BITS, PrivateKey, SigningKey

__all__ = ["default_key_path", "load_key", "load_or_create_key", "save_key"]


def default_key_path() -> Path:
    configured = os.environ.get("CREDITSHARE_KEY_FILE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "creditshare" / "paillier-key.json"


def _write_private(path: Path, data: bytes) -> None:
    """Write via a fresh temp file (mkstemp: mode 0600, O_EXCL) and rename into place,
    so neither a pre-existing file's mode nor a planted symlink can expose the key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_key(key: PrivateKey, path: Path) -> None:
    _write_private(path, key.to_json_bytes())


def load_key(path: Path) -> PrivateKey:
    return PrivateKey.from_json_bytes(path.read_bytes())


def load_or_create_key(path: Path | None = None, bits: int = MIN_KEY_BITS) -> PrivateKey:
    """Load the key at ``path``, generating and saving a new one the first time."""
    path = path or default_key_path()
    if path.exists():
        return load_key(path)
    key = PrivateKey.generate(bits)
    save_key(key, path)
    return key


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey.from_pem(path.read_bytes())


def load_or_create_signing_key(path: Path) -> SigningKey:
    """An enterprise's Ed25519 consent-signing key, created (mode 0600) on first use."""
    if path.exists():
        return load_signing_key(path)
    key = SigningKey.generate()
    _write_private(path, key.to_pem())
    return key
