"""Logins with TLS client certificates: SASL EXTERNAL (RFC 4422 App. A) on submission and IMAP.

A professional logs in with their CPS-like **person certificate**: it is verified for the
``PERSON`` purpose (chain to the PKI's anchors, dates, key usages, CRL), the idNat is read from
its subject (:func:`~mssante.pki.names.person_id_nat`), and the idNat names the professional
(``Professional.id_nat``) whose accounts it opens. The software behind an **APP mailbox** logs
in with an **organisation certificate**, verified for the ``CLIENT`` purpose, whose subject DN an
administrator bound to that APP account (:class:`CertificateBindings`; a credential of kind
``certificate`` whose ``secret`` is the DN, see docs/decisions/0008-certificate-logins.md).

Which of the two a certificate is: a subject carrying a professional idNat (``serialNumber``,
else ``CN``) is a person's; any other is an organisation's. A person certificate opens only its
professional's personal accounts, never an APP account, even one bound to its DN.

The SASL authorization identity (``login``) names the account; without one, the professional's
(or the DN's) only enabled account is used, and several are refused as ambiguous.

Every attempt is audited as ``auth.login_succeeded`` / ``auth.login_failed`` with method
``certificate``, the protocol, the client address, the certificate's subject, serial number,
issuer and SHA-256 fingerprint, and on failure the reason (docs/auth.md). Certificates are
public: nothing secret is involved or written. The caller gets ``None`` on any failure and must
answer with one undifferentiated refusal (SMTP 535, IMAP ``NO``). Failures slow the next
attempts from the same client address, through the process's one login throttle
(:class:`~mssante.auth.throttle.Throttle`, shared with the password logins: one count per
address, whatever the method).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mssante.audit.events import Actor, AuditEvent, AuditRecord, AuditSink
from mssante.audit.log import append
from mssante.auth.revocation import Credential as Ground
from mssante.auth.revocation import Grounds, note_login, note_refusal
from mssante.auth.service import MAX_LOGIN_LENGTH, AuthProtocol, _client_network
from mssante.auth.throttle import LoginThrottle, Outcome, Reservation, Throttle
from mssante.config import AuthSettings
from mssante.errors import MssanteError, NotFoundError
from mssante.logging import get_logger
from mssante.pki.crl import CrlCache
from mssante.pki.ids import InvalidIdentifier, parse_id_nat_struct
from mssante.pki.names import MalformedDN, dn_string, normalise_dn, parse_dn, person_id_nat
from mssante.pki.profiles import Purpose
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import fingerprint, verify_certificate
from mssante.store.db import Database
from mssante.store.models import Account, AccountKind, Credential, CredentialKind, Professional
from mssante.store.models import utcnow as _utcnow

METHOD = "certificate"
MAX_CHAIN = 8  # certificates taken from what a client presents
MAX_DN_LENGTH = 500  # the credential's column


class CertificateKind(StrEnum):
    PERSON = "person"  # CPS-like: the subject carries the professional's idNat
    ORGANISATION = "organisation"  # a structure's certificate, bound to APP accounts


class CertificateFailure(StrEnum):
    """Why a certificate opened no login, besides the verification's own failures (which are
    audited with the values of :class:`mssante.pki.verify.Failure`: ``revoked``, ``expired``,
    ``unknown_issuer``…). For the audit log, never for the client."""

    NO_CERTIFICATE = "no_certificate"
    UNKNOWN_PROFESSIONAL = "unknown_professional"  # a valid person certificate, no account
    NOT_BOUND = "not_bound"  # a valid organisation certificate bound to no APP account
    LOGIN_NOT_OWNED = "login_not_owned"  # the authzid is not one of the accounts it opens
    AMBIGUOUS_LOGIN = "login_required"  # several accounts and the client named none
    ACCOUNT_DISABLED = "account_disabled"


class BindingError(MssanteError):
    """A certificate binding was refused."""


@dataclass(frozen=True)
class CertificateLogin:
    """A login opened by a client certificate."""

    account_id: int
    login: str
    id_nat_or_structure: str  # the professional's idNat, or the structure id (OU) if known
    subject_dn: str  # RFC 4514, as pki.names.dn_string renders it
    serial: str  # hexadecimal, upper case (as the PKI's index and audit write it)
    kind: CertificateKind
    issuer_dn: str = ""  # RFC 4514: with the serial, names the certificate on its CA's CRL

    @property
    def grounds(self) -> Grounds:
        """What a session opened by this certificate rests on (auth/revocation.py): the
        account, and the certificate (ended when a CRL lists it)."""
        grounds = {Ground.account(self.account_id)}
        if self.issuer_dn:
            grounds.add(Ground.certificate(self.account_id, self.serial, self.issuer_dn))
        return frozenset(grounds)


@dataclass(frozen=True)
class CertificateBinding:
    """An organisation certificate DN bound to an APP account (what may be shown: all of it)."""

    id: int
    login: str
    dn: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "login": self.login,
            "dn": self.dn,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Attempt:
    login: str | None
    peer: str
    protocol: AuthProtocol

    @property
    def throttle_address(self) -> str:
        return _client_network(self.peer)


@dataclass(frozen=True)
class _Presented:
    """What the client presented, described before anything is verified (for the audit)."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    kind: CertificateKind
    ident: str  # idNat (person) or structure id (organisation, "" if the OU is not one)
    subject: str
    serial: str

    def context(self) -> dict[str, Any]:
        context: dict[str, Any] = {
            "kind": self.kind.value,
            "subject": self.subject,
            "serial": self.serial,
            "issuer": _safe_dn(self.leaf.issuer),
            "sha256": fingerprint(self.leaf),
        }
        if self.ident:
            key = "id_nat" if self.kind is CertificateKind.PERSON else "structure_id"
            context[key] = self.ident
        return context


