"""An operator keeps a copy of the directory: it downloads the authority's extraction over
HTTPS (certificate checked), imports it, and the next round costs one 304."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dirhelpers import node_settings, org, person, write_extraction
from fastapi import FastAPI
from sqlalchemy import select

from mssante.audit.log import iter_entries
from mssante.config import PkiSettings
from mssante.directory.api import directory_router
from mssante.directory.export import export_format
from mssante.directory.fetch import FetchError, fetch_and_import
from mssante.directory.importer import import_extraction
from mssante.directory.search import DirectorySearch
from mssante.operator.directory_sync import DirectorySync
from mssante.runtime import Node, open_node
from mssante.store.models import DirectoryPublication, MailboxType
from support import serving

LINES = [
    person("helene.lefevre@ch-lyon.mssante.fr", "LEFÈVRE", "Hélène"),
    org(
        "cardiologie@chu-lyon.mssante.fr", "CENTRE HOSPITALIER UNIVERSITAIRE DE LYON", "Cardiologie"
    ),
]


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authority.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def authority(
    tmp_path: Path, database_settings: tuple[str, str]
) -> Iterator[tuple[str, Path, Node]]:
    """The directory routes over HTTPS on 127.0.0.1, on a node with the extraction imported."""
    folder = tmp_path / "authority"
    folder.mkdir()
    node = open_node(node_settings(folder, database_settings))
    import_extraction(
        node.db, write_extraction(folder / "e.txt", LINES), node.settings.directory, actor="t"
    )
    app = FastAPI()
    app.include_router(directory_router(node.db, node.settings.directory))
    cert, key = _certificate(folder)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    with serving(config) as port:
        yield f"https://127.0.0.1:{port}/directory/extraction", cert, node
    node.close()


def operator_node(tmp_path: Path, url: str, anchor: Path) -> Node:
    """The operator's own node: SQLite in its folder (the authority has the test database)."""
    settings = node_settings(tmp_path / "operator", (f"sqlite:///{tmp_path / 'operator.db'}", ""))
    settings.directory.extraction_url = url
    settings.pki = PkiSettings(trust_anchors=[anchor])
    return open_node(settings)


def test_fetch_imports_then_an_unchanged_directory_costs_a_304(
    authority: tuple[str, Path, Node], tmp_path: Path
) -> None:
    url, anchor, _ = authority
    node = operator_node(tmp_path, url, anchor)
    try:
        first = fetch_and_import(node, actor="t")
        assert first.summary is not None and first.summary.added == 2
        found = DirectorySearch(node.db, node.settings.directory).search("lefev")
        assert [r.address for r in found] == ["helene.lefevre@ch-lyon.mssante.fr"]
        second = fetch_and_import(node, actor="t")
        assert second.unchanged and second.summary is None
        events = [e.event for e in iter_entries(node.db)]
        assert events == ["directory.fetched", "directory.imported"]
        assert not (tmp_path / "operator" / "directory" / "extraction.part").exists()
    finally:
        node.close()


def test_a_server_the_anchors_do_not_vouch_for_is_refused(
    authority: tuple[str, Path, Node], tmp_path: Path
) -> None:
    url, _, _ = authority
    stranger, _ = _certificate(tmp_path)
    node = operator_node(tmp_path, url, stranger)
    try:
        with pytest.raises(FetchError, match="téléchargement impossible"):
            fetch_and_import(node, actor="t")
        assert [e.event for e in iter_entries(node.db)] == ["directory.fetch_failed"]
    finally:
        node.close()


async def test_the_operator_worker_keeps_its_copy_through_an_outage_and_catches_up(
    authority: tuple[str, Path, Node], tmp_path: Path
) -> None:
    """The running operator's worker (DirectorySync): a round at start; the authority away,
    a failed round keeps the copy in force and tries again after retry_seconds, not a day
    later; back, the next round brings the change."""
    url, anchor, authority_node = authority
    node = operator_node(tmp_path, url, anchor)
    node.settings.directory.refresh_seconds = 0.3
    node.settings.directory.retry_seconds = 0.1
    sync = DirectorySync(node)
    search = DirectorySearch(node.db, node.settings.directory)
    try:
        assert await sync.refresh_once() is not None
        assert [r.address for r in search.search("lefev")] == ["helene.lefevre@ch-lyon.mssante.fr"]
        node.settings.directory.extraction_url = url.replace("/directory/", "/nowhere/")
        assert await sync.refresh_once() is None  # a 404: logged, audited, copy kept
        assert [r.address for r in search.search("lefev")] == ["helene.lefevre@ch-lyon.mssante.fr"]
        node.settings.directory.extraction_url = url
        lines = [*LINES, person("paul.durand@cabinet.mssante.fr", "DURAND", "Paul")]
        import_extraction(
            authority_node.db,
            write_extraction(tmp_path / "tomorrow.txt", lines),
            authority_node.settings.directory,
            actor="t",
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(sync.run(stop))
        deadline = time.monotonic() + 10
        while not search.search("durand") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(worker, 5)
        assert [r.address for r in search.search("durand")] == ["paul.durand@cabinet.mssante.fr"]
        events = [e.event for e in iter_entries(node.db)]
        assert events[:3] == ["directory.fetched", "directory.imported", "directory.fetch_failed"]
    finally:
        node.close()


def test_the_extraction_etag_changes_with_a_publication(
    authority: tuple[str, Path, Node],
) -> None:
    """Operators download conditionally: a mailbox published (or changed, or deleted) by an
    operator changes the file, so it must change the ETag, not only the agency's next file."""
    _, _, node = authority
    before = export_format(node.db).version
    with node.db.session() as session:
        session.add(
            DirectoryPublication(
                address="helene.lefevre@ch-lyon.mssante.fr",
                resource="Practitioner",
                identifier="810001234565",
                bal_type=MailboxType.PER,
                operator="CH Lyon",
            )
        )
    published = export_format(node.db).version
    with node.db.session() as session:
        row = session.execute(select(DirectoryPublication)).scalar_one()
        row.deleted_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    deleted = export_format(node.db).version
    assert len({before, published, deleted}) == 3
