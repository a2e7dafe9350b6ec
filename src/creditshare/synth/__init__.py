"""Synthetic, deterministic credit data for three chains, five departments and a bureau."""

from __future__ import annotations

from creditshare.synth.generator import SynthManifest, generate, unknown_uscc
from creditshare.synth.schema import (
    DEPARTMENT_COLUMNS,
    DEPARTMENTS,
    ENTERPRISES_COLUMNS,
    ENTERPRISES_FILE,
    LABELS_COLUMNS,
    LABELS_FILE,
    department_file,
)

__all__ = [
    "DEPARTMENTS",
    "DEPARTMENT_COLUMNS",
    "ENTERPRISES_COLUMNS",
    "ENTERPRISES_FILE",
    "LABELS_COLUMNS",
    "LABELS_FILE",
    "SynthManifest",
    "department_file",
    "generate",
    "unknown_uscc",
]
