"""Running the authority: open the node, load the signer, serve HTTPS until stopped."""

from __future__ import annotations

import uvicorn

from mssante.authority.publish import Signer, current_release
from mssante.authority.registry import Actor
from mssante.authority.server import create_app, load_or_create_token, server_ssl_context
from mssante.authority.service import AuthorityService, published_dir
from mssante.config import Settings
from mssante.errors import ConfigError
from mssante.logging import get_logger
from mssante.runtime import open_node


async def run_authority(settings: Settings) -> None:
    log = get_logger("mssante.authority")
    if not settings.tls.certificate or not settings.tls.key:
        raise ConfigError("the authority serves HTTPS only: set tls.certificate and tls.key")
    node = open_node(settings)
    service = AuthorityService(node, Signer.from_settings(settings.authority))
    if current_release(published_dir(node)) is None:
        service.publish(Actor("system", {"reason": "first start"}))
    token = load_or_create_token(settings.admin_token_file())
    app = create_app(service, token)
    config = uvicorn.Config(
        app,
        host=settings.authority.listen_host,
        port=settings.authority.listen_port,
        log_config=None,
        access_log=False,
        ssl_certfile=str(settings.tls.certificate),
        ssl_keyfile=str(settings.tls.key),
    )
    config.load()
    config.ssl = server_ssl_context(settings.tls.certificate, settings.tls.key)
    log.info(
        "authority listening",
        host=settings.authority.listen_host,
        port=settings.authority.listen_port,
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        node.close()
