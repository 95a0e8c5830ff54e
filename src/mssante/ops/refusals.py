"""Why a message is refused, once for every door (docs/acceptance.md).

A :class:`Refusal` is the one refusal type of the acceptance path and of the SMTP listeners: a
stable ``code`` (the API's problem type, the tests' key), the SMTP reply with its enhanced
status code (RFC 5321 §4.2, RFC 3463), the public text in French and in English, the audit
event that records it, and a ``detail`` for the audit log only. Each door translates it into
its protocol's words (an SMTP reply, an HTTP status, a form error) and shows nothing else: the
public text names the reason without revealing configuration.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

from mssante.audit.events import AuditEvent


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


@dataclass(frozen=True)
class Refusal:
    """A refusal: the reply a peer or a client reads, the audit event, a detail for the log.

    ``code``, ``fr`` and ``en`` are set for the reasons of the catalogue below (:meth:`of`);
    the SMTP listeners' transport refusals (no STARTTLS, a certificate) carry only a reply."""

    reply: SmtpReply
    event: AuditEvent
    detail: str = ""
    code: str = ""
    fr: str = ""
    en: str = ""

    @classmethod
    def of(cls, reason: Reason, detail: str = "", **values: str) -> Refusal:
        """The refusal for ``reason``; ``values`` fill the ``{address}``-style fields of its
        texts (an address the user typed: theirs to see)."""
        fr, en = reason.fr.format(**values), reason.en.format(**values)
        reply = reason.reply.with_text(f"{fr} / {en}")
        return cls(reply, reason.event, detail, reason.code, fr, en)

    def public(self, language: str = "fr") -> str:
        """The text for a person, in their language (the reply's text when there is none)."""
        text = self.en if language == "en" else self.fr
        return text or self.reply.text

    @property
    def temporary(self) -> bool:
        return not self.reply.permanent

    def detailed(self, detail: str) -> Refusal:
        return replace(self, detail=detail)


@dataclass(frozen=True)
class Reason:
    """One entry of the catalogue: what a refusal says, in every door's words."""

    code: str
    reply: SmtpReply
    fr: str
    en: str
    event: AuditEvent


# -- the catalogue: every reason the acceptance path gives ---------------------------------------

