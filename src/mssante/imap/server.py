"""The IMAP connection: pymap's parser and command flow, with this project's rules on top.

- TLS first (BRIEF §5): on port 143 only STARTTLS is possible before TLS; LOGINDISABLED is
  advertised and LOGIN/AUTHENTICATE are refused and audited (RFC 9051 §6.2.3, §7.2.2; RFC 8314
  for port 993, where TLS is implicit). pymap's own shortcut that lets a client on localhost
  log in without TLS is not kept.
- Bounded memory: a command line is at most ``imap.max_line_bytes``; a literal larger than
  ``imap.max_literal_bytes`` is refused before a byte of it is read: a synchronizing literal
  gets its BAD [TOOBIG] instead of the "+" continuation (pymap's parser, RFC 9051 §7.1), a
  non-synchronizing one (LITERAL+, RFC 7888 §4) a BAD [TOOBIG] and the connection is closed,
  since what follows cannot be told from commands. Before login a literal is at most
  ``imap.max_preauth_literal_bytes`` (a LOGIN password; APPEND needs a login), and all the
  literals of one command together at most ``imap.max_command_bytes``: the next one past it
  gets BAD [TOOBIG] instead of "+" (a MULTIAPPEND-style stream of literals is stopped there).
- Connection caps (``mssante.ops.connections``, docs/security.md): a listener holds at most
  ``imap.max_connections``, an address at most ``imap.max_connections_per_address`` before
  login, an account at most ``imap.max_sessions_per_user_address`` from one address; beyond,
  ``* BYE [UNAVAILABLE]`` at connection, ``NO [LIMIT]`` at login (RFC 5530).
- Timeouts: before login ``imap.login_timeout``, after it ``imap.command_timeout`` (RFC 9051
  §5.4: at least 30 minutes), a literal must arrive within ``imap.literal_timeout``, an IDLE
  lasts at most ``imap.idle_timeout`` (RFC 2177 §3: clients re-issue it every 29 minutes). The
  server then says BYE (RFC 9051 §7.1.5) and closes.
- Revocation (docs/revocation.md): a logged-in session is registered with what it rests on;
  when any of it is revoked the session ends with ``* BYE [EXPIRED]`` (``[NOPERM]`` for a
  delegation, RFC 5530) — at once if the server is waiting for the client (between commands,
  in IDLE), else before the next command.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import re
import ssl
from argparse import Namespace
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import uuid4

from proxyprotocol.sock import SocketInfo
from proxyprotocol.version import ProxyProtocolVersion
from pymap.concurrent import Subsystem
from pymap.config import BackendCapability, IMAPConfig
from pymap.context import connection_exit
from pymap.exceptions import InvalidAuth, NotAllowedError, NotSupportedError
from pymap.imap import IMAPConnection
from pymap.imap.state import ConnectionState
from pymap.interfaces.session import SessionInterface
from pymap.parsing.command.nonauth import AuthenticateCommand, LoginCommand
from pymap.parsing.command.select import CloseCommand, FetchCommand, IdleCommand
from pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBad,
    ResponseBye,
    ResponseCode,
    ResponseContinuation,
    ResponseNo,
    ResponseOk,
)
from pymap.selected import SelectedMailbox
from pysasl import SASLAuth
from pysasl.creds.server import ServerCredentials
from pysasl.hashing import BuiltinHash
from pysasl.mechanism import ServerMechanism

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.auth import sasl
from mssante.auth.certificates import presented_chain
from mssante.auth.revocation import Ending, Grounds, Kind, OpenSession
from mssante.auth.service import AuthProtocol
from mssante.config import ImapSettings
from mssante.imap import mechanisms
from mssante.imap.backend import FetchPlan, StoreSession
from mssante.imap.login import GroundedLogin, ImapContext, StoreIdentity, StoreLogin, peer_address
from mssante.imap.mechanisms import CertificateOffered, ProvenLogin, TokenOffered
from mssante.logging import get_logger
from mssante.ops.connections import Caps, ConnectionGate, Full, Ticket

T = TypeVar("T")
_LITERAL = re.compile(rb"~?\{(\d{1,20})(\+?)\}\r?\n$")
_LOGINDISABLED = b"LOGINDISABLED"
_TAG = re.compile(rb"[A-Za-z0-9._-]{1,64}")  # the tags clients use; others get only the BYE


def _tag(line: bytearray) -> bytes | None:
    tag = bytes(line).split(b" ", 1)[0]
    return tag if line and _TAG.fullmatch(tag) else None


class ServerConfig(IMAPConfig):
    """pymap's configuration for one listener: 143 (STARTTLS offered) or 993 (TLS already)."""

    def __init__(
        self,
        settings: ImapSettings,
        tls: ssl.SSLContext,
        *,
        starttls: bool,
        greeting: str,
        mechanisms: Sequence[ServerMechanism] = (),
    ) -> None:
        super().__init__(
            Namespace(),
            host=settings.listen_host,
            port=settings.tls_port if not starttls else settings.port,
            ssl_context=tls,
            tls_enabled=starttls,
            hash_context=BuiltinHash(),  # unused: passwords are checked by Accounts
            cpu_subsystem=Subsystem.for_asyncio(),
            proxy_protocol=ProxyProtocolVersion.get(None),
            invalid_user_sleep=0.0,  # LoginThrottle does the slowing down
            reject_dnsbl=False,
            max_append_len=settings.max_literal_bytes,  # also advertised as APPENDLIMIT
            bad_command_limit=settings.max_bad_commands,
        )
        self.settings = settings
        self._greeting = greeting
        self._mechanisms = tuple(mechanisms)

    @property
    def backend_capability(self) -> BackendCapability:
        # IDLE (RFC 2177), SPECIAL-USE (RFC 6154); pymap adds UIDPLUS (RFC 4315), MOVE
        # (RFC 6851), BINARY, CHILDREN and APPENDLIMIT. MULTIAPPEND would not be atomic here.
        return BackendCapability(
            idle=True, object_id=False, multi_append=False, custom=[b"SPECIAL-USE"]
        )

    @property
    def tls_auth(self) -> SASLAuth:
        """After TLS: PLAIN and LOGIN, then XOAUTH2 / OAUTHBEARER when an issuer is configured
        and EXTERNAL when certificate logins are (:func:`mechanisms_for`)."""
        builtin = SASLAuth.named([b"PLAIN", b"LOGIN"]).server_mechanisms
        return SASLAuth([*builtin, *self._mechanisms])

    @property
    def greeting(self) -> bytes:
        return self._greeting.encode("ascii", "replace")


