"""A synthetic tree model installed on a federation (for query latency), and a profile of
where one private tree score's time goes (in-process, the same arithmetic as the nodes).

The model is random (``trees._synthetic``): for latency only the shapes matter (trees,
depth, owning nodes), not what the splits mean. Its shards are saved in the owning
nodes' databases before they start and its published part is added to the coordinator's
settings, exactly as a trained model would leave them.
"""

from __future__ import annotations

import csv
import time
import tomllib
from collections.abc import Callable
from typing import Any

from creditshare.crypto import Ciphertext, FastEncryptor, PrivateKey
from creditshare.demo import FederationLayout
from creditshare.demo._toml import dumps
from creditshare.departments import get_department
from creditshare.node._storage import ShardStore, make_engine
from creditshare.trees import TreeModel, TreeShard, first, refine, shifted_weights, weigh
from creditshare.trees._synthetic import random_tree_model

__all__ = ["install_tree_model", "profile_chain"]


def _ranges(layout: FederationLayout, owners: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for node in layout.nodes:
        if node.node_id not in owners or not node.data_file.exists():
            continue
        department = get_department(node.department)
        with node.data_file.open(encoding="utf-8", newline="") as handle:
            values = [
                department.feature_values({f.name: f.parse(row[f.name]) for f in department.fields})
                for row in csv.DictReader(handle)
            ]
        spans = {n: (min(v[n] for v in values), max(v[n] for v in values)) for n in values[0]}
        out[node.node_id] = {n: r for n, r in spans.items() if r[0] < r[1]}
    return out


def install_tree_model(
    layout: FederationLayout, model_id: str, owners: tuple[str, ...], trees: int, depth: int
) -> tuple[TreeModel, dict[str, TreeShard]]:
    """Save each owner's shard in its database and publish the model in the coordinator's
    settings (before the federation starts)."""
    model, shards = random_tree_model(_ranges(layout, owners), trees=trees, depth=depth, seed=1)
    for node in layout.nodes:
        if node.node_id in shards:
            settings = layout.node_settings(node)
            ShardStore(make_engine(settings.database_url)).save_tree(
                model_id, shards[node.node_id], "bench", settings.department_schema
            )
    assert layout.coordinator_config is not None
    config = tomllib.loads(layout.coordinator_config.read_text(encoding="utf-8"))
    config["models"].append(
        {"id": model_id, "model_type": "gbdt", "tree_model": model.to_document()}
    )
    layout.coordinator_config.write_text(dumps(config), encoding="utf-8")
    return model, shards


def _timed(work: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def profile_chain(key: PrivateKey, model: TreeModel, scale: int) -> dict[str, float]:
    """Milliseconds of each part of one chain of three nodes, on one core (best of 3)."""
    encryptor = FastEncryptor(key.public_key)
    leaves = model.leaf_count
    bits = [k % 2 for k in range(leaves)]
    weights, _ = shifted_weights(model, scale)
    out: dict[str, float] = {}
    out["first: Enc(bit) per leaf"], sent = _timed(lambda: first(bits, encryptor))
    blobs = [c.to_bytes() for c in sent]
    out["validate incoming ciphertexts"], incoming = _timed(
        lambda: [Ciphertext.from_bytes(key.public_key, b) for b in blobs]
    )
    out["middle: re-randomise / Enc(0) per leaf"], middle = _timed(
        lambda: refine(incoming, bits, encryptor)
    )
    out["last: weighted sum (dot) + re-randomise"], _ = _timed(
        lambda: weigh(middle, bits, weights, encryptor)
    )
    out["one obfuscator (DJN table)"], _ = _timed(encryptor.zero, repeat=50)
    return {name: 1000 * seconds for name, seconds in out.items()}
