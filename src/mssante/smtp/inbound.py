"""Inbound SMTP from other operators of the trust space (docs/smtp.md, BRIEF §2).

Stages: STARTTLS (required, TLS 1.2+) → the peer's client certificate verified once per
session (chain, dates, key usage, revocation) → MAIL FROM: sender domain on the whitelist and
the certificate's DN listed for it (this listener's transport checks, ``smtp/policy.py``) →
RCPT TO and DATA: the acceptance path's stages (``ops/acceptance.py``: a local open mailbox
within the recipient limit; size, line endings, ``From:`` aligned with the peer, patients'
oppositions; then the commit), with trace headers added here; 250 once it is durable.
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
from mssante.logging import get_logger
from mssante.mail.trace import TraceFacts, mssante_trace_header, new_queue_id, received_header
from mssante.ops.acceptance import Acceptance, Door, MessageRefused, Origin
from mssante.ops.refusals import Refusal
from mssante.pki.crl import CrlCache
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import Purpose, VerificationResult, verify_certificate
from mssante.smtp import replies
from mssante.smtp.policy import check_peer_certificate, check_sender_domain
from mssante.smtp.session import Guard, MssSMTP, SessionLimits
from mssante.tls import peer_certificate, tls_description
from mssante.trust.model import Whitelist

AuditAsync = Callable[[AuditRecord], Any]


@dataclass
class InboundContext:
    """What the inbound listener needs, built once by the operator's runtime."""

    hostname: str
    max_message_bytes: int  # SIZE (RFC 1870) and the listener's DATA limit
    whitelist: Callable[[], Whitelist | None]
    trust: TrustStore
    crls: CrlCache | None
    acceptance: Acceptance
    audit: AuditAsync  # async: records one audit entry


@dataclass
class _PeerState:
    """Facts about the peer, gathered once per session (kept on aiosmtpd's Session)."""

    verification: VerificationResult | None
    tls_version: str
    cipher: str
    crl_generation: int = 0  # the CRLs the verification used (CrlCache.generation)


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
        generation = self.ctx.crls.generation if self.ctx.crls is not None else 0
        # Verified again once a CRL changed (docs/revocation.md): a peer whose certificate was
        # revoked meanwhile is refused at its next MAIL FROM, on the same connection.
        if state is None or state.crl_generation != generation:
            cert = peer_certificate(session.ssl)
            verification = await asyncio.to_thread(self._verify, cert) if cert else None
            version, cipher = tls_description(session.ssl)
            state = _PeerState(verification, version, cipher, generation)
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
        origin = await self._origin(session)
        refusal = await self.ctx.acceptance.check_recipient(
            origin, address, len(envelope.rcpt_tos), server.recipients
        )
        if refusal is not None:
            server.refusal_audited = True  # by the acceptance path
            return refusal.reply.render(utf8=_utf8(envelope))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RECIPIENT_OK)

    # -- DATA ------------------------------------------------------------------------------------
    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = await self._peer(session)
        queue_id = new_queue_id()
        sender = _reverse_path(envelope.mail_from or "")
        try:
            accepted = await self.ctx.acceptance.accept(
                await self._origin(session),
                sender,
                list(envelope.rcpt_tos),
                raw,
                trace=self._trace(session, envelope, peer, queue_id),
                queue_id=queue_id,
            )
        except MessageRefused as refused:
            server.refusal_audited = True
            return refused.refusal.reply.render(utf8=_utf8(envelope))
        except Exception:
            self.log.exception("storing an inbound message failed", queue_id=queue_id)
            return str(replies.STORAGE_FAILED)
        self.log.info(
            "message stored",
            queue_id=queue_id,
            recipients=len(accepted.delivered),
            duplicates=sum(d.duplicate for d in accepted.delivered),
        )
        return str(replies.ACCEPTED.with_text(f"Message accepted and stored, id {queue_id}"))

    async def _origin(self, session: Session) -> Origin:
        peer = await self._peer(session)
        return Origin(
            Door.INBOUND,
            peer_dn=peer.verification.subject_dn if peer.verification else "",
            peer_ip=str(session.peer[0]) if session.peer else "",
        )

    def _trace(
        self, session: Session, envelope: Envelope, peer: _PeerState, queue_id: str
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
        return return_path + received_header(facts, queue_id) + mssante_trace_header(facts)

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

    async def handle_exception(self, error: Exception, peer: str = "?") -> str:
        """Errors that escaped a stage, including a failed TLS handshake (an untrusted
        certificate: see docs/decisions/0003-inbound-tls-refusals.md); ``peer``: the client's
        address (MssSMTP passes it), the audit entry's actor as for every refusal."""
        cause = error.__cause__ or error
        self.log.warning(
            "inbound session error", error=type(cause).__name__, detail=str(cause)[:300], peer=peer
        )
        tls = "TLS" in type(error).__name__
        await self.ctx.audit(
            AuditRecord(
                AuditEvent.SMTP_TLS_FAILED if tls else AuditEvent.SMTP_REFUSED_PROTOCOL,
                actor=peer,
                target="",
                context={"peer": peer, "error": type(cause).__name__, "detail": str(cause)[:300]},
            )
        )
        return "421 4.3.0 Service not available, closing transmission channel"


def make_inbound_protocol(
    ctx: InboundContext, tls_context: Any, *, timeout: float, limits: SessionLimits
) -> Callable[[], SMTP]:
    """The protocol factory of one inbound listener (one gate for its connections)."""
    handler = InboundHandler(ctx)
    guard = Guard.of(limits, "inbound", ctx.audit)

    def factory() -> SMTP:
        return MssSMTP(
            handler,
            guard=guard,
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


def _utf8(envelope: Envelope) -> bool:
    return "SMTPUTF8" in (o.upper() for o in envelope.mail_options)


def _reverse_path(address: str) -> str:
    """aiosmtpd hands the null reverse-path (``MAIL FROM:<>``, RFC 5321 §4.5.5: delivery and
    read reports) as ``"<>"``, and needs it non-empty; the checks and headers want ``""``."""
    return "" if address == "<>" else address
