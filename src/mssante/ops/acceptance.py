"""The one acceptance path: every message that enters the operator, whatever its door, passes
these checks in this order and is committed by this code (docs/acceptance.md).

Doors: inbound SMTP from a listed peer, SMTP submission (587/465, and ``mssante send``, which
uses it), the webmail, the API to come, and the reports this operator writes (DSNs from the
queue, MDNs a reader sends). A door only translates: it gathers its protocol's facts into an
:class:`Origin`, calls the stages, and turns a :class:`~mssante.ops.refusals.Refusal` into its
own words (an SMTP reply, an HTTP status, a form error).

Stages:

1. **sender**: our users send as an address their account may use (its own mailboxes, and
   those it holds a send grant on); a report has the null sender. A peer's sender was checked
   by the SMTP door against the whitelist with its certificate (transport, before this).
2. **recipients**: at most ``smtp.max_recipients``; from our users, each of the trust space (one
   of our domains and existing, or a whitelisted domain); from a peer, an open local mailbox.
3. **content**: size; CRLF line endings (RFC 5321 §2.3.8); header lines that are all fields,
   with the single fields once (RFC 5322 §3.6); ``From:`` aligned (our users: an address they
   may send as, with ``Sender:`` their own for a delegated mailbox and, when present, always
   one they may send as, RFC 5322 §3.6.2; a peer: the envelope sender's domain, or one the
   whitelist lists for its certificate); a MIME tree within ``mime.max_depth`` and
   ``mime.max_parts`` (mail/mime.py); the patients its XDM packages name have not opposed
   (BRIEF §7); the sending mailbox's hourly limit.
4. **stamping**: trace fields brought by the client or the peer renamed (only ours is read);
   the door's trace headers; ``X-MSS-NIL`` on our users' mail that has none (client
   référentiel §3.8: the sending software, on every mail).
5. **commit**: one transaction writes the local entries, the queue rows, the Sent copy and the
   audit entry; after the commit, "this mailbox changed" is published and the queue woken.

Every refusal is audited here, once, with its event, whatever the door.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field, replace
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from enum import StrEnum
from time import monotonic
from typing import Any, Protocol

from sqlalchemy.orm import Session

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.config import MimeSettings
from mssante.errors import MssanteError
from mssante.mail import mime
from mssante.mail.xdm import XdmUnreadable, may_carry_xdm, patients_of
from mssante.ops import refusals
from mssante.ops.accounts import Accounts, SendAs
from mssante.ops.bus import ChangeBus, call_after_commit, publish_after_commit
from mssante.ops.mailstore import Delivered, Headers, MailStore
from mssante.ops.patients import Oppositions
from mssante.ops.refusals import Reason, Refusal
from mssante.ratelimit import TokenBuckets
from mssante.store.group_commit import GroupCommitter
from mssante.trust.model import Whitelist

AuditAsync = Callable[[AuditRecord], Any]
# SMTP smuggling defence: a LF not preceded by CR, or a CR not followed by LF (RFC 5321 §2.3.8).
_BARE_LINE_ENDING = re.compile(rb"(?<!\r)\n|\r(?!\n)")
_HEADER_LIMIT = 200_000
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")  # RFC 5322 §3.6.8 field-name ":"
_TRACE_FIELD = re.compile(rb"(?im)^x-mssante-trace[ \t]*:")
_AT_MOST_ONCE = frozenset(  # RFC 5322 §3.6, the table's "max 1" fields
    {b"date", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc", b"message-id"}
    | {b"in-reply-to", b"references", b"subject"}
)


class Door(StrEnum):
    """Where a message came in (the audit log's ``via``)."""

    INBOUND = "inbound"  # SMTP from a peer operator of the trust space
    SUBMISSION = "submission"  # SMTP submission, 587 and 465 (and `mssante send`)
    WEBMAIL = "webmail"
    API = "api"
    REPORT = "report"  # a DSN this operator writes (the outbound queue)


@dataclass(frozen=True)
class Origin:
    """Who hands the message in: the door, and what its protocol proved."""

    door: Door
    login: str = ""  # our users' doors: the authenticated account
    peer_dn: str = ""  # inbound: the verified certificate's subject DN
    peer_ip: str = ""

    @property
    def from_peer(self) -> bool:
        return self.door is Door.INBOUND

    @property
    def from_user(self) -> bool:
        return self.door in (Door.SUBMISSION, Door.WEBMAIL, Door.API)

    @property
    def actor(self) -> str:
        return self.login or self.peer_dn or self.peer_ip or "?"


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    max_recipients: int
    messages_per_hour: int
    mime: MimeSettings = field(default_factory=MimeSettings)


@dataclass(frozen=True)
class OutgoingMessage:
    """Remote recipients of an accepted message, for the outbound queue."""

    digest: str
    size: int
    sender: str
    recipients: Sequence[str]
    message_id: str
    account: str
    queue_id: str


class Enqueue(Protocol):
    """Puts remote recipients in the outbound queue, inside the caller's transaction."""

    def __call__(self, session: Session, message: OutgoingMessage) -> None: ...


@dataclass(frozen=True)
class AcceptanceContext:
    """What the acceptance path needs, built once by the operator's runtime."""

    local_domains: frozenset[str]
    limits: Limits
    software: str  # X-MSS-NIL for our users' mail that names none
    whitelist: Callable[[], Whitelist | None]
    store: MailStore
    accounts: Accounts
    oppositions: Oppositions
    committer: GroupCommitter
    enqueue: Enqueue
    wake_queue: Callable[[], None]
    bus: ChangeBus
    audit: AuditAsync


class MessageRefused(MssanteError):
    """The message was refused; ``public`` is safe to show the person who sent it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.public())
        self.refusal = refusal
        self.public = refusal.public()


@dataclass(frozen=True)
class Accepted:
    queue_id: str
    delivered: tuple[Delivered, ...]  # local entries (a duplicate: already held, not stored)
    queued: int  # remote recipients handed to the queue


@dataclass(frozen=True)
class _Plan:
    """What the commit writes: decided by the stages, written in one transaction."""

    origin: Origin
    sender: str
    local: tuple[str, ...]
    remote: tuple[str, ...]
    digest: str
    size: int
    headers: Headers
    queue_id: str
    delegated_from: str | None


class Acceptance:
    def __init__(self, ctx: AcceptanceContext, *, clock: Callable[[], float] | None = None) -> None:
        self.ctx = ctx
        per_hour = ctx.limits.messages_per_hour
        self._sending = TokenBuckets(per_hour / 3600.0, float(per_hour), clock=clock or monotonic)
        self.reports = Reports(ctx.store, ctx.bus.publish)

    # -- stage 1: sender -----------------------------------------------------------------------
    async def sendable(self, login: str) -> SendAs:
        """The addresses ``login`` may send as (a door may keep them for a session)."""
        return await asyncio.to_thread(self.ctx.accounts.sendable_addresses, login)

    async def check_sender(self, origin: Origin, sender: str, allowed: Set[str]) -> Refusal | None:
        if not origin.from_user or sender.lower() in allowed:
            return None
        refusal = Refusal.of(refusals.SENDER_NOT_ALLOWED, sender, address=sender)
        return await self._refused(origin, refusal, sender)

    # -- stage 2: recipients -------------------------------------------------------------------
    async def check_recipient(
        self, origin: Origin, address: str, already: int, tally: RecipientTally | None = None
    ) -> Refusal | None:
        """``address`` as the recipient after ``already`` accepted ones. With a ``tally`` (an
        SMTP session's), only the first refusal is audited in detail, the next are counted
        there for one summary entry (10,000 pipelined RCPT must not write 10,000 rows)."""
        refusal = _count(already, self.ctx.limits.max_recipients)
        if refusal is None:
            refusal = await self._recipient(origin, address)
        if refusal is None:
            return None
        if tally is not None and tally.count(refusal, address):
            return refusal
        return await self._refused(origin, refusal, address)

    async def _recipient(self, origin: Origin, address: str) -> Refusal | None:
        domain = domain_of(address)
        if not domain or "@" not in address:
            return Refusal.of(refusals.BAD_ADDRESS, address, address=address)
        if domain in self.ctx.local_domains:
            if await asyncio.to_thread(self.ctx.store.is_local, address):
                return None
            return Refusal.of(_unknown(origin), address, address=address)
        if origin.from_peer:
            return Refusal.of(_unknown(origin), address, address=address)
        return check_trust_space(self.ctx.whitelist(), self.ctx.local_domains, address)

    # -- stages 3 to 5: content, stamping, commit ----------------------------------------------
    async def accept(
        self,
        origin: Origin,
        sender: str,
        recipients: Sequence[str],
        raw: bytes,
        *,
        allowed: Set[str] = frozenset(),
        trace: bytes = b"",
        queue_id: str,
    ) -> Accepted:
        """Check the content of a message whose sender and recipients passed stages 1–2, stamp
        it and commit it. Raises :class:`MessageRefused`."""
        head = _header(raw)  # parsed once for every stage (a hot path: every message)
        refusal = await self._content(origin, sender, raw, head, allowed)
        if refusal is not None:
            raise MessageRefused(refusal)
        handed_in = hashlib.sha256(raw).hexdigest()  # with the Message-ID: the dedupe key
        message = trace + self._stamp(origin, untrusted_traces(raw), head)
        plan = await self._plan(
            origin,
            sender=sender,
            recipients=recipients,
            message=message,
            head=head,
            allowed=allowed,
            queue_id=queue_id,
            handed_in=handed_in,
        )
        delivered = await self.ctx.committer.run(lambda session: self._write(session, plan))
        return Accepted(queue_id, tuple(delivered), len(plan.remote))

    async def submit(
        self,
        origin: Origin,
        sender: str,
        recipients: Sequence[str],
        raw: bytes,
        *,
        trace: bytes = b"",
        queue_id: str,
        report: bool = False,
    ) -> Accepted:
        """The whole path for a door that hands a whole message (webmail, API): stages 1 to 5.
        ``report``: an MDN the reader chose to send, with the null sender (RFC 8098 §2.1,
        RFC 5321 §4.5.5). Raises :class:`MessageRefused`."""
        allowed = await self.sendable(origin.login)
        refusal = None if report else await self.check_sender(origin, sender, allowed)
        if refusal is None and not recipients:
            refusal = await self._refused(origin, Refusal.of(refusals.NO_RECIPIENT), "")
        for index, address in enumerate(recipients):
            refusal = refusal or await self.check_recipient(origin, address, index)
        if refusal is not None:
            raise MessageRefused(refusal)
        return await self.accept(
            origin, sender, recipients, raw, allowed=allowed, trace=trace, queue_id=queue_id
        )

    async def _content(
        self, origin: Origin, sender: str, raw: bytes, head: Message, allowed: Set[str]
    ) -> Refusal | None:
        refusal = (
            check_size(len(raw), self.ctx.limits.max_message_bytes)
            or check_line_endings(raw)
            or check_header_fields(raw)
            or self._from(origin, sender, head, allowed)
        )
        if refusal is None:
            refusal = await self._structure(raw)
        target = sender
        if refusal is None:
            refusal, patient = await self._patients(raw)
            target = patient or sender
        if refusal is None and origin.from_user and sender:
            refusal = self._limit(sender)
        return None if refusal is None else await self._refused(origin, refusal, target)

    def _from(
        self, origin: Origin, sender: str, head: Message, allowed: Set[str]
    ) -> Refusal | None:
        if origin.from_user:
            return check_from_header(head, allowed) or check_sender_field(head, allowed)
        if origin.from_peer:
            return check_from_aligned(head, sender, origin.peer_dn, self.ctx.whitelist())
        return None  # a report this operator wrote

    async def _structure(self, raw: bytes) -> Refusal | None:
        """No MIME tree deeper or larger than every reader can take (mail/mime.py)."""
        limits = self.ctx.limits.mime
        if mime.surely_within(raw, limits):  # the usual case, decided without a thread
            return None
        exceeded = await asyncio.to_thread(mime.exceeds, raw, limits)
        if exceeded is None:
            return None
        allowed = limits.max_depth if exceeded is mime.Exceeded.DEPTH else limits.max_parts
        return Refusal.of(refusals.MIME_TOO_DEEP, f"{exceeded.value} over {allowed}")

    async def _patients(self, raw: bytes) -> tuple[Refusal | None, str]:
        """BRIEF §7: no message about a patient who opposed it; the INS read from the XDM."""
        if not may_carry_xdm(raw):  # the usual case, decided without a thread
            return None, ""
        try:
            facts = await asyncio.to_thread(patients_of, raw, self.ctx.limits.mime)
        except XdmUnreadable as exc:
            return Refusal.of(refusals.BAD_DOCUMENT, str(exc)[:300]), ""
        for ins in sorted(facts.patients):
            if await asyncio.to_thread(self.ctx.oppositions.find, ins) is not None:
                return Refusal.of(refusals.PATIENT_OPPOSED, ins), ins
        return None, ""

    def _limit(self, sender: str) -> Refusal | None:
        wait = self._sending.take(sender.lower())
        if wait <= 0:
            return None
        return Refusal.of(refusals.SENDING_LIMIT, f"{wait:.0f} s", address=sender)

    def _stamp(self, origin: Origin, raw: bytes, head: Message) -> bytes:
        if not origin.from_user or head.get("X-MSS-NIL") is not None:
            return raw
        return f"X-MSS-NIL: {self.ctx.software}\r\n".encode() + raw

    async def _plan(
        self,
        origin: Origin,
        *,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        head: Message,
        allowed: Set[str],
        queue_id: str,
        handed_in: str,
    ) -> _Plan:
        """``head``: the header as handed in (the trace and stamp added since change none of
        the fields the store keeps)."""
        digest = await asyncio.to_thread(self.ctx.store.blobs.put, message)  # fsynced
        local = tuple(r for r in recipients if domain_of(r) in self.ctx.local_domains)
        remote = tuple(r for r in recipients if domain_of(r) not in self.ctx.local_domains)
        owner = delegated_from(head, allowed) if origin.from_user else None
        headers = replace(Headers.of(head), content_sha256=handed_in)
        return _Plan(origin, sender, local, remote, digest, len(message), headers, queue_id, owner)

    # -- the commit ------------------------------------------------------------------------------
    def _write(self, session: Session, plan: _Plan) -> list[Delivered]:
        """One transaction: entries, queue rows, the Sent copy, the audit entries; then (after
        the commit) the mailboxes' news and the queue's wake-up."""
        store, origin = self.ctx.store, plan.origin
        delivered = []
        if plan.local:
            delivered = store.deliver_in(session, plan.digest, plan.size, plan.headers, plan.local)
        if plan.remote:
            self.ctx.enqueue(session, _outgoing(plan))
            call_after_commit(session, self.ctx.wake_queue)
        changed = [d.address for d in delivered if not d.duplicate]
        if origin.from_user and plan.sender:  # a report goes out with a null sender: no copy
            store.deliver_in(
                session,
                plan.digest,
                plan.size,
                plan.headers,
                [plan.sender],
                folder="Sent",
                flags=["\\Seen"],
                dedupe=False,  # kept even when the sender is among the recipients
            )
            changed.append(plan.sender)
        publish_after_commit(session, changed, self.ctx.bus.publish)
        for record in _records(plan, delivered):
            append(session, record)
        return delivered

    # -- refusals ------------------------------------------------------------------------------
    async def _refused(self, origin: Origin, refusal: Refusal, target: str) -> Refusal:
        context = {
            "via": origin.door.value,
            "peer": origin.peer_ip,
            "reply": str(refusal.reply),
            "code": refusal.code,
            "detail": refusal.detail,
        }
        await self.ctx.audit(AuditRecord(refusal.event, origin.actor, target, context))
        return refusal


@dataclass
class RecipientTally:
    """The recipients refused in one transaction: the first is audited in detail, the others
    only counted (:meth:`count`), then summed up in one entry (:meth:`summary`)."""

    refused: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    sample: list[str] = field(default_factory=list)

    def count(self, refusal: Refusal, address: str) -> bool:
        """Note a refusal; True when it is only counted (not the transaction's first)."""
        self.refused += 1
        if self.refused == 1:
            return False
        self.codes[refusal.code or str(refusal.reply.code)] += 1
        if len(self.sample) < 5:
            self.sample.append(address[:200])
        return True

    def summary(self) -> dict[str, str] | None:
        """The context of the summary entry, or None when nothing was only counted."""
        if self.refused < 2:
            return None
        codes = ",".join(f"{code}:{n}" for code, n in sorted(self.codes.items()))
        return {"refused": str(self.refused), "codes": codes, "sample": " ".join(self.sample)}


class Reports:
    """The report door: a report this operator wrote (a DSN from the outbound queue, or one
    the operator's command line writes when it drops queued mail) for a local recipient, inside
    the caller's transaction. Stage 2 for a local address (an open mailbox), then the same
    write as every message, and the news once committed (``publish``: the process's change
    bus; a command-line process has nobody to tell, the servers' sessions poll)."""

    def __init__(self, store: MailStore, publish: Callable[[str], None]) -> None:
        self._store = store
        self._publish = publish

    def deliver_report_in(
        self, session: Session, digest: str, size: int, headers: Headers, recipient: str
    ) -> bool:
        """False when ``recipient`` has no open mailbox here (nothing written)."""
        if self._store.open_mailbox(session, recipient) is None:
            return False
        delivered = self._store.deliver_in(session, digest, size, headers, [recipient])
        changed = [d.address for d in delivered if not d.duplicate]
        publish_after_commit(session, changed, self._publish)
        return True


def _outgoing(plan: _Plan) -> OutgoingMessage:
    return OutgoingMessage(
        plan.digest,
        plan.size,
        plan.sender,
        plan.remote,
        plan.headers.message_id,
        plan.origin.login,
        plan.queue_id,
    )


def _records(plan: _Plan, delivered: Sequence[Delivered]) -> list[AuditRecord]:
    origin = plan.origin
    context: dict[str, Any] = {
        "queue_id": plan.queue_id,
        "from": plan.sender,
        "message_id": plan.headers.message_id,
        "size": plan.size,
        "via": origin.door.value,
    }
    target = ",".join((*plan.local, *plan.remote))
    dropped = [_dropped(plan, d.address) for d in delivered if d.duplicate]
    if origin.from_peer:
        context |= {
            "peer": origin.peer_ip,
            "duplicates": [d.address for d in delivered if d.duplicate],
        }
        return [
            AuditRecord(AuditEvent.SMTP_MESSAGE_ACCEPTED, origin.actor, target, context),
            *dropped,
        ]
    context |= {"local": len(plan.local), "remote": len(plan.remote)}
    records = [
        AuditRecord(AuditEvent.SUBMISSION_MESSAGE_ACCEPTED, origin.actor, target, context),
        *dropped,
    ]
    if plan.delegated_from is not None:  # the person behind mail sent as a shared mailbox
        extra = {"queue_id": plan.queue_id, "via": origin.door.value}
        records.append(
            AuditRecord(AuditEvent.DELEGATED_SEND, origin.actor, plan.delegated_from, extra)
        )
    return records


def _dropped(plan: _Plan, address: str) -> AuditRecord:
    """A redelivery not stored again: the mailbox holds the same Message-ID and content."""
    context = {
        "queue_id": plan.queue_id,
        "message_id": plan.headers.message_id,
        "content_sha256": plan.headers.content_sha256,
        "via": plan.origin.door.value,
        "peer": plan.origin.peer_ip,
    }
    return AuditRecord(AuditEvent.MESSAGE_DUPLICATE_DROPPED, plan.origin.actor, address, context)


# -- the checks, as plain functions: facts in, None or a Refusal out ------------------------------


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def _count(already: int, maximum: int) -> Refusal | None:
    if already >= maximum:
        return Refusal.of(refusals.TOO_MANY_RECIPIENTS, f"{already} already")
    return None


def _unknown(origin: Origin) -> Reason:
    return refusals.PEER_UNKNOWN_RECIPIENT if origin.from_peer else refusals.UNKNOWN_RECIPIENT


def check_trust_space(
    whitelist: Whitelist | None, local_domains: Set[str], address: str
) -> Refusal | None:
    """Only addresses of the trust space: our own domains, or a whitelisted domain. Also what
    the webmail asks while a person types an address (a warning before sending)."""
    domain = domain_of(address)
    if not domain or "@" not in address:
        return Refusal.of(refusals.BAD_ADDRESS, address, address=address)
    if domain in local_domains:
        return None
    if whitelist is not None and whitelist.is_listed(domain).trusted:
        return None
    return Refusal.of(refusals.OUTSIDE_TRUST_SPACE, address, address=address)


def check_size(size: int, maximum: int) -> Refusal | None:
    if size <= maximum:
        return None
    return Refusal.of(refusals.TOO_LARGE, f"{size} > {maximum}")


def check_line_endings(data: bytes) -> Refusal | None:
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:  # C-speed counts: the usual case
        return None
    match = _BARE_LINE_ENDING.search(data)
    if match is None:
        return None
    return Refusal.of(refusals.BARE_LINE_ENDING, f"at byte {match.start()}")


def check_header_fields(data: bytes) -> Refusal | None:
    """RFC 5322 §2.2 and §3.6: every header line is a field (a name of printable characters, no
    space, then a colon) or the fold of one, and the fields that may appear once do. A line
    with no colon, ``From :`` or a second ``From`` would be read differently by different
    readers: the one we show and the ones our users' clients show must not disagree."""
    end = data.find(b"\r\n\r\n", 0, _HEADER_LIMIT)
    if end < 0 and len(data) > _HEADER_LIMIT:
        return Refusal.of(refusals.MALFORMED_HEADER, "header", problem="header too long")
    head = data[: end if end >= 0 else len(data)]
    seen: set[bytes] = set()
    for number, line in enumerate(head.split(b"\r\n"), start=1):
        if line[:1] in (b" ", b"\t") and number > 1:
            continue  # a folded line (RFC 5322 §2.2.3)
        named = _FIELD_NAME.match(line)
        if named is None:
            problem = f"line {number} is not a header field"
            return Refusal.of(refusals.MALFORMED_HEADER, problem, problem=problem)
        name = named.group(1).lower()
        if name in _AT_MOST_ONCE:
            if name in seen:
                problem = f"more than one {name.decode().title()} field"
                return Refusal.of(refusals.MALFORMED_HEADER, problem, problem=problem)
            seen.add(name)
    return None


def untrusted_traces(data: bytes) -> bytes:
    """Trace fields a client or a peer wrote are renamed ``X-MSSante-Untrusted-Trace``: only the
    one this operator prepends is read (``mssante mail list``), so nobody can bring a forged
    "via mutual TLS" (mail/trace.py)."""
    end = data.find(b"\r\n\r\n", 0, _HEADER_LIMIT)
    head = data[: end if end >= 0 else len(data)]
    if b"x-mssante-trace" not in head.lower():  # the usual case: nothing to rename
        return data
    renamed = _TRACE_FIELD.sub(b"X-MSSante-Untrusted-Trace:", head)
    return renamed + data[len(head) :]


def check_sender_field(data: Message | bytes, allowed: Set[str]) -> Refusal | None:
    """Our users: ``Sender:``, when present, is one address the account may send as (RFC 5322
    §3.6.2: the agent responsible for sending), never another professional."""
    values = _header(data).get_all("Sender") or []
    if not values:
        return None
    addresses = _addresses(values)
    if len(values) == 1 and len(addresses) == 1 and addresses[0] in allowed:
        return None
    return Refusal.of(refusals.SENDER_FIELD_NOT_ALLOWED, ", ".join(addresses) or "empty Sender")


def check_from_header(data: Message | bytes, allowed: Set[str]) -> Refusal | None:
    """Our users: ``From:`` names only addresses the account may send as (exactly one field).

    When ``allowed`` tells the account's own addresses apart (:class:`SendAs`) and ``From:`` is
    a mailbox it sends as by delegation, the message must carry ``Sender:`` one of the
    account's own addresses (RFC 5322 §3.6.2): the recipient sees who wrote for the owner."""
    msg = _header(data)
    values = msg.get_all("From") or []
    addresses = _addresses(values)
    if not (len(values) == 1 and addresses and all(a in allowed for a in addresses)):
        return Refusal.of(refusals.FROM_NOT_ALLOWED, ", ".join(addresses) or "no From")
    if delegated_from(data, allowed) and not _sender_is_own(msg, _own(allowed)):
        detail = f"{', '.join(addresses)} without Sender: the account's own address"
        return Refusal.of(refusals.SENDER_HEADER_REQUIRED, detail)
    return None


def check_from_aligned(
    data: Message | bytes, sender: str, peer_dn: str, whitelist: Whitelist | None
) -> Refusal | None:
    """A peer: every ``From:`` address is of the envelope sender's domain or of a domain the
    whitelist lists for the peer's certificate (so a listed operator cannot write as a domain it
    does not serve). A report (null sender) may also come from the peer's own host name, the
    certificate's CN (a Postfix DSN is ``From: MAILER-DAEMON@<myhostname>``)."""
    values = _header(data).get_all("From") or []
    addresses = _addresses(values)
    if len(values) != 1 or not addresses:
        return Refusal.of(refusals.FROM_NOT_ALIGNED, "no From" if not values else "several From")
    envelope = domain_of(sender) if sender else ""
    host = _common_name(peer_dn)
    for address in addresses:
        domain = domain_of(address)
        if domain == envelope or (not sender and domain == host):
            continue
        if whitelist is not None and whitelist.is_trusted(domain, peer_dn).trusted:
            continue
        return Refusal.of(refusals.FROM_NOT_ALIGNED, f"From: {address} via {peer_dn}")
    return None


def delegated_from(data: Message | bytes, allowed: Set[str]) -> str | None:
    """The ``From:`` address if the account sends as it by delegation (not its own), else None."""
    own = _own(allowed)
    delegated = [a for a in _addresses(_header(data).get_all("From") or []) if a not in own]
    return delegated[0] if delegated else None


def _own(allowed: Set[str]) -> Set[str]:
    own: Set[str] = getattr(allowed, "own", allowed)
    return own


def _addresses(values: Sequence[object]) -> list[str]:
    return [a.lower() for _, a in getaddresses([str(v) for v in values]) if a]


def _sender_is_own(msg: Message, own: Set[str]) -> bool:
    values = msg.get_all("Sender") or []
    addresses = _addresses(values)
    return len(values) == 1 and len(addresses) == 1 and addresses[0] in own


def _common_name(dn: str) -> str:
    for part in dn.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().upper() == "CN":
            return value.strip().lower()
    return ""


def _head(data: bytes) -> bytes:
    return data[:_HEADER_LIMIT].split(b"\r\n\r\n", 1)[0]


def _header(data: Message | bytes) -> Message:
    if isinstance(data, Message):
        return data
    return BytesHeaderParser(policy=compat32).parsebytes(_head(data) + b"\r\n\r\n")
