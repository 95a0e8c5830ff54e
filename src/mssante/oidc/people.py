"""Where the provider finds people, and how they prove themselves at /authorize.

* **Certificate** (like a CPS card, acr ``eidas2``): the TLS client certificate is checked with
  the project's one verification function for the PERSON purpose (chain, dates, usages, CRL);
  the idNat is read from its subject.
* **Password and TOTP** (like e-CPS, acr ``eidas1``): through :class:`AuthService` of the
  operator whose domain the login belongs to (``[oidc] account_configs``), as a web login: the
  same throttling, the same audit, the same rules (a TOTP account needs its code). An account
  without TOTP may log in with the password alone when ``password_without_totp`` is set.

Only a person with a professional idNat gets a token: the ``sub`` of every token is the idNat.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mssante.auth.service import AuthMethod, AuthProtocol, AuthService, Principal
from mssante.config import Settings, load_settings
from mssante.oidc.models import ACR_CERTIFICATE, ACR_ORDER, ACR_PASSWORD, Subject
from mssante.pki.crl import CrlCache
from mssante.pki.names import MalformedDN, person_id_nat
from mssante.pki.verify import Purpose, TrustStore, verify_certificate
from mssante.runtime import Node, open_node
from mssante.store.models import Account, Mailbox, Professional


class LoginFailure(StrEnum):
    """Why a login at /authorize failed: for the audit log only."""

    NO_CERTIFICATE = "no_certificate"
    BAD_CERTIFICATE = "bad_certificate"
    UNKNOWN_DOMAIN = "unknown_domain"
    REFUSED = "refused"  # AuthService said no; its own audit entry says why
    PASSWORD_ONLY = "password_only_not_allowed"  # noqa: S105 - a reason name
    NOT_A_PROFESSIONAL = "not_a_professional"
    LEVEL_TOO_LOW = "acr_too_low"


@dataclass(frozen=True)
class LoginResult:
    subject: Subject | None
    failure: LoginFailure | None = None
    who: str = ""  # the login or certificate subject, for the audit log
    detail: str = ""


@dataclass
class AccountSource:
    """One operator's accounts: its database and its authentication service."""

    domains: frozenset[str]  # empty: any domain
    node: Node
    auth: AuthService

    def serves(self, domain: str) -> bool:
        return not self.domains or domain in self.domains


