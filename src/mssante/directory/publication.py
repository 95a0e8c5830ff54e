"""Publication by operators, the authority's half: apply an operator's FHIR PATCH to the
directory (docs/publication.md).

Source: ``data/openapi-balmss.yaml``, the conditional PATCH ``/Practitioner?identifier=…`` (PER
and CAB mailboxes) and ``/Organization?identifier=…`` (ORG and APP); BRIEF §4.

**What "a resource" is here.** The authority holds no RPPS or FINESS registry, only the
directory. A Practitioner is the set of PER and CAB entries carrying one idNat; an Organization
the set of ORG and APP entries carrying one structure id (IdNatStruct: type digit + number,
columns 6 and 7 of the extraction), whether they came from the agency's extraction or from
earlier publications (``directory_publications`` keeps a deleted mailbox's row, so a resource
whose last mailbox was deleted stays known). **A first insert creates the resource** when the
identifier is valid (check key included): in the real directory, every professional and
structure already has its resource, from the RPPS and FINESS registries, before its first
mailbox is published; refusing it with 404 would make a first publication impossible here.
Replace and delete need the resource to exist (404 otherwise).

Stages of :func:`apply_patch`, in one transaction with its audit entry:

1. **domains** — every mailbox named must be in one of the publishing operator's domains (403);
2. **resolve** — the identifier gives 0 resources (404, unless every operation is an insert
   that may create it), 1, or several (412: a SIREN shared by several establishments, or a bare
   value that fits several identifier systems);
3. **apply** — each operation in order, on the resource's entries: insert (an upsert: sending
   the same insert twice is harmless, so the operator can retry without fear), replace,
   delete ("if found", FHIRPath Patch); a type or address change is refused (422);
4. **store** — each changed entry's extraction line (31 columns) is rebuilt, its search words
   replaced (none while it is on liste rouge), and its publication row kept;
5. **answer** — the resource as FHIR JSON (its public mailboxes, and the publisher's own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, insert, select
from sqlalchemy.orm import Session

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.directory.extraction import (
    COLUMN_COUNT,
    ExtractionRow,
    format_row,
    parse_line,
)
from mssante.directory.fhir import IDNAT_SYSTEM, RPPS_SYSTEM, STRUCTURE_SYSTEM
from mssante.directory.fhirpatch import (
    RESOURCE_TYPES,
    MailboxData,
    Operation,
    OpKind,
    PatchError,
    Target,
    contact_point,
)
from mssante.directory.importer import content_hash
from mssante.directory.normalize import Indexer, parse_groups, word_rows
from mssante.errors import MssanteError
from mssante.pki.ids import parse_id_nat, parse_id_nat_struct
from mssante.store.models import (
    DirectoryEntry,
    DirectoryPublication,
    DirectorySource,
    DirectoryWord,
    MailboxType,
    utcnow,
)

# openapi-balmss.yaml, the conditional PATCH's identifier systems.
FINESS_SYSTEMS = ("http://finess.sante.gouv.fr", "https://finess.esante.gouv.fr")
SIRENE_SYSTEM = "http://sirene.fr"
# Published entries come after the extraction's lines in an export, in publication order.
OPERATOR_ORDINAL_BASE = 10**12
_PERSON_FIELDS = range(8, 17)  # civilité … libellé savoir-faire (from the professional)
_STRUCTURE_FIELDS = range(18, COLUMN_COUNT)  # raison sociale … pays (from the structure)
_SAFE_ID = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Publisher:
    """The operator behind a PATCH, as the registry knows its certificate's DN."""

    name: str
    structure_id: str
    domains: frozenset[str]
    dn: str


@dataclass(frozen=True)
class IdentifierQuery:
    """What an ``identifier`` search parameter may designate: resource keys (idNat, or
    IdNatStruct), SIRET keys of a SIREN, and the key a first insert would create."""

    keys: tuple[str, ...]
    siren: str = ""  # Organization by SIREN: also every 3+SIRET of that SIREN
    creates: str = ""  # "" when the identifier cannot name a new resource


