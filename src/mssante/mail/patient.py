"""Messages about a patient: the INS, the subject, the ``X-MSS-*`` headers and the IHE XDM archive.

Référentiel socle MSSanté #2 (clients de messageries sécurisées de santé), §3.8: a message that
carries health documents is about one patient only. It has an ``IHE_XDM.zip`` attachment (IHE
ITI TF-1 §16 and TF-3 §4.1 "XDM": Cross-Enterprise Document Media Interchange) holding the
documents and their XDS metadata, plus the same documents as PDF for people. The archive::

    README.TXT                      who made it and when, in French then in English
    INDEX.HTM                       a small HTML page listing the documents
    IHE_XDM/SUBSET01/METADATA.XML   XDS ebRIM 3.0 metadata: one lcm:SubmitObjectsRequest
    IHE_XDM/SUBSET01/DOC0001.PDF    the documents, ISO-9660-style upper-case 8.3 names
    IHE_XDM/SUBSET01/DOC0002.XML

The patient is named by the INS (identifiant national de santé): the NIR, or a NIA while the NIR
is not known, with the OID of its kind, written in the HL7 v2 CX form ``<INS>^^^&<OID>&ISO``.
The message's subject is ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>`` and its
headers ``X-MSS-INS``, ``X-MSS-NIL`` and ``X-MSS-CODECDA`` (référentiel, exigences ECO.2.4).

Everything here is a pure function: no clock, no randomness. The same input gives the same
archive, byte for byte.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from types import MappingProxyType

from lxml import etree

from mssante.errors import MssanteError

NIR_LENGTH = 13  # sex, year, month, département (2A/2B for Corsica), commune, order
INS_LENGTH = NIR_LENGTH + 2  # the NIR and its 2-digit key
SUBSET = "IHE_XDM/SUBSET01/"
METADATA = SUBSET + "METADATA.XML"
SEXES = ("M", "F", "I")

_INS_FORM = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}")
_NAME = re.compile(r"[^\W\d_]+(?:[ '’-]+[^\W\d_]+)*")
_INSEE_COMMUNE = re.compile(r"[0-9]{5}|2[AB][0-9]{3}")
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_ID_NAT = re.compile(r"[0-9A-Za-z/.-]{1,64}")
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_EXTENSION = re.compile(r"[A-Z0-9]{1,3}")
_MAX_DOCUMENTS = 9999  # DOC0001 … DOC9999: an 8.3 name has room for four digits
_MAX_NAME = 100

# The OID of the national identifiers of health professionals (idNat_PS, RPPS/ADELI), as the
# CI-SIS writes it in XCN authorPerson values.
PS_ID_OID = "1.2.250.1.71.4.2.1"

# XDS ebRIM 3.0 (IHE ITI TF-3 §4.2): namespaces and the standard scheme UUIDs.
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DOCUMENT_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DOCUMENT_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
DOCUMENT_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SUBMISSION_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SUBMISSION_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SUBMISSION_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SUBMISSION_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
_CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
_EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
_HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
# The namespace of this module's name-based UUIDs (RFC 9562 §5.5), fixed once for all.
_UUID_NAMESPACE = uuid.UUID("6f0c8a52-7d1e-5b3a-9c4e-2f6d8b1a0e57")
_CDA = "urn:hl7-org:v3"

# The 8.3 extension of a document from its media type; otherwise its file name's, else BIN.
_EXTENSIONS = MappingProxyType(
    {
        "application/pdf": "PDF",
        "text/xml": "XML",
        "application/xml": "XML",
        "application/hl7-v3+xml": "XML",
        "text/plain": "TXT",
        "text/html": "HTM",
        "text/rtf": "RTF",
        "image/jpeg": "JPG",
        "image/png": "PNG",
        "image/tiff": "TIF",
        "application/dicom": "DCM",
    }
)


class PatientError(MssanteError):
    """Patient data (INS, identity traits) or documents were refused; the message is French."""


# -- INS -----------------------------------------------------------------------------------------


class InsKind(StrEnum):
    """The kinds of INS, each its OID (référentiel INS; CI-SIS)."""

    NIR = "1.2.250.1.213.1.4.8"
    NIA = "1.2.250.1.213.1.4.9"
    TEST_NIR = "1.2.250.1.213.1.4.10"

    @property
    def oid(self) -> str:
        return self.value

    @classmethod
    def from_oid(cls, oid: str) -> InsKind:
        """The kind named by ``oid``; :class:`PatientError` if it is not an INS OID."""
        try:
            return cls(oid.strip())
        except ValueError:
            raise PatientError(f"OID d'INS inconnu : {oid.strip()[:64]!r}.") from None


def nir_key(number: str) -> str:
    """The 2-digit key of a 13-character NIR (or NIA): 97 - (number mod 97).

    For Corsica the département ``2A`` counts as ``19`` and ``2B`` as ``18``.
    """
    if len(number) != NIR_LENGTH or not _INS_FORM.fullmatch(number + "00"):
        raise PatientError("Le NIR doit comporter 13 caractères : chiffres, ou 2A/2B en 6e-7e.")
    digits = number[:5] + {"2A": "19", "2B": "18"}.get(number[5:7], number[5:7]) + number[7:]
    return f"{97 - int(digits) % 97:02d}"


@dataclass(frozen=True)
class Ins:
    """An INS: 15 characters (the 13 of the NIR or NIA, then the key) and its kind."""

    value: str
    kind: InsKind

    def __post_init__(self) -> None:
        _check_ins(self.value)

    @classmethod
    def parse(cls, text: str, kind: InsKind = InsKind.NIR) -> Ins:
        """Read an INS as typed by a person: spaces are ignored, letters upper-cased."""
        return cls("".join(text.split()).upper(), InsKind(kind))

    @classmethod
    def from_cx(cls, text: str) -> Ins:
        """Read the CX form ``<INS>^^^&<OID>&ISO`` (the XDM ``patientId``)."""
        value, _, authority = text.strip().partition("^^^&")
        oid, _, suffix = authority.partition("&")
        if suffix != "ISO":
            raise PatientError(
                "Identifiant patient illisible : la forme attendue est INS^^^&OID&ISO."
            )
        return cls(value, InsKind.from_oid(oid))

    @property
    def number(self) -> str:
        """The 13 characters without the key."""
        return self.value[:NIR_LENGTH]

    @property
    def key(self) -> str:
        return self.value[NIR_LENGTH:]

    def cx(self) -> str:
        """The HL7 v2 CX form used in XDS metadata: ``<INS>^^^&<OID>&ISO``."""
        return f"{self.value}^^^&{self.kind.oid}&ISO"


def _check_ins(value: str) -> None:
    if len(value) != INS_LENGTH:
        raise PatientError(
            f"L'INS doit comporter 15 caractères (13 pour le numéro, 2 pour la clé) : "
            f"{len(value)} reçus."
        )
    if not _INS_FORM.fullmatch(value):
        raise PatientError(
            "L'INS ne doit contenir que des chiffres (sauf 2A ou 2B pour un département de Corse)."
        )
    if nir_key(value[:NIR_LENGTH]) != value[NIR_LENGTH:]:
        raise PatientError("La clé de l'INS est fausse : vérifiez le numéro saisi.")


def is_qualified(ins: Ins) -> bool:
    """Whether ``ins`` can be announced as qualified (``X-MSS-INS: O``).

    Inferred from the référentiel INS: only a NIR (or a test NIR) can be a qualified INS; a NIA
    is a temporary number and never is. This checks the kind only: whether the identity was
    actually verified (INSi call, identity document) is the caller's to know.
    """
    return ins.kind in (InsKind.NIR, InsKind.TEST_NIR)


# -- the patient ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    """The identity traits of one patient (référentiel national d'identitovigilance).

    ``given_names`` are the birth given names in order, the first one used in the subject; a
    single string is read as the space-separated list. ``sex`` is ``M``, ``F`` or ``I``
    (indéterminé). ``birth_place_code`` is the INSEE code of the birth place, when known.
    """

    ins: Ins
    family_name: str
    given_names: tuple[str, ...]
    birth_date: date
    sex: str
    birth_place_code: str = ""

    def __post_init__(self) -> None:
        raw: object = self.given_names
        names = tuple(raw.split()) if isinstance(raw, str) else tuple(self.given_names)
        object.__setattr__(self, "given_names", names)
        _check_name(self.family_name, "Le nom de naissance")
        if not names:
            raise PatientError("Le prénom de naissance est obligatoire.")
        for name in names:
            _check_name(name, "Le prénom")
        if self.sex not in SEXES:
            raise PatientError("Le sexe doit être M, F ou I (indéterminé).")
        if self.birth_place_code and not _INSEE_COMMUNE.fullmatch(self.birth_place_code):
            raise PatientError("Le code INSEE du lieu de naissance doit comporter 5 caractères.")

    @property
    def first_given_name(self) -> str:
        return self.given_names[0]


def _check_name(value: str, label: str) -> None:
    if not value.strip():
        raise PatientError(f"{label} est obligatoire.")
    if len(value) > _MAX_NAME or not _NAME.fullmatch(value):
        raise PatientError(
            f"{label} ne peut contenir que des lettres, des espaces, des traits d'union et des "
            "apostrophes, et doit commencer et finir par une lettre."
        )


def xdm_subject(label: str, patient: Patient) -> str:
    """The subject of a message carrying an XDM archive (référentiel §3.8).

    ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>``: the family name upper-cased,
    the first given name. The date as DD/MM/YYYY is inferred: the référentiel's examples write
    French dates.
    """
    text = " ".join(label.split())
    if not text:
        raise PatientError("Le libellé du message est obligatoire.")
    born = patient.birth_date.strftime("%d/%m/%Y")
    return f"XDM/1.0/DDM+{text} {patient.family_name.upper()} {patient.first_given_name} {born}"


def patient_headers(
    *,
    qualified_ins: bool,
    cda_codes: Sequence[str] = (),
    software: str,
    to_patient: bool = False,
) -> list[tuple[str, str]]:
    """The ``X-MSS-*`` header fields of a message (référentiel, ECO.2.4).

    ``X-MSS-INS`` is ``O`` when the XDM carries a qualified INS, ``N`` otherwise; ``X-MSS-NIL``
    names the sending software (on every message); ``X-MSS-CODECDA`` lists the ``code`` of each
    attached CDA document, comma-separated, only when there is one; ``X-MSS-MES: FIN`` marks a
    message to a patient.
    """
    nil = _header_value(software, "La référence du logiciel")
    fields = [("X-MSS-INS", "O" if qualified_ins else "N"), ("X-MSS-NIL", nil)]
    codes = [_header_value(code, "Le code CDA") for code in cda_codes]
    if any("," in code for code in codes):
        raise PatientError("Un code CDA ne peut pas contenir de virgule.")
    if codes:
        fields.append(("X-MSS-CODECDA", ",".join(dict.fromkeys(codes))))
    if to_patient:
        fields.append(("X-MSS-MES", "FIN"))
    return fields


def _header_value(value: str, label: str) -> str:
    text = _text_line(value, label)
    if not text.isascii():
        raise PatientError(f"{label} doit être une ligne de texte ASCII non vide.")
    return text


def _text_line(value: str, label: str) -> str:
    text = value.strip()
    if not text or not text.isprintable():
        raise PatientError(f"{label} doit être une ligne de texte non vide.")
    return text


# -- documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One health document: its original file name, bytes, media type and title."""

    filename: str
    content: bytes
    content_type: str
    title: str


def cda_code(content: bytes) -> str | None:
    """The ``code`` of a CDA document's ``ClinicalDocument/code`` (CI-SIS), else ``None``.

    The document is read without DTD, entities or network; anything unreadable is not a CDA.
    """
    if b"<!DOCTYPE" in content:
        return None
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError:
        return None
    if root.tag != f"{{{_CDA}}}ClinicalDocument":
        return None
    code = root.find(f"{{{_CDA}}}code")
    value = "" if code is None else str(code.get("code") or "").strip()
    return value or None


def cda_codes(documents: Sequence[Document]) -> list[str]:
    """The CDA codes of ``documents`` in order (for ``X-MSS-CODECDA``)."""
    codes = (cda_code(d.content) for d in documents if "xml" in d.content_type.lower())
    return [code for code in codes if code]


# -- the XDM archive -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str  # the 8.3 name in SUBSET01
    document: Document
    entry_uuid: str
    unique_id: str


@dataclass(frozen=True)
class _Submission:
    patient: Patient
    entries: tuple[_Entry, ...]
    author: str
    author_id_nat: str
    author_xcn: str
    created: datetime
    unique_id: str
    source_id: str
    set_uuid: str


def build_xdm(
    patient: Patient,
    documents: Sequence[Document],
    *,
    author: str,
    author_id_nat: str,
    created: datetime,
    unique_id: str | None = None,
    source_id: str | None = None,
) -> bytes:
    """The ``IHE_XDM.zip`` archive of ``documents`` about ``patient`` (IHE ITI TF-3 §4.1).

    ``author`` is the professional's name and ``author_id_nat`` their national identifier
    (idNat_PS). ``unique_id`` is the submission set's OID; without one, it is derived from the
    content (a ``2.25`` UUID OID, ITU-T X.667), so the same input always gives the same bytes.
    ``source_id`` (an OID) defaults likewise to one derived from the author's identifier.
    """
    submission = _submission(
        patient,
        documents,
        author=author,
        author_id_nat=author_id_nat,
        created=_utc(created),
        unique_id=unique_id,
        source_id=source_id,
    )
    files = [
        ("README.TXT", _readme(submission)),
        ("INDEX.HTM", _index(submission)),
        (METADATA, _metadata(submission)),
        *((SUBSET + entry.name, entry.document.content) for entry in submission.entries),
    ]
    return _zip(files, submission.created)


def _submission(
    patient: Patient,
    documents: Sequence[Document],
    *,
    author: str,
    author_id_nat: str,
    created: datetime,
    unique_id: str | None,
    source_id: str | None,
) -> _Submission:
    _check_documents(documents)
    author = _text_line(author, "Le nom de l'auteur")
    if not _ID_NAT.fullmatch(author_id_nat):
        raise PatientError("L'identifiant national de l'auteur est mal formé.")
    set_oid = _checked_oid(unique_id) if unique_id else _content_oid(patient, documents, created)
    source = _checked_oid(source_id) if source_id else _uuid_oid(f"source/{author_id_nat}")
    entries = tuple(
        _Entry(
            name=f"DOC{index:04d}.{_extension(document)}",
            document=document,
            entry_uuid=_urn(set_oid, f"document/{index}"),
            unique_id=f"{set_oid}.{index}",
        )
        for index, document in enumerate(documents, start=1)
    )
    return _Submission(
        patient=patient,
        entries=entries,
        author=author,
        author_id_nat=author_id_nat,
        author_xcn=_xcn(author_id_nat, author),
        created=created,
        unique_id=set_oid,
        source_id=source,
        set_uuid=_urn(set_oid, "submission-set"),
    )


def _check_documents(documents: Sequence[Document]) -> None:
    if not documents:
        raise PatientError("L'archive XDM doit contenir au moins un document.")
    if len(documents) > _MAX_DOCUMENTS:
        raise PatientError("L'archive XDM ne peut pas contenir plus de 9999 documents.")
    for document in documents:
        if not _CONTENT_TYPE.fullmatch(document.content_type.lower()):
            raise PatientError(f"Type de document invalide : {document.content_type[:64]!r}.")
        _text_line(document.title, "Le titre du document")
        if not document.filename.strip() or not document.filename.isprintable():
            raise PatientError("Le nom de fichier du document est invalide.")


def _extension(document: Document) -> str:
    known = _EXTENSIONS.get(document.content_type.lower())
    if known:
        return known
    _, dot, suffix = document.filename.rpartition(".")
    suffix = suffix.upper()
    return suffix if dot and _EXTENSION.fullmatch(suffix) else "BIN"


def _checked_oid(oid: str) -> str:
    if len(oid) > 60 or not _OID.fullmatch(oid):  # XDS uniqueId: 64 at most, with ".<n>"
        raise PatientError(f"Identifiant (OID) invalide : {oid[:64]!r}.")
    return oid


def _content_oid(patient: Patient, documents: Sequence[Document], created: datetime) -> str:
    digest = hashlib.sha256(patient.ins.cx().encode() + created.isoformat().encode())
    for document in documents:
        digest.update(hashlib.sha256(document.content).digest())
    return _uuid_oid(digest.hexdigest())


def _uuid_oid(name: str) -> str:
    """An OID under ``2.25`` (ITU-T X.667) from a name-based UUID."""
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, name).int}"


