"""Our aiosmtpd ``SMTP`` protocol: refusals audited, timeouts audited, AUTH checked off the loop.

aiosmtpd answers protocol errors itself (unknown command, bad sequence, syntax, missing
STARTTLS); :meth:`MssSMTP.push` sees every reply, so each refusal that our handler did not
already audit is audited here as a protocol refusal. Password checks (argon2, ~0.1 s) run in a
thread so that one login never stalls the other sessions.

After a successful AUTH the session is registered with what it rests on (auth/revocation.py:
the account, the password, app password, token or certificate the login layer noted, and any
delegation of the account, since the session keeps the addresses it may send as). When any of
it is revoked the server says ``421 4.7.0`` and closes (RFC 5321 §3.8: a server may close with
421 at any time; RFC 3463 X.7.0), at once — or right after the reply to a DATA being stored.

Hostile clients (docs/security.md): each listener's connections pass its
:class:`~mssante.ops.connections.ConnectionGate` (beyond its caps, ``421 4.7.0`` instead of the
greeting; a login beyond the account's sessions from its address, ``454 4.7.0``, RFC 4954 §6),
and a session whose commands were refused ``smtp.max_refused_commands`` times is closed with
``421 4.7.0`` (as Postfix's ``smtpd_hard_error_limit``). Refused recipients are audited once in
detail and then counted: one ``smtp.recipients_refused`` entry per transaction.
"""

from __future__ import annotations

import asyncio
from base64 import b64decode
from binascii import Error as Base64Error
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, syntax

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.auth import sasl
from mssante.auth.revocation import (
    ANY,
    Credential,
    Ending,
    Kind,
    OpenSession,
    SessionRegistry,
    take_login,
)
from mssante.config import SmtpSettings
from mssante.ops.acceptance import RecipientTally
from mssante.ops.connections import Caps, ConnectionGate, Full, Ticket

# (event, reply line, session) -> awaitable that records the audit entry.
AuditHook = Callable[[AuditEvent, str, Any], Coroutine[Any, Any, None]]
# (login, password, peer address) -> awaitable: the account's login name, or None if refused.
PasswordCheck = Callable[[str, str, str], Awaitable[str | None]]
# (access token, login the client named or None, peer address) -> the account's login, or None.
BearerCheck = Callable[[str, str | None, str], Awaitable[str | None]]
BEARER_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# (aiosmtpd's session.ssl, authorization identity or None, peer address) -> the account's login,
# or None: a login with the TLS client certificate (SASL EXTERNAL, RFC 4422 App. A).
CertificateCheck = Callable[[dict[str, Any] | None, str | None, str], Awaitable[str | None]]
EXTERNAL = "EXTERNAL"
MAX_AUTHZID = 320
# A JWT access token makes an AUTH line of about 2 KB, longer than an SMTP command line
# (RFC 5321 §4.5.3.1.4); clients send XOAUTH2 as an initial response all the same.
BEARER_LINE_LIMIT = 12288

