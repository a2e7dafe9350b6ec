"""Fixtures shared by every test layer: a real 2048-bit key and deterministic data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from creditshare.crypto import PrivateKey
from creditshare.synth import SynthManifest, generate

from ._databases import fresh_postgres_database


@pytest.fixture(scope="session")
def bank_key() -> PrivateKey:
    """The requester's key: real Paillier, the minimum production size."""
    return PrivateKey.generate(2048)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return generate(200, 11, tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def data_dir(synth_data: SynthManifest) -> Path:
    return synth_data.out_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the production path supports, fresh per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url
