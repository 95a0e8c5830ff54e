"""FHIR-shaped reads of the directory: ``GET /fhir/Practitioner`` (PER and CAB mailboxes) and
``GET /fhir/Organization`` (ORG and APP), answering a ``Bundle`` of type ``searchset``.

Shapes follow the agency's API description (``data/openapi-balmss.yaml``, "API FHIR MSS"): a
mailbox is a ``telecom`` ContactPoint with ``system = email``, the email-type extension with the
code ``MSSANTE`` (FR Core's ``fr-core-contact-point-email-type``, fixed by the AS Mailbox MSS
profile), and the ``as-ext-mailbox-mss-metadata`` extension with ``type`` (a
``valueCodeableConcept`` in TRE_R256, as in the API's examples) and ``listeRouge``. Practitioners
are grouped by their national id (``urn:oid:1.2.250.1.71.4.2.1|<idNat>``, BRIEF §4);
organisations by their structure id.

Search parameters (each optional, all combined with AND; an unknown one is refused, FHIR's
strict handling):

========================  ==============================================================
``name``                  words of the names (Practitioner) or structure (Organization),
                          each a prefix, accents and case ignored (FHIR string search)
``mailbox-mss``           an address, exactly (also ``:exact``)
``mailbox-mss:contains``  part of an address (scans the table: slower on a big directory)
``mailbox-mss-type``      ``PER``, ``CAB``, ``ORG``, ``APP`` (or ``system|code``)
``identifier``            ``system|value`` or ``value``: idNat, RPPS, or structure id
``qualification-code``    profession code (TRE_G15: 10 Médecin…) (Practitioner)
``address-postalcode``    postal code prefix
``address-city``          town, accents and case ignored
``structure-name``        words of the structure's name (Practitioner; a local parameter)
``_count``                resources per page (default 50, at most ``fhir_max_count``)
========================  ==============================================================

Liste rouge mailboxes are never returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from mssante.config import DirectorySettings
from mssante.directory.extraction import ExtractionRow, parse_line
from mssante.directory.normalize import prefix_upper_bound, words
from mssante.errors import MssanteError
from mssante.store.db import Database

# openapi-balmss.yaml, components/schemas/MailboxMSS and its examples.
EMAIL_TYPE_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
METADATA_URL = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata"
TYPE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
IDNAT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"  # BRIEF §4: the idNat of a professional
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
PROFESSION_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
)
SPECIALTY_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
)
STRUCTURE_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"  # IdNatStruct
DEFAULT_COUNT = 50  # openapi-balmss.yaml, components/parameters/count
_SCAN_ROWS = 20_000  # index rows examined for a name search before giving up the rest


class FhirQueryError(MssanteError):
    """A FHIR search that cannot be run; answered as an OperationOutcome with 400."""


@dataclass(frozen=True)
class Resource:
    """Which FHIR resource, and which mailbox types it carries (openapi-balmss.yaml: PER and
    CAB on Practitioner, ORG and APP on Organization)."""

    name: str
    types: tuple[str, ...]
    name_weights: tuple[int, ...]  # directory_words weights that ``name`` searches


PRACTITIONER = Resource("Practitioner", ("PER", "CAB"), (0, 1))
ORGANIZATION = Resource("Organization", ("ORG", "APP"), (2,))
_KNOWN = frozenset(
    {
        "name",
        "mailbox-mss",
        "mailbox-mss:exact",
        "mailbox-mss:contains",
        "mailbox-mss-type",
        "identifier",
        "qualification-code",
        "address-postalcode",
        "address-city",
        "structure-name",
        "_count",
    }
)


@dataclass
class _Sql:
    """WHERE conditions on ``directory_entries e`` with their bound parameters."""

    conditions: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, condition: str, **params: Any) -> None:
        self.conditions.append(condition)
        self.params.update(params)


def search_bundle(
    db: Database,
    resource: Resource,
    params: Mapping[str, str],
    settings: DirectorySettings,
    base_url: str,
) -> dict[str, Any]:
    """Run a FHIR search and answer its Bundle (searchset)."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise FhirQueryError(f"paramètre inconnu / unknown search parameter: {unknown[0]}")
    count = _count(params.get("_count"), settings)
    sql = _conditions(resource, params)
    name_words = _text_words(params.get("name"))
    with db.engine.connect() as conn:
        rows = _matching(conn, resource, sql, name_words, count)
        resources = _resources(conn, resource, rows, count)
    return _bundle(resource, resources, base_url, complete=len(rows) < count)


def _count(value: str | None, settings: DirectorySettings) -> int:
    if value is None:
        return min(DEFAULT_COUNT, settings.fhir_max_count)
    if not value.isdigit() or not 1 <= int(value) <= settings.fhir_max_count:
        raise FhirQueryError(
            f"_count doit être un entier de 1 à {settings.fhir_max_count} / "
            f"_count must be an integer from 1 to {settings.fhir_max_count}"
        )
    return int(value)


