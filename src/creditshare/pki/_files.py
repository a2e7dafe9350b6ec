"""Writing and reading PKI files with the permissions a private key needs.

Kept apart from the X.509 logic so every file the package writes goes through
the same two doors: private keys are never, even for an instant, readable by
anyone but the owner, and no reader ever sees a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from creditshare.errors import ConfigurationError

__all__ = ["ensure_private_dir", "read_file", "write_atomically"]

_PUBLIC_MODE = 0o644
_PRIVATE_MODE = 0o600
_PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700 if missing; leave an existing one alone.

    An existing directory keeps its mode: it may be a shared location such as
    ``/etc/creditshare`` whose permissions the operator chose on purpose. The
    key files inside are 0600 whatever the directory's mode.
    """
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{path} exists and is not a directory")
    if not path.is_dir():
        try:
            path.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask; be explicit about the result.
            path.chmod(_PRIVATE_DIR_MODE)
        except OSError as exc:
            raise ConfigurationError(f"cannot create directory {path}: {exc}") from exc


def write_atomically(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory.

    ``mkstemp`` creates the file 0600 before a byte is written, so a private key
    is never exposed by a race with the umask; public files are widened to 0644
    only afterwards. ``os.replace`` makes the switch atomic, so a crash leaves
    either the old file or the new one, never a truncated PEM.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(_PRIVATE_MODE if private else _PUBLIC_MODE)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigurationError(f"cannot write {path}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_file(path: Path, what: str) -> bytes:
    """Read a whole file, turning "missing" or "unreadable" into a ConfigurationError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{what} is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc}") from exc
