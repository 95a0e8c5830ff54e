"""An operator keeps a copy of the directory: it downloads the authority's extraction over
HTTPS (certificate checked), imports it, and the next round costs one 304."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
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

from mssante.audit.log import iter_entries
from mssante.config import PkiSettings
from mssante.directory.api import directory_router
from mssante.directory.fetch import FetchError, fetch_and_import
from mssante.directory.importer import import_extraction
from mssante.directory.search import DirectorySearch
from mssante.runtime import Node, open_node

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
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}/directory/extraction", cert, node
    server.should_exit = True
    thread.join(timeout=10)
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
