"""Inbound SMTP from other operators of the trust space (docs/smtp.md, BRIEF §2).

Stages: STARTTLS (required, TLS 1.2+) → the peer's client certificate verified once per
session (chain, dates, key usage, revocation) → MAIL FROM: sender domain on the whitelist and
the certificate's DN listed for it → RCPT TO: a local open mailbox, within the recipient limit →
DATA: size, bare line endings refused, trace headers added, stored durably, then 250.
Every refusal is audited with its own event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.logging import get_logger
from mssante.ops.mailstore import Delivered, Headers, MailStore
from mssante.pki.crl import CrlCache
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import Purpose, VerificationResult, verify_certificate
from mssante.smtp import replies
from mssante.smtp.policy import (
    Refusal,
    check_line_endings,
    check_local_recipient,
    check_peer_certificate,
    check_recipient_count,
    check_sender_domain,
    check_size,
)
from mssante.smtp.session import MssSMTP
from mssante.smtp.tls import peer_certificate, tls_description
from mssante.smtp.trace import TraceFacts, mssante_trace_header, new_queue_id, received_header
from mssante.store.group_commit import GroupCommitter
from mssante.trust.model import Whitelist

AuditAsync = Callable[[AuditRecord], Any]


@dataclass
class InboundContext:
    """What the inbound listener needs, built once by the operator's runtime."""

    hostname: str
    max_message_bytes: int
    max_recipients: int
    whitelist: Callable[[], Whitelist | None]
    trust: TrustStore
    crls: CrlCache | None
    store: MailStore
    committer: GroupCommitter
    audit: AuditAsync  # async: records one audit entry


@dataclass
class _PeerState:
    """Facts about the peer, gathered once per session (kept on aiosmtpd's Session)."""

    verification: VerificationResult | None
    tls_version: str
    cipher: str