@dataclass(frozen=True)
class PatchRequest:
    resource: str  # Practitioner or Organization
    identifier: str  # the query parameter as given
    operations: Sequence[Operation]
    publisher: Publisher
    remote: str = ""


@dataclass(frozen=True)
class PatchResult:
    key: str
    created: bool
    changes: tuple[dict[str, Any], ...]
    resource: dict[str, Any]


# -- the identifier ----------------------------------------------------------------------------


def parse_identifier(resource: str, value: str) -> IdentifierQuery:
    """``system|value`` or ``value`` (openapi-balmss.yaml, parameter ``identifier``)."""
    given, separator, code = value.rpartition("|")
    code = code.strip()
    system = given.strip() if separator else None
    if not code or len(code) > 31 or not set(code) <= _SAFE_ID:
        raise PatchError("identifier: a system|value pair is expected", issue="value")
    if resource == "Practitioner":
        return _practitioner_query(system, code)
    return _organization_query(system, code)


def _practitioner_query(system: str | None, code: str) -> IdentifierQuery:
    if system == IDNAT_SYSTEM or (system is None and not _is_rpps(code)):
        key = code
    elif system == RPPS_SYSTEM or system is None:
        key = "8" + code
    else:
        raise _unknown_system(system, (IDNAT_SYSTEM, RPPS_SYSTEM))
    return IdentifierQuery((key,), creates=key if _valid(parse_id_nat, key) else "")


def _is_rpps(code: str) -> bool:
    return len(code) == 11 and code.isdigit()


def _organization_query(system: str | None, code: str) -> IdentifierQuery:
    if system in FINESS_SYSTEMS:
        return _exact("1" + code)
    if system == SIRENE_SYSTEM:
        if len(code) == 14:
            return _exact("3" + code)
        return IdentifierQuery(("2" + code,), siren=code, creates=_creatable("2" + code))
    if system == STRUCTURE_SYSTEM:
        return _exact(code)
    if system is not None:
        raise _unknown_system(system, (*FINESS_SYSTEMS, SIRENE_SYSTEM, STRUCTURE_SYSTEM))
    # A bare value is tried against every system it fits.
    keys = [code, "1" + code] if len(code) == 9 else [code]
    siren = code if len(code) == 9 and code.isdigit() else ""
    keys += ["2" + code] if siren else []
    keys += ["3" + code] if len(code) == 14 else []
    return IdentifierQuery(tuple(dict.fromkeys(keys)), siren=siren, creates=_creatable(code))


def _exact(key: str) -> IdentifierQuery:
    return IdentifierQuery((key,), creates=_creatable(key))


def _creatable(key: str) -> str:
    return key if _valid(parse_id_nat_struct, key) else ""


def _valid(parser: Any, key: str) -> bool:
    try:
        parser(key)
    except MssanteError:
        return False
    return True


def _unknown_system(system: str, known: Iterable[str]) -> PatchError:
    return PatchError(
        f"identifier: unknown system {system[:100]!r} (supported: {', '.join(known)})",
        issue="not-supported",
    )


# -- applying ----------------------------------------------------------------------------------


@dataclass
class _Work:
    """One PATCH being applied: the resource's entries and publication rows, by address."""

    session: Session
    request: PatchRequest
    key: str
    entries: dict[str, DirectoryEntry]
    publications: dict[str, DirectoryPublication]
    now: datetime
    changes: list[dict[str, Any]] = field(default_factory=list)
    indexer: Indexer = field(default_factory=Indexer)


def apply_patch(session: Session, request: PatchRequest) -> PatchResult:
    """Apply ``request`` in ``session`` (the caller commits) with its audit entry; raises
    :class:`PatchError` (nothing is then kept: the caller rolls back)."""
    _check_domains(request)
    query = parse_identifier(request.resource, request.identifier)
    key, created = _resolve(session, request, query)
    work = _load(session, request, key)
    for number, operation in enumerate(request.operations, start=1):
        _apply(work, operation, f"operation {number}")
    session.flush()
    append(session, _accepted_record(work, created))
    return PatchResult(key, created, tuple(work.changes), _resource_json(work))


