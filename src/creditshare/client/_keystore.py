"""Local key handling: the requester's private keys live in files it owns.

Each key is generated on the requester's machine and written with mode 0600; it is
never sent anywhere. Only public halves travel: the Paillier modulus with a query, the
X25519 alert key in a signed monitoring subscription (nodes seal alerts to it).
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path

from creditshare.crypto import MIN_KEY_BITS, AlertPrivateKey, PrivateKey, SigningKey
from creditshare.errors import ClientError, InvalidKeyError

__all__ = [
    "default_alert_key_path",
    "default_key_path",
    "load_alert_key",
    "load_key",
    "load_or_create_alert_key",
    "load_or_create_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "save_key",
]

#: First line of an alert key file: says what the base64 line below it is.
_ALERT_KEY_HEADER = "creditshare alert key v1 (X25519, private: keep it, 0600)"


def default_key_path() -> Path:
    configured = os.environ.get("CREDITSHARE_KEY_FILE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "creditshare" / "paillier-key.json"


def default_alert_key_path(key_file: Path | None = None) -> Path:
    """The alert key lives beside the Paillier key (``key_file``, else the default one),
    unless ``$CREDITSHARE_ALERT_KEY_FILE`` names a file."""
    configured = os.environ.get("CREDITSHARE_ALERT_KEY_FILE")
    if configured:
        return Path(configured)
    return (key_file or default_key_path()).parent / "alert-key.txt"


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


def load_alert_key(path: Path) -> AlertPrivateKey:
    """The bank's X25519 alert key from ``path`` (its header line, then base64)."""
    lines = path.read_text(encoding="ascii", errors="replace").split()
    text = lines[-1] if lines else ""
    try:
        return AlertPrivateKey.from_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, InvalidKeyError):
        raise ClientError(
            f"{path} is not an alert key file (expected a header line and 32 bytes in base64)"
        ) from None


def load_or_create_alert_key(path: Path | None = None) -> AlertPrivateKey:
    """The bank's alert key (nodes seal monitoring batches to its public half), made and
    saved with mode 0600 the first time. Losing it loses every alert sealed to it."""
    path = path or default_alert_key_path()
    if path.exists():
        return load_alert_key(path)
    key = AlertPrivateKey.generate()
    text = f"{_ALERT_KEY_HEADER}\n{base64.b64encode(key.to_bytes()).decode('ascii')}\n"
    _write_private(path, text.encode("ascii"))
    return key