class People:
    """The provider's view of professionals: logins and what tokens say about them."""

    def __init__(
        self,
        sources: Sequence[AccountSource],
        trust: TrustStore,
        crls: CrlCache | None,
        *,
        password_without_totp: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = tuple(sources)
        self.trust = trust
        self.crls = crls
        self.password_without_totp = password_without_totp
        self.clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, own: Node, trust: TrustStore, crls: CrlCache | None
    ) -> People:
        """Sources from ``[oidc] account_configs``, else the provider's own database."""
        sources = [_source(load_settings(path)) for path in settings.oidc.account_configs]
        if not sources:
            sources = [AccountSource(frozenset(), own, AuthService(own.db, settings, own.audit))]
        return cls(
            sources,
            trust,
            crls,
            password_without_totp=settings.oidc.password_without_totp,
        )

    def close(self, own: Node) -> None:
        for source in self.sources:
            if source.node is not own:
                source.node.close()

    # -- logins ----------------------------------------------------------------------------------
    async def password_login(self, login: str, password: str, code: str, peer: str) -> LoginResult:
        """Password, and the TOTP code when the account has a device."""
        login = login.strip().lower()
        source = self._source_for(login)
        if source is None:
            return LoginResult(None, LoginFailure.UNKNOWN_DOMAIN, login)
        principal = await _check(source.auth, login, password, code.strip(), peer)
        if principal is None:
            return LoginResult(None, LoginFailure.REFUSED, login)
        if principal.method is AuthMethod.PASSWORD and not self.password_without_totp:
            return LoginResult(None, LoginFailure.PASSWORD_ONLY, login)
        if principal.id_nat is None:
            return LoginResult(None, LoginFailure.NOT_A_PROFESSIONAL, login)
        amr = ("pwd", "otp", "mfa") if principal.method is AuthMethod.TOTP else ("pwd",)
        given, family = self._names(source, principal.id_nat)
        return LoginResult(
            Subject(
                principal.id_nat,
                ACR_PASSWORD,
                amr,
                int(self.clock()),
                given,
                family,
                self.addresses(principal.id_nat, first=principal.login),
            ),
            who=login,
        )

    def certificate_login(self, der: bytes | None) -> LoginResult:
        """A CPS-like person certificate presented in the TLS handshake."""
        if der is None:
            return LoginResult(None, LoginFailure.NO_CERTIFICATE)
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return LoginResult(None, LoginFailure.BAD_CERTIFICATE, detail="unreadable")
        result = verify_certificate(cert, purpose=Purpose.PERSON, trust=self.trust, crls=self.crls)
        if not result.ok:
            return LoginResult(None, LoginFailure.BAD_CERTIFICATE, result.subject_dn, result.reason)
        try:
            id_nat = str(person_id_nat(cert.subject))
        except MalformedDN:  # verify_certificate already requires it; kept for clarity
            return LoginResult(None, LoginFailure.BAD_CERTIFICATE, result.subject_dn)
        subject = Subject(
            id_nat,
            ACR_CERTIFICATE,
            ("hwk", "sc", "mfa"),  # RFC 8176: hardware key, smart card
            int(self.clock()),
            _attribute(cert.subject, NameOID.GIVEN_NAME),
            _attribute(cert.subject, NameOID.SURNAME),
            self.addresses(id_nat),
        )
        return LoginResult(subject, who=result.subject_dn)

    # -- directory -------------------------------------------------------------------------------
    def addresses(self, id_nat: str, *, first: str | None = None) -> tuple[str, ...]:
        """The open mailboxes of the professional's accounts in every source; ``first`` first."""
        found: list[str] = []
        for source in self.sources:
            with source.node.db.session() as session:
                found += session.execute(
                    select(Mailbox.address)
                    .join(Account, Mailbox.owner_account_id == Account.id)
                    .join(Professional, Account.professional_id == Professional.id)
                    .where(Professional.id_nat == id_nat, Mailbox.closed_at.is_(None))
                    .order_by(Mailbox.address)
                ).scalars()
        ordered = ([first] if first in found else []) + [a for a in found if a != first]
        return tuple(ordered)

    def _names(self, source: AccountSource, id_nat: str) -> tuple[str, str]:
        with source.node.db.session() as session:
            person = session.execute(
                select(Professional).where(Professional.id_nat == id_nat)
            ).scalar_one_or_none()
            return (person.first_name, person.last_name) if person else ("", "")

    def _source_for(self, login: str) -> AccountSource | None:
        domain = login.rpartition("@")[2]
        return next((s for s in self.sources if s.serves(domain)), None)


def _source(settings: Settings) -> AccountSource:
    node = open_node(settings, migrate=False)
    domains = frozenset(d.lower() for d in settings.operator.domains)
    return AccountSource(domains, node, AuthService(node.db, settings, node.audit))


async def _check(
    auth: AuthService, login: str, password: str, code: str, peer: str
) -> Principal | None:
    if code:
        return await auth.check_password_totp_async(login, password, code, peer)
    return await auth.check_password_async(login, password, peer=peer, protocol=AuthProtocol.WEB)


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def meets(achieved: str, requested: Sequence[str]) -> bool:
    """OpenID Connect Core §3.1.2.1 ``acr_values``: the login must reach the weakest level the
    client asked for (eidas1 < eidas2). Unknown values are ignored; no request, no limit."""
    ranks = [ACR_ORDER.index(v) for v in requested if v in ACR_ORDER]
    return not ranks or ACR_ORDER.index(achieved) >= min(ranks)
