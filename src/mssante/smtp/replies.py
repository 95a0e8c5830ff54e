"""SMTP replies with their enhanced status codes (RFC 5321 §4.2, RFC 3463).

Every refusal the project sends is a named constant here: the text is public (a peer or a user
reads it), so it names the reason without revealing configuration.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class SmtpReply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str) -> SmtpReply:
        return SmtpReply(self.code, self.enhanced, text)

    def render(self, *, utf8: bool) -> str:
        """The reply line. UTF-8 text only when the client asked for SMTPUTF8 (RFC 6531
        §3.7.4.2); otherwise accents are dropped, so the line stays ASCII (RFC 5321 §2.4)."""
        line = str(self)
        return line if utf8 else ascii_text(line)


def ascii_text(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode("ascii")


OK = SmtpReply(250, "2.0.0", "OK")
SENDER_OK = SmtpReply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = SmtpReply(250, "2.1.5", "Recipient OK")
ACCEPTED = SmtpReply(250, "2.0.0", "Message accepted and stored")
QUEUED = SmtpReply(250, "2.0.0", "Message accepted for delivery")

# Transport security and peer identity (RFC 3207, RFC 3463 X.7.x)
STARTTLS_REQUIRED = SmtpReply(530, "5.7.0", "Must issue a STARTTLS command first")
NO_CLIENT_CERTIFICATE = SmtpReply(
    530, "5.7.1", "A client certificate is required in the MSSante trust space"
)
CERTIFICATE_REFUSED = SmtpReply(550, "5.7.1", "Client certificate refused")
DOMAIN_NOT_LISTED = SmtpReply(
    550, "5.7.1", "Sender domain is not in the MSSante trust space (whitelist)"
)
DN_NOT_LISTED = SmtpReply(
    550, "5.7.1", "Client certificate is not listed for the sender domain in the MSSante whitelist"
)
NO_WHITELIST = SmtpReply(451, "4.7.1", "Trust space list not available yet, try again later")

# Recipients and content
UNKNOWN_RECIPIENT = SmtpReply(550, "5.1.1", "No such mailbox here")
TOO_MANY_RECIPIENTS = SmtpReply(452, "4.5.3", "Too many recipients")
BARE_LINE_ENDING = SmtpReply(
    550, "5.6.0", "Bare LF or CR in message: lines must end with CRLF (RFC 5321 2.3.8)"
)
TOO_LARGE = SmtpReply(552, "5.3.4", "Message too big")
STORAGE_FAILED = SmtpReply(451, "4.3.0", "Temporary storage failure, try again later")

# Submission
AUTH_REQUIRED = SmtpReply(530, "5.7.0", "Authentication required")
SENDER_NOT_ALLOWED = SmtpReply(553, "5.7.1", "You may not send as this address")
FROM_NOT_ALLOWED = SmtpReply(553, "5.7.1", "The From: header names an address you may not send as")
SENDER_HEADER_REQUIRED = SmtpReply(
    553, "5.7.1", "Mail sent on behalf of another mailbox needs Sender: your own address"
)
OUTSIDE_TRUST_SPACE = SmtpReply(
    550,
    "5.7.1",
    "{address} n'appartient pas à l'espace de confiance MSSanté (not in the MSSante trust space)",
)
BAD_ADDRESS = SmtpReply(501, "5.1.3", "Bad address syntax")