class CertificateLogins:
    """Decides which account a TLS client certificate opens; one per process."""

    def __init__(
        self,
        db: Database,
        trust: TrustStore,
        crls: CrlCache | None,
        audit: AuditSink,
        *,
        auth: AuthSettings | None = None,
        throttle: Throttle | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``throttle``: the process's one login throttle, shared with
        :class:`~mssante.auth.service.AuthService` (the operator runtime passes it); by default
        one of its own from ``auth``. ``sleep`` makes the throttle's waits."""
        self.db = db
        self.trust = trust
        self.crls = crls
        self.audit = audit
        self.throttle: Throttle = (
            throttle
            if throttle is not None
            else LoginThrottle.from_settings(auth or AuthSettings())
        )
        self._sleep = sleep
        self.log = get_logger("mssante.auth.certificates")

    async def authenticate(
        self,
        chain: Sequence[x509.Certificate] | x509.Certificate | bytes | None,
        login: str | None,
        *,
        peer: str,
        protocol: AuthProtocol | str,
    ) -> CertificateLogin | None:
        """The account ``chain`` opens, or None (the reason is audited).

        ``chain``: the client's certificate first, then the intermediates it sent; a single
        certificate (or its DER bytes) is enough when the trust store holds the issuing CAs.
        ``login``: the SASL authorization identity, or None/"" for the only account.
        """
        attempt = _Attempt(_clean_login(login), peer, AuthProtocol(protocol))
        # A certificate is no guessable secret: the address alone is counted, not the authzid
        # (which would let anyone holding a card slow another account's password logins).
        reservation = self.throttle.reserve(account=None, address=attempt.throttle_address)
        try:
            await self._sleep(reservation.delay)
        except BaseException:  # the client left during the wait: nothing was checked
            self.throttle.settle(reservation, Outcome.ABANDONED)
            raise
        result = await asyncio.to_thread(self._run, chain, attempt, reservation)
        if result is None:
            note_refusal()
        else:
            note_login(result.grounds)  # for the door that registers the session
        return result

    # -- the core of a login ---------------------------------------------------------------------
    def _run(
        self,
        chain: Sequence[x509.Certificate] | x509.Certificate | bytes | None,
        attempt: _Attempt,
        reservation: Reservation,
    ) -> CertificateLogin | None:
        outcome = Outcome.FAILED  # also if the check raises: it counts as a failure
        try:
            result = self._decide(chain, attempt)
            if result is not None:
                outcome = Outcome.SUCCEEDED
            return result
        finally:
            self.throttle.settle(reservation, outcome)

    def _decide(
        self,
        chain: Sequence[x509.Certificate] | x509.Certificate | bytes | None,
        attempt: _Attempt,
    ) -> CertificateLogin | None:
        presented: _Presented | None = None
        try:
            certificates = _as_chain(chain)
            if not certificates:
                raise _Refusal(CertificateFailure.NO_CERTIFICATE)
            presented = _describe(certificates)
            self._verify(presented)
            result = self._account_for(presented, attempt.login)
        except _Refusal as refusal:
            self._audit_failure(attempt, presented, refusal)
            return None
        context = {**_base_context(attempt), **presented.context()}
        self.audit.record(
            AuditRecord(AuditEvent.LOGIN_SUCCEEDED, result.login, result.login, context)
        )
        return result

    def _verify(self, presented: _Presented) -> None:
        """The project's one certificate check, for the purpose of the certificate's kind."""
        purpose = Purpose.PERSON if presented.kind is CertificateKind.PERSON else Purpose.CLIENT
        result = verify_certificate(
            presented.leaf,
            purpose=purpose,
            trust=self.trust,
            crls=self.crls,
            presented_chain=presented.intermediates,
        )
        if result.detail:
            self.log.info(
                "client certificate checked", subject=presented.subject, detail=result.detail
            )
        if not result.ok:
            failure = result.failure.value if result.failure else "invalid_chain"
            raise _Refusal(failure, result.reason)

    def _account_for(self, presented: _Presented, login: str | None) -> CertificateLogin:
        with self.db.session() as session:
            if presented.kind is CertificateKind.PERSON:
                row = _person_account(session, presented.ident, login)
            else:
                row = _bound_account(session, presented.leaf.subject, login)
            return CertificateLogin(
                account_id=row.id,
                login=row.login,
                id_nat_or_structure=presented.ident,
                subject_dn=presented.subject,
                serial=presented.serial,
                kind=presented.kind,
                issuer_dn=_safe_dn(presented.leaf.issuer),
            )

    def _audit_failure(
        self, attempt: _Attempt, presented: _Presented | None, refusal: _Refusal
    ) -> None:
        context = _base_context(attempt)
        if presented is not None:
            context |= presented.context()
        context["reason"] = refusal.reason
        if refusal.detail:
            context["detail"] = refusal.detail
        ident = (presented.ident or presented.subject) if presented else ""
        who = (attempt.login or ident or attempt.peer)[:MAX_LOGIN_LENGTH]
        self.audit.record(AuditRecord(AuditEvent.LOGIN_FAILED, who, who, context))


class CertificateBindings:
    """Which organisation certificates (by subject DN) open which APP accounts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def bind(self, login: str, subject: str | x509.Name, actor: Actor) -> CertificateBinding:
        """Let certificates whose subject is ``subject`` open the APP account ``login``."""
        name = parse_dn(subject) if isinstance(subject, str) else subject
        dn = dn_string(name)
        if not dn:
            raise BindingError("the DN is empty")
        if len(dn) > MAX_DN_LENGTH:
            raise BindingError(f"a bound DN has at most {MAX_DN_LENGTH} characters")
        _refuse_person_dn(name)
        with self.db.session() as session:
            account = _account_or_error(session, login)
            if account.kind is not AccountKind.APPLICATION:
                raise BindingError(
                    f"{account.login} is not an APP account: a professional logs in with their "
                    "own CPS certificate, found by its idNat, without any binding"
                )
            wanted = normalise_dn(name)
            if any(_same_dn(c.secret, wanted) for c in _active_bindings(session, account.id)):
                raise BindingError(f"this DN is already bound to {account.login}")
            credential = Credential(
                account_id=account.id,
                kind=CredentialKind.CERTIFICATE,
                secret=dn,
                created_at=_utcnow(),
            )
            session.add(credential)
            session.flush()
            _audit_binding(session, AuditEvent.CERTIFICATE_BOUND, actor, account, credential)
            return _binding(account.login, credential)

    def unbind(self, login: str, dn_or_id: str, actor: Actor) -> CertificateBinding:
        """Revoke the active binding of ``login`` named by its DN or its id."""
        with self.db.session() as session:
            account = _account_or_error(session, login)
            credential = _find_binding(session, account.id, dn_or_id.strip())
            credential.revoked_at = _utcnow()
            session.flush()
            _audit_binding(session, AuditEvent.CERTIFICATE_UNBOUND, actor, account, credential)
            return _binding(account.login, credential)

    def listing(self, login: str, *, include_revoked: bool = False) -> list[CertificateBinding]:
        with self.db.session() as session:
            account = _account_or_error(session, login)
            query = select(Credential).where(
                Credential.account_id == account.id,
                Credential.kind == CredentialKind.CERTIFICATE,
            )
            if not include_revoked:
                query = query.where(Credential.revoked_at.is_(None))
            rows = session.execute(query.order_by(Credential.id)).scalars()
            return [_binding(account.login, c) for c in rows]


def presented_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> list[x509.Certificate]:
    """The certificates the TLS client sent, leaf first: the whole chain where Python offers it
    (``get_unverified_chain``, Python 3.13+, DER), else the leaf alone (the trust store then
    supplies the issuing CAs). Empty if the client sent none."""
    if ssl_object is None:
        return []
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is not None:
        try:
            ders = [d for d in (getter() or []) if isinstance(d, bytes)]
            if ders:
                return [x509.load_der_x509_certificate(d) for d in ders[:MAX_CHAIN]]
        except (ssl.SSLError, ValueError, AttributeError):
            pass
    der = ssl_object.getpeercert(binary_form=True)
    return [x509.load_der_x509_certificate(der)] if der else []


# -- accounts ------------------------------------------------------------------------------------
_AccountRow = Any  # a Row with id, login and disabled (and, for a binding, binding and secret)


def _person_account(session: Session, id_nat: str, login: str | None) -> _AccountRow:
    """One of the personal accounts of the professional with this idNat."""
    rows = session.execute(
        select(Account.id, Account.login, Account.disabled)
        .join(Professional, Account.professional_id == Professional.id)
        .where(Professional.id_nat == id_nat, Account.kind == AccountKind.PERSON)
        .order_by(Account.id)
    ).all()
    if not rows:
        raise _Refusal(CertificateFailure.UNKNOWN_PROFESSIONAL)
    return _pick(rows, login)


def _bound_account(session: Session, subject: x509.Name, login: str | None) -> _AccountRow:
    """One of the APP accounts this subject DN is bound to; the binding's last use is noted."""
    wanted = normalise_dn(subject)
    rows = session.execute(
        select(
            Account.id,
            Account.login,
            Account.disabled,
            Credential.id.label("binding"),
            Credential.secret,
        )
        .join(Account, Credential.account_id == Account.id)
        .where(
            Credential.kind == CredentialKind.CERTIFICATE,
            Credential.revoked_at.is_(None),
            Account.kind == AccountKind.APPLICATION,
        )
        .order_by(Account.id)
    ).all()
    bound = [r for r in rows if _same_dn(r.secret, wanted)]
    if not bound:
        raise _Refusal(CertificateFailure.NOT_BOUND)
    row = _pick(bound, login)
    session.execute(
        update(Credential).where(Credential.id == row.binding).values(last_used_at=_utcnow())
    )
    return row


def _pick(rows: Sequence[_AccountRow], login: str | None) -> _AccountRow:
    """The account named by ``login``, or the only enabled one."""
    if login is None:
        usable = [r for r in rows if not r.disabled]
        if len(usable) == 1:
            return usable[0]
        if not usable:
            raise _Refusal(CertificateFailure.ACCOUNT_DISABLED)
        raise _Refusal(CertificateFailure.AMBIGUOUS_LOGIN)
    for row in rows:
        if row.login == login:
            if row.disabled:
                raise _Refusal(CertificateFailure.ACCOUNT_DISABLED)
            return row
    raise _Refusal(CertificateFailure.LOGIN_NOT_OWNED)


# -- helpers -------------------------------------------------------------------------------------
def _as_chain(
    chain: Sequence[x509.Certificate] | x509.Certificate | bytes | None,
) -> tuple[x509.Certificate, ...]:
    if chain is None:
        return ()
    if isinstance(chain, bytes):
        try:
            return (x509.load_der_x509_certificate(chain),) if chain else ()
        except ValueError:
            raise _Refusal("malformed", "the certificate cannot be read") from None
    if isinstance(chain, x509.Certificate):
        return (chain,)
    return tuple(chain[:MAX_CHAIN])


def _describe(chain: tuple[x509.Certificate, ...]) -> _Presented:
    leaf = chain[0]
    try:
        ident, kind = str(person_id_nat(leaf.subject)), CertificateKind.PERSON
    except (MalformedDN, ValueError):
        ident, kind = _structure_of(leaf.subject), CertificateKind.ORGANISATION
    return _Presented(
        leaf=leaf,
        intermediates=chain[1:],
        kind=kind,
        ident=ident,
        subject=_safe_dn(leaf.subject),
        serial=format(leaf.serial_number, "X"),
    )


def _structure_of(name: x509.Name) -> str:
    """The structure's national id, when the OU holds one (operator and APP certificates)."""
    for attribute in name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        try:
            return str(parse_id_nat_struct(str(attribute.value)))
        except InvalidIdentifier:
            continue
    return ""


def _same_dn(stored: str, wanted: str) -> bool:
    try:
        return normalise_dn(stored) == wanted
    except MalformedDN:
        return False


def _refuse_person_dn(name: x509.Name) -> None:
    try:
        id_nat = person_id_nat(name)
    except MalformedDN:
        return
    raise BindingError(
        f"this DN names a professional (idNat {id_nat}): person certificates open their "
        "professional's own accounts and are never bound to an APP account"
    )


def _active_bindings(session: Session, account_id: int) -> list[Credential]:
    return list(
        session.execute(
            select(Credential).where(
                Credential.account_id == account_id,
                Credential.kind == CredentialKind.CERTIFICATE,
                Credential.revoked_at.is_(None),
            )
        ).scalars()
    )


def _find_binding(session: Session, account_id: int, dn_or_id: str) -> Credential:
    active = _active_bindings(session, account_id)
    if dn_or_id.isdigit():
        by_id = [c for c in active if c.id == int(dn_or_id)]
        if by_id:
            return by_id[0]
    try:
        wanted = normalise_dn(dn_or_id)
    except MalformedDN:
        wanted = None
    by_dn = [c for c in active if wanted is not None and _same_dn(c.secret, wanted)]
    if by_dn:
        return by_dn[0]
    raise NotFoundError(f"no active certificate binding '{dn_or_id[:200]}' on this account")


def _account_or_error(session: Session, login: str) -> Account:
    cleaned = _clean_login(login) or ""
    account = session.execute(select(Account).where(Account.login == cleaned)).scalar_one_or_none()
    if account is None:
        raise NotFoundError(f"no account {cleaned}")
    return account


def _binding(login: str, credential: Credential) -> CertificateBinding:
    return CertificateBinding(
        id=credential.id,
        login=login,
        dn=credential.secret,
        created_at=credential.created_at,
        last_used_at=credential.last_used_at,
        revoked_at=credential.revoked_at,
    )


def _audit_binding(
    session: Session, event: AuditEvent, actor: Actor, account: Account, credential: Credential
) -> None:
    context = {**actor.context, "credential_id": credential.id, "dn": credential.secret}
    append(session, AuditRecord(event, actor=actor.name, target=account.login, context=context))


def _base_context(attempt: _Attempt) -> dict[str, Any]:
    return {"protocol": attempt.protocol.value, "peer": attempt.peer, "method": METHOD}


def _clean_login(login: str | None) -> str | None:
    return (login or "").strip().lower() or None


def _safe_dn(name: x509.Name) -> str:
    try:
        return dn_string(name)
    except Exception:  # an unreadable subject is still audited, as nothing
        return ""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


__all__ = [
    "METHOD",
    "BindingError",
    "CertificateBinding",
    "CertificateBindings",
    "CertificateFailure",
    "CertificateKind",
    "CertificateLogin",
    "CertificateLogins",
    "presented_chain",
]