def _check_domains(request: PatchRequest) -> None:
    """Stage 1: an operator publishes the mailboxes of its own domains only."""
    for operation in request.operations:
        domain = operation.address.rpartition("@")[2]
        if domain not in request.publisher.domains:
            raise PatchError(
                f"{operation.address}: the domain {domain} is not one of this operator's",
                status=403,
                issue="forbidden",
            )


def _resolve(session: Session, request: PatchRequest, query: IdentifierQuery) -> tuple[str, bool]:
    """Stage 2: the one resource the identifier designates, and whether it is created now."""
    keys = _matching_keys(session, request.resource, query)
    if len(keys) > 1:
        raise PatchError(
            f"the identifier matches {len(keys)} resources; 0 or 1 is required "
            "(give a more precise identifier)",
            status=412,
            issue="multiple-matches",
        )
    if keys:
        return keys.pop(), False
    if query.creates and all(op.kind is OpKind.INSERT for op in request.operations):
        return query.creates, True
    raise PatchError(
        f"no {request.resource} with the identifier {request.identifier[:120]}",
        status=404,
        issue="not-found",
    )


def _matching_keys(session: Session, resource: str, query: IdentifierQuery) -> set[str]:
    types = [MailboxType(t) for t in RESOURCE_TYPES[resource]]
    published = select(DirectoryPublication.identifier).where(
        DirectoryPublication.resource == resource
    )
    if resource == "Practitioner":
        found = session.execute(
            select(DirectoryEntry.id_nat_pp)
            .where(DirectoryEntry.id_nat_pp.in_(query.keys), DirectoryEntry.bal_type.in_(types))
            .distinct()
        ).scalars()
        keys = set(found)
        keys |= set(
            session.execute(
                published.where(DirectoryPublication.identifier.in_(query.keys))
            ).scalars()
        )
        return keys
    return _organization_keys(session, types, published, query)


def _organization_keys(
    session: Session, types: list[MailboxType], published: Any, query: IdentifierQuery
) -> set[str]:
    numbers = [k[1:] for k in query.keys]
    condition: Any = DirectoryEntry.structure_id.in_(numbers)
    if query.siren:
        condition = condition | DirectoryEntry.structure_id.startswith(query.siren, autoescape=True)
    rows = session.execute(
        select(DirectoryEntry.raw).where(condition, DirectoryEntry.bal_type.in_(types))
    ).scalars()
    candidates = {_structure_key(parse_line(raw)) for raw in rows}
    stored = session.execute(
        published.where(
            DirectoryPublication.identifier.like(f"3{query.siren}%")
            if query.siren
            else DirectoryPublication.identifier.in_(query.keys)
        )
    ).scalars()
    candidates |= set(stored)
    if query.siren:
        stored_exact = session.execute(
            published.where(DirectoryPublication.identifier.in_(query.keys))
        ).scalars()
        candidates |= set(stored_exact)
    return {k for k in candidates if _designated(k, query)}


def _designated(key: str, query: IdentifierQuery) -> bool:
    if key in query.keys:
        return True
    return bool(query.siren) and len(key) == 15 and key.startswith("3" + query.siren)


def _structure_key(row: ExtractionRow) -> str:
    """An ORG or APP line's IdNatStruct: columns "Type identifiant structure" and
    "Identification Structure" (BRIEF §2: a type digit, then the number)."""
    return row.type_identifiant_structure + row.identification_structure


def _load(session: Session, request: PatchRequest, key: str) -> _Work:
    types = [MailboxType(t) for t in RESOURCE_TYPES[request.resource]]
    if request.resource == "Practitioner":
        condition = DirectoryEntry.id_nat_pp == key
    else:
        condition = DirectoryEntry.structure_id == key[1:]
    entries = [
        e
        for e in session.execute(
            select(DirectoryEntry).where(condition, DirectoryEntry.bal_type.in_(types))
        ).scalars()
        if request.resource == "Practitioner" or _structure_key(parse_line(e.raw)) == key
    ]
    publications = session.execute(
        select(DirectoryPublication).where(
            DirectoryPublication.resource == request.resource,
            DirectoryPublication.identifier == key,
        )
    ).scalars()
    return _Work(
        session,
        request,
        key,
        {e.address: e for e in entries},
        {p.address: p for p in publications},
        utcnow(),
    )


