"""Names of the test trust space, and SMTP clients that play operator A or a mail client."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

DOMAIN_A, DOMAIN_B = "a.mssante.test", "b.mssante.test"
HOST_A, HOST_B = "smtp.a.mssante.test", "smtp.b.mssante.test"
STRUCT_A, STRUCT_B = "341459958900028", "318310021300028"
DN_A = f"CN={HOST_A},OU={STRUCT_A},O=OPERATEUR A,ST=Gironde (33),C=FR"
DN_B = f"CN={HOST_B},OU={STRUCT_B},O=OPERATEUR B,ST=Haute-Garonne (31),C=FR"


@dataclass(frozen=True)
class Cert:
    cert: Path  # full chain PEM
    key: Path


def client_context(
    cert: Cert | None, *, ca: Path, version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # we connect to 127.0.0.1; the server's DN is checked apart
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def message(
    sender: str,
    to: str,
    subject: str = "Compte rendu",
    body: str = "Bonjour,\r\nCordialement.\r\n",
    message_id: str = "",
) -> bytes:
    mid = message_id or f"<{abs(hash((sender, to, subject, body)))}@test>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Wed, 25 Nov 2026 10:00:00 +0100\r\n\r\n{body}"
    ).encode()


class Client:
    """A blocking SMTP client (stdlib): run it with asyncio.to_thread from async tests."""

    def __init__(
        self, port: int, *, ssl_context: ssl.SSLContext | None = None, implicit: bool = False
    ) -> None:
        self.smtp = (
            smtplib.SMTP_SSL("127.0.0.1", port, context=ssl_context, timeout=20)
            if implicit
            else smtplib.SMTP("127.0.0.1", port, timeout=20)
        )
        self.smtp.ehlo(HOST_A)
        if ssl_context is not None and not implicit:
            self.smtp.starttls(context=ssl_context)
            self.smtp.ehlo(HOST_A)

    def cmd(self, line: str) -> tuple[int, str]:
        code, text = self.smtp.docmd(line)
        return code, text.decode("utf-8", "replace")

    def data(self, raw: bytes) -> tuple[int, str]:
        code, text = self.smtp.docmd("DATA")
        if code != 354:
            return code, text.decode()
        self.smtp.send(raw + (b"" if raw.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, text = self.smtp.getreply()
        return code, text.decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()
