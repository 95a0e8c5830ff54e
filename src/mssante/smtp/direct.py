"""Submission without SMTP: the webmail hands a whole message to the same checks and the same
storage as port 587 (``smtp/submission.py``), so that a rule holds whichever way mail is sent.

Stages: sender (the account may send as the envelope sender) → recipients (count, each of the
trust space, local ones existing) → message (size, CRLF line endings, ``From:`` and ``Sender:``)
→ trace header (``Received: from webmail``) → :func:`store_submitted` → audit of a delegated
send, with the person behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.errors import MssanteError
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
from mssante.smtp.replies import UNKNOWN_RECIPIENT
from mssante.smtp.submission import SubmissionContext, store_submitted
from mssante.smtp.trace import TraceFacts, new_queue_id, received_header


class SubmissionRefused(MssanteError):
    """The message was refused; ``public`` is the reply's text, safe to show the user."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reply.text)
        self.refusal = refusal
        self.public = refusal.reply.text


@dataclass(frozen=True)
class DirectSubmission:
    ctx: SubmissionContext

    async def submit(
        self,
        login: str,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        *,
        peer: str,
        via: str = "webmail",
    ) -> str:
        """Check and store ``message``; its queue id. Raises :class:`SubmissionRefused`."""
        allowed = await asyncio.to_thread(self.ctx.accounts.sendable_addresses, login)
        refusal = check_envelope_sender(sender, allowed) or await self._check_recipients(recipients)
        refusal = refusal or (
            check_size(len(message), self.ctx.max_message_bytes)
            or check_line_endings(message)
            or check_from_header(message, allowed)
        )
        if refusal is not None:
            await self._audit(refusal, login, peer, via)
            raise SubmissionRefused(refusal)
        queue_id = new_queue_id()
        facts = TraceFacts(
            helo=via,
            peer_ip=peer,
            hostname=self.ctx.hostname,
            tls_version="",  # the browser's TLS ends at the web listener, not here
            cipher="",
            authenticated_as=login,
        )
        traced = received_header(facts, queue_id)
        await store_submitted(
            self.ctx, traced + message, sender, recipients, login=login, queue_id=queue_id, via=via
        )
        owner = delegated_from(message, allowed)
        if owner is not None:
            await self.ctx.audit(
                AuditRecord(
                    AuditEvent.DELEGATED_SEND,
                    actor=login,
                    target=owner,
                    context={"queue_id": queue_id, "via": via},
                )
            )
        return queue_id

    async def submit_report(self, login: str, to: str, report: bytes, *, peer: str) -> str:
        """A report the user chose to send (an MDN, RFC 8098 §2.1): empty envelope sender
        (RFC 5321 §4.5.5, so that no report is ever sent about it), one recipient, who must be
        of the trust space like any other."""
        refusal = await self._check_recipients([to]) or check_size(
            len(report), self.ctx.max_message_bytes
        )
        refusal = refusal or check_line_endings(report)
        if refusal is not None:
            await self._audit(refusal, login, peer, "webmail")
            raise SubmissionRefused(refusal)
        queue_id = new_queue_id()
        await store_submitted(
            self.ctx, report, "", [to], login=login, queue_id=queue_id, via="webmail"
        )
        return queue_id

    async def _check_recipients(self, recipients: Sequence[str]) -> Refusal | None:
        if not recipients:
            return Refusal(UNKNOWN_RECIPIENT, AuditEvent.SUBMISSION_REFUSED_RECIPIENT, "")
        refusal = check_recipient_count(len(recipients) - 1, self.ctx.max_recipients)
        for address in recipients:
            refusal = refusal or check_submission_recipient(
                self.ctx.whitelist(), self.ctx.local_domains, address
            )
            if (
                refusal is None
                and domain_of(address) in self.ctx.local_domains
                and not await asyncio.to_thread(self.ctx.store.is_local, address)
            ):
                refusal = Refusal(
                    UNKNOWN_RECIPIENT.with_text(f"{address} : adresse inconnue / no such mailbox"),
                    AuditEvent.SUBMISSION_REFUSED_RECIPIENT,
                    address,
                )
        return refusal

    async def _audit(self, refusal: Refusal, login: str, peer: str, via: str) -> None:
        await self.ctx.audit(
            AuditRecord(
                refusal.event,
                actor=login,
                target=refusal.detail,
                context={"peer": peer, "reply": str(refusal.reply), "via": via},
            )
        )
