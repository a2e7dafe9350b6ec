"""The demo federation's PKI: each party's keys in its own folder, the CA signs only."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from creditshare.crypto import SigningKey
from creditshare.demo import FederationLayout
from creditshare.identity import Chain
from creditshare.pki import CredentialVerifier, load_identity


def test_demo_layout_certifies_keys_made_where_they_are_used(tmp_path: Path) -> None:
    layout = FederationLayout.write(
        tmp_path / "fed", tmp_path / "data", chains=[Chain.YRD], departments=["tax", "court"]
    )
    ca_dir = tmp_path / "fed" / "pki" / "yrd" / "ca"
    private = {
        p for p in (tmp_path / "fed").rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()
    }
    # The CA folder holds its own key and nothing else private.
    assert {p for p in private if ca_dir in p.parents} == {ca_dir / "ca.key"}

    verifier = CredentialVerifier.from_file(
        ca_dir / "ca.crt",
        max_revocation_age=timedelta(days=1),
        clock=lambda: datetime.now(UTC),
    )
    assert verifier.update_revocations(layout.revocation_list(Chain.YRD).read_bytes())
    for node in layout.nodes:
        assert node.signing_key is not None and node.credential is not None
        assert stat.S_IMODE(node.signing_key.stat().st_mode) == 0o600
        credential = verifier.verify(
            [node.credential.read_bytes()], participant_id=node.node_id, role="node"
        )
        key = SigningKey.from_pem(node.signing_key.read_bytes())
        assert credential.verify_key == key.verify_key
        tls = layout.node_settings(node).tls
        assert tls is not None
        load_identity(tls.cert, tls.key)
        assert tls.key.parent == node.signing_key.parent  # made in the node's own folder
    coordinator_tls = layout.coordinator_settings().tls[Chain.YRD]
    load_identity(coordinator_tls.cert, coordinator_tls.key)
    assert not (coordinator_tls.key.parent / "signing.key").exists()