# -- stage 3: each operation -------------------------------------------------------------------


def _apply(work: _Work, operation: Operation, where: str) -> None:
    if operation.kind is OpKind.DELETE and operation.target is Target.MAILBOX:
        _delete(work, operation.address)
        return
    if operation.kind is OpKind.INSERT:
        assert operation.mailbox is not None
        _insert(work, operation.mailbox, where)
        return
    entry = work.entries.get(operation.address)
    if entry is None:
        raise PatchError(
            f"{where}: no mailbox {operation.address} on this {work.request.resource}",
            status=422,
            issue="not-found",
        )
    new = _changed(_current(work, entry), operation, where)
    _check_type(entry, new.type, where)
    _save(work, entry, new)
    work.changes.append(_change(operation, new))


def _changed(current: MailboxData, operation: Operation, where: str) -> MailboxData:
    """The mailbox after a replace (or an attribute's delete)."""
    if operation.target is Target.MAILBOX:
        assert operation.mailbox is not None
        return operation.mailbox
    if operation.target is Target.RANK:
        value = operation.value if operation.kind is OpKind.REPLACE else None
        return dataclasses.replace(current, rank=value if isinstance(value, int) else None)
    if operation.target is Target.ADDRESS:
        return current  # the same address again (another one is refused when parsed)
    return _with_attribute(current, operation.attribute, operation.value)


def _with_attribute(current: MailboxData, name: str, value: object) -> MailboxData:
    if name == "listeRouge":
        return dataclasses.replace(current, liste_rouge=bool(value))
    if name == "type":
        return dataclasses.replace(current, type=str(value))
    if name == "description":
        return dataclasses.replace(current, description=str(value))
    if name == "service":
        return dataclasses.replace(current, service=str(value))
    return dataclasses.replace(current, responsible=str(value))


def _insert(work: _Work, mailbox: MailboxData, where: str) -> None:
    if mailbox.type not in RESOURCE_TYPES[work.request.resource]:
        raise PatchError(
            f"{where}: a {mailbox.type} mailbox is not carried by {work.request.resource} "
            f"({' or '.join(RESOURCE_TYPES[work.request.resource])} only)",
            status=422,
            issue="business-rule",
        )
    entry = work.entries.get(mailbox.address)
    if entry is None:
        _refuse_elsewhere(work, mailbox.address, where)
    else:
        _check_type(entry, mailbox.type, where)
    _save(work, entry, mailbox)
    work.changes.append({"op": "insert", "address": mailbox.address, "type": mailbox.type,
                         "liste_rouge": mailbox.liste_rouge})  # fmt: skip


def _refuse_elsewhere(work: _Work, address: str, where: str) -> None:
    """An address belongs to one resource: inserting it under another is refused."""
    taken = work.session.execute(
        select(DirectoryEntry.id).where(DirectoryEntry.address == address)
    ).first()
    if taken is not None:
        raise PatchError(
            f"{where}: {address} is already in the directory for another "
            f"{'professional' if work.request.resource == 'Practitioner' else 'structure'} "
            "or type of resource",
            status=422,
            issue="duplicate",
        )


def _check_type(entry: DirectoryEntry, wanted: str, where: str) -> None:
    if entry.bal_type.value != wanted:
        raise PatchError(
            f"{where}: a mailbox's type never changes (BRIEF §4): {entry.address} is "
            f"{entry.bal_type.value}, not {wanted}",
            status=422,
            issue="business-rule",
        )


