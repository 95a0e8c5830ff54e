"""Running the authority: open the node, load the signer, serve HTTPS until stopped.

The listener asks TLS clients for a certificate without requiring one (authority/mtls.py): the
whitelist and the directory stay public, operators publishing their mailboxes prove themselves
with theirs (docs/publication.md). The CRLs those certificates are checked against are
refreshed at start, then every hour.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from mssante.authority.mtls import ClientCertificateH11, server_context
from mssante.authority.publication_api import PublicationDoor
from mssante.authority.publish import Signer, current_release
from mssante.authority.registry import Actor
from mssante.authority.server import create_app, load_or_create_token
from mssante.authority.service import AuthorityService, published_dir
from mssante.config import Settings
from mssante.errors import ConfigError
from mssante.logging import get_logger
from mssante.pki.crl import CrlCache
from mssante.pki.truststore import TrustStore
from mssante.runtime import Node, open_node

CRL_REFRESH_SECONDS = 3600.0


def publication_door(settings: Settings, node: Node) -> PublicationDoor:
    """The PKI the operators' client certificates are checked against (none configured: the
    FHIR PATCH routes refuse every request)."""
    trust = TrustStore.from_settings(settings.pki) if settings.pki.trust_anchors else None
    crls = CrlCache.from_settings(settings, trust, audit=node.audit) if trust else None
    return PublicationDoor(node.db, node.audit, settings.publication, trust, crls)


async def run_authority(settings: Settings) -> None:
    log = get_logger("mssante.authority")
    if not settings.tls.certificate or not settings.tls.key:
        raise ConfigError("the authority serves HTTPS only: set tls.certificate and tls.key")
    node = open_node(settings)
    service = AuthorityService(node, Signer.from_settings(settings.authority))
    if current_release(published_dir(node)) is None:
        service.publish(Actor("system", {"reason": "first start"}))
    token = load_or_create_token(settings.admin_token_file())
    door = publication_door(settings, node)
    app = create_app(service, token, door)
    config = uvicorn.Config(
        app,
        host=settings.authority.listen_host,
        port=settings.authority.listen_port,
        http=ClientCertificateH11,
        log_config=None,
        access_log=False,
        ssl_certfile=str(settings.tls.certificate),
        ssl_keyfile=str(settings.tls.key),
    )
    config.load()
    config.ssl = server_context(settings.tls.certificate, settings.tls.key, settings.pki)
    log.info(
        "authority listening",
        host=settings.authority.listen_host,
        port=settings.authority.listen_port,
    )
    refresher = asyncio.create_task(refresh_crls(door.crls)) if door.crls else None
    try:
        await uvicorn.Server(config).serve()
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        node.close()


async def refresh_crls(crls: CrlCache, every: float = CRL_REFRESH_SECONDS) -> None:
    """Fetch the CRLs now, then every ``every`` seconds (the last valid ones are kept)."""
    while True:
        await asyncio.to_thread(crls.refresh)
        await asyncio.sleep(every)