_PENDING = "mssante:pending-password-check"
_INVALID = "535 5.7.8"  # RFC 4954 §6: authentication credentials invalid
# RFC 5321 §3.8 and §4.2.3 (421: closing the channel); RFC 3463 X.7.0 (security or policy).
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_ERRORS = "421 4.7.0 Too many refused commands, closing connection"
# RFC 4954 §6: 454 4.7.0 "Temporary authentication failure".
TOO_MANY_SESSIONS = "454 4.7.0 Too many sessions of this account from this address"
# (event, context) -> awaitable that records an audit entry whose actor is the peer.
PeerAudit = Callable[[AuditEvent, dict[str, str]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class SessionLimits:
    """One listener's bounds on its clients (docs/security.md)."""

    caps: Caps
    max_refused_commands: int

    @classmethod
    def of(cls, smtp: SmtpSettings) -> SessionLimits:
        caps = Caps(
            smtp.max_connections,
            smtp.max_connections_per_address,
            smtp.max_sessions_per_user_address,
        )
        return cls(caps, smtp.max_refused_commands)


@dataclass
class Guard:
    """What one listener shares between its sessions: its gate and its limits."""

    limits: SessionLimits
    gate: ConnectionGate
    via: str  # "inbound" or "submission", in the audit entries
    audit: Callable[[AuditRecord], Awaitable[Any]]

    @classmethod
    def of(
        cls, limits: SessionLimits, via: str, audit: Callable[[AuditRecord], Awaitable[Any]]
    ) -> Guard:
        return cls(limits, ConnectionGate(limits.caps), via, audit)


class MssSMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        audit_hook: AuditHook,
        password_check: PasswordCheck | None = None,
        bearer_check: BearerCheck | None = None,
        certificate_check: CertificateCheck | None = None,
        sessions: SessionRegistry | None = None,
        guard: Guard | None = None,
        **kwargs: Any,
    ) -> None:
        self._audit_hook = audit_hook
        self._guard = guard
        self._ticket: Ticket | Full | None = None  # the gate's answer, at the connection
        self._refused_commands = 0
        self._closing = False  # said 421: what the client sends next is not answered
        self.recipients = RecipientTally()  # this transaction's refused recipients
        self._password_check = password_check
        self._bearer_check = bearer_check
        self._certificate_check = certificate_check
        self._sessions = sessions if sessions is not None else _registry_of(handler)
        self._registered: OpenSession | None = None
        self._ending: Ending | None = None  # what the session rested on was revoked
        self._in_data = False
        self.refusal_audited = False  # set by the handler when it audited its own refusal
        if bearer_check is None:  # XOAUTH2 and OAUTHBEARER are offered only with a validator
            excluded = [*(kwargs.get("auth_exclude_mechanism") or ()), *BEARER_MECHANISMS]
            kwargs["auth_exclude_mechanism"] = excluded
        super().__init__(handler, **kwargs)
        # EXTERNAL: offered only with a validator, and only once the session is TLS (it is the
        # TLS client certificate); _offer_external() puts it back then.
        self._external = self._auth_methods.pop(EXTERNAL, None)
        if certificate_check is None:
            self._external = None
        if bearer_check is not None:  # an AUTH line carrying a token is longer than 512 octets
            limits = {"AUTH": BEARER_LINE_LIMIT}
            self.command_size_limits = defaultdict(lambda: SMTP.command_size_limit, limits)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._guard is not None and self._ticket is None:  # not again after STARTTLS
            peer = transport.get_extra_info("peername")
            self._ticket = self._guard.gate.admit(str(peer[0]) if peer else "?")
        super().connection_made(transport)
        if self._bearer_check is not None:  # room for an AUTH line carrying a token
            self._reader._limit = BEARER_LINE_LIMIT  # type: ignore[attr-defined]
        # Implicit TLS (port 465, RFC 8314): aiosmtpd fills session.ssl only after STARTTLS.
        if self.session is not None and self.session.ssl is None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.session.ssl = {"ssl_object": ssl_object}
        self._offer_external()  # called again on the TLS transport after STARTTLS

    def _offer_external(self) -> None:
        tls = self.session is not None and self.session.ssl is not None
        if self._external is not None and tls:
            self._auth_methods[EXTERNAL] = self._external
        else:
            self._auth_methods.pop(EXTERNAL, None)

    async def push(self, status: AnyStr) -> None:
        if self._closing:
            return
        line = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        if line.startswith(_AIOSMTPD_SIZE_EXCEEDED):  # aiosmtpd's words lack RFC 3463's code
            line = str(SIZE_EXCEEDED)
        refused = line[:1] in ("4", "5") and not line.startswith(("421", "454"))
        if refused:
            if self.refusal_audited:
                self.refusal_audited = False
            else:  # audited before the client reads the reply
                await self._audit_hook(_protocol_event(line, self), line, self.session)
        await super().push(line)
        if refused:
            await self._count_refusal()

    async def _count_refusal(self) -> None:
        """The ``smtp.max_refused_commands``-th refusal of the session closes it with 421."""
        self._refused_commands += 1
        limit = self._guard.limits.max_refused_commands if self._guard else None
        if limit is None or self._refused_commands < limit or self.transport is None:
            return
        await self._flush_recipients()
        await self._peer_audit(AuditEvent.SMTP_TOO_MANY_ERRORS, {"refused": str(limit)})
        await super().push(TOO_MANY_ERRORS)
        self._closing = True
        self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._registered is not None:
            self._registered.close()
        if isinstance(self._ticket, Ticket):
            self._ticket.close()
        super().connection_lost(error)

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's, with the client's address for the handler's audit entry."""
        handler = getattr(self.event_handler, "handle_exception", None)
        if handler is None:
            return await super().handle_exception(error)
        status: str = await handler(error, peer=self._peer())
        return status

    # -- the listener's caps: at the connection, at the login ----------------------------------
    async def _handle_client(self) -> None:
        try:
            if isinstance(self._ticket, Full):
                await self._refuse_connection(self._ticket)
                return
            await super()._handle_client()
        finally:
            await self._flush_recipients()

    async def _refuse_connection(self, full: Full) -> None:
        """421 instead of the greeting (RFC 5321 §3.1: a server may refuse a connection so)."""
        assert self._guard is not None and self.transport is not None
        address = self._peer()
        gate = self._guard.gate
        if gate.worth_auditing(address, full):
            context = {"reason": full.value, "refused_so_far": str(gate.refusals(address, full))}
            await self._peer_audit(AuditEvent.CONNECTION_REFUSED, context)
        await super().push(TOO_MANY_CONNECTIONS)
        self._closing = True
        self.transport.close()

    async def _take_place(self, account: str) -> bool:
        """The account's place among its sessions from this address; False (and 454 said)
        when it has none left: the login is refused though its credentials were right."""
        if not isinstance(self._ticket, Ticket) or self._ticket.log_in(account) is None:
            return True
        assert self._guard is not None
        gate, address = self._guard.gate, self._ticket.address
        if gate.worth_auditing(address, Full.USER_ADDRESS):
            context = {
                "reason": Full.USER_ADDRESS.value,
                "refused_so_far": str(gate.refusals(address, Full.USER_ADDRESS)),
            }
            await self._peer_audit(AuditEvent.CONNECTION_REFUSED, context)
        await self.push(TOO_MANY_SESSIONS)
        return False

    async def _logged_in(self, account: str) -> AuthResult:
        """A login whose credentials were right: the session is registered, or refused when
        the account has no place left from this address."""
        if not await self._take_place(account):
            take_login()  # forget the note of the refused login
            return AuthResult(success=False, handled=True)
        self._rest_on_login()
        return AuthResult(success=True, auth_data=account)

    async def _flush_recipients(self) -> None:
        """One entry for the recipients refused after the first of the transaction (the first
        is audited in detail by the acceptance path)."""
        summary = self.recipients.summary()
        self.recipients = RecipientTally()
        if summary is not None:
            await self._peer_audit(AuditEvent.SMTP_RECIPIENTS_REFUSED, summary)

    async def _peer_audit(self, event: AuditEvent, context: dict[str, str]) -> None:
        if self._guard is None:
            return
        peer = self._peer()
        record = AuditRecord(
            event, actor=peer, target="", context={"peer": peer, "via": self._guard.via, **context}
        )
        await self._guard.audit(record)

    def _peer(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if peer else "?"

    # -- the session's lifetime: registered after AUTH, ended on revocation ----------------------
    def _rest_on_login(self) -> None:
        """Register the session with what the login that just succeeded rests on."""
        note = take_login()
        if self._sessions is None or note is None or not note.grounds:
            return
        grounds = set(note.grounds)
        if note.account_id is not None:  # the send-as addresses kept for the session
            grounds.add(Credential(Kind.DELEGATION, f"{note.account_id}/{ANY}", note.account_id))
        self._registered = self._sessions.open(grounds, self._end, door="submission")

    async def _end(self, ending: Ending) -> None:
        self._ending = ending
        if not self._in_data:  # else right after the reply to the DATA being stored
            await self._close_revoked()

    async def _close_revoked(self) -> None:
        ending, transport = self._ending, self.transport
        if ending is None or transport is None or transport.is_closing():
            return
        line = f"421 4.7.0 {ending.text}"
        # Audited before the client reads the reply: whoever sees the 421 finds the entry.
        await self._audit_hook(AuditEvent.SUBMISSION_SESSION_ENDED, line, self.session)
        await self.push(line)
        transport.close()

    def _timeout_cb(self) -> None:
        loop = asyncio.get_event_loop()
        task = loop.create_task(self._audit_hook(AuditEvent.SMTP_TIMEOUT, "timeout", self.session))
        self._background = task  # keep a reference until the loop runs it
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # -- DATA: read the whole message at once ----------------------------------------------------
    # aiosmtpd reads DATA one line at a time through a 1 KB stream limit: ~1,300 awaits for a
    # 100 KB message, the main cost of a relay. This override (written here: aiosmtpd offers no
    # hook) reads up to the end-of-data sequence in one go, with the same rules: the end is
    # CRLF "." CRLF only (RFC 5321 §4.1.1.4; a bare LF never ends data), lines of at most
    # ``line_length_limit`` octets (§4.5.3.1.6), dot-unstuffing (§4.5.2), the size limit
    # answered 552 only once the data is drained (§4.2.5).
    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        try:
            await self._data_received()
        finally:
            self._in_data = False
        if self._ending is not None:
            await self._close_revoked()

    async def _data_received(self) -> None:
        assert self.envelope is not None
        await self._flush_recipients()  # the transaction's recipients are all known
        data = await self._read_data()
        if data is None:
            await self.push("552 5.3.4 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        if _longest_line(data) > self.line_length_limit:
            await self.push("500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        content = (b"\r\n" + data).replace(b"\r\n.", b"\r\n")[2:]
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytes | None:
        """The data up to (not including) the final "." line; None if over the size limit.
        Bytes after the end-of-data (pipelined commands, RFC 2920) go back to the reader."""
        limit = (self.data_size_limit or 1 << 30) + len(_END_OF_DATA)
        buf = bytearray(b"\r\n")  # a virtual CRLF, so that an empty message (".") matches too
        start, too_big = 0, False
        while (end := buf.find(_END_OF_DATA, start)) < 0:
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            start = max(0, len(buf) - len(_END_OF_DATA) + 1)
            if too_big or len(buf) + len(chunk) > limit:
                too_big = True
                del buf[: max(0, len(buf) - len(_END_OF_DATA))]  # keep only a possible start
                start = 0
            buf += chunk
        leftover = bytes(buf[end + len(_END_OF_DATA) :])
        if leftover:
            self._reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
        return None if too_big else bytes(buf[2 : end + 2])

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
            note = take_login()  # the right main password of a TOTP account: say what to do
            hint = f"{_INVALID} {note.hint}" if note is not None and note.hint else None
            return AuthResult(success=False, handled=False, message=hint)
        return await self._logged_in(account)

    # -- AUTH with an OAuth 2.0 access token (docs/oidc.md) --------------------------------------
    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        return await self._bearer_auth(args, sasl.parse_xoauth2)

    async def auth_OAUTHBEARER(self, _: Any, args: list[str]) -> AuthResult:
        return await self._bearer_auth(args, sasl.parse_oauthbearer)

    async def _bearer_auth(
        self, args: list[str], parse: Callable[[bytes], sasl.BearerCredentials]
    ) -> AuthResult:
        if self._bearer_check is None:
            return AuthResult(success=False, handled=False)
        message = await self._initial_response(args)
        if message is None:
            return AuthResult(success=False, handled=True)
        try:
            credentials = parse(message)
        except sasl.SaslError:
            await self.push("501 5.5.2 Malformed authentication data")
            return AuthResult(success=False, handled=True)
        peer = str(self.session.peer[0]) if self.session and self.session.peer else "?"
        login = await self._bearer_check(credentials.token, credentials.login, peer)
        if login is not None:
            return await self._logged_in(login)
        self.refusal_audited = True  # the check audited the failure itself
        # RFC 7628 §3.2.2: the error as a challenge; the client's dummy answer (§3.2.3) ends it.
        answer = await self.challenge_auth(sasl.error_challenge())
        return AuthResult(success=False, handled=answer is MISSING)

    # -- AUTH EXTERNAL: the TLS client certificate (docs/auth.md) ---------------------------------
    async def auth_EXTERNAL(self, _: Any, args: list[str]) -> AuthResult:
        """RFC 4422 App. A: the client is who its TLS certificate says; the message is the
        authorization identity ("=" on the AUTH line: none, the certificate's only account)."""
        ssl_info = self.session.ssl if self.session is not None else None
        if self._certificate_check is None or ssl_info is None:
            return AuthResult(success=False, handled=False)  # not offered: 535
        message = await self._initial_response(args)
        if message is None:
            return AuthResult(success=False, handled=True)
        try:
            authzid = message.decode("utf-8")
        except UnicodeDecodeError:
            authzid = "\x00"  # refused just below
        if "\x00" in authzid or len(authzid) > MAX_AUTHZID:
            await self.push("501 5.5.2 Malformed authentication data")
            return AuthResult(success=False, handled=True)
        peer = str(self.session.peer[0]) if self.session and self.session.peer else "?"
        login = await self._certificate_check(ssl_info, authzid or None, peer)
        if login is None:
            self.refusal_audited = True  # the check audited the failure itself
            return AuthResult(success=False, handled=False)
        return await self._logged_in(login)

    async def _initial_response(self, args: list[str]) -> bytes | None:
        """The initial response on the AUTH line (RFC 4954 §4; "=" is an empty one), else the
        client's answer to an empty challenge. None when a reply was already sent."""
        if len(args) == 1:
            answer = await self.challenge_auth("")
            return None if answer is MISSING else bytes(answer)
        if args[1] == "=":
            return b""
        try:
            return b64decode(args[1], validate=True)
        except (Base64Error, ValueError):
            await self.push("501 5.5.2 Can't decode base64")
            return None


_END_OF_DATA = b"\r\n.\r\n"


def _registry_of(handler: Any) -> SessionRegistry | None:
    """The open-session registry of the handler's authentication layer (the submission
    handler's ``ctx.auth.sessions``); None for a handler without logins (inbound)."""
    auth = getattr(getattr(handler, "ctx", None), "auth", None)
    registry = getattr(auth, "sessions", None)
    return registry if isinstance(registry, SessionRegistry) else None


# RFC 1870 §6.1: a declared SIZE over the limit is refused with 552 at MAIL FROM.
_AIOSMTPD_SIZE_EXCEEDED = "552 Error: message size exceeds fixed maximum"
SIZE_EXCEEDED = "552 5.3.4 Message size exceeds fixed maximum message size"


def _longest_line(data: bytes) -> int:
    return max((len(line) + 2 for line in data.split(b"\r\n")), default=0)


def _protocol_event(line: str, smtp: MssSMTP) -> AuditEvent:
    if line.startswith("530") and smtp.session is not None and smtp.session.ssl is None:
        return AuditEvent.SMTP_REFUSED_NO_STARTTLS
    if line.startswith("552"):
        return AuditEvent.SMTP_REFUSED_TOO_LARGE
    return AuditEvent.SMTP_REFUSED_PROTOCOL