class _Closing(EOFError):
    """The server has said BYE and closes the connection (pymap then just stops)."""


class _CommandRefused(Exception):
    """A command was answered BAD before all of it was read (a literal refused without "+"):
    the next line read is a new command."""


class TooManySessions(InvalidAuth):
    """The account already holds ``imap.max_sessions_per_user_address`` sessions from this
    address: the login is refused (RFC 5530 LIMIT); the credentials were right."""

    def get_response(self, tag: bytes) -> ResponseNo:
        text = b"Too many sessions of this account from this address."
        return ResponseNo(tag, text, ResponseCode.of(b"LIMIT"))


class Session(ConnectionState):
    """pymap's connection state, with TLS-first login and audited refusals."""

    def __init__(self, login: StoreLogin, config: ServerConfig, ctx: ImapContext) -> None:
        super().__init__(login, config)
        self._ctx = ctx
        self.on_login: Callable[[Grounds], None] | None = None  # the connection registers
        self.ticket: Ticket | None = None  # the connection's place in the listener's caps

    async def _login(self, creds: ServerCredentials) -> SessionInterface:
        """pymap's login (0.36.7, pinned), the account's place among its sessions from this
        address, then the session registered with what it rests on."""
        stack = connection_exit.get()
        authenticated = await self.login.authenticate(creds)
        authorized = await self.login.authorize(authenticated, creds.authzid)
        if isinstance(authorized, StoreIdentity):
            await self._take_place(authorized)
        session = await stack.enter_async_context(authorized.new_session())
        if isinstance(authorized, StoreIdentity) and self.on_login is not None:
            self.on_login(authorized.grounds)
        return session

    async def _take_place(self, identity: StoreIdentity) -> None:
        ticket = self.ticket
        if ticket is None or ticket.log_in(str(identity.caller.account_id)) is None:
            return
        await _audit_refusal(self._ctx, ticket.gate, ticket.address, Full.USER_ADDRESS)
        raise TooManySessions()

    @property
    def logged_in(self) -> bool:
        return self._session is not None

    @property
    def tls(self) -> bool:
        return _LOGINDISABLED not in self.capability

    async def do_greeting(self) -> CommandResponse:
        # Unlike pymap, no exception for clients on localhost: TLS first, for everyone.
        return ResponseOk(b"*", self.config.greeting, self.capability)

    async def do_login(self, cmd: LoginCommand) -> tuple[CommandResponse, SelectedMailbox | None]:
        if not self.tls:
            await self._refuse_cleartext("LOGIN")
            raise NotSupportedError("LOGIN is disabled before STARTTLS (LOGINDISABLED).")
        return await super().do_login(cmd)

    async def do_authenticate(
        self, cmd: LoginCommand | AuthenticateCommand, creds: ServerCredentials | None
    ) -> CommandResponse:
        if creds is None and not self.tls:
            await self._refuse_cleartext("AUTHENTICATE")
        return await super().do_authenticate(cmd, creds)

    async def do_fetch(self, cmd: FetchCommand) -> tuple[CommandResponse, SelectedMailbox | None]:
        """Tell our session what the attributes need before pymap fetches: the messages'
        bytes are then read with them in one operation (and not parsed when only whole
        messages are asked), and RFC822.SIZE alone reads none (the stored size answers it;
        pymap counts it as needing the whole content)."""
        session = self.session
        if isinstance(session, StoreSession):
            session.expect_fetch(FetchPlan.of(cmd.attributes))
        return await super().do_fetch(cmd)

    async def do_close(self, cmd: CloseCommand) -> tuple[CommandResponse, SelectedMailbox | None]:
        if self.selected.readonly:  # CLOSE after EXAMINE expunges nothing (RFC 9051 §6.4.1)
            self._selected = None
            return ResponseOk(cmd.tag, cmd.command + b" completed."), None
        try:
            return await super().do_close(cmd)
        except NotAllowedError:  # no delete right: RFC 4314 §4, CLOSE then expunges nothing
            self._selected = None
            return ResponseOk(cmd.tag, cmd.command + b" completed."), None

    async def _refuse_cleartext(self, command: str) -> None:
        peer = peer_address()
        await self._ctx.audit(
            AuditRecord(
                AuditEvent.IMAP_REFUSED_CLEARTEXT,
                actor=peer,
                target="",
                context={"peer": peer, "command": command, "via": "imap"},
            )
        )


