"""Message submission for our users' mail clients (RFC 6409): 587 STARTTLS and 465 implicit TLS.

Stages: TLS (required before AUTH, RFC 4954 §4) → AUTH PLAIN or LOGIN with the account's
password (checked off the event loop, throttled after failures, every attempt audited), or AUTH
EXTERNAL with the TLS client certificate (a CPS-like card, or an APP mailbox's organisation
certificate), or XOAUTH2/OAUTHBEARER with an access token →
MAIL FROM: an address the account may send as (553 otherwise) → RCPT TO: only addresses of the
trust space (our domains, or a whitelisted domain; "n'appartient pas à l'espace de confiance
MSSanté" otherwise) → DATA: size, bare line endings, the From: header checked like MAIL FROM,
trace headers added, then stored: local recipients delivered, remote ones queued, in one
durable transaction before 250.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.orm import Session as DbSession

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.auth.bearer import BearerValidator
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthProtocol, AuthService
from mssante.logging import get_logger
from mssante.ops.accounts import Accounts
from mssante.ops.mailstore import Headers, MailStore
from mssante.smtp import replies
from mssante.smtp.policy import (
    Refusal,
    check_envelope_sender,
    check_from_header,
    check_line_endings,
    check_recipient_count,
    check_size,
    check_submission_recipient,
    delegated_from,
    domain_of,
)
from mssante.smtp.session import MssSMTP
from mssante.smtp.tls import peer_chain, tls_description
from mssante.smtp.trace import TraceFacts, new_queue_id, received_header
from mssante.store.group_commit import GroupCommitter
from mssante.trust.model import Whitelist

AuditAsync = Callable[[AuditRecord], Any]


@dataclass(frozen=True)
class OutgoingMessage:
    digest: str
    size: int
    sender: str
    recipients: Sequence[str]
    message_id: str
    account: str
    queue_id: str


class Enqueue(Protocol):
    """Puts remote recipients in the outbound queue, inside the caller's transaction."""

    def __call__(self, session: DbSession, message: OutgoingMessage) -> None: ...


@dataclass
class SubmissionContext:
    hostname: str
    local_domains: Set[str]
    max_message_bytes: int
    max_recipients: int
    whitelist: Callable[[], Whitelist | None]
    accounts: Accounts
    store: MailStore
    committer: GroupCommitter
    enqueue: Enqueue
    notify_queue: Callable[[], None]
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
            allowed = await asyncio.to_thread(self.ctx.accounts.sendable_addresses, login)
        refusal = check_envelope_sender(address, allowed)
        if refusal is not None:
            return await self._refuse(server, session, refusal, address)
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
        refusal = check_recipient_count(len(envelope.rcpt_tos), self.ctx.max_recipients) or (
            check_submission_recipient(self.ctx.whitelist(), self.ctx.local_domains, address)
        )
        if (
            refusal is None
            and domain_of(address) in self.ctx.local_domains
            and not await asyncio.to_thread(self.ctx.store.is_local, address)
        ):
            refusal = Refusal(
                replies.UNKNOWN_RECIPIENT, AuditEvent.SUBMISSION_REFUSED_RECIPIENT, address
            )
        if refusal is not None:
            utf8 = "SMTPUTF8" in (o.upper() for o in envelope.mail_options)
            await self._refuse(server, session, refusal, address)
            return refusal.reply.render(utf8=utf8)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RECIPIENT_OK)

    # -- DATA ------------------------------------------------------------------------------------
    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        allowed: Set[str] = getattr(session, "mssante_allowed", frozenset())
        refusal = (
            check_size(len(raw), self.ctx.max_message_bytes)
            or check_line_endings(raw)
            or check_from_header(raw, allowed)
        )
        if refusal is not None:
            return await self._refuse(server, session, refusal, envelope.mail_from or "")
        queue_id = new_queue_id()
        message = self._with_trace(raw, session, queue_id)
        try:
            await self._store(message, envelope, _login(session) or "?", queue_id)
        except Exception:
            self.log.exception("storing a submitted message failed", queue_id=queue_id)
            return str(replies.STORAGE_FAILED)
        await self._audit_delegated_send(raw, allowed, session, queue_id)
        return str(replies.QUEUED.with_text(f"Message accepted for delivery, id {queue_id}"))

    def _with_trace(self, raw: bytes, session: Session, queue_id: str) -> bytes:
        version, cipher = tls_description(session.ssl)
        facts = TraceFacts(
            helo=session.host_name or "",
            peer_ip=str(session.peer[0]) if session.peer else "",
            hostname=self.ctx.hostname,
            tls_version=version,
            cipher=cipher,
            authenticated_as=_login(session) or "",
        )
        return received_header(facts, queue_id) + raw

    async def _store(self, message: bytes, envelope: Envelope, login: str, queue_id: str) -> None:
        await store_submitted(
            self.ctx,
            message,
            envelope.mail_from or "",
            envelope.rcpt_tos,
            login=login,
            queue_id=queue_id,
        )

    async def _audit_delegated_send(
        self, raw: bytes, allowed: Set[str], session: Session, queue_id: str
    ) -> None:
        """Mail sent as a mailbox the account holds by delegation names the person behind it."""
        owner = delegated_from(raw, allowed)
        if owner is not None:
            record = AuditRecord(
                AuditEvent.DELEGATED_SEND,
                actor=_login(session) or "?",
                target=owner,
                context={"queue_id": queue_id, "via": "submission"},
            )
            await self.ctx.audit(record)

    async def _refuse(
        self, server: MssSMTP, session: Session, refusal: Refusal, target: str
    ) -> str:
        peer = str(session.peer[0]) if session.peer else "?"
        await self.ctx.audit(
            AuditRecord(
                refusal.event,
                actor=_login(session) or peer,
                target=target,
                context={"peer": peer, "reply": str(refusal.reply), "detail": refusal.detail},
            )
        )
        server.refusal_audited = True
        return str(refusal.reply)

    async def handle_exception(self, error: Exception) -> str:
        self.log.warning("submission session error", error=type(error).__name__)
        return "421 4.3.0 Service not available, closing transmission channel"


