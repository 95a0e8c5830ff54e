"""Our aiosmtpd ``SMTP`` protocol: refusals audited, timeouts audited, AUTH checked off the loop.

aiosmtpd answers protocol errors itself (unknown command, bad sequence, syntax, missing
STARTTLS); :meth:`MssSMTP.push` sees every reply, so each refusal that our handler did not
already audit is audited here as a protocol refusal. Password checks (argon2, ~0.1 s) run in a
thread so that one login never stalls the other sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mssante.audit.events import AuditEvent

# (event, reply line, session) -> awaitable that records the audit entry.
AuditHook = Callable[[AuditEvent, str, Any], Coroutine[Any, Any, None]]
# (login, password, peer address) -> awaitable: the account's login name, or None if refused.
PasswordCheck = Callable[[str, str, str], Awaitable[str | None]]

_PENDING = "mssante:pending-password-check"


class MssSMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        audit_hook: AuditHook,
        password_check: PasswordCheck | None = None,
        **kwargs: Any,
    ) -> None:
        self._audit_hook = audit_hook
        self._password_check = password_check
        self.refusal_audited = False  # set by the handler when it audited its own refusal
        super().__init__(handler, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Implicit TLS (port 465, RFC 8314): aiosmtpd fills session.ssl only after STARTTLS.
        if self.session is not None and self.session.ssl is None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.session.ssl = {"ssl_object": ssl_object}

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        line = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        if line[:1] in ("4", "5") and not line.startswith(("421", "454")):
            if self.refusal_audited:
                self.refusal_audited = False
            else:
                await self._audit_hook(_protocol_event(line, self), line, self.session)

    def _timeout_cb(self) -> None:
        loop = asyncio.get_event_loop()
        task = loop.create_task(self._audit_hook(AuditEvent.SMTP_TIMEOUT, "timeout", self.session))
        self._background = task  # keep a reference until the loop runs it
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # -- AUTH: aiosmtpd checks credentials synchronously; we defer and check in a thread --------
    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False, message=_PENDING, auth_data=auth_data)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._finish_auth(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._finish_auth(await super().auth_LOGIN(_, args))

    async def _finish_auth(self, result: AuthResult) -> AuthResult:
        if result.message != _PENDING or self._password_check is None:
            return (
                result if result.message != _PENDING else AuthResult(success=False, handled=False)
            )
        data = result.auth_data
        assert isinstance(data, LoginPassword)
        login = data.login.decode("utf-8", "replace")
        password = data.password.decode("utf-8", "replace")
        peer = str(self.session.peer[0]) if self.session and self.session.peer else "?"
        account = await self._password_check(login, password, peer)
        if account is None:
            self.refusal_audited = True  # the check audited the failure itself
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=account)


def _protocol_event(line: str, smtp: MssSMTP) -> AuditEvent:
    if line.startswith("530") and smtp.session is not None and smtp.session.ssl is None:
        return AuditEvent.SMTP_REFUSED_NO_STARTTLS
    if line.startswith("552"):
        return AuditEvent.SMTP_REFUSED_TOO_LARGE
    return AuditEvent.SMTP_REFUSED_PROTOCOL
