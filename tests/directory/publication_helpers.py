"""Helpers of the publication tests (importable as ``publication_helpers``): a test PKI with
operator certificates, an authority serving HTTPS with client certificates asked for, on a real
socket in the test's event loop, and FHIR PATCH bodies."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from mssante.authority.mtls import ClientCertificateH11, server_context
from mssante.authority.publish import Signer
from mssante.authority.registry import Actor, DomainSpec, OperatorSpec
from mssante.authority.run import publication_door
from mssante.authority.server import create_app
from mssante.authority.service import AuthorityService
from mssante.config import Settings, load_settings
from mssante.directory.fhir import IDNAT_SYSTEM, STRUCTURE_SYSTEM
from mssante.directory.fhirpatch import MailboxData, contact_point
from mssante.pki.ca import IssuedPaths, TestPki
from mssante.pki.ids import luhn_key
from mssante.runtime import Node, open_node
from support import (
    drop_schema,
    free_port_block,
    is_postgres,
    new_schema_name,
    selected_database_url,
)

NORD_DOMAIN = "hopital-nord.mssante.test"
SUD_DOMAIN = "cabinet-sud.mssante.test"
NORD_STRUCTURE = "1" + "13000001" + luhn_key("13000001")
SUD_STRUCTURE = "1" + "31000002" + luhn_key("31000002")
MARTIN_ID_NAT = "8" + "1000100010" + luhn_key("1000100010")
DURAND_ID_NAT = "8" + "1000200010" + luhn_key("1000200010")
MARTIN = f"helene.martin@{NORD_DOMAIN}"
DURAND = f"paul.durand@{SUD_DOMAIN}"
METADATA_URL = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata"
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Certificates:
    pki: TestPki
    authority: IssuedPaths  # the authority's HTTPS certificate (localhost)
    signer: IssuedPaths
    nord: IssuedPaths  # registered for hopital-nord
    sud: IssuedPaths  # registered for cabinet-sud
    stranger: IssuedPaths  # a valid certificate whose DN no operator registered
    revoked: IssuedPaths  # hopital-nord's DN, revoked
    expired: IssuedPaths  # hopital-nord's DN, expired yesterday


def make_certificates(root: Path) -> Certificates:
    pki = TestPki.init(root / "pki")
    revoked = pki.issue_server(
        "smtp.hopital-nord.mssante.test", NORD_STRUCTURE, "HOPITAL NORD", "13"
    )
    pki.revoke(revoked.cert, "keyCompromise")
    return Certificates(
        pki=pki,
        authority=pki.issue_server("localhost", NORD_STRUCTURE, "AUTORITE TEST", "75"),
        signer=pki.issue_signer("liste.autorite.test", NORD_STRUCTURE, "AUTORITE TEST", "75"),
        nord=pki.issue_server(
            "smtp.hopital-nord.mssante.test", NORD_STRUCTURE, "HOPITAL NORD", "13"
        ),
        sud=pki.issue_server("smtp.cabinet-sud.mssante.test", SUD_STRUCTURE, "CABINET SUD", "31"),
        stranger=pki.issue_server("smtp.inconnu.mssante.test", SUD_STRUCTURE, "INCONNU", "31"),
        revoked=revoked,
        expired=pki.issue_server(
            "smtp.hopital-nord.mssante.test",
            NORD_STRUCTURE,
            "HOPITAL NORD",
            "13",
            not_before=datetime.now(UTC) - timedelta(days=30),
            not_after=datetime.now(UTC) - timedelta(days=1),
        ),
    )


def pki_section(certs: Certificates) -> dict[str, Any]:
    paths = certs.pki.paths()
    return {
        "trust_anchors": [paths.root],
        "intermediates": [paths.intermediates],
        "crl_sources": certs.pki.crl_sources(),
    }


@contextlib.contextmanager
def database(tmp_path: Path, name: str) -> Iterator[dict[str, str]]:
    """A ``[database]`` section of its own (a schema on PostgreSQL, a file on SQLite)."""
    if not is_postgres():
        yield {"url": f"sqlite:///{tmp_path / f'{name}.db'}"}
        return
    schema = new_schema_name()
    try:
        yield {"url": selected_database_url(), "schema_name": schema}
    finally:
        drop_schema(schema)


def authority_settings(
    certs: Certificates, root: Path, db: dict[str, str], **extra: Any
) -> Settings:
    return load_settings(
        None,
        role="authority",
        data_dir=root / "authority",
        database=db,
        pki=pki_section(certs),
        tls={"certificate": certs.authority.fullchain, "key": certs.authority.key},
        authority={
            "signing_certificate": certs.signer.cert,
            "signing_key": certs.signer.key,
            "signing_chain": certs.signer.chain,
        },
        **extra,
    )


def operator_settings(
    certs: Certificates, root: Path, db: dict[str, str], url: str, **extra: Any
) -> Settings:
    return load_settings(
        None,
        data_dir=root / "nord",
        database=db,
        pki=pki_section(certs),
        tls={"certificate": certs.nord.fullchain, "key": certs.nord.key},
        operator={"name": "HOPITAL NORD", "structure_id": NORD_STRUCTURE, "domains": [NORD_DOMAIN]},
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 8},
        publication={"authority_url": url, "retry_schedule": [1, 2, 4], "poll_seconds": 0.2},
        **extra,
    )


def register_operators(service: AuthorityService, certs: Certificates) -> None:
    actor = Actor("test")
    for name, structure, domain, cert in (
        ("HOPITAL NORD", NORD_STRUCTURE, NORD_DOMAIN, certs.nord),
        ("CABINET SUD", SUD_STRUCTURE, SUD_DOMAIN, certs.sud),
    ):
        spec = OperatorSpec(name, structure, [DomainSpec(domain, name)], [cert.subject])
        service.register(spec, actor)


@dataclass
class RunningAuthority:
    url: str  # https://localhost:<port>
    node: Node
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def fhir(self) -> str:
        return f"{self.url}/fhir"


@contextlib.asynccontextmanager
async def running_authority(
    settings: Settings, certs: Certificates, port: int | None = None
) -> AsyncIterator[RunningAuthority]:
    """The authority's app (whitelist, directory, publication) on a real TLS socket."""
    node = open_node(settings)
    service = AuthorityService(node, Signer.from_settings(settings.authority))
    register_operators(service, certs)
    door = publication_door(settings, node)
    assert door.crls is not None
    await asyncio.to_thread(door.crls.refresh)
    port = port or free_port_block(2)
    config = uvicorn.Config(
        create_app(service, "admin-token", door),
        host="127.0.0.1",
        port=port,
        http=ClientCertificateH11,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    config.load()
    assert settings.tls.certificate and settings.tls.key
    config.ssl = server_context(settings.tls.certificate, settings.tls.key, settings.pki)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield RunningAuthority(f"https://localhost:{port}", node, server, task)
    finally:
        server.should_exit = True
        await task
        node.close()


def client(certs: Certificates, cert: IssuedPaths | None) -> httpx.AsyncClient:
    """An HTTPS client trusting the test PKI, presenting ``cert`` (None: no certificate)."""
    ctx = ssl.create_default_context(cafile=str(certs.pki.paths().root))
    ctx.load_verify_locations(cafile=str(certs.pki.paths().intermediates))
    if cert is not None:
        ctx.load_cert_chain(cert.fullchain, cert.key)
    return httpx.AsyncClient(verify=ctx, timeout=30)


# -- bodies ------------------------------------------------------------------------------------


def practitioner(id_nat: str) -> dict[str, str]:
    return {"identifier": f"{IDNAT_SYSTEM}|{id_nat}"}


def organization(structure: str) -> dict[str, str]:
    return {"identifier": f"{STRUCTURE_SYSTEM}|{structure}"}


def parameters(*operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": parts} for parts in operations],
    }


def insert(
    address: str, kind: str = "PER", resource: str = "Practitioner", **data: Any
) -> list[dict[str, Any]]:
    point = contact_point(MailboxData(address=address, type=kind, **data))
    return [
        {"name": "type", "valueCode": "insert"},
        {"name": "path", "valueString": f"{resource}.telecom"},
        {"name": "index", "valueInteger": 0},
        {"name": "value", "valueContactPoint": point},
    ]


def replace_whole(
    address: str, kind: str = "PER", resource: str = "Practitioner", **data: Any
) -> list[dict[str, Any]]:
    point = contact_point(MailboxData(address=address, type=kind, **data))
    return [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": f"{resource}.telecom.where(value = '{address}')"},
        {"name": "value", "valueContactPoint": point},
    ]


def replace_attribute(
    address: str, name: str, value: dict[str, Any], resource: str = "Practitioner"
) -> list[dict[str, Any]]:
    path = (
        f"{resource}.telecom.where(value = '{address}').extension('{METADATA_URL}')"
        f".extension('{name}').value"
    )
    return [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": path},
        {"name": "value", **value},
    ]


def delete(address: str, resource: str = "Practitioner") -> list[dict[str, Any]]:
    return [
        {"name": "type", "valueCode": "delete"},
        {"name": "path", "valueString": f"{resource}.telecom.where(value = '{address}')"},
    ]