async def store_submitted(
    ctx: SubmissionContext,
    message: bytes,
    sender: str,
    recipients: Sequence[str],
    *,
    login: str,
    queue_id: str,
    via: str = "submission",
) -> None:
    """Store an accepted message in one durable transaction: local recipients delivered,
    remote ones queued, a copy in the sender's Sent folder, the acceptance audited. Shared by
    SMTP submission and the webmail (``smtp/direct.py``)."""
    digest = await asyncio.to_thread(ctx.store.blobs.put, message)
    headers = Headers.parse(message)
    local = [r for r in recipients if domain_of(r) in ctx.local_domains]
    remote = [r for r in recipients if domain_of(r) not in ctx.local_domains]
    outgoing = OutgoingMessage(
        digest, len(message), sender, remote, headers.message_id, login, queue_id
    )
    record = AuditRecord(
        AuditEvent.SUBMISSION_MESSAGE_ACCEPTED,
        actor=login,
        target=",".join(recipients),
        context={
            "queue_id": queue_id,
            "from": sender,
            "message_id": headers.message_id,
            "local": len(local),
            "remote": len(remote),
            "size": len(message),
            "via": via,
        },
    )

    def work(db: DbSession) -> None:
        if local:
            ctx.store.deliver_in(db, digest, len(message), headers, local)
        if remote:
            ctx.enqueue(db, outgoing)
        if sender:  # a report (MDN) goes out with a null sender and keeps no copy
            ctx.store.deliver_in(
                db,
                digest,
                len(message),
                headers,
                [sender],
                folder="Sent",
                flags=["\\Seen"],
                dedupe=False,  # kept even when the sender is among the recipients
            )
        append(db, record)

    await ctx.committer.run(work)
    if remote:
        ctx.notify_queue()


def _login(session: Session) -> str | None:
    if not session.authenticated:
        return None
    data = session.auth_data
    return data if isinstance(data, str) else None


def make_submission_protocol(
    ctx: SubmissionContext, tls_context: Any, *, implicit_tls: bool, timeout: float
) -> Callable[[], SMTP]:
    handler = SubmissionHandler(ctx)

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
            audit_hook=audit_hook,
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
