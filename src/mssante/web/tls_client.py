"""The browser's TLS client certificate, handed to the request (docs/webmail.md "Login").

uvicorn gives an ASGI app no access to the TLS connection, so the HTTP/1.1 protocol is
subclassed: when a connection is made, the certificates the client presented are put in the
per-connection copy of uvicorn's application state, which every request of that connection
receives as ``scope["state"]`` (Starlette's ``request.state``). Checked against uvicorn's
``H11Protocol`` (uvicorn is pinned; revisit on upgrade).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from mssante.auth.certificates import presented_chain

STATE_KEY = "tls_client_chain"


class CertificateAwareH11(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        chain = presented_chain(ssl_object) if ssl_object is not None else []
        self.app_state: dict[str, Any] = {**self.app_state, STATE_KEY: chain}
