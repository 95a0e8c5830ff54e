"""Helpers and constants of the PKI tests (fixtures are in conftest.py)."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from mssante.pki import TestPki, TrustStore

DATA = Path(__file__).resolve().parents[1] / "data"
WHITELIST_SAMPLE = DATA / "listeblanchemssante-sample.xml"
NOW = datetime.now(UTC)

SERVER_HOST = "smtp-1.sante.example.com"
STRUCTURE_ID = "341459958900028"
ORGANISATION = "EXAMPLE HEALTH"
RPPS_ID_NAT = "810002909371"


def whitelist_dns() -> list[str]:
    """The distinct operator DNs of the real whitelist sample."""
    text = WHITELIST_SAMPLE.read_text(encoding="utf-8")
    return sorted(set(re.findall(r"<DNCertificatOperateur>([^<]+)<", text)))


def trust_of(pki: TestPki) -> TrustStore:
    paths = pki.paths()
    return TrustStore.from_pem_files([paths.root], [paths.intermediates])


def copy_crls(pki: TestPki, target: Path) -> list[str]:
    """Copy a PKI's DER CRLs into ``target``; return them as sources (plain paths)."""
    target.mkdir(parents=True, exist_ok=True)
    sources = []
    for crl in pki.paths().crls:
        destination = target / crl.der.name
        shutil.copyfile(crl.der, destination)
        sources.append(str(destination))
    return sources
