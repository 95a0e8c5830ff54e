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
    """Also bounds the wait for a request's header (docs/security.md): uvicorn times out a
    kept-alive connection only until its first byte and a new connection not at all, so a
    client that connects and sends nothing, or a header a byte at a time (slowloris), would
    hold one of ``web.max_connections`` for ever. From the connection, and after each
    response, the next request's header must be complete within ``header_timeout``."""

    header_timeout: float = 20.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        chain = presented_chain(ssl_object) if ssl_object is not None else []
        self.app_state: dict[str, Any] = {**self.app_state, STATE_KEY: chain}
        self._header_timer: asyncio.TimerHandle | None = None
        self._await_header()

    def handle_events(self) -> None:
        super().handle_events()
        if self._header_timer is not None and self._in_request():
            self._header_timer.cancel()
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_header()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _await_header(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_late)

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _header_late(self) -> None:
        self._header_timer = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[CertificateAwareH11]:
    """The protocol class for one listener (uvicorn takes a class, not an instance)."""
    return type("CertificateAwareH11", (CertificateAwareH11,), {"header_timeout": seconds})