def _delete(work: _Work, address: str) -> None:
    """FHIRPath Patch: delete "the element … (if found)"; a second delete changes nothing."""
    entry = work.entries.pop(address, None)
    if entry is None:
        work.changes.append({"op": "delete", "address": address, "found": False})
        return
    _unindex(work.session, entry)
    work.session.delete(entry)
    publication = work.publications.get(address)
    if publication is not None:
        publication.deleted_at = work.now
        publication.operator = work.request.publisher.name
    work.changes.append({"op": "delete", "address": address, "found": True})


def _change(operation: Operation, new: MailboxData) -> dict[str, Any]:
    change: dict[str, Any] = {"op": operation.kind.value, "address": operation.address}
    if operation.target is Target.ATTRIBUTE:
        change["attribute"] = operation.attribute
        change["value"] = operation.value
    elif operation.target is Target.RANK:
        change["rank"] = new.rank
    else:
        change["liste_rouge"] = new.liste_rouge
    return change


# -- stage 4: storing an entry -----------------------------------------------------------------


def _current(work: _Work, entry: DirectoryEntry) -> MailboxData:
    row = parse_line(entry.raw)
    publication = work.publications.get(entry.address)
    return MailboxData(
        address=entry.address,
        type=entry.bal_type.value,
        liste_rouge=entry.liste_rouge,
        service=row.service_rattachement,
        description=publication.description if publication else "",
        responsible=publication.responsible if publication else "",
        rank=publication.rank if publication else None,
    )


def _save(work: _Work, entry: DirectoryEntry | None, mailbox: MailboxData) -> None:
    if entry is None:
        row = _new_row(work, mailbox)
        entry = DirectoryEntry(address=mailbox.address, bal_type=MailboxType(mailbox.type))
        old_words: set[tuple[str, int, str, int]] = set()
    else:
        row = parse_line(entry.raw)._replace(service_rattachement=mailbox.service)
        old_words = entry_words(entry)
    _fill(work, entry, row, mailbox.liste_rouge)
    new_words = entry_words(entry)
    _delete_words(work.session, old_words - new_words)
    if new_words - old_words:
        work.session.execute(
            insert(DirectoryWord), [_word_params(w) for w in new_words - old_words]
        )
    work.entries[entry.address] = entry
    _keep_publication(work, mailbox)


def _fill(work: _Work, entry: DirectoryEntry, row: ExtractionRow, liste_rouge: bool) -> None:
    """The entry's columns from its line (as the importer fills them, importer._entry_row)."""
    line = format_row(row)
    indexed = work.indexer.index(row)
    entry.id_nat_pp = row.identification_nationale_pp
    entry.structure_id = row.identification_structure
    entry.profession_code = row.code_profession
    entry.postal_code = row.code_postal
    entry.city = indexed.city
    entry.liste_rouge = liste_rouge
    entry.source = DirectorySource.OPERATOR
    entry.content_hash = content_hash(line.encode())
    entry.sort_name = indexed.sort_name
    entry.search_text = indexed.search_text
    entry.raw = line
    if entry.id is None:
        entry.ordinal = OPERATOR_ORDINAL_BASE
        work.session.add(entry)
        work.session.flush()
        entry.ordinal = OPERATOR_ORDINAL_BASE + entry.id


def _new_row(work: _Work, mailbox: MailboxData) -> ExtractionRow:
    """The extraction line of a mailbox new to the directory. The PATCH carries the mailbox
    only; what the line says of the professional (names, profession) or the structure (name,
    postal address) is taken from another entry of the same resource, as the agency would from
    its registries; the publishing operator's own name stands for its own structure."""
    fields = [""] * COLUMN_COUNT
    fields[0], fields[1], fields[7] = mailbox.type, mailbox.address, mailbox.service
    key = work.key
    if work.request.resource == "Practitioner":
        fields[2], fields[3], fields[4] = key[0], key[1:], key
        _copy(fields, work.entries.values(), _PERSON_FIELDS, lambda r: bool(r.nom_exercice))
    else:
        fields[5], fields[6] = key[0], key[1:]
        found = _copy(
            fields, work.entries.values(), _STRUCTURE_FIELDS, lambda r: bool(r.raison_sociale)
        )
        if not found and key == work.request.publisher.structure_id:
            fields[18] = work.request.publisher.name
    return ExtractionRow._make(fields)