@dataclass(frozen=True)
class Limits:
    max_line: int
    max_literal: int
    max_preauth_literal: int
    max_command: int
    login_timeout: float
    command_timeout: float
    literal_timeout: float
    idle_timeout: float

    @classmethod
    def of(cls, settings: ImapSettings) -> Limits:
        return cls(
            settings.max_line_bytes,
            settings.max_literal_bytes,
            settings.max_preauth_literal_bytes,
            settings.max_command_bytes,
            settings.login_timeout,
            settings.command_timeout,
            settings.literal_timeout,
            settings.idle_timeout,
        )


class Connection(IMAPConnection):
    """pymap's connection loop, with bounded reads and timeouts."""

    def __init__(
        self,
        config: ServerConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sock_info: SocketInfo,
        ctx: ImapContext,
    ) -> None:
        super().__init__(config.commands, config, reader, writer, sock_info)
        self._limits = Limits.of(config.settings)
        self._ctx = ctx
        self._state: Session | None = None
        self._said_bye = False
        self._reading = False  # waiting for the client (between commands, in IDLE)
        self._registered: OpenSession | None = None
        self._ending: Ending | None = None  # what the session rested on was revoked
        self._command_bytes = 0  # bytes of the command being read, its literals included
        self._in_command = False  # reading a command (not an AUTHENTICATE or IDLE line)
        self._command_tag: bytes | None = None  # its tag, from its first line

    async def run(self, state: ConnectionState) -> None:
        self._state = state if isinstance(state, Session) else None
        if self._state is not None:
            self._state.on_login = self._rest_on
        await super().run(state)

    def _rest_on(self, grounds: Grounds) -> None:
        self._registered = self._ctx.auth.sessions.open(grounds, self._end, door="imap")

    def _command_timeout(self) -> float:
        logged_in = self._state is not None and self._state.logged_in
        return self._limits.command_timeout if logged_in else self._limits.login_timeout

    async def read_command(self, state: ConnectionState) -> Any:
        """pymap's, with a fresh count of the command's literal bytes; a command refused
        before it was all read is forgotten and the next line is a new command."""
        while True:
            self._command_bytes, self._command_tag = 0, None
            self._in_command = True
            try:
                return await super().read_command(state)
            except _CommandRefused:
                continue
            finally:
                self._in_command = False

    async def readline(self) -> memoryview:
        if self._ending is not None:
            await self._end_session(self._ending)
        self._reading = True
        try:
            line = await self._read_command_line()
        finally:
            self._reading = False
        if self._ending is not None:  # ended while this line arrived: it is never answered
            await self._end_session(self._ending)
        return line

    async def _read_command_line(self) -> memoryview:
        buf = bytearray(await self._line(self._command_timeout()))
        if self._in_command and self._command_bytes == 0:  # a command's first line
            self._command_tag = _tag(buf)
        while True:
            if not buf.endswith(b"\n"):
                raise EOFError()
            literal = _LITERAL.search(buf)
            if literal is None:
                self._command_bytes += len(buf)
                return memoryview(buf)
            size, synchronizing = int(literal.group(1)), not literal.group(2)
            refusal = self._literal_refusal(len(buf), size)
            if synchronizing:  # the client waits for our "+": refused, it is never sent
                if refusal is None:
                    self._command_bytes += len(buf)
                    return memoryview(buf)
                await self._too_big(buf, refusal)
            if refusal is not None:  # LITERAL+ (RFC 7888): already on its way
                await self._refuse(buf, refusal, ResponseCode.of(b"TOOBIG"))
            buf += await self._timed(self.reader.readexactly(size), self._limits.literal_timeout)
            buf += await self._line(self._limits.literal_timeout)

    def _literal_refusal(self, line: int, size: int) -> str | None:
        """Why a literal of ``size`` bytes, announced after ``line`` bytes of its command, is
        refused before a byte of it is read, or None."""
        logged_in = self._state is not None and self._state.logged_in
        if not logged_in and size > self._limits.max_preauth_literal:
            return "literal too large before login"
        if size > self._limits.max_literal:
            return "literal too large"
        if self._command_bytes + line + size > self._limits.max_command:
            return "command too large"
        return None

    # -- logins by token (XOAUTH2, OAUTHBEARER) and by certificate (EXTERNAL) -----------------------
    async def authenticate(
        self, state: ConnectionState, mech_name: bytes
    ) -> ServerCredentials | None:
        credentials = await super().authenticate(state, mech_name)
        if isinstance(credentials, TokenOffered):
            return await self._prove_token(credentials)
        if isinstance(credentials, CertificateOffered):
            return await self._prove_certificate(credentials)
        return credentials

    async def _prove_token(self, offered: TokenOffered) -> ProvenLogin:
        """The bearer validator checks the token (and audits); a refusal is the RFC 7628
        §3.2.2 error challenge, the client's dummy response, then NO [AUTHENTICATIONFAILED]."""
        bearer = self._ctx.bearer
        login = None
        if bearer is not None:
            token, requested = offered.credentials.token, offered.credentials.login
            login = await bearer.authenticate(
                token, requested, peer=peer_address(), protocol=AuthProtocol.IMAP
            )
        if login is None:
            discovery = f"{bearer.issuer}/.well-known/openid-configuration" if bearer else None
            challenge = sasl.error_challenge(openid_configuration=discovery)
            await self.write_response(ResponseContinuation(base64.b64encode(challenge)))
            await self.read_continuation(0)  # RFC 7628 §3.2.3: the client's dummy response
            raise InvalidAuth()
        return GroundedLogin(
            login.account_id, login.login, "oidc", login.token_id, grounds=login.grounds
        )

    async def _prove_certificate(self, offered: CertificateOffered) -> ProvenLogin:
        """SASL EXTERNAL: the TLS client certificate, checked and mapped to an account by the
        certificate logins (which audit every attempt)."""
        logins = self._ctx.certificates
        result = None
        if logins is not None:
            result = await logins.authenticate(
                presented_chain(self.writer.get_extra_info("ssl_object")),
                offered.requested or None,
                peer=peer_address(),
                protocol=AuthProtocol.IMAP,
            )
        if result is None:
            raise InvalidAuth()
        return GroundedLogin(result.account_id, result.login, "certificate", grounds=result.grounds)

    async def _end(self, ending: Ending) -> None:
        """Called by the registry when what the session rests on is revoked: end it now if the
        server is waiting for the client (also in IDLE), else before the next command."""
        self._ending = ending
        if self._reading:
            with contextlib.suppress(_Closing):
                await self._end_session(ending)

    async def _end_session(self, ending: Ending) -> None:
        """RFC 5530: EXPIRED (access no longer permitted with the credentials used), NOPERM
        for a delegation that ended; then the connection closes (RFC 9051 §7.1.5)."""
        if not self._said_bye:
            reason = "token_ended" if ending.credential.kind is Kind.OIDC_TOKEN else ending.reason
            # Audited before the client reads the BYE: whoever sees it finds the entry.
            await self._audit(
                AuditEvent.IMAP_SESSION_ENDED,
                {"reason": reason, "credential": ending.credential.kind.value},
            )
            await self._bye(ending.text.encode("ascii"), ResponseCode.of(ending.imap_code))
        self.writer.close()
        raise _Closing()

    def close(self) -> None:
        if self._registered is not None:
            self._registered.close()
        super().close()

    async def read_continuation(self, literal_length: int) -> memoryview:
        if literal_length > self._limits.max_literal:  # checked when announced; belt and braces
            await self._refuse(bytearray(), "literal too large", ResponseCode.of(b"TOOBIG"))
        self._command_bytes += literal_length
        extra = await self._timed(
            self.reader.readexactly(literal_length), self._limits.literal_timeout
        )
        line = await self.readline()
        return memoryview(extra + bytes(line))

    async def read_idle_done(self, cmd: IdleCommand) -> bool:
        return await self._timed(super().read_idle_done(cmd), self._limits.idle_timeout, "idle")

    async def write_response(self, resp: Response) -> None:
        """Each untagged response is written whole and drained before the next is built: a
        FETCH of a large folder holds one message in memory at a time (pymap would queue the
        whole answer in the transport), and no response is split across TLS records."""
        try:
            for part in _parts(resp):
                buffer = io.BytesIO()
                await part.async_write(buffer)
                self.writer.write(buffer.getvalue())
                await self.writer.drain()
        except ConnectionError:
            pass

    async def send_error_disconnect(self) -> None:
        if not self._said_bye:  # our own BYE already explains the disconnection
            await super().send_error_disconnect()

    async def _line(self, timeout: float) -> bytes:
        try:
            return await self._timed(self.reader.readline(), timeout)
        except ValueError:  # longer than the reader's limit (imap.max_line_bytes)
            await self._refuse(bytearray(), "line too long", ResponseCode.of(b"TOOBIG"))
            raise  # unreachable: _refuse raises

    async def _timed(self, awaitable: Awaitable[T], timeout: float, what: str = "command") -> T:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except TimeoutError:
            # Audited before the BYE is written: whoever reads it finds the entry.
            await self._audit(AuditEvent.IMAP_TIMEOUT, {"waiting_for": what})
            await self._bye(b"Autologout; idle for too long.", None)
            raise _Closing() from None

    async def _too_big(self, line: bytearray, reason: str) -> None:
        """Answer a command whose synchronizing literal is refused; the session goes on with
        the next command (RFC 7889 §3: no "+", so the client does not send the literal)."""
        if not self._in_command:  # an AUTHENTICATE or IDLE line: nothing to go on with
            await self._refuse(line, reason, ResponseCode.of(b"TOOBIG"))
        await self._audit(AuditEvent.IMAP_REFUSED_PROTOCOL, {"reason": reason})  # before replying
        tag = self._command_tag or b"*"
        text = f"{reason[0].upper()}{reason[1:]} (APPENDLIMIT).".encode()
        await self.write_response(ResponseBad(tag, text, ResponseCode.of(b"TOOBIG")))
        raise _CommandRefused()

    async def _refuse(self, line: bytearray, reason: str, code: ResponseCode) -> None:
        """A tagged BAD for the command when its tag can be read, then BYE: the rest of the
        stream cannot be told from commands any more."""
        await self._audit(AuditEvent.IMAP_REFUSED_PROTOCOL, {"reason": reason})  # before replying
        tag = (self._command_tag if self._in_command else None) or _tag(line)
        if tag is not None:
            await self.write_response(ResponseBad(tag, reason.encode(), code))
        await self._bye(reason.encode(), code)
        raise _Closing()

    async def _bye(self, text: bytes, code: ResponseCode | None) -> None:
        self._said_bye = True
        await self.write_response(ResponseBye(text, code))

    async def _audit(self, event: AuditEvent, context: dict[str, Any]) -> None:
        peer = peer_address()
        await self._ctx.audit(
            AuditRecord(event, actor=peer, target="", context={"peer": peer, **context})
        )


