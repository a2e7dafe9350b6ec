"""The example configurations shipped for operators load as documented.

Their TLS paths point at /etc, so the test certifies real keys (request + sign) and
substitutes their paths; everything else is read from the files as shipped.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings
from creditshare.departments import DEFAULT_INTERCEPT, DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.node import NodeSettings
from creditshare.pki import init_ca
from tests._pki import make_tls

ROOT = Path(__file__).resolve().parents[2]


def _tls(tmp_path: Path, chain: str, name: str, role: str) -> dict[str, str]:
    ca = tmp_path / chain / "ca"
    if not ca.exists():
        init_ca(chain, ca)
    files = make_tls(ca, tmp_path / chain / name, name, role)
    return {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}


def test_node_example_loads_with_published_weights(tmp_path: Path) -> None:
    path = ROOT / "node" / "example.toml"
    shipped = tomllib.loads(path.read_text())
    settings = load_settings(NodeSettings, path, tls=_tls(tmp_path, "yrd", "yrd-tax", "node"))
    assert settings.department == "tax"
    assert settings.models[DEFAULT_MODEL_ID].weights == DEFAULT_WEIGHTS["tax"]
    assert set(shipped["tls"]) == {"ca", "cert", "key"}
    assert settings.log_key.to_text() == shipped["log_public_key"]


def test_coordinator_example_loads(tmp_path: Path) -> None:
    path = ROOT / "coordinator" / "example.toml"
    shipped = tomllib.loads(path.read_text())
    tls = {c: _tls(tmp_path, c, f"coordinator-{c}", "coordinator") for c in shipped["tls"]}
    settings = load_settings(CoordinatorSettings, path, tls=tls)
    assert [n.id for n in settings.nodes] == ["yrd-tax", "bth-court"]
    assert settings.models[0].intercept == DEFAULT_INTERCEPT
    assert str(settings.log_signing_key_file) == shipped["log_signing_key_file"]