def _copy(
    fields: list[str], entries: Iterable[DirectoryEntry], columns: range, usable: Any
) -> bool:
    for entry in entries:
        row = parse_line(entry.raw)
        if usable(row):
            for index in columns:
                fields[index] = row[index]
            return True
    return False


def _keep_publication(work: _Work, mailbox: MailboxData) -> None:
    publication = work.publications.get(mailbox.address)
    if publication is None:
        publication = work.session.execute(
            select(DirectoryPublication).where(DirectoryPublication.address == mailbox.address)
        ).scalar_one_or_none()
    if publication is None:
        publication = DirectoryPublication(address=mailbox.address, published_at=work.now)
        work.session.add(publication)
    publication.resource = work.request.resource
    publication.identifier = work.key
    publication.bal_type = MailboxType(mailbox.type)
    publication.operator = work.request.publisher.name
    publication.rank = mailbox.rank
    publication.description = mailbox.description
    publication.responsible = mailbox.responsible
    publication.updated_at = work.now
    publication.deleted_at = None
    work.publications[mailbox.address] = publication


# -- search words of one entry -----------------------------------------------------------------
# The importer rebuilds the whole index; a publication changes one entry's words. (To be merged
# with mssante.directory.normalize / importer: docs/publication.md, "Open points".)

WordRow = tuple[str, int, str, int]


def entry_words(entry: DirectoryEntry) -> set[WordRow]:
    """The ``directory_words`` rows of one entry: none while it is on liste rouge."""
    if entry.liste_rouge or entry.id is None:
        return set()
    return set(word_rows(parse_groups(entry.search_text), entry.sort_name, entry.id))


def delete_words() -> Any:
    """A DELETE of one word row by its whole primary key (an index lookup, never a scan)."""
    table = cast(Table, DirectoryWord.__table__)
    return delete(table).where(
        and_(
            table.c.word == bindparam("w"),
            table.c.weight == bindparam("g"),
            table.c.sort_name == bindparam("s"),
            table.c.entry_id == bindparam("e"),
        )
    )


def _word_params(row: WordRow) -> dict[str, Any]:
    return {"w": row[0], "g": row[1], "s": row[2], "e": row[3], "word": row[0], "weight": row[1],
            "sort_name": row[2], "entry_id": row[3]}  # fmt: skip


def _unindex(session: Session, entry: DirectoryEntry) -> None:
    _delete_words(session, entry_words(entry))


def _delete_words(session: Session, rows: set[WordRow]) -> None:
    if rows:
        session.execute(delete_words(), [_word_params(w) for w in rows])


# -- stage 5: the answer and the audit entry ---------------------------------------------------


def _resource_json(work: _Work) -> dict[str, Any]:
    """The resource after the PATCH: its public mailboxes, and the publisher's own (liste
    rouge included: it is the publisher's to see)."""
    own = work.request.publisher.domains
    system = IDNAT_SYSTEM if work.request.resource == "Practitioner" else STRUCTURE_SYSTEM
    telecom = [
        contact_point(_current(work, entry))
        for entry in sorted(work.entries.values(), key=lambda e: e.address)
        if not entry.liste_rouge or entry.address.rpartition("@")[2] in own
    ]
    return {
        "resourceType": work.request.resource,
        "id": work.key,
        "identifier": [{"system": system, "value": work.key}],
        "telecom": telecom,
    }


def _accepted_record(work: _Work, created: bool) -> AuditRecord:
    request = work.request
    return AuditRecord(
        AuditEvent.DIRECTORY_PATCH_ACCEPTED,
        actor=request.publisher.name,
        target=f"{request.resource}?identifier={work.key}",
        context={
            "dn": request.publisher.dn,
            "remote": request.remote,
            "identifier": request.identifier[:200],
            "created": created,
            "changes": work.changes,
        },
    )