async def _audit_refusal(ctx: ImapContext, gate: ConnectionGate, address: str, full: Full) -> None:
    """``connection.refused`` for the 1st, 10th, 100th… refusal of a run (the gate counts)."""
    if not gate.worth_auditing(address, full):
        return
    context = {"peer": address, "reason": full.value, "via": "imap"}
    context["refused_so_far"] = str(gate.refusals(address, full))
    await ctx.audit(
        AuditRecord(AuditEvent.CONNECTION_REFUSED, actor=address, target="", context=context)
    )


def mechanisms_for(ctx: ImapContext) -> list[ServerMechanism]:
    """The SASL mechanisms offered after TLS besides PLAIN and LOGIN."""
    offered: list[ServerMechanism] = []
    if ctx.bearer is not None:
        offered += [mechanisms.xoauth2(), mechanisms.oauthbearer()]
    if ctx.certificates is not None:
        offered.append(mechanisms.external())
    return offered


class _Tagged(Response):
    """The tagged line of a command response, without its untagged responses."""

    def __init__(self, resp: CommandResponse) -> None:
        super().__init__(resp.tag, resp.text)


def _parts(resp: Response) -> list[Response]:
    if not isinstance(resp, CommandResponse):
        return [resp]
    untagged: list[Response] = list(resp._untagged)  # private, but pymap is pinned (0.36.7)
    return [*untagged, _Tagged(resp)]


