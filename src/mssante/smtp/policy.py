"""The inbound listener's transport decisions, as plain functions: facts in, ``None`` or a
Refusal out: the peer's certificate, and its right to carry the sender's domain (BRIEF §2).

No socket, no database: the listener gathers the facts (the verification result, the whitelist
in force) and applies these. What is checked of the message itself, whatever the door, is the
acceptance path's (``ops/acceptance.py``). Each Refusal carries the reply sent to the peer
(public) and the audit event that records it, with a detail for the audit log only.
"""

from __future__ import annotations

from mssante.audit.events import AuditEvent
from mssante.ops.acceptance import domain_of
from mssante.ops.refusals import Refusal
from mssante.pki.verify import VerificationResult
from mssante.smtp import replies
from mssante.trust.model import TrustRefusal, Whitelist

# -- inbound, from other operators (BRIEF §2) ------------------------------------------------


def check_peer_certificate(result: VerificationResult | None) -> Refusal | None:
    """A client certificate must have been presented and pass the project's verification."""
    if result is None:
        return Refusal(replies.NO_CLIENT_CERTIFICATE, AuditEvent.SMTP_REFUSED_NO_CERTIFICATE)
    if not result.ok:
        reply = replies.CERTIFICATE_REFUSED.with_text(
            f"Client certificate refused: {result.reason}"
        )
        return Refusal(
            reply, AuditEvent.SMTP_REFUSED_CERTIFICATE, f"{result.failure}: {result.reason}"
        )
    return None


def check_sender_domain(whitelist: Whitelist | None, sender: str, peer_dn: str) -> Refusal | None:
    """The sender's domain is on the whitelist and the peer's DN is listed for it. The null
    sender (delivery reports) needs only a DN listed for some domain."""
    if whitelist is None:
        return Refusal(replies.NO_WHITELIST, AuditEvent.SMTP_REFUSED_NO_WHITELIST)
    if not sender:
        if whitelist.is_known_operator(peer_dn):
            return None
        return Refusal(replies.DN_NOT_LISTED, AuditEvent.SMTP_REFUSED_DN_NOT_LISTED, peer_dn)
    decision = whitelist.is_trusted(domain_of(sender), peer_dn)
    if decision.trusted:
        return None
    if decision.reason is TrustRefusal.DOMAIN_NOT_LISTED:
        return Refusal(
            replies.DOMAIN_NOT_LISTED, AuditEvent.SMTP_REFUSED_DOMAIN_NOT_LISTED, decision.message
        )
    return Refusal(replies.DN_NOT_LISTED, AuditEvent.SMTP_REFUSED_DN_NOT_LISTED, decision.message)
