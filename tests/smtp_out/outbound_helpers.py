"""Helpers of the outbound queue tests: a real receiving MTA, a local DNS server, a clock.

Everything runs on 127.0.0.1 with real sockets and real TLS. The receiving MTA is an aiosmtpd
server that requires STARTTLS and a client certificate of the test PKI; it records what it got
and can be told to refuse recipients, or be stopped and started again.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from pathlib import Path
from typing import Any, cast

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session
from cryptography import x509

from mssante.audit.events import AuditEvent, ListSink
from mssante.config import OperatorSettings, PkiSettings, Settings, SmtpSettings, TlsSettings
from mssante.ops.mailstore import MailStore
from mssante.pki import IssuedPaths, TestPki
from mssante.pki.names import dn_string
from mssante.queue.delivery import DeliveryService
from mssante.queue.store import enqueue
from mssante.store.blobs import FileBlobStore
from mssante.store.db import Database
from mssante.trust.model import Whitelist, WhitelistDomain

OUR_DOMAIN = "operateur.test"
OUR_HOST = "smtp.operateur.test"
PEER_DOMAIN = "peer.test"
PEER_HOST = "smtp.peer.test"
UNLISTED_DOMAIN = "hors-espace.test"
SENDER = f"jeanne.dupont@{OUR_DOMAIN}"
SENDER_ID_NAT = "810002909371"  # 8 + an RPPS number with a valid Luhn key
PASSWORD = "correct horse battery staple"


# -- PKI and trust ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    pki: TestPki
    ours: IssuedPaths
    peer: IssuedPaths
    intruder: IssuedPaths  # valid chain, DN not listed for the peer's domain
    rogue: IssuedPaths  # the peer's very DN, issued by another PKI with the same CA names


def subject_of(paths: IssuedPaths) -> str:
    return dn_string(x509.load_pem_x509_certificate(paths.cert.read_bytes()).subject)


def make_whitelist(certs: Certs) -> Whitelist:
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def entry(name: str, paths: IssuedPaths) -> WhitelistDomain:
        return WhitelistDomain(name, name, (subject_of(paths),), "", "", at)

    return Whitelist(at, (entry(OUR_DOMAIN, certs.ours), entry(PEER_DOMAIN, certs.peer)))


# -- the receiving MTA -------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    client_dn: str
    tls_version: str


@dataclass
class RecordingHandler:
    """What the receiving MTA saw; ``rcpt_replies`` makes it refuse chosen recipients."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    mail_commands: int = 0
    tls_sessions: int = 0

    async def handle_EHLO(
        self, server: SmtpServer, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        session.host_name = hostname
        if session.ssl is not None:
            self.tls_sessions += 1  # one EHLO after STARTTLS per connection
        return responses

    async def handle_MAIL(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:  # fmt: skip
        self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:  # fmt: skip
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        ssl_object = session.ssl["ssl_object"] if session.ssl else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        dn = dn_string(x509.load_der_x509_certificate(der).subject) if der else ""
        self.messages.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                client_dn=dn,
                tls_version=ssl_object.version() if ssl_object else "",
            )
        )
        return "250 2.0.0 Message accepted and stored"


class Receiver:
    """An aiosmtpd MTA on 127.0.0.1 requiring STARTTLS and a client certificate."""

    def __init__(self, port: int, certs: Certs, served: IssuedPaths, *, tls: bool = True) -> None:
        self.port = port
        self.handler = RecordingHandler()
        self._context = _server_context(certs, served) if tls else None
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def start(self) -> None:
        kwargs: dict[str, Any] = {"require_starttls": True, "tls_context": self._context}
        if self._context is None:
            kwargs = {}
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname=PEER_HOST, **kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def _server_context(certs: Certs, served: IssuedPaths) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(served.fullchain, served.key)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no session
    paths = certs.pki.paths()
    ctx.load_verify_locations(cafile=str(paths.root))
    ctx.load_verify_locations(cafile=str(paths.intermediates))
    return ctx


# -- a local DNS server ------------------------------------------------------------------------


class DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: dict[tuple[str, str], list[str]]) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        if not any(known == name for known, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif records := self.zone.get((name, kind)):
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", kind, *records))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@dataclass
class LocalDns:
    zone: dict[tuple[str, str], list[str]]
    port: int

    def resolver(self) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 3.0
        return resolver


# -- the operator that delivers ------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand: retries happen at the scheduled time, no sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class Operator:
    """Our side: settings, stores, the delivery service, a local sender with a mailbox."""

    settings: Settings
    db: Database
    blobs: FileBlobStore
    mail_store: MailStore
    service: DeliveryService
    clock: Clock
    audit: ListSink
    whitelist_ref: list[Whitelist | None]

    def submit(
        self,
        recipients: list[str],
        *,
        sender: str = SENDER,
        subject: str = "Compte rendu",
        message_id: str | None = None,
    ) -> int:
        """Queue a message as the submission server would (body stored, rows committed)."""
        mid = message_id or f"<{uuid.uuid4().hex}@{OUR_DOMAIN}>"
        raw = make_message(sender, recipients, subject, mid)
        digest = self.blobs.put(raw)
        with self.db.session() as session:
            return enqueue(
                session,
                digest=digest,
                size=len(raw),
                sender=sender,
                recipients=recipients,
                message_id=mid,
                account=sender,
                now=self.clock(),
            )

    def inbox(self, address: str = SENDER) -> list[bytes]:
        """Raw messages in ``address``'s INBOX, oldest first."""
        summaries = self.mail_store.list_messages(address)
        return [self.mail_store.read(s.blob_sha256) for s in reversed(summaries)]


def make_message(sender: str, recipients: list[str], subject: str, message_id: str) -> bytes:
    head = (
        f"From: Jeanne Dupont <{sender}>\r\n"
        f"To: {', '.join(recipients)}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "X-MSS-NIL: mssante-tests\r\n"
    )
    body = "Bonjour,\r\nvoici le compte rendu de la consultation.\r\n.\r\nUne ligne après un point.\r\n"
    return (head + "\r\n" + body).encode("utf-8")


def operator_settings(
    tmp_path: Path, certs: Certs, routes: dict[str, str], **smtp: Any
) -> Settings:
    paths = certs.pki.paths()
    smtp_options: dict[str, Any] = {
        "hostname": OUR_HOST,
        "routes": routes,
        "retry_schedule": [60, 300],
        "delay_notice_after": 600,
        "give_up_after": 3600,
        "connect_timeout": 5.0,
        "command_timeout": 10.0,
        "data_timeout": 10.0,
        "delivery_workers": 4,
        **smtp,
    }
    return Settings(
        data_dir=tmp_path / "operator",
        tls=TlsSettings(certificate=certs.ours.fullchain, key=certs.ours.key),
        pki=PkiSettings(
            trust_anchors=[paths.root],
            intermediates=[paths.intermediates],
            crl_sources=certs.pki.crl_sources(),
            crl_cache_dir=tmp_path / "crl",
        ),
        operator=OperatorSettings(name="OPERATEUR TEST", domains=[OUR_DOMAIN]),
        smtp=SmtpSettings(**smtp_options),
    )


def parse(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=compat32)


def report_fields(dsn: Message) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(per-message fields, per-recipient fields) of a DSN's message/delivery-status part."""
    status_part = dsn.get_payload()[1]
    assert status_part.get_content_type() == "message/delivery-status"
    blocks = status_part.get_payload()
    as_dicts = [{k: " ".join(str(v).split()) for k, v in block.items()} for block in blocks]
    return as_dicts[0], as_dicts[1:]


def audit_events(db: Database) -> list[tuple[str, str]]:
    """(event, target) of every entry of the database audit log, in order."""
    from mssante.audit.log import iter_entries

    return [(entry.event, entry.target) for entry in iter_entries(db)]


def peer_refusals(sink: ListSink) -> list[dict[str, Any]]:
    return [dict(r.context) for r in sink.records if r.event is AuditEvent.QUEUE_PEER_REFUSED]