class InboundHandler:
    def __init__(self, ctx: InboundContext) -> None:
        self.ctx = ctx
        self.log = get_logger("mssante.smtp.inbound")

    # -- MAIL FROM -------------------------------------------------------------------------------
    async def handle_MAIL(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        peer = await self._peer(session)
        refusal = check_peer_certificate(peer.verification)
        if refusal is None and peer.verification is not None:
            refusal = check_sender_domain(
                self.ctx.whitelist(), _reverse_path(address), peer.verification.subject_dn
            )
        if refusal is not None:
            return await self._refuse(server, session, refusal, address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(replies.SENDER_OK)

    async def _peer(self, session: Session) -> _PeerState:
        state: _PeerState | None = getattr(session, "mssante_peer", None)
        if state is None:
            cert = peer_certificate(session.ssl)
            verification = await asyncio.to_thread(self._verify, cert) if cert else None
            version, cipher = tls_description(session.ssl)
            state = _PeerState(verification, version, cipher)
            session.mssante_peer = state  # type: ignore[attr-defined]
        return state

    def _verify(self, cert: x509.Certificate) -> VerificationResult:
        return verify_certificate(
            cert, purpose=Purpose.CLIENT, trust=self.ctx.trust, crls=self.ctx.crls
        )

    # -- RCPT TO ---------------------------------------------------------------------------------
    async def handle_RCPT(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        refusal = check_recipient_count(len(envelope.rcpt_tos), self.ctx.max_recipients)
        if refusal is None:
            is_local = await asyncio.to_thread(self.ctx.store.is_local, address)
            refusal = check_local_recipient(is_local, address)
        if refusal is not None:
            return await self._refuse(server, session, refusal, address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RECIPIENT_OK)

    # -- DATA ------------------------------------------------------------------------------------
    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        refusal = check_size(len(raw), self.ctx.max_message_bytes) or check_line_endings(raw)
        if refusal is not None:
            return await self._refuse(server, session, refusal, envelope.mail_from or "")
        peer = await self._peer(session)
        queue_id = new_queue_id()
        message = self._with_trace(raw, session, envelope, peer, queue_id)
        try:
            delivered = await self._store(message, envelope, session, peer, queue_id)
        except Exception:
            self.log.exception("storing an inbound message failed", queue_id=queue_id)
            return str(replies.STORAGE_FAILED)
        self.log.info(
            "message stored",
            queue_id=queue_id,
            recipients=len(delivered),
            duplicates=sum(d.duplicate for d in delivered),
        )
        return str(replies.ACCEPTED.with_text(f"Message accepted and stored, id {queue_id}"))

    def _with_trace(
        self, raw: bytes, session: Session, envelope: Envelope, peer: _PeerState, queue_id: str
    ) -> bytes:
        facts = TraceFacts(
            helo=session.host_name or "",
            peer_ip=str(session.peer[0]) if session.peer else "",
            hostname=self.ctx.hostname,
            tls_version=peer.tls_version,
            cipher=peer.cipher,
            peer_dn=peer.verification.subject_dn if peer.verification else "",
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else "",
        )
        # RFC 5321 §4.4: the server making the final delivery records the envelope sender in
        # Return-Path (RFC 8098 §2.1 compares it with Disposition-Notification-To).
        sender = _reverse_path("".join((envelope.mail_from or "").split()))
        return_path = f"Return-Path: <{sender}>\r\n".encode()
        return return_path + received_header(facts, queue_id) + mssante_trace_header(facts) + raw

    async def _store(
        self, message: bytes, envelope: Envelope, session: Session, peer: _PeerState, queue_id: str
    ) -> list[Delivered]:
        digest = await asyncio.to_thread(self.ctx.store.blobs.put, message)  # fsynced
        headers = Headers.parse(message)
        actor = peer.verification.subject_dn if peer.verification else "?"
        recipients = list(envelope.rcpt_tos)

        def work(db_session: Any) -> list[Delivered]:
            delivered = self.ctx.store.deliver_in(
                db_session, digest, len(message), headers, recipients
            )
            append(
                db_session,
                AuditRecord(
                    AuditEvent.SMTP_MESSAGE_ACCEPTED,
                    actor=actor,
                    target=",".join(recipients),
                    context={
                        "queue_id": queue_id,
                        "from": envelope.mail_from,
                        "message_id": headers.message_id,
                        "peer": str(session.peer[0]) if session.peer else "",
                        "size": len(message),
                        "duplicates": [d.address for d in delivered if d.duplicate],
                    },
                ),
            )
            return delivered

        return await self.ctx.committer.run(work)

    # -- refusals --------------------------------------------------------------------------------
    async def _refuse(
        self, server: MssSMTP, session: Session, refusal: Refusal, target: str
    ) -> str:
        peer_ip = str(session.peer[0]) if session.peer else "?"
        state: _PeerState | None = getattr(session, "mssante_peer", None)
        actor = state.verification.subject_dn if state and state.verification else peer_ip
        await self.ctx.audit(
            AuditRecord(
                refusal.event,
                actor=actor,
                target=target,
                context={"peer": peer_ip, "reply": str(refusal.reply), "detail": refusal.detail},
            )
        )
        self.log.info(
            "refused", audit_event=refusal.event.value, peer=peer_ip, reply=str(refusal.reply)
        )
        server.refusal_audited = True
        return str(refusal.reply)

    async def handle_exception(self, error: Exception) -> str:
        """Errors that escaped a stage, including a failed TLS handshake (an untrusted
        certificate: see docs/decisions/0003-inbound-tls-refusals.md)."""
        cause = error.__cause__ or error
        self.log.warning(
            "inbound session error", error=type(cause).__name__, detail=str(cause)[:300]
        )
        await self.ctx.audit(
            AuditRecord(
                AuditEvent.SMTP_TLS_FAILED
                if "TLS" in type(error).__name__
                else AuditEvent.SMTP_REFUSED_PROTOCOL,
                actor="?",
                target="",
                context={"error": type(cause).__name__, "detail": str(cause)[:300]},
            )
        )
        return "421 4.3.0 Service not available, closing transmission channel"


def make_inbound_protocol(
    ctx: InboundContext, tls_context: Any, *, timeout: float
) -> Callable[[], SMTP]:
    handler = InboundHandler(ctx)

    def factory() -> SMTP:
        return MssSMTP(
            handler,
            audit_hook=_audit_hook(ctx),
            hostname=ctx.hostname,
            ident="mssante",
            tls_context=tls_context,
            require_starttls=True,
            data_size_limit=ctx.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=timeout,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
        )

    return factory


def _audit_hook(ctx: InboundContext) -> Callable[[AuditEvent, str, Any], Any]:
    async def hook(event: AuditEvent, line: str, session: Any) -> None:
        peer = str(session.peer[0]) if session is not None and session.peer else "?"
        await ctx.audit(AuditRecord(event, actor=peer, target="", context={"reply": line[:300]}))

    return hook


def _reverse_path(address: str) -> str:
    """aiosmtpd hands the null reverse-path (``MAIL FROM:<>``, RFC 5321 §4.5.5: delivery and
    read reports) as ``"<>"``, and needs it non-empty; the checks and headers want ``""``."""
    return "" if address == "<>" else address
