"""Fixtures of the OIDC tests (helpers in oidc_helpers.py): a provider running on a real
socket over TLS from the test PKI, on the selected database backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from oidc_helpers import (
    TrustMaterial,
    World,
    create_people,
    make_trust_material,
    node_settings,
    running_provider,
)


@pytest.fixture(scope="session")
def trust(tmp_path_factory: pytest.TempPathFactory) -> TrustMaterial:
    return make_trust_material(tmp_path_factory.mktemp("oidc-trust"))


@pytest.fixture
def node_database(database_settings: tuple[str, str]) -> dict[str, str]:
    url, schema = database_settings
    return {"url": url, "schema_name": schema} if schema else {"url": url}


@pytest.fixture
async def world(
    trust: TrustMaterial, tmp_path: Path, node_database: dict[str, str]
) -> AsyncIterator[World]:
    settings, secret_file = node_settings(trust, tmp_path / "node", node_database)
    create_people(settings)
    async with running_provider(settings, trust, secret_file) as running:
        yield running
