"""What a model feature's number means: the schema parts its derivation depends on.

A trained shard's weights (and its WOE tables, looked up by level INDEX) are only right
for features derived exactly as when it was trained. A node stores this description of
each feature with the shard and compares it with its current schema at load: a level
reordered, a transform or a default changed, and the shard is refused, not silently
scored with a different meaning. The description is schema configuration only, never a
record's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from creditshare.departments._schema import Department, FeatureSpec

__all__ = ["derivation", "derivation_change"]


def derivation(department: Department, feature: FeatureSpec) -> dict[str, Any]:
    """A canonical JSON-ready description of how ``feature`` is derived: its column's
    type, levels (WOE: looked up by index), missing rule and default, and its transform,
    scale, floor, cap, encoding, mapping and (one-hot) level."""
    column = next((f for f in department.fields if f.name == feature.column), None)
    return {
        "column": feature.column,
        "type": column.kind if column is not None else feature.kind,
        # Only a WOE feature is a level INDEX (a mapped one is its number, in "values"; a
        # one-hot dummy is its own level): reordering levels changes nothing else.
        "levels": list(column.levels if column is not None else feature.levels)
        if feature.encoding == "woe"
        else [],
        "missing": column.missing if column is not None else "reject",
        "default": column.default if column is not None else None,
        "transform": feature.transform,
        "scale": feature.scale,
        "floor": feature.floor,
        "cap": feature.cap,
        "encoding": feature.encoding,
        "values": dict(feature.mapping),
        "level": feature.level,
    }


def derivation_change(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first part of a feature's derivation that differs between a stored description
    and the current one (None: derived the same way). Levels appended to a category keep
    the old ones' indices, and a map that gained levels keeps the old ones' numbers, so
    both are the same derivation for every value the shard was trained on."""
    for key in sorted(set(stored) | set(current)):
        was, now = stored.get(key), current.get(key)
        if key == "levels" and isinstance(was, list) and isinstance(now, list):
            if now[: len(was)] == was:
                continue
        elif key == "values" and isinstance(was, dict) and isinstance(now, dict):
            if all(k in now and now[k] == v for k, v in was.items()):
                continue
        elif was == now:
            continue
        return key
    return None
