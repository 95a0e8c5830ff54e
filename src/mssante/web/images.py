"""Remote images of a mail, fetched by the server when the reader asks (docs/webmail.md).

The browser never contacts the sender's server: a tracker sees the operator, not the reader,
and the body's CSP keeps allowing images from this origin only. Because the server fetches,
the fetch is fenced against server-side request forgery:

- only ``http`` and ``https`` URLs that the message itself names (the route checks);
- the host is resolved once and every address must be public (not loopback, private,
  link-local, multicast or reserved: the operator's own network stays out of reach), and the
  connection goes to that address (no second resolution, no DNS rebinding), with the name
  kept for the ``Host`` header, TLS SNI and certificate check;
- no redirects, ``web.remote_image_timeout`` seconds, ``web.remote_image_max_bytes`` at most,
  and only raster image types (never SVG, which can carry script).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from mssante.config import WebSettings

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@dataclass(frozen=True)
class Image:
    content_type: str
    content: bytes


class RemoteImages:
    def __init__(self, settings: WebSettings) -> None:
        self.max_bytes = settings.remote_image_max_bytes
        self.timeout = settings.remote_image_timeout
        self.allow_private = settings.remote_images_allow_private

    async def fetch(self, url: str) -> Image | None:
        """The image at ``url``, or None (refused, unreachable, too big, not an image)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            return None
        address = await self._public_address(parts.hostname, parts.port, parts.scheme)
        if address is None:
            return None
        return await self._get(url, address)

    async def _public_address(self, host: str, port: int | None, scheme: str) -> str | None:
        default = 443 if scheme == "https" else 80
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port or default, type=socket.SOCK_STREAM
            )
        except OSError:
            return None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses or not all(self._allowed(a) for a in addresses):
            return None
        return str(addresses[0])

    def _allowed(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.allow_private:
            return True
        return address.is_global and not address.is_multicast

    async def _get(self, url: str, address: str) -> Image | None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        literal = f"[{address}]" if ":" in address else address
        netloc = literal + (f":{parts.port}" if parts.port else "")
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = {"Host": parts.netloc.rpartition("@")[2], "Accept": "image/*"}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client,
                client.stream("GET", pinned, headers=headers, extensions=extensions) as answer,
            ):
                kind = answer.headers.get("content-type", "").split(";")[0].strip().lower()
                if answer.status_code != 200 or kind not in IMAGE_TYPES:
                    return None
                content = await self._read(answer)
        except httpx.HTTPError:
            return None
        return Image(kind, content) if content is not None else None

    async def _read(self, answer: httpx.Response) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in answer.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)