def _release_transport(sock_info: SocketInfo) -> None:
    """Let a closed connection's transport (and its 256 KiB TLS buffer) be freed at once.

    asyncio keeps a cancelled timer until its due time (``wait_for`` of imap.command_timeout:
    up to 30 minutes) with the copy of the context variables it was scheduled in, and pymap's
    ``socket_info`` variable holds the connection's writer. The copies cannot be changed, but
    the object they point to can drop the writer (a slot of proxy-protocol's SocketInfo, pinned
    with pymap)."""
    with contextlib.suppress(AttributeError):
        sock_info._transport = None  # type: ignore[assignment]


ConnectionFactory = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listener:
    """One listening port; keeps its connections so that a shutdown can say BYE to each."""

    def __init__(self, ctx: ImapContext, config: ServerConfig) -> None:
        self._ctx = ctx
        self._config = config
        self._login = StoreLogin(ctx, config)
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._log = get_logger("mssante.imap")
        settings = config.settings
        self.gate = ConnectionGate(
            Caps(
                settings.max_connections,
                settings.max_connections_per_address,
                settings.max_sessions_per_user_address,
            )
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = await self._admit(writer)
        if ticket is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        sock_info = SocketInfo.get(writer, None, unique_id=uuid4().bytes)
        try:
            await self._serve(
                Connection(self._config, reader, writer, sock_info, self._ctx), ticket
            )
        except (ConnectionError, EOFError, ssl.SSLError, asyncio.CancelledError):
            pass
        except Exception:  # pymap said BYE [SERVERBUG]; the operator's log gets the rest
            self._log.exception("imap.connection_failed", peer=peer_address())
        finally:
            ticket.close()
            if task is not None:
                self._connections.pop(task, None)
            _release_transport(sock_info)

    async def _serve(self, conn: Connection, ticket: Ticket) -> None:
        session = Session(self._login, self._config, self._ctx)
        session.ticket = ticket
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(conn))
            await conn.run(session)

    async def _admit(self, writer: asyncio.StreamWriter) -> Ticket | None:
        """The connection's ticket, or None once it has been told BYE [UNAVAILABLE] (RFC 5530:
        the server cannot serve it now) and closed."""
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        admitted = self.gate.admit(address)
        if isinstance(admitted, Ticket):
            return admitted
        await _audit_refusal(self._ctx, self.gate, address, admitted)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write(b"* BYE [UNAVAILABLE] Too many connections; try again later.\r\n")
            await writer.drain()
        writer.close()
        return None

    async def close_connections(self, timeout: float = 5.0) -> None:
        """Say BYE to every client (RFC 9051 §7.1.5) and wait for the connections to end."""
        for writer in list(self._connections.values()):
            if not writer.is_closing():
                writer.write(b"* BYE [UNAVAILABLE] Server shutting down.\r\n")
                writer.close()
        tasks: Sequence[asyncio.Task[Any]] = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
