"""SMTP replies with their enhanced status codes (RFC 5321 §4.2, RFC 3463).

The SMTP listeners' own replies (transport, peer identity, storage): the refusals of a message
itself, whatever its door, are the acceptance path's catalogue (``ops/refusals.py``). Every text
is public (a peer or a user reads it), so it names the reason without revealing configuration.
"""

from __future__ import annotations

from mssante.ops.refusals import SmtpReply

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
STORAGE_FAILED = SmtpReply(451, "4.3.0", "Temporary storage failure, try again later")

# Submission
AUTH_REQUIRED = SmtpReply(530, "5.7.0", "Authentication required")
