"""FHIR PATCH of MSSanté mailboxes: the ``Parameters`` body, read by the authority and written by
operators, so that the two sides cannot drift apart (docs/publication.md).

Source: ``data/openapi-balmss.yaml`` ("API FHIR MSS"): the conditional PATCH paths
``/Practitioner`` (PER and CAB mailboxes) and ``/Organization`` (ORG and APP), the
``PatchParameters`` schema, the ``MailboxMSS`` ContactPoint and its ``as-ext-mailbox-mss-metadata``
extension; FHIR R4 "FHIRPath Patch" (https://hl7.org/fhir/R4/fhirpatch.html) for the meaning of
each operation. BRIEF §4: a mailbox's address and type never change.

Reading is plain data in, plain data out (no I/O): :func:`parse_patch` turns the body into
:class:`Operation` values or raises :class:`PatchError` with its HTTP status and FHIR issue code.
The paths understood are exactly the forms of the API's examples:

====================================================================  ==========================
``R.telecom`` (``insert``, with ``valueContactPoint``)                 a new mailbox
``R.telecom.where(value = 'a@d')`` (``replace`` / ``delete``)          the whole mailbox
``R.telecom.where(value = 'a@d').extension('<metadata>')``             one attribute: ``type``,
``.extension('<name>').value`` (``replace``)                           ``listeRouge``, ``service``…
``R.telecom.where(value = 'a@d').rank`` (``replace``)                  the preference rank
``R.telecom.where(value = 'a@d').value`` (``replace``)                 the address (refused)
====================================================================  ==========================
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mssante.directory.fhir import EMAIL_TYPE_URL, METADATA_URL, TYPE_SYSTEM
from mssante.errors import MssanteError

FHIR_JSON = "application/fhir+json"
# openapi-balmss.yaml, the table of carrier resources: PER and CAB on Practitioner, ORG and APP
# on Organization.
RESOURCE_TYPES: dict[str, tuple[str, ...]] = {
    "Practitioner": ("PER", "CAB"),
    "Organization": ("ORG", "APP"),
}
ATTRIBUTES = ("type", "listeRouge", "description", "service", "responsible")  # MailboxMSSMetadata
MAX_TEXT = 500  # description, service, responsible (the extraction's line holds the service)
MAX_ADDRESS = 320
_ADDRESS = re.compile(r"[^@\s|'\"\\]+@[^@\s|'\"\\]+\.[^@\s|'\"\\]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHERE = r"\.telecom\.where\(\s*value\s*=\s*'(?P<address>[^'\\]*)'\s*\)"
_PATHS = (
    ("insert", re.compile(r"(?P<resource>\w+)\.telecom")),
    ("mailbox", re.compile(rf"(?P<resource>\w+){_WHERE}")),
    ("rank", re.compile(rf"(?P<resource>\w+){_WHERE}\.rank")),
    ("address", re.compile(rf"(?P<resource>\w+){_WHERE}\.value")),
    (
        "attribute",
        re.compile(
            rf"(?P<resource>\w+){_WHERE}\.extension\(\s*'(?P<url>[^']*)'\s*\)"
            r"\.extension\(\s*'(?P<name>[^']*)'\s*\)\.value"
        ),
    ),
)
_VALUE_KEYS = frozenset(
    {
        "valueContactPoint",
        "valueBoolean",
        "valueString",
        "valueInteger",
        "valueCode",
        "valueCodeableConcept",
        "valueCoding",
    }
)
_CONTACT_POINT_KEYS = frozenset({"id", "system", "value", "use", "rank", "period", "extension"})


class PatchError(MssanteError):
    """A PATCH refused: ``status`` (400, 403, 404, 412, 413, 415, 422…), a FHIR ``issue`` code
    (https://hl7.org/fhir/R4/valueset-issue-type.html) and a one-line public reason."""

    def __init__(self, public: str, *, status: int = 400, issue: str = "invalid") -> None:
        super().__init__(public)
        self.status = status
        self.issue = issue


class OpKind(StrEnum):
    INSERT = "insert"
    REPLACE = "replace"
    DELETE = "delete"


class Target(StrEnum):
    """What a path designates."""

    MAILBOX = "mailbox"  # the whole ContactPoint
    ATTRIBUTE = "attribute"  # one value of the metadata extension
    RANK = "rank"
    ADDRESS = "address"  # telecom.value


@dataclass(frozen=True)
class MailboxData:
    """One mailbox as a ContactPoint carries it (openapi-balmss.yaml, MailboxMSS)."""

    address: str  # lower case
    type: str  # PER, ORG, APP, CAB
    liste_rouge: bool = False
    description: str = ""
    service: str = ""
    responsible: str = ""
    rank: int | None = None


@dataclass(frozen=True)
class Operation:
    """One operation of the PATCH, about one mailbox (``address``, lower case)."""

    kind: OpKind
    target: Target
    address: str
    mailbox: MailboxData | None = None  # insert, or replace of the whole ContactPoint
    attribute: str = ""  # Target.ATTRIBUTE: one of ATTRIBUTES
    value: str | bool | int | None = None  # Target.ATTRIBUTE or RANK (None: deleted)


# -- reading -----------------------------------------------------------------------------------


def parse_patch(resource: str, body: bytes, *, max_operations: int = 100) -> list[Operation]:
    """The operations of a ``Parameters`` body sent to ``PATCH /<resource>`` (stages: JSON →
    Parameters → each operation's parts → its path → its value)."""
    document = _json(body)
    if not isinstance(document, dict) or document.get("resourceType") != "Parameters":
        raise PatchError("the body must be a FHIR Parameters resource", issue="structure")
    parameters = document.get("parameter")
    if not isinstance(parameters, list) or not parameters:
        raise PatchError("Parameters.parameter must list at least one operation", issue="required")
    if len(parameters) > max_operations:
        raise PatchError(f"too many operations (at most {max_operations})", issue="too-costly")
    return [_operation(resource, p, number) for number, p in enumerate(parameters, start=1)]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PatchError("the body is not valid JSON (UTF-8)", issue="structure") from None


def _operation(resource: str, parameter: Any, number: int) -> Operation:
    where = f"operation {number}"
    if not isinstance(parameter, dict) or parameter.get("name") != "operation":
        raise PatchError(f"{where}: each parameter must be named 'operation'", issue="structure")
    parts = _parts(parameter.get("part"), where)
    kind = _kind(parts, where)
    path = _string(parts.get("path"), "valueString", f"{where}: path")
    target, address, match = _path(resource, path, where)
    if kind is OpKind.INSERT:
        return _insert(resource, parts, target, where)
    if target is None:
        raise PatchError(f"{where}: the path names no mailbox: {path[:200]}", issue="invalid")
    if kind is OpKind.DELETE:
        return _delete(target, address, match, parts, where)
    return _replace(target, address, match, parts, where)


def _parts(parts: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(parts, list) or not parts:
        raise PatchError(f"{where}: 'part' must be a list", issue="structure")
    found: dict[str, dict[str, Any]] = {}
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if name not in {"type", "path", "index", "value"}:
            raise PatchError(f"{where}: unexpected part {str(name)[:40]!r}", issue="structure")
        if name in found:
            raise PatchError(f"{where}: part '{name}' given twice", issue="structure")
        found[name] = part
    return found


def _kind(parts: dict[str, dict[str, Any]], where: str) -> OpKind:
    code = _string(parts.get("type"), "valueCode", f"{where}: type")
    try:
        return OpKind(code)
    except ValueError:
        raise PatchError(
            f"{where}: unknown or unsupported operation {code[:40]!r} (insert, replace or delete)",
            issue="not-supported",
        ) from None


def _string(part: dict[str, Any] | None, key: str, what: str) -> str:
    value = part.get(key) if part is not None else None
    if not isinstance(value, str) or not value:
        raise PatchError(f"{what}: {key} is required", issue="required")
    return value


def _path(resource: str, path: str, where: str) -> tuple[Target | None, str, re.Match[str] | None]:
    """Which form of path this is (None for a plain ``R.telecom``), and its mailbox."""
    for name, pattern in _PATHS:
        match = pattern.fullmatch(path.strip())
        if match is None:
            continue
        if match["resource"] != resource:
            raise PatchError(
                f"{where}: the path is about {match['resource'][:40]}, not {resource}",
                issue="invalid",
            )
        if name == "insert":
            return None, "", match
        return Target(name), _address(match["address"], f"{where}: path"), match
    raise PatchError(
        f"{where}: the path names no mailbox of {resource}.telecom: {path[:200]}", issue="invalid"
    )


def _insert(
    resource: str, parts: dict[str, dict[str, Any]], target: Target | None, where: str
) -> Operation:
    if target is not None:
        raise PatchError(f"{where}: insert takes the path {resource}.telecom", issue="invalid")
    index = parts.get("index")
    if index is not None and not _is_int(index.get("valueInteger"), minimum=0):
        raise PatchError(f"{where}: index must be a valueInteger ≥ 0", issue="value")
    mailbox = _contact_point(_value(parts, "valueContactPoint", where), where)
    return Operation(OpKind.INSERT, Target.MAILBOX, mailbox.address, mailbox=mailbox)


def _delete(
    target: Target,
    address: str,
    match: re.Match[str] | None,
    parts: dict[str, dict[str, Any]],
    where: str,
) -> Operation:
    if "value" in parts:
        raise PatchError(f"{where}: delete takes no value", issue="invalid")
    if target is Target.MAILBOX:
        return Operation(OpKind.DELETE, Target.MAILBOX, address)
    if target is Target.RANK:
        return Operation(OpKind.DELETE, Target.RANK, address)
    if target is Target.ATTRIBUTE and match is not None:
        name = _attribute_name(match, where)
        if name in {"description", "service", "responsible"}:
            return Operation(OpKind.DELETE, Target.ATTRIBUTE, address, attribute=name, value="")
    raise PatchError(
        f"{where}: a mailbox's address, type and liste rouge cannot be deleted (BRIEF §4)",
        status=422,
        issue="business-rule",
    )


def _replace(
    target: Target,
    address: str,
    match: re.Match[str] | None,
    parts: dict[str, dict[str, Any]],
    where: str,
) -> Operation:
    if target is Target.MAILBOX:
        mailbox = _contact_point(_value(parts, "valueContactPoint", where), where)
        if mailbox.address != address:
            raise _address_change(address, mailbox.address, where)
        return Operation(OpKind.REPLACE, Target.MAILBOX, address, mailbox=mailbox)
    if target is Target.RANK:
        rank = _value(parts, "valueInteger", where)
        if not _is_int(rank, minimum=1):
            raise PatchError(f"{where}: rank must be an integer ≥ 1", issue="value")
        return Operation(OpKind.REPLACE, Target.RANK, address, value=rank)
    if target is Target.ADDRESS:
        new = _address(_value(parts, "valueString", where), f"{where}: value")
        if new != address:
            raise _address_change(address, new, where)
        return Operation(OpKind.REPLACE, Target.ADDRESS, address, value=new)
    assert match is not None
    name = _attribute_name(match, where)
    return Operation(
        OpKind.REPLACE,
        Target.ATTRIBUTE,
        address,
        attribute=name,
        value=_attribute_value(name, parts, where),
    )


def _address_change(old: str, new: str, where: str) -> PatchError:
    return PatchError(
        f"{where}: a mailbox's address never changes (BRIEF §4): {old} → {new[:MAX_ADDRESS]}",
        status=422,
        issue="business-rule",
    )


def _attribute_name(match: re.Match[str], where: str) -> str:
    if match["url"] != METADATA_URL:
        raise PatchError(
            f"{where}: unknown extension {match['url'][:200]!r} (expected {METADATA_URL})",
            issue="not-supported",
        )
    if match["name"] not in ATTRIBUTES:
        raise PatchError(
            f"{where}: unknown mailbox attribute {match['name'][:40]!r} ({', '.join(ATTRIBUTES)})",
            issue="not-supported",
        )
    return str(match["name"])


def _attribute_value(name: str, parts: dict[str, dict[str, Any]], where: str) -> str | bool:
    if name == "type":
        return _type_code(parts.get("value") or {}, f"{where}: value")
    if name == "listeRouge":
        flag = _value(parts, "valueBoolean", where)
        if not isinstance(flag, bool):
            raise PatchError(f"{where}: listeRouge takes a valueBoolean", issue="value")
        return flag
    return _text(_value(parts, "valueString", where), f"{where}: {name}")


def _value(parts: dict[str, dict[str, Any]], key: str, where: str) -> Any:
    part = parts.get("value")
    if part is None:
        raise PatchError(f"{where}: a value ({key}) is required", issue="required")
    given = [k for k in part if k in _VALUE_KEYS]
    if given != [key]:
        shown = ", ".join(given) or "none"
        raise PatchError(f"{where}: the value must be a {key} (given: {shown})", issue="value")
    return part[key]


def _is_int(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < 2**31


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ADDRESS or not _ADDRESS.fullmatch(value):
        raise PatchError(f"{what}: not a valid mailbox address", issue="value")
    return value.lower()


def _text(value: Any, what: str) -> str:
    """A free text that goes into the extraction's line: no '|', no control character."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise PatchError(f"{what}: a string of at most {MAX_TEXT} characters", issue="value")
    if "|" in value or _CONTROL.search(value):
        raise PatchError(f"{what}: '|' and control characters are not allowed", issue="value")
    return value.strip()


# -- the ContactPoint --------------------------------------------------------------------------


def _contact_point(value: Any, where: str) -> MailboxData:
    if not isinstance(value, dict):
        raise PatchError(f"{where}: valueContactPoint must be an object", issue="structure")
    unknown = sorted(set(value) - _CONTACT_POINT_KEYS)
    if unknown:
        raise PatchError(
            f"{where}: unknown ContactPoint element {unknown[0][:40]!r}", issue="structure"
        )
    if value.get("system") != "email":
        raise PatchError(f"{where}: a mailbox is a ContactPoint with system 'email'", issue="value")
    address = _address(value.get("value"), f"{where}: ContactPoint.value")
    rank = value.get("rank")
    if rank is not None and not _is_int(rank, minimum=1):
        raise PatchError(f"{where}: rank must be an integer ≥ 1", issue="value")
    metadata = _metadata(value.get("extension"), where)
    if "type" not in metadata:
        raise PatchError(
            f"{where}: the mailbox's type is required (metadata 'type')", issue="required"
        )
    return MailboxData(address=address, rank=rank, **metadata)


def _metadata(extensions: Any, where: str) -> dict[str, Any]:
    """The values of the ``as-ext-mailbox-mss-metadata`` extension, as MailboxData fields.
    The email-type extension, when present, must say MSSANTE; others are ignored (FHIR: a
    non-modifier extension may be)."""
    if extensions is None:
        return {}
    if not isinstance(extensions, list):
        raise PatchError(f"{where}: extension must be a list", issue="structure")
    found: dict[str, Any] = {}
    for extension in extensions:
        url = extension.get("url") if isinstance(extension, dict) else None
        if url == EMAIL_TYPE_URL:
            _check_email_type(extension, where)
        elif url == METADATA_URL:
            if found:
                raise PatchError(
                    f"{where}: the metadata extension is given twice", issue="structure"
                )
            found = _metadata_values(extension.get("extension"), where)
    return found


def _check_email_type(extension: dict[str, Any], where: str) -> None:
    coding = extension.get("valueCoding")
    if not isinstance(coding, dict) or coding.get("code") != "MSSANTE":
        raise PatchError(f"{where}: the email type must be MSSANTE", issue="value")


_FIELD = {"listeRouge": "liste_rouge"}


def _metadata_values(items: Any, where: str) -> dict[str, Any]:
    if not isinstance(items, list):
        raise PatchError(f"{where}: the metadata extension has no values", issue="structure")
    values: dict[str, Any] = {}
    for item in items:
        name = item.get("url") if isinstance(item, dict) else None
        if name not in ATTRIBUTES:
            raise PatchError(
                f"{where}: unknown mailbox attribute {str(name)[:40]!r} ({', '.join(ATTRIBUTES)})",
                issue="not-supported",
            )
        field = _FIELD.get(str(name), str(name))
        if field in values:
            raise PatchError(f"{where}: attribute {name} given twice", issue="structure")
        values[field] = _metadata_value(str(name), item, where)
    return values


def _metadata_value(name: str, item: dict[str, Any], where: str) -> str | bool:
    if name == "type":
        return _type_code(item, f"{where}: type")
    if name == "listeRouge":
        flag = item.get("valueBoolean")
        if not isinstance(flag, bool):
            raise PatchError(f"{where}: listeRouge takes a valueBoolean", issue="value")
        return flag
    return _text(item.get("valueString"), f"{where}: {name}")


def _type_code(item: dict[str, Any], what: str) -> str:
    """The type as the API's examples give it (``valueCodeableConcept`` in TRE_R256), or as its
    schema does (``valueCode``)."""
    code: Any = item.get("valueCode")
    concept = item.get("valueCodeableConcept")
    if code is None and isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list) and len(codings) == 1 and isinstance(codings[0], dict):
            system = codings[0].get("system")
            code = codings[0].get("code") if system in (None, TYPE_SYSTEM) else None
    if code not in ("PER", "ORG", "APP", "CAB"):
        raise PatchError(f"{what}: the type must be PER, ORG, APP or CAB (TRE_R256)", issue="value")
    return str(code)


# -- writing (operators) -----------------------------------------------------------------------


def contact_point(mailbox: MailboxData) -> dict[str, Any]:
    """A mailbox as a ContactPoint (openapi-balmss.yaml, MailboxMSS and its examples)."""
    metadata: list[dict[str, Any]] = [
        {
            "url": "type",
            "valueCodeableConcept": {"coding": [{"system": TYPE_SYSTEM, "code": mailbox.type}]},
        },
        {"url": "listeRouge", "valueBoolean": mailbox.liste_rouge},
    ]
    for name in ("description", "service", "responsible"):
        text = getattr(mailbox, name)
        if text:
            metadata.append({"url": name, "valueString": text})
    point: dict[str, Any] = {"system": "email", "value": mailbox.address}
    if mailbox.rank is not None:
        point["rank"] = mailbox.rank
    point["extension"] = [
        {"url": EMAIL_TYPE_URL, "valueCoding": {"system": TYPE_SYSTEM, "code": "MSSANTE"}},
        {"url": METADATA_URL, "extension": metadata},
    ]
    return point


def carrier(mailbox_type: str) -> str:
    """The resource that carries a mailbox of this type."""
    for resource, types in RESOURCE_TYPES.items():
        if mailbox_type in types:
            return resource
    raise ValueError(f"unknown mailbox type {mailbox_type!r}")


def _where(resource: str, address: str) -> str:
    return f"{resource}.telecom.where(value = '{address}')"


def _parameters(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": list(parts)}]}


def insert_parameters(mailbox: MailboxData) -> dict[str, Any]:
    """openapi-balmss.yaml, example insertBAL."""
    resource = carrier(mailbox.type)
    return _parameters(
        {"name": "type", "valueCode": "insert"},
        {"name": "path", "valueString": f"{resource}.telecom"},
        {"name": "index", "valueInteger": 0},
        {"name": "value", "valueContactPoint": contact_point(mailbox)},
    )


def replace_parameters(mailbox: MailboxData) -> dict[str, Any]:
    """openapi-balmss.yaml, example replaceContactPoint (the whole ContactPoint)."""
    resource = carrier(mailbox.type)
    return _parameters(
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": _where(resource, mailbox.address)},
        {"name": "value", "valueContactPoint": contact_point(mailbox)},
    )


def delete_parameters(mailbox_type: str, address: str) -> dict[str, Any]:
    """openapi-balmss.yaml, example deleteBAL."""
    return _parameters(
        {"name": "type", "valueCode": "delete"},
        {"name": "path", "valueString": _where(carrier(mailbox_type), address)},
    )


def operation_outcome(
    message: str, code: str = "invalid", severity: str = "error"
) -> dict[str, Any]:
    """openapi-balmss.yaml, components/schemas/OperationOutcome."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "details": {"text": message}}],
    }