def _urn(set_oid: str, name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{set_oid}/{name}')}"


def _xcn(id_nat: str, name: str) -> str:
    """The author in HL7 v2 XCN form, as the CI-SIS writes it: ``id^NAME^…^&OID&ISO^D^^^IDNPS``."""
    plain = re.sub(r"[\^&~\\|]", " ", name)
    return f"{id_nat}^{plain}^^^^^^^&{PS_ID_OID}&ISO^D^^^IDNPS"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _dtm(moment: datetime) -> str:
    """An XDS date-time: ``YYYYMMDDhhmmss`` in UTC."""
    return moment.strftime("%Y%m%d%H%M%S")


# -- METADATA.XML (XDS ebRIM 3.0) ------------------------------------------------------------------


def _metadata(submission: _Submission) -> bytes:
    root = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM, "rs": RS})
    objects = etree.SubElement(root, f"{{{RIM}}}RegistryObjectList")
    for entry in submission.entries:
        objects.append(_document_entry(submission, entry))
    objects.append(_submission_set(submission))
    _rim(
        objects,
        "Classification",
        id=_urn(submission.unique_id, "submission-set/classification"),
        classifiedObject=submission.set_uuid,
        classificationNode=SUBMISSION_SET,
        objectType=_CLASSIFICATION,
    )
    for entry in submission.entries:
        objects.append(_association(submission, entry))
    body: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body


