"""Fixtures of the outbound queue tests (helpers are in outbound_helpers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from outbound_helpers import (
    OUR_HOST,
    PASSWORD,
    PEER_DOMAIN,
    PEER_HOST,
    SENDER,
    SENDER_ID_NAT,
    Certs,
    Clock,
    DnsProtocol,
    LocalDns,
    Operator,
    Receiver,
    make_whitelist,
    operator_settings,
)

from mssante.audit.events import Actor, ListSink
from mssante.ops.acceptance import Reports
from mssante.ops.accounts import Accounts, NewPerson
from mssante.ops.bus import ChangeBus
from mssante.ops.mailstore import MailStore
from mssante.pki import CrlCache, TestPki, TrustStore
from mssante.queue.delivery import DeliveryService
from mssante.queue.routes import RouteResolver
from mssante.store.blobs import FileBlobStore
from mssante.store.db import Database
from mssante.trust.model import Whitelist
from support import free_port_block


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    pki = TestPki.init(tmp_path_factory.mktemp("smtp-out-pki") / "pki")
    other = TestPki.init(tmp_path_factory.mktemp("smtp-out-rogue") / "pki")
    return Certs(
        pki=pki,
        ours=pki.issue_server(OUR_HOST, "341459958900028", "OPERATEUR TEST", "33"),
        peer=pki.issue_server(PEER_HOST, "2123456782", "PEER TEST", "75"),
        intruder=pki.issue_server("smtp.intrus.test", "2987654324", "INTRUS", "69"),
        rogue=other.issue_server(PEER_HOST, "2123456782", "PEER TEST", "75"),
    )


@pytest.fixture(scope="session")
def whitelist(certs: Certs) -> Whitelist:
    return make_whitelist(certs)


@pytest.fixture(scope="session")
def trust(certs: Certs) -> TrustStore:
    paths = certs.pki.paths()
    return TrustStore.from_pem_files([paths.root], [paths.intermediates])


@pytest.fixture
def ports() -> int:
    return free_port_block(8)


@pytest.fixture
def receiver(certs: Certs, ports: int) -> Iterator[Receiver]:
    """The peer operator's MTA, serving its own (listed) certificate."""
    server = Receiver(ports, certs, certs.peer)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def local_dns(ports: int) -> AsyncIterator[LocalDns]:
    zone: dict[tuple[str, str], list[str]] = {}
    loop = asyncio.get_running_loop()
    port = ports + 5
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DnsProtocol(zone), local_addr=("127.0.0.1", port)
    )
    yield LocalDns(zone, port)
    transport.close()


@pytest.fixture
def make_operator(
    tmp_path: Path, db: Database, certs: Certs, whitelist: Whitelist, trust: TrustStore, ports: int
) -> Iterator[Any]:
    """Build our operator: ``make_operator(routes=..., routes_resolver=..., **smtp)``."""
    accounts_made: list[bool] = []

    def make(
        routes: dict[str, str] | None = None,
        *,
        route_resolver: RouteResolver | None = None,
        **smtp: Any,
    ) -> Operator:
        settings = operator_settings(
            tmp_path,
            certs,
            routes if routes is not None else {PEER_DOMAIN: f"127.0.0.1:{ports}"},
            **smtp,
        )
        blobs = FileBlobStore(settings.blob_dir())
        mail_store = MailStore(db, blobs)
        if not accounts_made:
            Accounts(db).create_person(
                NewPerson(SENDER, PASSWORD, SENDER_ID_NAT, "Dupont", "Jeanne"), Actor("test")
            )
            accounts_made.append(True)
        crls = CrlCache(settings.crl_cache_dir(), settings.pki.crl_sources, trust)
        crls.refresh()
        clock = Clock()
        audit = ListSink()
        current: list[Whitelist | None] = [whitelist]
        service = DeliveryService(
            settings, db, blobs, Reports(mail_store, ChangeBus().publish), lambda: current[0], trust, crls, audit,
            clock=clock, routes=route_resolver,
        )  # fmt: skip
        return Operator(settings, db, blobs, mail_store, service, clock, audit, current)

    yield make
