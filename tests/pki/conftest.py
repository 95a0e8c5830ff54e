"""Shared test PKIs. RSA key generation is slow-ish, so PKIs are made once per session.

``pki`` is shared and must not be revoked into; tests that revoke use ``fresh_pki``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from pki_helpers import ORGANISATION, RPPS_ID_NAT, SERVER_HOST, STRUCTURE_ID, trust_of

from mssante.pki import CrlCache, IssuedPaths, TestPki, TrustStore, load_certificate


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.init(tmp_path_factory.mktemp("pki") / "test-pki")


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """An unrelated test PKI with the very same CA names (and other keys)."""
    return TestPki.init(tmp_path_factory.mktemp("other-pki") / "test-pki")


@pytest.fixture(scope="session")
def server(pki: TestPki) -> IssuedPaths:
    return pki.issue_server(SERVER_HOST, STRUCTURE_ID, ORGANISATION, "33")


@pytest.fixture(scope="session")
def person(pki: TestPki) -> IssuedPaths:
    return pki.issue_person(RPPS_ID_NAT, "Dupont", "Jeanne")


@pytest.fixture(scope="session")
def signer(pki: TestPki) -> IssuedPaths:
    return pki.issue_signer("liste-blanche.autorite.test", "318751275100020", "AUTORITE", "75")


@pytest.fixture(scope="session")
def trust(pki: TestPki) -> TrustStore:
    return trust_of(pki)


@pytest.fixture(scope="session")
def server_cert(server: IssuedPaths) -> x509.Certificate:
    return load_certificate(server.cert)


@pytest.fixture
def fresh_pki(tmp_path: Path) -> TestPki:
    """A PKI of one's own, for tests that revoke or re-publish."""
    return TestPki.init(tmp_path / "fresh-pki")


@pytest.fixture
def crl_cache(tmp_path: Path) -> Callable[..., CrlCache]:
    """Build a refreshed CrlCache over a PKI's CRL files."""

    def make(pki: TestPki, **options: object) -> CrlCache:
        cache = CrlCache(tmp_path / "crl-cache", pki.crl_sources(), trust_of(pki), **options)  # type: ignore[arg-type]
        cache.refresh()
        return cache

    return make
