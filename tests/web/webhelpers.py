"""Operator B with its webmail on a free port, and an HTTPS client that logs in like a browser
(cookies, the CSRF token of each form)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pyotp

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, Trust, running_operator
from support import free_port_block

__all__ = ["DURAND", "MARTIN", "PASSWORD", "Browser", "webmail_operator"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_SECRET = re.compile(r'data-testid="totp-secret">([A-Z2-7]+)<')


class webmail_operator(running_operator):
    """``running_operator`` with the HTTPS listener on; ``web``: webmail settings."""

    def __init__(self, trust: Trust, root: Path, database: dict[str, str], **web: Any) -> None:
        super().__init__(trust, root, database)
        port = free_port_block(1)
        self.settings = self.settings.model_copy(
            update={"web": self.settings.web.model_copy(update={"port": port, **web})}
        )


def tls(op: Operator) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(op.ca))
    ctx.check_hostname = False  # 127.0.0.1; the certificate names smtp.b.mssante.test
    return ctx


class Browser:
    """An httpx client that keeps cookies and reads CSRF tokens from the pages."""

    def __init__(self, op: Operator, *, cert: tuple[Path, Path] | None = None) -> None:
        context = tls(op)
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.base = f"https://127.0.0.1:{op.rt.settings.web.port}"
        self.http = httpx.AsyncClient(base_url=self.base, verify=context, timeout=30)
        self.csrf = ""

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(path, **kwargs)
        self._remember(response)
        return response

    async def post(
        self, path: str, data: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        form = {"csrf": self.csrf, **(data or {})}
        response = await self.http.post(path, data=form, **kwargs)
        self._remember(response)
        return response

    def _remember(self, response: httpx.Response) -> None:
        found = (
            _CSRF.search(response.text)
            if "text/html" in response.headers.get("content-type", "")
            else None
        )
        if found:
            self.csrf = found.group(1)

    async def login(
        self, address: str = MARTIN, password: str = PASSWORD, code: str = ""
    ) -> httpx.Response:
        await self.get("/webmail/login")
        return await self.post(
            "/webmail/login", {"address": address, "password": password, "code": code}
        )

    async def login_enrolling(self, address: str = MARTIN, password: str = PASSWORD) -> str:
        """Log in and enrol a TOTP device as a first login does; the device's secret."""
        response = await self.login(address, password)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/webmail/enrol"
        page = await self.get("/webmail/enrol")
        secret = _SECRET.search(page.text)
        assert secret, page.text
        done = await self.post("/webmail/enrol", {"code": pyotp.TOTP(secret.group(1)).now()})
        assert done.status_code == 303, done.text
        await self.get("/webmail/f/INBOX")
        return secret.group(1)


class _ShiftedClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


def next_step(op: Operator) -> None:
    """Move the operator's TOTP clock to the next 30 s step (a code serves once per step),
    instead of sleeping until it."""
    clock = op.rt.auth.clock
    if not isinstance(clock, _ShiftedClock):
        clock = op.rt.auth.clock = _ShiftedClock()
    clock.offset += 30


def code_now(op: Operator, secret: str) -> str:
    """The device's code at the operator's clock."""
    return pyotp.TOTP(secret).at(op.rt.auth.clock())
