"""Shared by tests that need a running operator (importable as ``operator_fixtures``).

An operator (B, `b.mssante.test`) running in the test's event loop, a peer operator (A) whose
certificates the tests present, and a gallery of bad certificates for the refusal matrix."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from smtp_helpers import DN_A, DN_B, DOMAIN_A, DOMAIN_B, HOST_A, HOST_B, STRUCT_A, STRUCT_B, Cert

from mssante.audit.events import Actor
from mssante.authority.publish import Signer
from mssante.config import Settings, load_settings
from mssante.operator.runtime import OperatorRuntime, build_runtime, run_operator
from mssante.ops.accounts import Accounts, NewPerson
from mssante.pki import TestPki
from mssante.pki.loading import load_certificate
from mssante.trust.model import Whitelist, WhitelistDomain
from mssante.trust.signature import sign_detached
from mssante.trust.xmlformat import write
from support import (
    drop_schema,
    free_port_block,
    is_postgres,
    new_schema_name,
    selected_database_url,
    wait_started,
)

PASSWORD = "mot-de-passe-solide-42"
MARTIN = "dr.martin@b.mssante.test"
MARTIN_ID_NAT = "810001234565"


@dataclass(frozen=True)
class Space:
    pki: TestPki
    a: Cert
    b: Cert
    signer: Signer
    bad: dict[str, Cert]
    whitelist_xml: bytes
    whitelist_sig: bytes


def _cert(paths: object) -> Cert:
    return Cert(Path(paths.fullchain), Path(paths.key))  # type: ignore[attr-defined]


def _self_signed(folder: Path) -> Cert:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, HOST_A),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "self.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "self.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Cert(folder / "self.pem", folder / "self.key")


def _bad_certificates(pki: TestPki, other: TestPki, folder: Path) -> dict[str, Cert]:
    now = dt.datetime.now(dt.UTC)
    revoked = pki.issue_server(HOST_A, STRUCT_A, "OPERATEUR A", "33")
    pki.revoke(revoked.cert, "keyCompromise")
    return {
        "expired": _cert(
            pki.issue_server(
                HOST_A,
                STRUCT_A,
                "OPERATEUR A",
                "33",
                not_before=now - dt.timedelta(days=400),
                not_after=now - dt.timedelta(days=10),
            )
        ),
        "not_yet_valid": _cert(
            pki.issue_server(
                HOST_A,
                STRUCT_A,
                "OPERATEUR A",
                "33",
                not_before=now + dt.timedelta(days=10),
                not_after=now + dt.timedelta(days=400),
            )
        ),
        "revoked": _cert(revoked),
        "wrong_usage": _cert(
            pki.issue_server(
                HOST_A,
                STRUCT_A,
                "OPERATEUR A",
                "33",
                extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
            )
        ),
        "other_ca": _cert(other.issue_server(HOST_A, STRUCT_A, "OPERATEUR A", "33")),
        "self_signed": _self_signed(folder / "self"),
        "unlisted_dn": _cert(
            pki.issue_server("smtp.c.mssante.test", STRUCT_A, "OPERATEUR C", "33")
        ),
    }


def _signed_whitelist(signer: Signer) -> tuple[bytes, bytes]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    wl = Whitelist(
        now,
        (
            WhitelistDomain(DOMAIN_A, "Opérateur A", (DN_A,), "", "", now),
            WhitelistDomain(DOMAIN_B, "Opérateur B", (DN_B,), "", "", now),
        ),
    )
    xml = write(wl)
    return xml, sign_detached(xml, signer.certificate, signer.key, signer.chain)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def space(tmp_path_factory: pytest.TempPathFactory) -> Space:
    root = tmp_path_factory.mktemp("space")
    pki = TestPki.init(root / "pki")
    other = TestPki.init(root / "other-pki")
    signer_paths = pki.issue_signer(
        "listeblanche.autorite.mssante.test", STRUCT_B, "AUTORITE", "75"
    )
    signer = Signer(
        load_certificate(signer_paths.cert),
        serialization.load_pem_private_key(signer_paths.key.read_bytes(), None),
        [load_certificate(signer_paths.chain)],
    )
    bad = _bad_certificates(pki, other, root)
    xml, sig = _signed_whitelist(signer)
    return Space(
        pki=pki,
        a=_cert(pki.issue_server(HOST_A, STRUCT_A, "OPERATEUR A", "33")),
        b=_cert(pki.issue_server(HOST_B, STRUCT_B, "OPERATEUR B", "31")),
        signer=signer,
        bad=bad,
        whitelist_xml=xml,
        whitelist_sig=sig,
    )


def operator_b_settings(
    space: Space, root: Path, database: dict[str, str], **smtp: object
) -> Settings:
    base = free_port_block(10)
    paths = space.pki.paths()
    return load_settings(
        None,
        data_dir=root,
        database=database,
        pki={
            "trust_anchors": [paths.root],
            "intermediates": [paths.intermediates],
            "crl_sources": space.pki.crl_sources(),
        },
        tls={"certificate": space.b.cert, "key": space.b.key},
        operator={"name": "OPERATEUR B", "structure_id": STRUCT_B, "domains": [DOMAIN_B]},
        whitelist={"url": ""},  # the tests put the list in force themselves
        imap={"port": base + 3, "tls_port": base + 4},  # never the real 143/993
        smtp={
            "hostname": HOST_B,
            "inbound_port": base,
            "submission_port": base + 1,
            "submissions_port": base + 2,
            "max_recipients": 5,
            "max_message_bytes": 200_000,
            **smtp,
        },
    )


@pytest.fixture
def b_database(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not is_postgres():
        yield {"url": f"sqlite:///{tmp_path / 'b.db'}"}
        return
    schema = new_schema_name()
    yield {"url": selected_database_url(), "schema_name": schema}
    drop_schema(schema)


@contextlib.asynccontextmanager
async def running_operator_b(
    space: Space, root: Path, database: dict[str, str], **smtp: object
) -> AsyncIterator[OperatorRuntime]:
    """Operator B, running: listeners up, whitelist in force, one professional with an account."""
    settings = operator_b_settings(space, root, database, **smtp)
    rt = build_runtime(settings)
    rt.sync.crls.refresh()
    outcome = rt.sync.keeper.accept(space.whitelist_xml, space.whitelist_sig)
    assert outcome.ok, outcome.reason
    Accounts(rt.node.db).create_person(
        NewPerson(MARTIN, PASSWORD, MARTIN_ID_NAT, "Martin", "Hélène"), Actor("test")
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_operator(settings, stop, runtime=rt))
    await wait_started(rt.started, task)
    try:
        yield rt
    finally:
        stop.set()
        await task


@pytest.fixture
async def operator_b(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> AsyncIterator[OperatorRuntime]:
    async with running_operator_b(space, tmp_path / "b", b_database) as rt:
        yield rt