def _document_entry(submission: _Submission, entry: _Entry) -> etree._Element:
    """An XDSDocumentEntry (IHE ITI TF-3 §4.2.3.2)."""
    document, patient_cx = entry.document, submission.patient.ins.cx()
    element = etree.Element(
        f"{{{RIM}}}ExtrinsicObject",
        id=entry.entry_uuid,
        mimeType=document.content_type.lower(),
        objectType=DOCUMENT_ENTRY,
        status=_APPROVED,
    )
    _slot(element, "creationTime", _dtm(submission.created))
    _slot(element, "hash", hashlib.sha1(document.content, usedforsecurity=False).hexdigest())
    _slot(element, "languageCode", "fr-FR")
    _slot(element, "size", str(len(document.content)))
    _slot(element, "sourcePatientId", patient_cx)
    _slot(element, "sourcePatientInfo", *_patient_info(submission.patient))
    _slot(element, "URI", entry.name)
    _name(element, document.title)
    _author(element, entry.entry_uuid, DOCUMENT_AUTHOR, submission.author_xcn)
    entry_id = entry.entry_uuid
    _external_id(element, entry_id, DOCUMENT_PATIENT_ID, patient_cx, "XDSDocumentEntry.patientId")
    _external_id(
        element, entry_id, DOCUMENT_UNIQUE_ID, entry.unique_id, "XDSDocumentEntry.uniqueId"
    )
    return element