def _text_words(value: str | None) -> list[str]:
    if value is None:
        return []
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or len(value) > 200:
        raise FhirQueryError("valeur de recherche invalide / invalid search value")
    found = list(dict.fromkeys(words(value)))[:6]
    if not found:
        raise FhirQueryError("valeur de recherche vide / empty search value")
    return found


def _code(value: str) -> str:
    """``system|code`` or ``code`` → code."""
    return value.rpartition("|")[2].strip()


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(resource: Resource, params: Mapping[str, str]) -> _Sql:
    sql = _Sql()
    sql.add("e.liste_rouge = FALSE")
    types = list(resource.types)
    if "mailbox-mss-type" in params:
        wanted = _code(params["mailbox-mss-type"]).upper()
        types = [t for t in types if t == wanted]
    placeholders = ", ".join(f":t{i}" for i in range(len(types))) or "NULL"
    sql.add(f"e.bal_type IN ({placeholders})", **{f"t{i}": t for i, t in enumerate(types)})
    exact = params.get("mailbox-mss", params.get("mailbox-mss:exact"))
    if exact is not None:
        sql.add("e.address = :address", address=exact.strip().lower())
    if "mailbox-mss:contains" in params:
        part = _like_escape(params["mailbox-mss:contains"].strip().lower())
        sql.add("e.address LIKE :contains ESCAPE '\\'", contains=f"%{part}%")
    _identifier(sql, resource, params.get("identifier"))
    if "qualification-code" in params:
        sql.add("e.profession_code = :profession", profession=_code(params["qualification-code"]))
    if "address-postalcode" in params:
        postal = _like_escape(params["address-postalcode"].strip())
        sql.add("e.postal_code LIKE :postal ESCAPE '\\'", postal=f"{postal}%")
    if "address-city" in params:
        sql.add("e.city = :city", city=" ".join(words(params["address-city"])))
    for index, word in enumerate(_text_words(params.get("structure-name"))):
        sql.add(f"e.search_text LIKE :s{index}", **{f"s{index}": f"% {word}%"})
    return sql


def _identifier(sql: _Sql, resource: Resource, value: str | None) -> None:
    if value is None:
        return
    system, _, code = value.rpartition("|")
    code = code.strip()
    if resource is ORGANIZATION:
        sql.add("e.structure_id = :identifier", identifier=code)
    elif system.strip() == RPPS_SYSTEM:
        sql.add("e.id_nat_pp = :identifier", identifier="8" + code)
    else:
        sql.add("e.id_nat_pp = :identifier", identifier=code)


_COLUMNS = "e.id, e.address, e.bal_type, e.id_nat_pp, e.structure_id, e.raw"


def _matching(
    conn: Connection, resource: Resource, sql: _Sql, name_words: Sequence[str], count: int
) -> list[Any]:
    """Up to ``count`` matching mailboxes: through the words index when ``name`` is given
    (its last word drives, the others filter), else in the table's order."""
    where = " AND ".join(sql.conditions)
    params = {**sql.params, "n": count}
    if not name_words:
        query = f"SELECT {_COLUMNS} FROM directory_entries e WHERE {where} ORDER BY e.id LIMIT :n"  # noqa: S608 - conditions are constants, values bound
        return list(conn.execute(text(query), params))
    last = name_words[-1]
    for index, word in enumerate(name_words[:-1]):
        where += f" AND e.search_text LIKE :n{index}"
        params[f"n{index}"] = f"% {word}%"
    weights = ", ".join(str(w) for w in resource.name_weights)
    query = f"""
    SELECT DISTINCT {_COLUMNS}, w.word, w.weight, w.sort_name FROM (
      SELECT word, weight, sort_name, entry_id FROM directory_words
      WHERE word >= :lo AND word < :hi ORDER BY word, weight, sort_name, entry_id LIMIT :scan
    ) w JOIN directory_entries e ON e.id = w.entry_id
    WHERE w.weight IN ({weights}) AND {where}
    ORDER BY w.word, w.weight, w.sort_name, e.id LIMIT :n"""  # noqa: S608 - constants; values bound
    params.update(lo=last, hi=prefix_upper_bound(last), scan=_SCAN_ROWS)
    seen: dict[int, Any] = {}
    for row in conn.execute(text(query), params):
        seen.setdefault(row.id, row)
    return list(seen.values())


