"""The SMTP accept/refuse decisions, as plain functions: facts in, ``None`` or a Refusal out.

No socket, no database: the listeners gather the facts (peer certificate verification result,
whitelist in force, addresses) and apply these. Each Refusal carries the reply sent to the peer
(public) and the audit event that records it, with a detail for the audit log only.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from mssante.audit.events import AuditEvent
from mssante.pki.verify import VerificationResult
from mssante.smtp import replies
from mssante.smtp.replies import SmtpReply
from mssante.trust.model import TrustRefusal, Whitelist

# SMTP smuggling defence: a LF not preceded by CR, or a CR not followed by LF (RFC 5321 §2.3.8).
_BARE_LINE_ENDING = re.compile(rb"(?<!\r)\n|\r(?!\n)")


@dataclass(frozen=True)
class Refusal:
    reply: SmtpReply
    event: AuditEvent
    detail: str = ""


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


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


def check_recipient_count(already: int, maximum: int) -> Refusal | None:
    """RFC 5321 §4.5.3.1.8: a server may limit recipients; 452 tells the client to try the
    rest in another transaction."""
    if already >= maximum:
        return Refusal(replies.TOO_MANY_RECIPIENTS, AuditEvent.SMTP_REFUSED_TOO_MANY_RECIPIENTS)
    return None


def check_local_recipient(is_local: bool, address: str) -> Refusal | None:
    if is_local:
        return None
    return Refusal(replies.UNKNOWN_RECIPIENT, AuditEvent.SMTP_REFUSED_UNKNOWN_RECIPIENT, address)


def check_line_endings(data: bytes) -> Refusal | None:
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:  # C-speed counts: the usual case
        return None
    match = _BARE_LINE_ENDING.search(data)
    if match is None:
        return None
    return Refusal(
        replies.BARE_LINE_ENDING,
        AuditEvent.SMTP_REFUSED_BARE_LINE_ENDING,
        f"at byte {match.start()}",
    )


def check_size(size: int, maximum: int) -> Refusal | None:
    if size <= maximum:
        return None
    return Refusal(replies.TOO_LARGE, AuditEvent.SMTP_REFUSED_TOO_LARGE, f"{size} > {maximum}")


# -- submission, from our users --------------------------------------------------------------


def check_envelope_sender(sender: str, allowed: Set[str]) -> Refusal | None:
    if sender.lower() in allowed:
        return None
    return Refusal(replies.SENDER_NOT_ALLOWED, AuditEvent.SUBMISSION_REFUSED_SENDER, sender)


def check_submission_recipient(
    whitelist: Whitelist | None, local_domains: Set[str], address: str
) -> Refusal | None:
    """Only addresses of the trust space: our own domains, or a whitelisted domain."""
    domain = domain_of(address)
    if not domain or "@" not in address:
        return Refusal(replies.BAD_ADDRESS, AuditEvent.SUBMISSION_REFUSED_RECIPIENT, address)
    if domain in local_domains:
        return None
    if whitelist is not None and whitelist.is_listed(domain).trusted:
        return None
    reply = replies.OUTSIDE_TRUST_SPACE.with_text(
        replies.OUTSIDE_TRUST_SPACE.text.format(address=address)
    )
    return Refusal(reply, AuditEvent.SUBMISSION_REFUSED_RECIPIENT, address)


def check_from_header(data: bytes, allowed: Set[str]) -> Refusal | None:
    """The ``From:`` header must name only addresses the account may send as (and at least one).

    When ``allowed`` tells the account's own addresses apart (``allowed.own``, as
    :class:`mssante.ops.accounts.SendAs` does) and ``From:`` is a mailbox the account sends as
    by delegation, the message must carry ``Sender:`` one of the account's own addresses
    (RFC 5322 §3.6.2): the recipient sees who wrote on the owner's behalf."""
    msg = _head(data)
    values = msg.get_all("From") or []
    addresses = [addr.lower() for _, addr in getaddresses([str(v) for v in values]) if addr]
    if not (len(values) == 1 and addresses and all(a in allowed for a in addresses)):
        return Refusal(
            replies.FROM_NOT_ALLOWED,
            AuditEvent.SUBMISSION_REFUSED_SENDER,
            ", ".join(addresses) or "no From",
        )
    if delegated_from(data, allowed) and not _sender_is_own(msg, _own(allowed)):
        return Refusal(
            replies.SENDER_HEADER_REQUIRED,
            AuditEvent.SUBMISSION_REFUSED_SENDER,
            f"{', '.join(addresses)} without Sender: the account's own address",
        )
    return None


def delegated_from(data: bytes, allowed: Set[str]) -> str | None:
    """The ``From:`` address if the account sends as it by delegation (not its own), else None."""
    own = _own(allowed)
    addresses = [
        a.lower() for _, a in getaddresses([str(v) for v in _head(data).get_all("From") or []]) if a
    ]
    delegated = [a for a in addresses if a not in own]
    return delegated[0] if delegated else None


def _own(allowed: Set[str]) -> Set[str]:
    own: Set[str] = getattr(allowed, "own", allowed)
    return own


def _sender_is_own(msg: Message, own: Set[str]) -> bool:
    values = msg.get_all("Sender") or []
    addresses = [a.lower() for _, a in getaddresses([str(v) for v in values]) if a]
    return len(values) == 1 and len(addresses) == 1 and addresses[0] in own


def _head(data: bytes) -> Message:
    head = data.split(b"\r\n\r\n", 1)[0]
    return BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n")
