"""The operator registry: who is in the trust space, with which domains and certificate DNs.

Every change is one transaction that also appends its audit entry; the caller then publishes a
new signed whitelist (:mod:`mssante.authority.publish`). The whitelist is derived from the
registry, never edited by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.errors import MssanteError, NotFoundError
from mssante.pki.ids import parse_id_nat_struct
from mssante.pki.names import parse_operator_dn
from mssante.store.db import Database
from mssante.store.models import Domain, Operator, OperatorCertificate
from mssante.trust.model import Whitelist, WhitelistDomain

# RFC 1035 §2.3.1 / RFC 1123 §2.1: letters, digits, hyphens; labels of 1-63; at least two labels.
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class RegistryError(MssanteError):
    """A registration was refused; ``public`` says why in one line."""


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str = ""


@dataclass(frozen=True)
class OperatorSpec:
    """What an operator registers: its identity, its domains and its MTAs' certificate DNs."""

    name: str
    structure_id: str
    domains: Sequence[DomainSpec]
    certificate_dns: Sequence[str]
    responsable_contact: str = ""
    support_contact: str = ""


@dataclass(frozen=True)
class OperatorView:
    name: str
    structure_id: str
    domains: tuple[str, ...]
    certificate_dns: tuple[str, ...]
    responsable_contact: str
    support_contact: str
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "structure_id": self.structure_id,
            "domains": list(self.domains),
            "certificate_dns": list(self.certificate_dns),
            "responsable_contact": self.responsable_contact,
            "support_contact": self.support_contact,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, and from where (kept in the audit entry)."""

    name: str
    context: Mapping[str, Any] = field(default_factory=dict)


def validate(spec: OperatorSpec) -> OperatorSpec:
    """Check every field; return the spec with normalised domains and DNs."""
    if not spec.name.strip():
        raise RegistryError("operator name is empty")
    try:
        structure = str(parse_id_nat_struct(spec.structure_id))
    except MssanteError as exc:
        raise RegistryError(f"structure id: {exc.public}") from None
    if not spec.domains:
        raise RegistryError("an operator needs at least one domain")
    if not spec.certificate_dns:
        raise RegistryError("an operator needs at least one certificate DN")
    domains = [DomainSpec(_check_domain(d.name), d.description.strip()) for d in spec.domains]
    dns = [_check_dn(dn) for dn in spec.certificate_dns]
    return OperatorSpec(
        name=spec.name.strip(),
        structure_id=structure,
        domains=tuple(domains),
        certificate_dns=tuple(dict.fromkeys(dns)),
        responsable_contact=spec.responsable_contact.strip(),
        support_contact=spec.support_contact.strip(),
    )


def _check_domain(name: str) -> str:
    normalised = name.strip().lower().rstrip(".")
    if not _DOMAIN.match(normalised):
        raise RegistryError(f"'{name}' is not a valid domain name")
    return normalised


def _check_dn(dn: str) -> str:
    try:
        parsed = parse_operator_dn(dn)
    except MssanteError as exc:
        raise RegistryError(f"certificate DN '{dn}': {exc.public}") from None
    return str(parsed)


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, spec: OperatorSpec, actor: Actor) -> OperatorView:
        """Add an operator, or replace an existing one's domains, DNs and contacts."""
        spec = validate(spec)
        with self.db.session() as session:
            operator = _load(session, spec.name)
            event = AuditEvent.OPERATOR_UPDATED if operator else AuditEvent.OPERATOR_REGISTERED
            if operator is None:
                operator = Operator(name=spec.name, structure_id=spec.structure_id)
                session.add(operator)
            _claim_domains(session, operator, spec)
            _apply(operator, spec)
            session.flush()
            append(
                session,
                _record(event, actor, spec.name, {"domains": [d.name for d in spec.domains]}),
            )
            return _view(operator)

    def remove(self, name: str, actor: Actor) -> None:
        with self.db.session() as session:
            operator = _load(session, name)
            if operator is None:
                raise NotFoundError(f"no operator named '{name}'")
            session.delete(operator)
            append(session, _record(AuditEvent.OPERATOR_REMOVED, actor, name, {}))

    def get(self, name: str) -> OperatorView:
        with self.db.session() as session:
            operator = _load(session, name)
            if operator is None:
                raise NotFoundError(f"no operator named '{name}'")
            return _view(operator)

    def operators(self) -> list[OperatorView]:
        with self.db.session() as session:
            rows = session.execute(_query().order_by(Operator.name)).scalars().all()
            return [_view(op) for op in rows]

    def whitelist(self, generated_at: datetime | None = None) -> Whitelist:
        """The whitelist this registry stands for: every domain with its operator's DNs."""
        entries: list[WhitelistDomain] = []
        for op in self.operators_full():
            entries += [_entry(op, d) for d in op.domains]
        entries.sort(key=lambda d: d.name)
        return Whitelist(
            generated_at=generated_at or datetime.now(UTC).replace(microsecond=0),
            domains=tuple(entries),
        )

    def operators_full(self) -> list[Operator]:
        with self.db.session() as session:
            return list(session.execute(_query()).scalars().all())


def _query() -> Any:
    return select(Operator).options(
        selectinload(Operator.domains), selectinload(Operator.certificate_dns)
    )


def _load(session: Session, name: str) -> Operator | None:
    result: Operator | None = session.execute(
        _query().where(Operator.name == name.strip())
    ).scalar_one_or_none()
    return result


def _claim_domains(session: Session, operator: Operator, spec: OperatorSpec) -> None:
    names = [d.name for d in spec.domains]
    taken = session.execute(select(Domain).where(Domain.name.in_(names))).scalars().all()
    for domain in taken:
        if domain.operator is not None and domain.operator is not operator:
            raise RegistryError(
                f"domain {domain.name} is already registered to operator '{domain.operator.name}'"
            )


def _apply(operator: Operator, spec: OperatorSpec) -> None:
    operator.structure_id = spec.structure_id
    operator.responsable_contact = spec.responsable_contact
    operator.support_contact = spec.support_contact
    existing = {d.name: d for d in operator.domains}
    operator.domains = [_domain(existing.get(d.name), d) for d in spec.domains]
    known = {c.dn: c for c in operator.certificate_dns}
    operator.certificate_dns = [
        known.get(dn) or OperatorCertificate(dn=dn) for dn in spec.certificate_dns
    ]


def _domain(current: Domain | None, spec: DomainSpec) -> Domain:
    if current is None:
        return Domain(name=spec.name, description=spec.description)
    if current.description != spec.description:
        current.description = spec.description
    return current


def _view(op: Operator) -> OperatorView:
    return OperatorView(
        name=op.name,
        structure_id=op.structure_id,
        domains=tuple(d.name for d in op.domains),
        certificate_dns=tuple(c.dn for c in op.certificate_dns),
        responsable_contact=op.responsable_contact,
        support_contact=op.support_contact,
        updated_at=op.updated_at,
    )


def _entry(op: Operator, domain: Domain) -> WhitelistDomain:
    return WhitelistDomain(
        name=domain.name,
        description=domain.description or op.name,
        operator_dns=tuple(c.dn for c in op.certificate_dns),
        responsable_contact=op.responsable_contact,
        support_contact=op.support_contact,
        updated_at=max(domain.updated_at, op.updated_at).replace(microsecond=0),
    )


def _record(event: AuditEvent, actor: Actor, target: str, extra: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(event, actor=actor.name, target=target, context={**actor.context, **extra})
