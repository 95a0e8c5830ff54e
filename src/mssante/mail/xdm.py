"""Reading the patients a message is about from its IHE XDM packages (BRIEF §7).

A message about a patient carries ``IHE_XDM.zip``, whose ``IHE_XDM/SUBSET01/METADATA.XML``
(XDS ebRIM 3.0) names the patient by INS in each ``patientId`` ExternalIdentifier (the CX form
``<INS>^^^&<OID>&ISO``). The acceptance path reads it to honour oppositions, whatever form or
client built the message: the INS comes from the package, not from a form field.

Bounded against hostile input: a message's parts are walked to a fixed depth and count, only
ZIP parts are opened, only a member named ``…/METADATA.XML`` is read, its declared and actual
sizes are capped (a ZIP bomb inflates no further than the cap), and the XML is parsed with no
DTD, entities or network.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

from lxml import etree

from mssante.config import MimeSettings
from mssante.mail.mime import email_message
from mssante.mail.patient import DOCUMENT_PATIENT_ID, RIM, SUBMISSION_PATIENT_ID, Ins, PatientError

MAX_DEPTH = 16  # multipart nesting walked (deeper parts are not documents anyone files)
MAX_PARTS = 500
MAX_METADATA_BYTES = 4 * 1024 * 1024
_ZIP_TYPES = frozenset(
    {"application/zip", "application/x-zip-compressed", "application/octet-stream"}
)
_PATIENT_SCHEMES = frozenset({DOCUMENT_PATIENT_ID, SUBMISSION_PATIENT_ID})


class XdmUnreadable(ValueError):
    """A part that claims to be an XDM package (its name, or a ZIP with METADATA.XML) whose
    metadata cannot be read: a message about a patient nobody can identify."""


@dataclass(frozen=True)
class XdmFacts:
    packages: int  # XDM packages found
    patients: frozenset[str]  # the INS values they name (15 characters)


def may_carry_xdm(raw: bytes) -> bool:
    """False when the message surely has no ZIP part (no ZIP type or name, no base64 of a ZIP
    signature): a C-speed scan that spares most messages the MIME parse."""
    return b"zip" in raw or b"ZIP" in raw or b"UEsD" in raw


def patients_of(raw: bytes, limits: MimeSettings | None = None) -> XdmFacts:
    """The patients named by the message's XDM packages. Raises :class:`XdmUnreadable`."""
    if not may_carry_xdm(raw):
        return XdmFacts(0, frozenset())
    message = email_message(raw, limits or MimeSettings())  # past the limits: opaque parts
    packages, patients = 0, set()
    for part in _zip_parts(message):
        metadata = _metadata(part)
        if metadata is None:
            continue
        packages += 1
        patients |= _patient_ids(metadata)
    return XdmFacts(packages, frozenset(patients))


def _zip_parts(message: Message) -> Iterator[bytes]:
    seen = 0
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        if part.is_multipart():
            if depth < MAX_DEPTH:
                children = part.get_payload()
                if isinstance(children, list):
                    stack.extend(
                        (child, depth + 1)
                        for child in reversed(children)
                        if isinstance(child, Message)
                    )
            continue
        if _looks_like_zip(part):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload[:4] == b"PK\x03\x04":
                yield payload


def _looks_like_zip(part: Message) -> bool:
    name = (part.get_filename() or "").lower()
    return part.get_content_type() in _ZIP_TYPES or name.endswith(".zip")


def _metadata(payload: bytes) -> bytes | None:
    """METADATA.XML of an XDM package; None for a ZIP that is not one."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile:
        return None
    with archive:
        members = [i for i in archive.infolist() if i.filename.upper().endswith("/METADATA.XML")]
        if not members:
            return None
        info = members[0]
        if info.file_size > MAX_METADATA_BYTES:
            raise XdmUnreadable(f"METADATA.XML declares {info.file_size} bytes")
        try:
            with archive.open(info) as member:
                data = member.read(MAX_METADATA_BYTES + 1)
        except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
            raise XdmUnreadable(f"METADATA.XML: {type(exc).__name__}") from exc
    if len(data) > MAX_METADATA_BYTES:
        raise XdmUnreadable("METADATA.XML larger than declared")
    return data


def _patient_ids(metadata: bytes) -> set[str]:
    if b"<!DOCTYPE" in metadata or b"<!ENTITY" in metadata:
        raise XdmUnreadable("METADATA.XML carries a DTD")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(metadata, parser)
    except etree.XMLSyntaxError as exc:
        raise XdmUnreadable(f"METADATA.XML: {exc}") from exc
    found = set()
    for element in root.iter(f"{{{RIM}}}ExternalIdentifier"):
        if element.get("identificationScheme") in _PATIENT_SCHEMES:
            try:
                found.add(Ins.from_cx(str(element.get("value") or "")).value)
            except PatientError as exc:
                raise XdmUnreadable(f"patientId: {exc}") from exc
    if not found:
        raise XdmUnreadable("METADATA.XML names no patient")
    return found
