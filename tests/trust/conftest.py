"""Fixtures for the whitelist tests: the real sample, a throwaway PKI, a signed small list.

Keys are made once per session: one RSA 2048 key (the whitelist signer, as IGC-Santé issues
RSA 2048) and elliptic-curve keys elsewhere, which are fast to make.
"""

from __future__ import annotations

import pytest
from trust_helpers import (
    CLOSING_TAG,
    SAMPLE,
    TestPki,
    chain_verifier,
    make_pki,
    small_whitelist,
)

from mssante.trust.signature import SignerVerifier, sign_detached
from mssante.trust.xmlformat import write


@pytest.fixture(scope="session")
def pki() -> TestPki:
    return make_pki("TEST", rsa_signer=True)


@pytest.fixture(scope="session")
def rogue_pki() -> TestPki:
    return make_pki("ROGUE", rsa_signer=False)


@pytest.fixture(scope="session")
def verify_signer(pki: TestPki) -> SignerVerifier:
    return chain_verifier(pki.root.certificate)


@pytest.fixture(scope="session")
def sample_bytes() -> bytes:
    """The real sample, as published: truncated (no closing root tag)."""
    return SAMPLE.read_bytes()


@pytest.fixture(scope="session")
def closed_sample(sample_bytes: bytes) -> bytes:
    return sample_bytes + CLOSING_TAG


@pytest.fixture
def signed_list(pki: TestPki) -> tuple[bytes, bytes]:
    """(xml, p7s) of :func:`small_whitelist`, signed by the test authority."""
    xml = write(small_whitelist())
    return xml, sign_detached(
        xml, pki.signer.certificate, pki.signer.key, [pki.intermediate.certificate]
    )
