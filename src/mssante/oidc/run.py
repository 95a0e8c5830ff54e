"""Running the provider: build it from the settings, serve HTTPS (client certificates optional)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from mssante.config import Settings
from mssante.errors import ConfigError
from mssante.logging import get_logger
from mssante.oidc.app import PEER_CERTIFICATE, create_app
from mssante.oidc.keys import key_set, load_or_create_key
from mssante.oidc.models import clients_from
from mssante.oidc.people import People
from mssante.oidc.server import Provider, ProviderContext
from mssante.oidc.state import StateStore
from mssante.pki.crl import CrlCache
from mssante.pki.truststore import TrustStore
from mssante.runtime import Node, open_node

CRL_REFRESH_SECONDS = 3600.0


def provider_issuer(settings: Settings) -> str:
    return (settings.oidc.issuer or f"https://localhost:{settings.oidc.listen_port}").rstrip("/")


def provider_dir(settings: Settings) -> Path:
    return settings.data_dir / "oidc"


@dataclass
class ProviderRuntime:
    settings: Settings
    node: Node
    provider: Provider
    people: People
    crls: CrlCache
    app: Starlette

    def close(self) -> None:
        self.people.close(self.node)
        self.node.close()


def build_provider(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> ProviderRuntime:
    if not settings.tls.certificate or not settings.tls.key:
        raise ConfigError("the OIDC provider serves HTTPS only: set tls.certificate and tls.key")
    node = open_node(settings)
    trust = TrustStore.from_settings(settings.pki)
    crls = CrlCache.from_settings(settings, trust, audit=node.audit)
    key = load_or_create_key(
        settings.oidc.signing_key or provider_dir(settings) / "signing-key.pem"
    )
    ctx = ProviderContext(
        settings=settings.oidc,
        issuer=provider_issuer(settings),
        keys=key_set(key),
        clients=clients_from(settings.oidc),
        state=StateStore(provider_dir(settings) / "state.db", clock=clock),
        audit=node.audit,
        clock=clock,
    )
    provider = Provider(ctx)
    people = People.from_settings(settings, node, trust, crls)
    return ProviderRuntime(settings, node, provider, people, crls, create_app(provider, people))


def server_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2 or newer; a client certificate is asked for but optional (the card login)."""
    assert settings.tls.certificate and settings.tls.key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls.certificate, settings.tls.key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    for path in [*settings.pki.trust_anchors, *settings.pki.intermediates]:
        ctx.load_verify_locations(cafile=str(path))
    return ctx


class _CertificateAwareH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, handing the TLS client certificate to the app: the leaf
    certificate (DER) goes into each request's ``scope["state"]``. uvicorn does not offer the
    ASGI TLS extension, hence this small subclass."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app_state = {**self.app_state, PEER_CERTIFICATE: der}


def uvicorn_server(rt: ProviderRuntime) -> Any:
    oidc = rt.settings.oidc
    config = uvicorn.Config(
        rt.app,
        host=oidc.listen_host,
        port=oidc.listen_port,
        http=_CertificateAwareH11,
        lifespan="off",
        log_config=None,
        access_log=False,  # query strings carry authorization codes
        ssl_certfile=str(rt.settings.tls.certificate),
        ssl_keyfile=str(rt.settings.tls.key),
    )
    config.load()
    config.ssl = server_context(rt.settings)
    return uvicorn.Server(config)


async def serve(
    rt: ProviderRuntime, stop: asyncio.Event, started: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set or the server stops by itself (tests run it in their loop)."""
    server = uvicorn_server(rt)
    await asyncio.to_thread(rt.crls.refresh)
    task = asyncio.create_task(server.serve())
    crl_task = asyncio.create_task(_refresh_crls(rt.crls, stop))
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started and started is not None:
            started.set()
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        server.should_exit = True
        crl_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await crl_task
        await task  # raises a start-up error (port taken, bad certificate)


async def _refresh_crls(crls: CrlCache, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CRL_REFRESH_SECONDS)
        if not stop.is_set():
            await asyncio.to_thread(crls.refresh)


async def run_provider(settings: Settings) -> None:
    """``mssante oidc serve``: until interrupted."""
    log = get_logger("mssante.oidc")
    rt = build_provider(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal  # noqa: PLC0415 - only the command line installs handlers

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "oidc provider listening",
        issuer=rt.provider.ctx.issuer,
        host=settings.oidc.listen_host,
        port=settings.oidc.listen_port,
    )
    try:
        await serve(rt, stop)
    finally:
        rt.close()