def _submission_set(submission: _Submission) -> etree._Element:
    """The XDSSubmissionSet (IHE ITI TF-3 §4.2.3.3)."""
    set_uuid = submission.set_uuid
    element = etree.Element(f"{{{RIM}}}RegistryPackage", id=set_uuid, objectType=_PACKAGE)
    _slot(element, "submissionTime", _dtm(submission.created))
    _author(element, set_uuid, SUBMISSION_AUTHOR, submission.author_xcn)
    patient_cx = submission.patient.ins.cx()
    for scheme, value, name in (
        (SUBMISSION_PATIENT_ID, patient_cx, "XDSSubmissionSet.patientId"),
        (SUBMISSION_SOURCE_ID, submission.source_id, "XDSSubmissionSet.sourceId"),
        (SUBMISSION_UNIQUE_ID, submission.unique_id, "XDSSubmissionSet.uniqueId"),
    ):
        _external_id(element, set_uuid, scheme, value, name)
    return element


def _association(submission: _Submission, entry: _Entry) -> etree._Element:
    element = etree.Element(
        f"{{{RIM}}}Association",
        id=_urn(submission.unique_id, f"{entry.entry_uuid}/association"),
        associationType=_HAS_MEMBER,
        sourceObject=submission.set_uuid,
        targetObject=entry.entry_uuid,
    )
    _slot(element, "SubmissionSetStatus", "Original")
    return element


