"""An operator (B) running in the test's event loop with its IMAP listeners on free ports,
two professionals with accounts, and blocking IMAP clients (imapclient) that the async tests
run in threads. Works on SQLite and PostgreSQL (``MSSANTE_TEST_DATABASE``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.header import Header
from pathlib import Path
from typing import Any

import imapclient
import pytest
from cryptography.hazmat.primitives import serialization

from mssante.audit.events import Actor
from mssante.audit.log import iter_entries
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

DOMAIN = "b.mssante.test"
HOST = "smtp.b.mssante.test"
STRUCT = "318310021300028"
DN = f"CN={HOST},OU={STRUCT},O=OPERATEUR B,ST=Haute-Garonne (31),C=FR"
PASSWORD = "mot-de-passe-solide-42"
MARTIN = "dr.martin@b.mssante.test"
DURAND = "dr.durand@b.mssante.test"


@dataclass(frozen=True)
class Trust:
    pki: TestPki
    cert: Path  # operator B's full chain
    key: Path
    ca: Path  # root + issuing CAs, for clients
    whitelist_xml: bytes
    whitelist_sig: bytes


@pytest.fixture(scope="session")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Trust:
    root = tmp_path_factory.mktemp("imap-space")
    pki = TestPki.init(root / "pki")
    issued = pki.issue_server(HOST, STRUCT, "OPERATEUR B", "31")
    signer_paths = pki.issue_signer("listeblanche.autorite.mssante.test", STRUCT, "AUTORITE", "75")
    signer = Signer(
        load_certificate(signer_paths.cert),
        serialization.load_pem_private_key(signer_paths.key.read_bytes(), None),
        [load_certificate(signer_paths.chain)],
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    xml = write(Whitelist(now, (WhitelistDomain(DOMAIN, "Opérateur B", (DN,), "", "", now),)))
    sig = sign_detached(xml, signer.certificate, signer.key, signer.chain)  # type: ignore[arg-type]
    return Trust(pki, issued.fullchain, issued.key, pki.directory / "ca" / "bundle.pem", xml, sig)


@pytest.fixture
def b_database(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not is_postgres():
        yield {"url": f"sqlite:///{tmp_path / 'b.db'}"}
        return
    schema = new_schema_name()
    yield {"url": selected_database_url(), "schema_name": schema}
    drop_schema(schema)


def operator_settings(trust: Trust, root: Path, database: dict[str, str], **imap: Any) -> Settings:
    base = free_port_block(10)
    paths = trust.pki.paths()
    return load_settings(
        None,
        data_dir=root,
        database=database,
        pki={
            "trust_anchors": [paths.root],
            "intermediates": [paths.intermediates],
            "crl_sources": trust.pki.crl_sources(),
        },
        tls={"certificate": trust.cert, "key": trust.key},
        operator={"name": "OPERATEUR B", "structure_id": STRUCT, "domains": [DOMAIN]},
        whitelist={"url": ""},
        smtp={
            "hostname": HOST,
            "inbound_port": base,
            "submission_port": base + 1,
            "submissions_port": base + 2,
        },
        imap={"port": base + 3, "tls_port": base + 4, **imap},
    )


@dataclass
class Operator:
    rt: OperatorRuntime
    ca: Path

    @property
    def imap_port(self) -> int:
        return self.rt.settings.imap.port

    @property
    def imaps_port(self) -> int:
        return self.rt.settings.imap.tls_port

    def tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = False  # 127.0.0.1; the certificate names smtp.b.mssante.test
        return ctx

    def client(self, login: str = MARTIN, password: str = PASSWORD) -> imapclient.IMAPClient:
        """Logged in over implicit TLS (993)."""
        client = imapclient.IMAPClient(
            "127.0.0.1", self.imaps_port, ssl=True, ssl_context=self.tls(), timeout=20
        )
        client.login(login, password)
        return client

    def deliver(self, raw: bytes, *recipients: str) -> None:
        """Straight into the runtime's mail store, then the news on its change bus, as a
        writer of this process does (blocking; run in a thread)."""
        targets = list(recipients) or [MARTIN]
        self.rt.store.deliver(raw, targets)
        for address in targets:
            self.rt.bus.publish(address)

    def audit_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(e.event, e.actor, e.context) for e in iter_entries(self.rt.node.db)]


def message(
    subject: str = "Compte rendu", body: str = "Bonjour,\r\nCordialement.\r\n", **headers: str
) -> bytes:
    fields = {
        "From": "Dr Paul Durand <dr.durand@b.mssante.test>",
        "To": MARTIN,
        "Subject": subject if subject.isascii() else Header(subject, "utf-8").encode(),
        "Message-ID": f"<{abs(hash((subject, body, tuple(headers.items()))))}@test>",
        "Date": "Wed, 25 Nov 2026 10:00:00 +0100",
        **headers,
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n" + body).encode()


@pytest.fixture
async def operator(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> AsyncIterator[Operator]:
    async with running_operator(trust, tmp_path / "b", b_database) as op:
        yield op


class running_operator:
    """Operator B running, with Martin's and Durand's accounts (``**imap``: settings)."""

    def __init__(self, trust: Trust, root: Path, database: dict[str, str], **imap: Any) -> None:
        self.settings = operator_settings(trust, root, database, **imap)
        self.trust = trust
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Operator:
        rt = build_runtime(self.settings)
        rt.sync.crls.refresh()
        outcome = rt.sync.keeper.accept(self.trust.whitelist_xml, self.trust.whitelist_sig)
        assert outcome.ok, outcome.reason
        accounts = Accounts(rt.node.db)
        for address, id_nat, last in (
            (MARTIN, "810001234565", "Martin"),
            (DURAND, "810002345675", "Durand"),
        ):
            accounts.create_person(
                NewPerson(address, PASSWORD, id_nat, last, "Test"), Actor("test")
            )
        self._task = asyncio.create_task(run_operator(self.settings, self._stop, runtime=rt))
        await wait_started(rt.started, self._task)
        return Operator(rt, self.trust.ca)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


class Raw:
    """A line-level IMAP client for what libraries hide: response codes, refusals, timeouts."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10) -> None:
        import socket

        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = tls.wrap_socket(sock) if tls else sock
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, tag: str, text: str | bytes) -> list[bytes]:
        """Send ``tag text`` and read every line up to the tagged answer (included)."""
        data = text if isinstance(text, bytes) else text.encode()
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            if not line:
                return lines
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def starttls(self, tls: ssl.SSLContext) -> None:
        self.file.close()
        self.sock = tls.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# Real mail clients (Debian programs) and a certificate naming "localhost".


def require_binary(name: str, package: str) -> str:
    """The path of a client program a test drives. When it is missing the test is skipped on a
    developer's machine, and fails when ``CI`` is set: scripts/test.sh installs ``package`` (as
    root), so CI never passes by skipping a real-client test."""
    import os
    import shutil

    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} missing (Debian package {package}; scripts/test.sh installs it as root)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI requires it", pytrace=False)
    pytest.skip(reason)


_LOCALHOST_TRUST: dict[Path, Trust] = {}


def localhost_trust(trust: Trust) -> Trust:
    """``trust`` with operator B's server certificate issued for ``localhost`` by the same PKI
    (same CA bundle), for clients that check the name they connect to against the certificate
    and cannot connect to 127.0.0.1 while checking another name (offlineimap, neomutt). Issued
    once per test session."""
    import dataclasses

    if trust.pki.directory not in _LOCALHOST_TRUST:
        issued = trust.pki.issue_server("localhost", STRUCT, "OPERATEUR B", "31")
        _LOCALHOST_TRUST[trust.pki.directory] = dataclasses.replace(
            trust, cert=issued.fullchain, key=issued.key
        )
    return _LOCALHOST_TRUST[trust.pki.directory]