SENDER_NOT_ALLOWED = Reason(
    "sender_not_allowed",
    SmtpReply(553, "5.7.1", ""),
    "vous ne pouvez pas envoyer avec l'adresse {address}",
    "you may not send as {address}",
    AuditEvent.SUBMISSION_REFUSED_SENDER,
)
FROM_NOT_ALLOWED = Reason(
    "from_not_allowed",
    SmtpReply(553, "5.7.1", ""),
    "l'en-tête From: nomme une adresse que vous ne pouvez pas utiliser",
    "the From: header names an address you may not send as",
    AuditEvent.SUBMISSION_REFUSED_SENDER,
)
SENDER_HEADER_REQUIRED = Reason(
    "sender_header_required",
    SmtpReply(553, "5.7.1", ""),
    "un message envoyé pour le compte d'une autre boîte doit porter Sender: votre adresse",
    "mail sent on behalf of another mailbox needs Sender: your own address",
    AuditEvent.SUBMISSION_REFUSED_SENDER,
)
FROM_NOT_ALIGNED = Reason(
    "from_not_aligned",
    SmtpReply(550, "5.7.1", ""),
    "l'en-tête From: nomme un domaine que l'opérateur émetteur ne sert pas",
    "the From: header names a domain the sending operator does not serve",
    AuditEvent.MESSAGE_REFUSED_FROM,
)
NO_RECIPIENT = Reason(
    "no_recipient",
    SmtpReply(554, "5.5.1", ""),
    "aucun destinataire",
    "no recipient",
    AuditEvent.SUBMISSION_REFUSED_RECIPIENT,
)
BAD_ADDRESS = Reason(
    "bad_address",
    SmtpReply(501, "5.1.3", ""),
    "adresse mal formée : {address}",
    "bad address syntax: {address}",
    AuditEvent.SUBMISSION_REFUSED_RECIPIENT,
)
OUTSIDE_TRUST_SPACE = Reason(
    "outside_trust_space",
    SmtpReply(550, "5.7.1", ""),
    "{address} n'appartient pas à l'espace de confiance MSSanté",
    "{address} is not in the MSSante trust space",
    AuditEvent.SUBMISSION_REFUSED_RECIPIENT,
)
DOMAIN_OUTSIDE_TRUST_SPACE = Reason(  # the queue's own decision at delivery time (BRIEF §2)
    "outside_trust_space",
    SmtpReply(550, "5.7.1", ""),
    "le domaine {domain} n'appartient pas à l'espace de confiance MSSanté",
    "domain {domain} is not in the MSSanté trust space (not on the whitelist)",
    AuditEvent.QUEUE_FAILED,
)
NO_WHITELIST = Reason(
    "no_whitelist",
    SmtpReply(451, "4.7.1", ""),
    "la liste blanche de l'espace de confiance n'est pas encore chargée",
    "the trust space list (whitelist) is not loaded yet",
    AuditEvent.QUEUE_DEFERRED,
)
UNKNOWN_RECIPIENT = Reason(
    "unknown_recipient",
    SmtpReply(550, "5.1.1", ""),
    "{address} : adresse inconnue",
    "{address}: no such mailbox here",
    AuditEvent.SUBMISSION_REFUSED_RECIPIENT,
)
PEER_UNKNOWN_RECIPIENT = Reason(  # the same, refused to a peer operator (its own event)
    "unknown_recipient",
    SmtpReply(550, "5.1.1", ""),
    "{address} : adresse inconnue",
    "{address}: no such mailbox here",
    AuditEvent.SMTP_REFUSED_UNKNOWN_RECIPIENT,
)
TOO_MANY_RECIPIENTS = Reason(  # RFC 5321 §4.5.3.1.8: 452, the rest in another transaction
    "too_many_recipients",
    SmtpReply(452, "4.5.3", ""),
    "trop de destinataires",
    "too many recipients",
    AuditEvent.SMTP_REFUSED_TOO_MANY_RECIPIENTS,
)
TOO_LARGE = Reason(
    "too_large",
    SmtpReply(552, "5.3.4", ""),
    "message trop volumineux",
    "message too big",
    AuditEvent.SMTP_REFUSED_TOO_LARGE,
)
BARE_LINE_ENDING = Reason(  # SMTP smuggling defence (RFC 5321 §2.3.8)
    "bare_line_ending",
    SmtpReply(550, "5.6.0", ""),
    "fin de ligne isolée (LF ou CR) : les lignes doivent finir par CRLF (RFC 5321 2.3.8)",
    "bare LF or CR in message: lines must end with CRLF (RFC 5321 2.3.8)",
    AuditEvent.SMTP_REFUSED_BARE_LINE_ENDING,
)
PATIENT_OPPOSED = Reason(  # BRIEF §7: the patient's opposition is honoured
    "patient_opposed",
    SmtpReply(550, "5.7.1", ""),
    "ce patient s'est opposé à l'échange de ses données : le message n'est pas envoyé",
    "this patient opposed the exchange of their data: the message is not sent",
    AuditEvent.PATIENT_SEND_REFUSED,
)
BAD_DOCUMENT = Reason(
    "bad_document",
    SmtpReply(550, "5.6.0", ""),
    "le paquet IHE_XDM.zip est illisible",
    "the IHE_XDM.zip package cannot be read",
    AuditEvent.MESSAGE_REFUSED_CONTENT,
)
MIME_TOO_DEEP = Reason(  # as Postfix's mime_nesting_limit; docs/security.md
    "mime_too_deep",
    SmtpReply(554, "5.6.0", ""),
    "structure MIME trop profonde ou trop de parties : le message ne pourrait pas être lu",
    "MIME structure too deep or with too many parts: the message could not be read",
    AuditEvent.MESSAGE_REFUSED_STRUCTURE,
)
MALFORMED_HEADER = Reason(  # RFC 5322 §2.2, §3.6: what readers could tell apart
    "malformed_header",
    SmtpReply(554, "5.6.0", ""),
    "en-tête du message mal formé : {problem}",
    "malformed message header: {problem}",
    AuditEvent.MESSAGE_REFUSED_HEADER,
)
SENDER_FIELD_NOT_ALLOWED = Reason(  # RFC 5322 §3.6.2: Sender: is the account itself
    "sender_field_not_allowed",
    SmtpReply(553, "5.7.1", ""),
    "l'en-tête Sender: doit être une de vos adresses",
    "the Sender: header must be one of your own addresses",
    AuditEvent.SUBMISSION_REFUSED_SENDER,
)
SENDING_LIMIT = Reason(  # RFC 3463 X.7.1 (not allowed now), temporary: later it is
    "sending_limit",
    SmtpReply(451, "4.7.1", ""),
    "limite d'envoi atteinte pour {address} : réessayez plus tard",
    "sending limit reached for {address}: try again later",
    AuditEvent.MESSAGE_REFUSED_SENDING_LIMIT,
)