def _resources(
    conn: Connection, resource: Resource, rows: Sequence[Any], count: int
) -> list[dict[str, Any]]:
    """Group mailboxes into resources: practitioners by idNat, organisations by structure id,
    each with all its public mailboxes; a mailbox without the id is a resource of its own."""
    column = "id_nat_pp" if resource is PRACTITIONER else "structure_id"
    keys = list(dict.fromkeys(getattr(r, column) for r in rows if getattr(r, column)))[:count]
    grouped: dict[str, list[Any]] = {key: [] for key in keys}
    if keys:
        marks = ", ".join(f":k{i}" for i in range(len(keys)))
        types = ", ".join(f"'{t}'" for t in resource.types)  # constants of this module
        query = (
            f"SELECT {_COLUMNS} FROM directory_entries e WHERE e.{column} IN ({marks}) "  # noqa: S608 - column and marks are ours
            f"AND e.liste_rouge = FALSE AND e.bal_type IN ({types}) ORDER BY e.ordinal"
        )
        for row in conn.execute(text(query), {f"k{i}": k for i, k in enumerate(keys)}):
            grouped[getattr(row, column)].append(row)
    singles = [[r] for r in rows if not getattr(r, column)]
    groups = [g for g in grouped.values() if g] + singles
    build = _practitioner if resource is PRACTITIONER else _organization
    return [build(group) for group in groups[:count]]


# -- resources -----------------------------------------------------------------------------------


def telecom(
    address: str, bal_type: str, row: ExtractionRow, liste_rouge: bool = False
) -> dict[str, Any]:
    """A mailbox as a ContactPoint (openapi-balmss.yaml, MailboxMSS)."""
    metadata: list[dict[str, Any]] = [
        {
            "url": "type",
            "valueCodeableConcept": {"coding": [{"system": TYPE_SYSTEM, "code": bal_type}]},
        },
        {"url": "listeRouge", "valueBoolean": liste_rouge},
    ]
    if row.service_rattachement:
        metadata.append({"url": "service", "valueString": row.service_rattachement})
    return {
        "system": "email",
        "value": address,
        "extension": [
            {"url": EMAIL_TYPE_URL, "valueCoding": {"system": TYPE_SYSTEM, "code": "MSSANTE"}},
            {"url": METADATA_URL, "extension": metadata},
        ],
    }


def _telecoms(group: Sequence[Any]) -> list[dict[str, Any]]:
    return [telecom(r.address, r.bal_type, parse_line(r.raw)) for r in group]


def _practitioner(group: Sequence[Any]) -> dict[str, Any]:
    first = group[0]
    row = parse_line(first.raw)
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": first.id_nat_pp or f"bal-{first.id}",
    }
    if first.id_nat_pp:
        resource["identifier"] = _practitioner_identifiers(row)
    resource["name"] = [_human_name(row)]
    if row.code_profession:
        resource["qualification"] = _qualifications(row)
    resource["telecom"] = _telecoms(group)
    return resource


def _practitioner_identifiers(row: ExtractionRow) -> list[dict[str, str]]:
    found = [{"system": IDNAT_SYSTEM, "value": row.identification_nationale_pp}]
    if row.type_identifiant_pp == "8" and row.identifiant_pp:
        found.append({"system": RPPS_SYSTEM, "value": row.identifiant_pp})
    return found


def _human_name(row: ExtractionRow) -> dict[str, Any]:
    name: dict[str, Any] = {"family": row.nom_exercice}
    if row.prenom_exercice:
        name["given"] = [row.prenom_exercice]
    if row.civilite_exercice:
        name["prefix"] = [row.civilite_exercice]
    return name


def _qualifications(row: ExtractionRow) -> list[dict[str, Any]]:
    found = [_coding(PROFESSION_SYSTEM, row.code_profession, row.libelle_profession)]
    if row.code_savoir_faire:
        found.append(_coding(SPECIALTY_SYSTEM, row.code_savoir_faire, row.libelle_savoir_faire))
    return found


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"code": {"coding": [{"system": system, "code": code, "display": display}]}}


def _organization(group: Sequence[Any]) -> dict[str, Any]:
    first = group[0]
    row = parse_line(first.raw)
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": first.structure_id or f"bal-{first.id}",
    }
    if first.structure_id:
        resource["identifier"] = [{"system": STRUCTURE_SYSTEM, "value": first.structure_id}]
    resource["name"] = row.raison_sociale or row.enseigne_commerciale
    if row.enseigne_commerciale and row.raison_sociale:
        resource["alias"] = [row.enseigne_commerciale]
    resource["telecom"] = _telecoms(group)
    return resource


def _bundle(
    resource: Resource, resources: list[dict[str, Any]], base_url: str, *, complete: bool
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if complete:
        bundle["total"] = len(resources)
    bundle["link"] = [{"relation": "self", "url": base_url}]
    root = base_url.split("?", 1)[0].rsplit("/", 1)[0]
    bundle["entry"] = [
        {
            "fullUrl": f"{root}/{resource.name}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ]
    return bundle


def operation_outcome(message: str, code: str = "invalid") -> dict[str, Any]:
    """openapi-balmss.yaml, components/schemas/OperationOutcome."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "details": {"text": message}}],
    }