def _patient_info(patient: Patient) -> list[str]:
    """The sourcePatientInfo values: HL7 v2 PID fields (IHE ITI TF-3 §4.2.3.2.23).

    PID-8 uses HL7 table 0001, which has no "indéterminé": ``I`` is written ``U`` (unknown).
    The birth place as ``PID-11|^^^^^^BDL^^<INSEE>`` follows the CI-SIS usage (inferred).
    """
    given = " ".join(patient.given_names)
    values = [
        f"PID-3|{patient.ins.cx()}",
        f"PID-5|{patient.family_name.upper()}^{given}^^^^^L",
        f"PID-7|{patient.birth_date:%Y%m%d}",
        f"PID-8|{'U' if patient.sex == 'I' else patient.sex}",
    ]
    if patient.birth_place_code:
        values.append(f"PID-11|^^^^^^BDL^^{patient.birth_place_code}")
    return values


def _rim(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{RIM}}}{tag}", attributes)


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    value_list = _rim(_rim(parent, "Slot", name=name), "ValueList")
    for value in values:
        _rim(value_list, "Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    localized = _rim(_rim(parent, "Name"), "LocalizedString", charset="UTF-8", value=text)
    localized.set(_XML_LANG, "fr-FR")


def _author(parent: etree._Element, classified: str, scheme: str, xcn: str) -> None:
    classification = _rim(
        parent,
        "Classification",
        id=_urn(classified, "author"),
        classificationScheme=scheme,
        classifiedObject=classified,
        nodeRepresentation="",
        objectType=_CLASSIFICATION,
    )
    _slot(classification, "authorPerson", xcn)


def _external_id(
    parent: etree._Element,
    registry_object: str,
    scheme: str,
    value: str,
    name: str,
) -> None:
    """An ExternalIdentifier; ``name`` is the XDS attribute, e.g. ``XDSDocumentEntry.uniqueId``."""
    identifier = _rim(
        parent,
        "ExternalIdentifier",
        id=_urn(registry_object, name),
        identificationScheme=scheme,
        objectType=_EXTERNAL_ID,
        registryObject=registry_object,
        value=value,
    )
    _rim(_rim(identifier, "Name"), "LocalizedString", value=name)


# -- README.TXT and INDEX.HTM -------------------------------------------------------------------


def _readme(submission: _Submission) -> bytes:
    author, id_nat = submission.author, submission.author_id_nat
    when_fr = f"{submission.created:%d/%m/%Y à %H:%M} UTC"
    when_en = f"{submission.created:%Y-%m-%d at %H:%M} UTC"
    count = len(submission.entries)
    lines = [
        "Archive IHE XDM : documents de santé (MSSanté)",
        "",
        f"Créée le {when_fr} par {author} (identifiant national {id_nat}).",
        f"Elle contient {count} document(s) concernant un patient, dans {SUBSET[:-1]},",
        "avec leurs métadonnées XDS (METADATA.XML). Ouvrez INDEX.HTM pour les consulter.",
        "",
        "-" * 60,
        "",
        "IHE XDM archive: health documents (MSSante)",
        "",
        f"Created on {when_en} by {author} (national identifier {id_nat}).",
        f"It holds {count} document(s) about one patient, in {SUBSET[:-1]},",
        "with their XDS metadata (METADATA.XML). Open INDEX.HTM to see them.",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _index(submission: _Submission) -> bytes:
    esc, author = html.escape, submission.author
    items = "".join(
        f'<li><a href="{esc(SUBSET + e.name)}">{esc(e.document.title)}</a> '
        f"({esc(e.document.filename)}, {esc(e.document.content_type)})</li>\r\n"
        for e in submission.entries
    )
    page = (
        '<!DOCTYPE html>\r\n<html lang="fr">\r\n<head>\r\n<meta charset="utf-8">\r\n'
        "<title>Documents de santé / Health documents</title>\r\n</head>\r\n<body>\r\n"
        "<h1>Documents de santé / Health documents</h1>\r\n"
        f"<p>{esc(author)}, {submission.created:%d/%m/%Y %H:%M} UTC</p>\r\n"
        f"<ul>\r\n{items}</ul>\r\n"
        f'<p><a href="README.TXT">README.TXT</a> - <a href="{METADATA}">METADATA.XML</a></p>\r\n'
        "</body>\r\n</html>\r\n"
    )
    return page.encode("utf-8")


def _zip(files: Sequence[tuple[str, bytes]], created: datetime) -> bytes:
    """A deflated ZIP whose bytes depend only on ``files`` and ``created``."""
    stamp = (created.year, created.month, created.day, created.hour, created.minute, created.second)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0  # MS-DOS: no host-dependent permission bits
            info.external_attr = 0
            archive.writestr(info, data)
    return buffer.getvalue()
