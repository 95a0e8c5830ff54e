"""Message submission for our users' mail clients (RFC 6409): 587 STARTTLS and 465 implicit TLS.

Stages: TLS (required before AUTH, RFC 4954 §4) → AUTH PLAIN or LOGIN with the account's
password (checked off the event loop, throttled after failures, every attempt audited), or AUTH
EXTERNAL with the TLS client certificate (a CPS-like card, or an APP mailbox's organisation
certificate), or XOAUTH2/OAUTHBEARER with an access token →
then the acceptance path's stages (``ops/acceptance.py``), each at its SMTP command: MAIL FROM:
an address the account may send as → RCPT TO: only addresses of the trust space ("n'appartient
pas à l'espace de confiance MSSanté" otherwise) → DATA: size, line endings, ``From:`` and
``Sender:``, patients' oppositions, the sending limit, then the commit (local recipients
delivered, remote ones queued, the Sent copy, in one durable transaction) before 250. The trace
header is this listener's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthProtocol, AuthService
from mssante.logging import get_logger
from mssante.mail.trace import TraceFacts, new_queue_id, received_header
from mssante.ops.acceptance import Acceptance, Door, MessageRefused, Origin
from mssante.smtp import replies
from mssante.smtp.session import Guard, MssSMTP, SessionLimits
from mssante.tls import peer_chain, tls_description

AuditAsync = Callable[[AuditRecord], Any]


@dataclass
class SubmissionContext:
    hostname: str
    max_message_bytes: int  # SIZE (RFC 1870) and the listener's DATA limit
    acceptance: Acceptance
    auth: AuthService
    audit: AuditAsync
    bearer: BearerValidator | None = None  # set: AUTH XOAUTH2 and OAUTHBEARER (docs/oidc.md)
    certificates: CertificateLogins | None = None  # set: AUTH EXTERNAL over TLS (docs/auth.md)


class SubmissionHandler:
    def __init__(self, ctx: SubmissionContext) -> None:
        self.ctx = ctx
        self.log = get_logger("mssante.smtp.submission")

    # -- AUTH (called by MssSMTP, in the session's task) ------------------------------------------
    async def check_password(self, login: str, password: str, peer: str) -> str | None:
        """The account's password or one of its app passwords, through the one authentication
        layer (throttled per login and per address, every attempt audited there)."""
        principal = await self.ctx.auth.check_password_async(
            login, password, peer=peer, protocol=AuthProtocol.SUBMISSION
        )
        return principal.login if principal else None

    async def check_bearer(self, token: str, login: str | None, peer: str) -> str | None:
        """An OIDC access token (SASL XOAUTH2 / OAUTHBEARER), validated and audited by the
        bearer validator; the token's professional must own ``login``."""
        if self.ctx.bearer is None:
            return None
        result = await self.ctx.bearer.authenticate(
            token, login, peer=peer, protocol=AuthProtocol.SUBMISSION
        )
        return result.login if result else None

    async def check_certificate(
        self, ssl_info: dict[str, Any] | None, login: str | None, peer: str
    ) -> str | None:
        """SASL EXTERNAL: the TLS client certificate, verified and mapped to an account (a
        person's by idNat, an APP account by its bound DN), audited by the validator."""
        if self.ctx.certificates is None:
            return None
        result = await self.ctx.certificates.authenticate(
            peer_chain(ssl_info), login, peer=peer, protocol=AuthProtocol.SUBMISSION
        )
        return result.login if result else None

    # -- MAIL FROM -------------------------------------------------------------------------------
    async def handle_MAIL(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        login = _login(session)
        if login is None:
            return str(replies.AUTH_REQUIRED)
        allowed: Set[str] | None = getattr(session, "mssante_allowed", None)
        if allowed is None:  # once per session: a client sends many messages on one login
            allowed = await self.ctx.acceptance.sendable(login)
        origin = _origin(session)
        refusal = await self.ctx.acceptance.check_sender(origin, address, allowed)
        if refusal is not None:
            server.refusal_audited = True  # by the acceptance path
            return refusal.reply.render(utf8=_utf8(options))
        session.mssante_allowed = allowed  # type: ignore[attr-defined]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(replies.SENDER_OK)

    # -- RCPT TO ---------------------------------------------------------------------------------
    async def handle_RCPT(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        refusal = await self.ctx.acceptance.check_recipient(
            _origin(session), address, len(envelope.rcpt_tos), server.recipients
        )
        if refusal is not None:
            server.refusal_audited = True
            return refusal.reply.render(utf8=_utf8(envelope.mail_options))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RECIPIENT_OK)

    # -- DATA ------------------------------------------------------------------------------------
    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        try:
            await self.ctx.acceptance.accept(
                _origin(session),
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                envelope.original_content or b"",
                allowed=getattr(session, "mssante_allowed", frozenset()),
                trace=self._trace(session, queue_id),
                queue_id=queue_id,
            )
        except MessageRefused as refused:
            server.refusal_audited = True
            return refused.refusal.reply.render(utf8=_utf8(envelope.mail_options))
        except Exception:
            self.log.exception("storing a submitted message failed", queue_id=queue_id)
            return str(replies.STORAGE_FAILED)
        return str(replies.QUEUED.with_text(f"Message accepted for delivery, id {queue_id}"))

    def _trace(self, session: Session, queue_id: str) -> bytes:
        version, cipher = tls_description(session.ssl)
        facts = TraceFacts(
            helo=session.host_name or "",
            peer_ip=str(session.peer[0]) if session.peer else "",
            hostname=self.ctx.hostname,
            tls_version=version,
            cipher=cipher,
            authenticated_as=_login(session) or "",
        )
        return received_header(facts, queue_id)

    async def handle_exception(self, error: Exception, peer: str = "?") -> str:
        self.log.warning("submission session error", error=type(error).__name__, peer=peer)
        return "421 4.3.0 Service not available, closing transmission channel"


def _origin(session: Session) -> Origin:
    peer = str(session.peer[0]) if session.peer else ""
    return Origin(Door.SUBMISSION, login=_login(session) or "", peer_ip=peer)


def _utf8(mail_options: list[str]) -> bool:
    return "SMTPUTF8" in (o.upper() for o in mail_options)


def _login(session: Session) -> str | None:
    if not session.authenticated:
        return None
    data = session.auth_data
    return data if isinstance(data, str) else None


def make_submission_protocol(
    ctx: SubmissionContext,
    tls_context: Any,
    *,
    implicit_tls: bool,
    timeout: float,
    limits: SessionLimits,
) -> Callable[[], SMTP]:
    """The protocol factory of one submission listener (one gate for its connections)."""
    handler = SubmissionHandler(ctx)
    guard = Guard.of(limits, "submission", ctx.audit)

    async def audit_hook(event: AuditEvent, line: str, session: Any) -> None:
        peer = str(session.peer[0]) if session is not None and session.peer else "?"
        await ctx.audit(
            AuditRecord(
                event, actor=peer, target="", context={"reply": line[:300], "via": "submission"}
            )
        )

    def factory() -> SMTP:
        with warnings.catch_warnings():
            # On 465 the whole connection is TLS (RFC 8314), which aiosmtpd's check cannot see.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _protocol()

    def _protocol() -> SMTP:
        return MssSMTP(
            handler,
            guard=guard,
            audit_hook=audit_hook,
            sessions=ctx.auth.sessions,  # each login registered on what it rests on
            password_check=handler.check_password,
            bearer_check=handler.check_bearer if ctx.bearer is not None else None,
            certificate_check=handler.check_certificate if ctx.certificates is not None else None,
            hostname=ctx.hostname,
            ident="mssante",
            tls_context=None if implicit_tls else tls_context,
            require_starttls=not implicit_tls,
            auth_required=True,
            auth_require_tls=not implicit_tls,
            data_size_limit=ctx.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=timeout,
        )

    return factory
