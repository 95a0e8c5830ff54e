"""Trace headers prepended to every message we accept (RFC 5321 §4.4, RFC 3848).

``Received`` records where the message came from and over what; ``X-MSSante-Trace`` records, in
a form easy to read by a program, the peer's address, the subject DN of the certificate it
presented and the TLS version and cipher, so that a user (or ``mssante mail list``) can see that
a message crossed the trust space over mutual TLS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

_FOLD = "\r\n\t"


@dataclass(frozen=True)
class TraceFacts:
    helo: str
    peer_ip: str
    hostname: str
    tls_version: str
    cipher: str
    peer_dn: str = ""  # client certificate subject (inbound from an operator)
    authenticated_as: str = ""  # submission: the account's login
    recipient: str = ""


def new_queue_id() -> str:
    return uuid.uuid4().hex[:16].upper()


def _clean(text: str) -> str:
    """Header-safe: one line, ASCII (non-ASCII letters as RFC 4514 ``\\XX`` UTF-8 escapes, so a
    DN stays a valid DN), no quote that would end a quoted string."""
    flat = " ".join(text.replace('"', "'").split())[:500]
    return "".join(c if c.isascii() else "".join(f"\\{b:02X}" for b in c.encode()) for c in flat)


def received_header(facts: TraceFacts, queue_id: str, now: datetime | None = None) -> bytes:
    protocol = "ESMTPSA" if facts.authenticated_as else ("ESMTPS" if facts.tls_version else "ESMTP")
    tls = f" (using {facts.tls_version} with cipher {facts.cipher})" if facts.tls_version else ""
    cert = f'{_FOLD}(client certificate "{_clean(facts.peer_dn)}")' if facts.peer_dn else ""
    auth = (
        f"{_FOLD}(authenticated as {_clean(facts.authenticated_as)})"
        if facts.authenticated_as
        else ""
    )
    rcpt = f" for <{_clean(facts.recipient)}>" if facts.recipient else ""
    when = format_datetime(now or datetime.now(UTC))
    line = (
        f"Received: from {_clean(facts.helo) or 'unknown'} ([{facts.peer_ip}]){tls}{cert}{auth}"
        f"{_FOLD}by {facts.hostname} (mssante) with {protocol} id {queue_id}{rcpt};{_FOLD}{when}\r\n"
    )
    return line.encode("utf-8")


def mssante_trace_header(facts: TraceFacts) -> bytes:
    parts = [f"peer={facts.peer_ip}"]
    if facts.peer_dn:
        parts.append(f'dn="{_clean(facts.peer_dn)}"')
        parts.append("mutual-tls=yes")
    if facts.authenticated_as:
        parts.append(f"auth={_clean(facts.authenticated_as)}")
    parts += [f"tls={facts.tls_version or 'none'}", f"cipher={facts.cipher or 'none'}"]
    return ("X-MSSante-Trace: " + (";" + _FOLD).join(parts) + "\r\n").encode("ascii")


def parse_trace(raw: bytes) -> dict[str, str]:
    """The fields of the first ``X-MSSante-Trace`` header of ``raw`` (empty if none)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ")
    for line in unfolded.split("\r\n"):
        if line.lower().startswith("x-mssante-trace:"):
            fields = (part.strip() for part in line.split(":", 1)[1].split(";"))
            pairs = (f.split("=", 1) for f in fields if "=" in f)
            return {k.strip(): _unescape(v.strip().strip('"')) for k, v in pairs}
    return {}


def _unescape(value: str) -> str:
    """Undo the ``\\XX`` escapes of :func:`_clean` (RFC 4514 hex pairs of UTF-8)."""
    if "\\" not in value:
        return value
    out, i = bytearray(), 0
    while i < len(value):
        pair = value[i + 1 : i + 3]
        if value[i] == "\\" and len(pair) == 2 and all(c in "0123456789ABCDEFabcdef" for c in pair):
            out.append(int(pair, 16))
            i += 3
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8", "replace")
