"""How many requests one client address may have in flight at once on the HTTPS listener
(``web.max_requests_per_address``, docs/webmail.md "Limits"): beyond, 429 with
``Retry-After``, before any route runs.

A pure ASGI middleware: the count lives in the instance (one per app, on the app's single event
loop, so no lock), is taken when a request enters and given back when the application returns,
whether the response ended, the application raised or the client went away (a cancelled
task). The address is the one uvicorn gives the request (``scope["client"]``): the TCP peer's,
or the forwarded one when the peer is a trusted proxy (``web.trusted_proxies``). An IPv6
client is counted by its /64, as the login throttle counts it (one client usually holds a whole
/64).

The whole listener's bound (``web.max_connections``) is uvicorn's ``limit_concurrency``
(``operator/web.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_SECONDS = 2
TOO_MANY = (
    "Trop de requêtes simultanées depuis votre adresse. Réessayez dans un instant.\n"
    "Too many simultaneous requests from your address. Try again in a moment.\n"
).encode()


def client_key(scope: Scope) -> str:
    """The unit counted: the client's address, or its /64 for IPv6; "" if uvicorn gave none
    (all such requests then share one count)."""
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(getattr(address, "ipv4_mapped", None) or address)


class RequestsPerAddress:
    """At most ``limit`` requests of one client address in the application at once."""

    def __init__(self, app: ASGIApp, limit: int, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.active: dict[str, int] = {}  # key → requests in flight (never 0: removed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        held = self.active.get(key, 0)
        if held >= self.limit:
            await self._refuse(send)
            return
        self.active[key] = held + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.active[key] - 1
            if left:
                self.active[key] = left
            else:
                del self.active[key]

    async def _refuse(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(TOO_MANY)).encode()),
                    (b"retry-after", str(self.retry_after).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": TOO_MANY, "more_body": False})
