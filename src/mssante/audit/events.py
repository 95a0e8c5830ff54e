"""Audit events: every traced action is a member of :class:`AuditEvent`.

MSSanté operators must trace every action on a mailbox with its author, time, action and
request (see docs/audit.md). Free text never names an action: add a member here instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class AuditEvent(StrEnum):
    # PKI
    PKI_INITIALISED = "pki.initialised"
    CERTIFICATE_ISSUED = "pki.certificate_issued"
    CERTIFICATE_REVOKED = "pki.certificate_revoked"
    CRL_REFRESHED = "pki.crl_refreshed"
    CRL_REFRESH_FAILED = "pki.crl_refresh_failed"
    # Whitelist, operator side
    WHITELIST_ACCEPTED = "whitelist.accepted"
    WHITELIST_UNCHANGED = "whitelist.unchanged"
    WHITELIST_FETCH_FAILED = "whitelist.fetch_failed"
    WHITELIST_REJECTED = "whitelist.rejected"
    # Authority
    WHITELIST_PUBLISHED = "authority.whitelist_published"
    OPERATOR_REGISTERED = "authority.operator_registered"
    OPERATOR_UPDATED = "authority.operator_updated"
    OPERATOR_REMOVED = "authority.operator_removed"
    DOMAIN_ADDED = "authority.domain_added"
    DOMAIN_REMOVED = "authority.domain_removed"
    ADMIN_ACCESS_DENIED = "authority.admin_access_denied"
    # Accounts and mailboxes
    PROFESSIONAL_CREATED = "account.professional_created"
    MAILBOX_CREATED = "mailbox.created"
    MAILBOX_UPDATED = "mailbox.updated"
    MAILBOX_CLOSED = "mailbox.closed"
    ACCOUNT_CREATED = "account.created"
    CREDENTIAL_SET = "account.credential_set"
    # SMTP between operators (inbound)
    SMTP_TLS_FAILED = "smtp.tls_failed"
    SMTP_REFUSED_NO_STARTTLS = "smtp.refused_no_starttls"
    SMTP_REFUSED_NO_CERTIFICATE = "smtp.refused_no_certificate"
    SMTP_REFUSED_CERTIFICATE = "smtp.refused_certificate"  # expired, revoked, wrong usage…
    SMTP_REFUSED_DOMAIN_NOT_LISTED = "smtp.refused_domain_not_listed"
    SMTP_REFUSED_DN_NOT_LISTED = "smtp.refused_dn_not_listed"
    SMTP_REFUSED_NO_WHITELIST = "smtp.refused_no_whitelist"
    SMTP_REFUSED_UNKNOWN_RECIPIENT = "smtp.refused_unknown_recipient"
    SMTP_REFUSED_TOO_MANY_RECIPIENTS = "smtp.refused_too_many_recipients"
    SMTP_REFUSED_BARE_LINE_ENDING = "smtp.refused_bare_line_ending"
    SMTP_REFUSED_TOO_LARGE = "smtp.refused_too_large"
    SMTP_REFUSED_PROTOCOL = "smtp.refused_protocol"  # bad sequence, syntax, unknown command
    SMTP_TIMEOUT = "smtp.timeout"
    SMTP_RECIPIENTS_REFUSED = "smtp.recipients_refused"  # after the first: count, codes
    SMTP_TOO_MANY_ERRORS = "smtp.too_many_errors"  # smtp.max_refused_commands: closed, 421
    SMTP_MESSAGE_ACCEPTED = "smtp.message_accepted"
    # Submission
    SUBMISSION_REFUSED_SENDER = "submission.refused_sender"
    SUBMISSION_REFUSED_RECIPIENT = "submission.refused_recipient"
    SUBMISSION_MESSAGE_ACCEPTED = "submission.message_accepted"
    # The acceptance path's own refusals (ops/acceptance.py), whatever the door
    MESSAGE_REFUSED_FROM = "message.refused_from"  # From: not aligned with the sender or peer
    MESSAGE_REFUSED_SENDING_LIMIT = "message.refused_sending_limit"  # per-mailbox rate
    MESSAGE_REFUSED_CONTENT = "message.refused_content"  # an unreadable IHE_XDM.zip, say
    MESSAGE_REFUSED_STRUCTURE = "message.refused_structure"  # MIME too deep, too many parts
    MESSAGE_REFUSED_HEADER = "message.refused_header"  # a malformed or duplicated header field
    MESSAGE_DUPLICATE_DROPPED = "message.duplicate_dropped"  # a redelivery already stored
    CONNECTION_REFUSED = "connection.refused"  # a listener's connection caps (docs/security.md)
    # Outbound queue
    QUEUE_MESSAGE_QUEUED = "queue.message_queued"
    QUEUE_DELIVERED = "queue.delivered"
    QUEUE_DEFERRED = "queue.deferred"
    QUEUE_FAILED = "queue.failed"
    QUEUE_PEER_REFUSED = "queue.peer_refused"  # the peer's certificate or DN was not trusted
    QUEUE_DELAY_NOTICE_SENT = "queue.delay_notice_sent"
    QUEUE_DSN_SENT = "queue.dsn_sent"
    QUEUE_RETRIED = "queue.retried"  # an operator made a recipient due now (mssante queue retry)
    QUEUE_DROPPED = "queue.dropped"  # an operator removed a recipient: never sent (queue drop)
    # Authentication (mssante.auth.service; docs/auth.md)
    LOGIN_SUCCEEDED = "auth.login_succeeded"
    LOGIN_FAILED = "auth.login_failed"
    TOTP_ENROLMENT_STARTED = "auth.totp_enrolment_started"
    TOTP_ENROLLED = "auth.totp_enrolled"
    TOTP_CONFIRMATION_FAILED = "auth.totp_confirmation_failed"
    PASSWORD_CHANGED = "auth.password_changed"  # noqa: S105 - an event name
    APP_PASSWORD_CREATED = "auth.app_password_created"  # noqa: S105 - an event name
    APP_PASSWORD_REVOKED = "auth.app_password_revoked"  # noqa: S105 - an event name
    CERTIFICATE_BOUND = "auth.certificate_bound"  # an organisation certificate DN, APP account
    CERTIFICATE_UNBOUND = "auth.certificate_unbound"
    # a credential no longer holds: its sessions end (auth/revocation.py; docs/revocation.md);
    # target: kind:key, context: reason, revocation id, web sessions ended
    CREDENTIAL_REVOKED = "auth.credential_revoked"
    ACCOUNT_DISABLED = "account.disabled"  # every session of the account ends
    SUBMISSION_SESSION_ENDED = "submission.session_ended"  # 421: what it rested on was revoked
    TRUST_REFRESH_REQUESTED = "operator.trust_refresh_requested"  # running servers refresh now
    # IMAP (mssante.imap), and the folder operations it shares with the webmail (ops/folders.py)
    IMAP_MAILBOX_OPENED = "imap.mailbox_opened"  # after the login (auth.login_*): which BAL
    IMAP_REFUSED_CLEARTEXT = "imap.refused_cleartext"  # LOGIN or AUTHENTICATE before TLS
    IMAP_REFUSED_ACCESS = "imap.refused_access"  # a mailbox that is not the caller's
    IMAP_REFUSED_PROTOCOL = "imap.refused_protocol"  # a command line or a literal too long
    IMAP_TIMEOUT = "imap.timeout"
    IMAP_SESSION_ENDED = "imap.session_ended"  # the server ended a session (token revoked)
    FOLDER_CREATED = "folder.created"
    FOLDER_DELETED = "folder.deleted"
    FOLDER_RENAMED = "folder.renamed"
    FOLDER_APPENDED = "folder.appended"
    FOLDER_MOVED = "folder.moved"
    FOLDER_EXPUNGED = "folder.expunged"
    # OIDC (mssante.oidc, the local provider; mail logins by token are auth.login_* above)
    OIDC_LOGIN_SUCCEEDED = "oidc.login_succeeded"  # a person proved themselves at /authorize
    OIDC_LOGIN_FAILED = "oidc.login_failed"
    OIDC_TOKEN_ISSUED = "oidc.token_issued"  # noqa: S105 - an event name (a new grant)
    OIDC_TOKEN_REFRESHED = "oidc.token_refreshed"  # noqa: S105 - an event name
    OIDC_TOKEN_REVOKED = "oidc.token_revoked"  # noqa: S105 - RFC 7009, or reuse detected
    OIDC_REFUSED = "oidc.refused"  # a token, code or client request refused
    OIDC_SESSION_ENDED = "oidc.session_ended"  # a mail session whose token no longer holds
    OIDC_ISSUER_UNREACHABLE = "oidc.issuer_unreachable"
    # Delegation (mssante.ops.delegation; docs/delegation.md): actor is the person behind it
    MAILBOX_ORG_CREATED = "mailbox.org_created"
    MAILBOX_ACCESS_GRANTED = "mailbox.access_granted"  # an ORG member, or a PER delegation
    MAILBOX_ACCESS_REVOKED = "mailbox.access_revoked"
    DELEGATED_ACCESS = "mailbox.delegated_access"  # a mailbox opened or selected by a grantee
    DELEGATED_SEND = "mailbox.delegated_send"  # mail sent as the mailbox by a grantee
    # an operation beyond the caller's grant, refused (ops/rights.py: a read-only delegate
    # deleting, a member creating a folder…); context: operation and its RFC 4314 letters
    MAILBOX_REFUSED_OPERATION = "mailbox.refused_operation"
    # National directory (mssante.directory; docs/directory.md)
    DIRECTORY_IMPORTED = "directory.imported"  # an extraction imported: counts, file SHA-256
    DIRECTORY_IMPORT_REFUSED = "directory.import_refused"  # not an extraction (its header)
    DIRECTORY_EXPORTED = "directory.exported"  # an extraction written to a file
    DIRECTORY_FETCHED = "directory.fetched"  # operator: the authority's extraction downloaded
    DIRECTORY_FETCH_FAILED = "directory.fetch_failed"
    # Directory publication (docs/publication.md). Authority: each FHIR PATCH from an operator,
    # accepted (with its changes) or refused (with its HTTP status and reason). Operator: each
    # change the authority accepted, or refused for good (never retried).
    DIRECTORY_PATCH_ACCEPTED = "directory.patch_accepted"
    DIRECTORY_PATCH_REFUSED = "directory.patch_refused"
    DIRECTORY_PUBLISHED = "directory.published"
    DIRECTORY_PUBLICATION_REFUSED = "directory.publication_refused"
    # Webmail (mssante.web; docs/webmail.md): actor is the person logged in
    WEB_SESSION_OPENED = "web.session_opened"  # how: password+totp, oidc, certificate
    WEB_SESSION_ENDED = "web.session_ended"  # logout, "log out everywhere", revocation
    WEB_MESSAGE_READ = "web.message_read"  # a message opened (target: mailbox/folder/uid)
    WEB_MESSAGE_DELETED = "web.message_deleted"  # moved to Trash, or deleted from it
    MDN_SENT = "web.mdn_sent"  # a read receipt sent on the reader's request (RFC 8098)
    # Patients (mssante.ops.patients; BRIEF §7)
    PATIENT_OPPOSITION_RECORDED = "patient.opposition_recorded"  # target: the INS
    PATIENT_OPPOSITION_LIFTED = "patient.opposition_lifted"
    PATIENT_SEND_REFUSED = "patient.send_refused"  # mail about an opposed patient, not sent
    # The audit log itself
    AUDIT_VERIFIED = "audit.verified"


SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class Actor:
    """Who performs an audited action (a person's login, an operator's admin, ``system``) and
    what the audit log should know of the request."""

    name: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """One traced action: who did what to what, when, and in which request."""

    event: AuditEvent
    actor: str
    target: str
    context: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AuditSink(Protocol):
    """Where audit records go. The database log implements it; tests may collect in a list."""

    def record(self, record: AuditRecord) -> None: ...


class ListSink:
    """An in-memory sink, for tests and for code run without a database."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)
