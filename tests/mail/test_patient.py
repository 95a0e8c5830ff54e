"""Messages about a patient: INS, subject, X-MSS headers and the IHE XDM archive (référentiel §3.8)."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from datetime import UTC, date, datetime

import pytest
from lxml import etree, html

from mssante.errors import MssanteError
from mssante.mail.patient import (
    DOCUMENT_PATIENT_ID,
    DOCUMENT_UNIQUE_ID,
    LCM,
    RIM,
    SUBMISSION_PATIENT_ID,
    SUBMISSION_SET,
    SUBMISSION_UNIQUE_ID,
    Document,
    Ins,
    InsKind,
    Patient,
    PatientError,
    build_xdm,
    cda_code,
    cda_codes,
    is_qualified,
    nir_key,
    patient_headers,
    xdm_subject,
)

CREATED = datetime(2026, 11, 25, 12, 30, 15, tzinfo=UTC)
NIR = "255081416802538"  # the textbook example: 2 55 08 14 168 025, key 38
CDA = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ClinicalDocument xmlns="urn:hl7-org:v3"><code code="11490-0" '
    b'codeSystem="2.16.840.1.113883.6.1"/></ClinicalDocument>\n'
)
PDF = b"%PDF-1.4\n% fake but fine\n%%EOF\n"
DOCUMENTS = (
    Document("compte-rendu.pdf", PDF, "application/pdf", "Compte rendu opératoire"),
    Document("compte-rendu.xml", CDA, "text/xml", "Compte rendu (CDA)"),
)


def _patient(**changes: object) -> Patient:
    fields: dict[str, object] = {
        "ins": Ins.parse(NIR),
        "family_name": "Dupont",
        "given_names": ("Marie", "Anne"),
        "birth_date": date(1955, 8, 14),
        "sex": "F",
        "birth_place_code": "14118",
    }
    fields.update(changes)
    return Patient(**fields)  # type: ignore[arg-type]


def _xdm(**changes: object) -> bytes:
    arguments: dict[str, object] = {
        "author": " Dr Hélène Martin ",
        "author_id_nat": "810012345678",
        "created": CREATED,
    }
    arguments.update(changes)
    return build_xdm(_patient(), DOCUMENTS, **arguments)  # type: ignore[arg-type]


def _metadata(archive: bytes) -> etree._Element:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        data = zf.read("IHE_XDM/SUBSET01/METADATA.XML")
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def _values(element: etree._Element, slot: str) -> list[str]:
    path = f"{{{RIM}}}Slot[@name='{slot}']/{{{RIM}}}ValueList/{{{RIM}}}Value"
    return [str(v.text) for v in element.findall(path)]


def _identifier(element: etree._Element, scheme: str) -> str:
    found = element.find(f"{{{RIM}}}ExternalIdentifier[@identificationScheme='{scheme}']")
    assert found is not None
    return str(found.get("value"))


# -- INS ----------------------------------------------------------------------------------------


def test_valid_nir_key() -> None:
    assert nir_key("2550814168025") == "38"
    ins = Ins.parse("2 55 08 14 168 025 38")
    assert ins == Ins(NIR, InsKind.NIR)
    assert (ins.number, ins.key) == ("2550814168025", "38")


def test_corsica_counts_2a_as_19_and_2b_as_18() -> None:
    number_a, number_b = "169052A145123", "169052B145123"
    key_a = f"{97 - int('1690519145123') % 97:02d}"
    key_b = f"{97 - int('1690518145123') % 97:02d}"
    assert nir_key(number_a) == key_a
    assert nir_key(number_b) == key_b
    assert Ins.parse(f"1 69 05 2a 145 123 {key_a}").value == number_a + key_a
    wrong = f"{97 - int('1690520145123') % 97:02d}"  # "2A" read as 20: not the rule
    assert wrong != key_a
    with pytest.raises(PatientError):
        Ins.parse(number_a + wrong)


def test_wrong_key_is_refused_with_a_french_message() -> None:
    with pytest.raises(PatientError) as caught:
        Ins.parse("255081416802539")
    assert caught.value.public == "La clé de l'INS est fausse : vérifiez le numéro saisi."
    assert isinstance(caught.value, MssanteError)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("25508141680253", "15 caractères"),
        ("2550814168025381", "15 caractères"),
        ("", "15 caractères"),
        ("25508X416802538", "chiffres"),
        ("2550814168025A8", "chiffres"),
        ("255082C16802538", "chiffres"),
    ],
)
def test_malformed_ins_is_refused(text: str, words: str) -> None:
    with pytest.raises(PatientError, match=words):
        Ins.parse(text)


def test_nia_and_test_nir_kinds() -> None:
    nia = Ins.parse(NIR, InsKind.NIA)
    assert nia.cx() == f"{NIR}^^^&1.2.250.1.213.1.4.9&ISO"
    assert not is_qualified(nia)
    assert is_qualified(Ins.parse(NIR))
    assert is_qualified(Ins.parse(NIR, InsKind.TEST_NIR))
    assert InsKind.NIR.oid == "1.2.250.1.213.1.4.8"
    assert InsKind.TEST_NIR.oid == "1.2.250.1.213.1.4.10"


def test_cx_round_trip() -> None:
    ins = Ins.parse(NIR)
    assert ins.cx() == "255081416802538^^^&1.2.250.1.213.1.4.8&ISO"
    assert Ins.from_cx(ins.cx()) == ins
    with pytest.raises(PatientError):
        Ins.from_cx(f"{NIR}^^^&1.2.3&ISO")
    with pytest.raises(PatientError):
        Ins.from_cx(NIR)


# -- the patient and the subject -------------------------------------------------------------------


def test_subject_format() -> None:
    subject = xdm_subject("Compte rendu  opératoire", _patient(family_name="D'Artagnan-Dupont"))
    assert subject == "XDM/1.0/DDM+Compte rendu opératoire D'ARTAGNAN-DUPONT Marie 14/08/1955"


def test_given_names_as_one_string_are_split() -> None:
    patient = _patient(given_names="Jean Pierre")
    assert patient.given_names == ("Jean", "Pierre")
    assert patient.first_given_name == "Jean"


@pytest.mark.parametrize(
    "changes",
    [
        {"family_name": ""},
        {"family_name": "Dupont2"},
        {"family_name": "-Dupont"},
        {"given_names": ()},
        {"given_names": ("Marie", "<b>")},
        {"sex": "X"},
        {"birth_place_code": "1411"},
    ],
)
def test_bad_traits_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(PatientError):
        _patient(**changes)


def test_empty_label_is_refused() -> None:
    with pytest.raises(PatientError, match="libellé"):
        xdm_subject("  ", _patient())


# -- headers ------------------------------------------------------------------------------------------


def test_headers_without_cda() -> None:
    assert patient_headers(qualified_ins=True, software="LOGICIEL-1.0") == [
        ("X-MSS-INS", "O"),
        ("X-MSS-NIL", "LOGICIEL-1.0"),
    ]


def test_headers_with_cda_codes_and_patient_mail() -> None:
    headers = patient_headers(
        qualified_ins=False,
        cda_codes=["11490-0", "34112-3", "11490-0"],
        software="LOGICIEL-1.0",
        to_patient=True,
    )
    assert dict(headers) == {
        "X-MSS-INS": "N",
        "X-MSS-NIL": "LOGICIEL-1.0",
        "X-MSS-CODECDA": "11490-0,34112-3",
        "X-MSS-MES": "FIN",
    }


@pytest.mark.parametrize(
    ("software", "codes"), [("", ()), ("A\r\nBcc: x@y", ()), ("OK", ("1,2",)), ("OK", ("",))]
)
def test_header_values_are_checked(software: str, codes: tuple[str, ...]) -> None:
    with pytest.raises(PatientError):
        patient_headers(qualified_ins=True, cda_codes=codes, software=software)


def test_cda_codes_are_read_from_cda_documents_only() -> None:
    assert cda_code(CDA) == "11490-0"
    assert cda_code(PDF) is None
    assert cda_code(b"<!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>") is None
    assert cda_codes(DOCUMENTS) == ["11490-0"]


# -- the XDM archive ----------------------------------------------------------------------------------


def test_xdm_entry_names() -> None:
    with zipfile.ZipFile(io.BytesIO(_xdm())) as zf:
        names = zf.namelist()
        infos = zf.infolist()
        assert zf.testzip() is None
        assert zf.read("IHE_XDM/SUBSET01/DOC0001.PDF") == PDF
        assert zf.read("IHE_XDM/SUBSET01/DOC0002.XML") == CDA
    assert names == [
        "README.TXT",
        "INDEX.HTM",
        "IHE_XDM/SUBSET01/METADATA.XML",
        "IHE_XDM/SUBSET01/DOC0001.PDF",
        "IHE_XDM/SUBSET01/DOC0002.XML",
    ]
    for name in names:
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}(\.[A-Z0-9]{1,3})?", p) for p in name.split("/"))
    assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}
    assert {info.date_time for info in infos} == {(2026, 11, 25, 12, 30, 14)}  # 2-second DOS


def test_xdm_metadata_parses_and_names_the_patient() -> None:
    root = _metadata(_xdm())
    assert root.tag == f"{{{LCM}}}SubmitObjectsRequest"
    cx = Ins.parse(NIR).cx()
    entries = root.findall(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}ExtrinsicObject")
    assert len(entries) == 2
    for entry in entries:
        assert _identifier(entry, DOCUMENT_PATIENT_ID) == cx
        assert _values(entry, "sourcePatientId") == [cx]
        info = _values(entry, "sourcePatientInfo")
        assert "PID-5|DUPONT^Marie Anne^^^^^L" in info
        assert "PID-7|19550814" in info
        assert "PID-8|F" in info
    package = root.find(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}RegistryPackage")
    assert package is not None
    assert _identifier(package, SUBMISSION_PATIENT_ID) == cx
    node = root.find(f".//{{{RIM}}}Classification[@classificationNode='{SUBMISSION_SET}']")
    assert node is not None
    assert node.get("classifiedObject") == package.get("id")
    members = root.findall(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}Association")
    assert {m.get("targetObject") for m in members} == {e.get("id") for e in entries}


def test_xdm_hashes_sizes_and_uris_match_the_documents() -> None:
    root = _metadata(_xdm())
    entries = root.findall(f".//{{{RIM}}}ExtrinsicObject")
    for entry, document in zip(entries, DOCUMENTS, strict=True):
        assert _values(entry, "hash") == [hashlib.sha1(document.content).hexdigest()]
        assert _values(entry, "size") == [str(len(document.content))]
        assert entry.get("mimeType") == document.content_type
    assert [_values(e, "URI") for e in entries] == [["DOC0001.PDF"], ["DOC0002.XML"]]


def test_xdm_unique_ids() -> None:
    root = _metadata(_xdm(unique_id="1.2.250.1.999.1.42"))
    package = root.find(f".//{{{RIM}}}RegistryPackage")
    assert package is not None
    assert _identifier(package, SUBMISSION_UNIQUE_ID) == "1.2.250.1.999.1.42"
    entries = root.findall(f".//{{{RIM}}}ExtrinsicObject")
    assert [_identifier(e, DOCUMENT_UNIQUE_ID) for e in entries] == [
        "1.2.250.1.999.1.42.1",
        "1.2.250.1.999.1.42.2",
    ]
    with pytest.raises(PatientError, match="OID"):
        _xdm(unique_id="not-an-oid")


def test_xdm_is_deterministic() -> None:
    assert _xdm() == _xdm()
    assert _xdm() != _xdm(created=datetime(2026, 11, 25, 12, 31, tzinfo=UTC))
    derived = _metadata(_xdm()).find(f".//{{{RIM}}}RegistryPackage")
    assert derived is not None
    assert _identifier(derived, SUBMISSION_UNIQUE_ID).startswith("2.25.")


def test_xdm_readme_and_index() -> None:
    with zipfile.ZipFile(io.BytesIO(_xdm())) as zf:
        readme = zf.read("README.TXT").decode("utf-8")
        index = zf.read("INDEX.HTM")
    assert readme.index("Créée le 25/11/2026") < readme.index("Created on 2026-11-25")
    assert "par Dr Hélène Martin (identifiant" in readme
    assert "810012345678" in readme
    assert "\r\n" in readme
    page = html.fromstring(index)
    links = [a.get("href") for a in page.iter("a")]
    assert "IHE_XDM/SUBSET01/DOC0001.PDF" in links
    assert "IHE_XDM/SUBSET01/DOC0002.XML" in links
    assert "Compte rendu opératoire" in page.text_content()


def test_xdm_extension_from_the_file_name_else_bin() -> None:
    documents = [
        Document("scan.odt", b"odt", "application/vnd.oasis.opendocument.text", "Scan"),
        Document("blob", b"?", "application/octet-stream", "Blob"),
    ]
    archive = build_xdm(
        _patient(), documents, author="Dr X", author_id_nat="810012345678", created=CREATED
    )
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.namelist()[-2:] == [
            "IHE_XDM/SUBSET01/DOC0001.ODT",
            "IHE_XDM/SUBSET01/DOC0002.BIN",
        ]


def test_xdm_needs_documents_and_a_well_formed_author() -> None:
    with pytest.raises(PatientError, match="au moins un document"):
        build_xdm(_patient(), [], author="Dr X", author_id_nat="810012345678", created=CREATED)
    with pytest.raises(PatientError):
        _xdm(author_id_nat="81 00<>")
    with pytest.raises(PatientError):
        build_xdm(
            _patient(),
            [Document("a.pdf", PDF, "pdf", "Titre")],
            author="Dr X",
            author_id_nat="810012345678",
            created=CREATED,
        )
