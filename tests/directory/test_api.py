"""The directory's routes on the authority's app, over a real socket: type-ahead JSON, FHIR
Bundles shaped as openapi-balmss.yaml, the extraction download; bad input is a 400."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dirhelpers import node_settings, org, person, write_extraction

from mssante.authority.publish import Signer
from mssante.authority.server import create_app
from mssante.authority.service import AuthorityService
from mssante.directory.extraction import HEADER
from mssante.directory.fhir import EMAIL_TYPE_URL, METADATA_URL, TYPE_SYSTEM
from mssante.directory.importer import import_extraction
from mssante.runtime import open_node
from support import drop_schema, is_postgres, new_schema_name, selected_database_url, serving

CHU = "CENTRE HOSPITALIER UNIVERSITAIRE DE LYON"
LINES = [
    person("jean.dupont@medecin.mssante.fr", "DUPONT", "Jean"),
    person("jean.dupont@ch-lyon.mssante.fr", "DUPONT", "Jean", raison_sociale="CH DE LYON"),
    person(
        "anne.martin@infirmier.mssante.fr",
        "MARTIN",
        "Anne",
        identifiant_pp="10009999999",
        identification_nationale_pp="810009999999",
        code_profession="60",
        libelle_profession="Infirmier",
        code_savoir_faire="",
        libelle_savoir_faire="",
        code_postal="75013",
        l6_ligne_acheminement="75013 PARIS",
    ),
    org("cardiologie@chu-lyon.mssante.fr", CHU, "Cardiologie"),
    org("urgences@chu-lyon.mssante.fr", CHU, "Urgences"),
]


def _signer() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return Signer(cert, key, [])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module (the routes only read)."""
    tmp_path = tmp_path_factory.mktemp("directory-api")
    schema = new_schema_name() if is_postgres() else ""
    url = selected_database_url() if schema else f"sqlite:///{tmp_path / 'test.db'}"
    try:
        yield from _serve(tmp_path, (url, schema))
    finally:
        if schema:
            drop_schema(schema)


def _serve(tmp_path: Path, database_settings: tuple[str, str]) -> Iterator[str]:
    node = open_node(node_settings(tmp_path, database_settings))
    source = write_extraction(tmp_path / "Extraction_Correspondance_MSSante_1.txt", LINES)
    import_extraction(node.db, source, node.settings.directory, actor="test")
    app = create_app(AuthorityService(node, _signer()), "token")
    with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as port:
        yield f"http://127.0.0.1:{port}"
    node.close()


def test_type_ahead(served: str) -> None:
    response = httpx.get(f"{served}/directory/search", params={"q": "dupont J", "limit": "5"})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "dupont J"
    assert [r["address"] for r in body["results"]] == [
        "jean.dupont@medecin.mssante.fr",  # the same name: the older entry first
        "jean.dupont@ch-lyon.mssante.fr",
    ]
    first = body["results"][1]
    assert first["type"] == "PER" and first["nom"] == "DUPONT" and first["prenom"] == "Jean"
    assert first["profession"] == "Médecin" and first["structure"] == "CH DE LYON"
    assert (first["postal_code"], first["city"]) == ("69003", "LYON")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "vide"),
        ({"q": ""}, "vide"),
        ({"q": "x" * 101}, "trop longue"),
        ({"q": "dupont\x00"}, "contrôle"),
        ({"q": "du", "limit": "1000"}, "limit"),
        ({"q": "du", "limit": "dix"}, "limit"),
    ],
)
def test_bad_type_ahead_requests_are_400(served: str, params: dict[str, str], message: str) -> None:
    response = httpx.get(f"{served}/directory/search", params=params)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize("q", ["' OR 1=1 --", "NEAR(", '"', "*", "AND", "-", "^", "%", "_", "%25"])
def test_hostile_type_ahead_is_never_a_500(served: str, q: str) -> None:
    response = httpx.get(f"{served}/directory/search", params={"q": q})
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_fhir_practitioner_bundle(served: str) -> None:
    response = httpx.get(f"{served}/fhir/Practitioner", params={"name": "dupont"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 1)
    (entry,) = bundle["entry"]
    practitioner = entry["resource"]
    assert practitioner["resourceType"] == "Practitioner"
    assert practitioner["id"] == "810001234567"
    assert entry["fullUrl"].endswith("/fhir/Practitioner/810001234567")
    assert {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810001234567"} in practitioner[
        "identifier"
    ]
    assert practitioner["name"] == [{"family": "DUPONT", "given": ["Jean"], "prefix": ["DR"]}]
    coding = practitioner["qualification"][0]["code"]["coding"][0]
    assert (coding["code"], coding["display"]) == ("10", "Médecin")
    telecoms = practitioner["telecom"]
    assert [t["value"] for t in telecoms] == [
        "jean.dupont@medecin.mssante.fr",
        "jean.dupont@ch-lyon.mssante.fr",
    ]
    telecom = telecoms[0]
    assert telecom["system"] == "email"
    email_type, metadata = telecom["extension"]
    assert email_type == {
        "url": EMAIL_TYPE_URL,
        "valueCoding": {"system": TYPE_SYSTEM, "code": "MSSANTE"},
    }
    assert metadata["url"] == METADATA_URL
    assert metadata["extension"] == [
        {
            "url": "type",
            "valueCodeableConcept": {"coding": [{"system": TYPE_SYSTEM, "code": "PER"}]},
        },
        {"url": "listeRouge", "valueBoolean": False},
    ]


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({"mailbox-mss:contains": "dupont@ch"}, ["810001234567"]),
        ({"mailbox-mss": "anne.martin@infirmier.mssante.fr"}, ["810009999999"]),
        ({"qualification-code": "60"}, ["810009999999"]),
        (
            {
                "qualification-code": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante|10"
            },
            ["810001234567"],
        ),
        ({"address-postalcode": "750"}, ["810009999999"]),
        ({"address-city": "lyon"}, ["810001234567"]),
        ({"structure-name": "ch lyon"}, ["810001234567"]),
        ({"identifier": "urn:oid:1.2.250.1.71.4.2.1|810009999999"}, ["810009999999"]),
        ({"identifier": "https://rpps.esante.gouv.fr|10009999999"}, ["810009999999"]),
        ({"name": "mar an"}, ["810009999999"]),
        ({"mailbox-mss:contains": "%"}, []),
        ({"mailbox-mss:contains": "_"}, []),
        ({"name": "' OR 1=1 --"}, []),
    ],
)
def test_fhir_practitioner_search_parameters(
    served: str, params: dict[str, str], ids: list[str]
) -> None:
    response = httpx.get(f"{served}/fhir/Practitioner", params=params)
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ids


def test_fhir_organization_bundle(served: str) -> None:
    bundle = httpx.get(f"{served}/fhir/Organization", params={"name": "chu lyon"}).json()
    (entry,) = bundle["entry"]
    organization = entry["resource"]
    assert organization["resourceType"] == "Organization"
    assert organization["identifier"] == [
        {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1690000001"}
    ]
    assert organization["name"] == CHU
    assert [t["value"] for t in organization["telecom"]] == [
        "cardiologie@chu-lyon.mssante.fr",
        "urgences@chu-lyon.mssante.fr",
    ]
    service = organization["telecom"][0]["extension"][1]["extension"][2]
    assert service == {"url": "service", "valueString": "Cardiologie"}


@pytest.mark.parametrize(
    "query",
    [
        "unknown=1",
        "_count=0",
        "_count=abc",
        "_count=100000",
        "name=",
        "name=a%00b",
        "name=a&name=b",
    ],
)
def test_bad_fhir_searches_are_operation_outcomes(served: str, query: str) -> None:
    response = httpx.get(f"{served}/fhir/Practitioner?{query}")
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"


def test_extraction_download_is_the_export_with_an_etag(served: str) -> None:
    response = httpx.get(f"{served}/directory/extraction")
    assert response.status_code == 200
    assert response.text == HEADER + "\n" + "\n".join(LINES) + "\n"
    assert "Extraction_Correspondance_MSSante_" in response.headers["content-disposition"]
    etag = response.headers["etag"]
    again = httpx.get(f"{served}/directory/extraction", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


def test_searches_beyond_the_rate_are_429_with_retry_after(
    tmp_path: Path, database_settings: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client past directory.search_burst (and the steady rate) gets 429 and Retry-After,
    as JSON on /directory/search and as an OperationOutcome on FHIR; the extraction is not
    counted."""
    monkeypatch.setenv("MSSANTE_DIRECTORY__SEARCHES_PER_SECOND", "0.01")
    monkeypatch.setenv("MSSANTE_DIRECTORY__SEARCH_BURST", "3")
    with contextlib.contextmanager(_serve)(tmp_path, database_settings) as base:
        answers = [httpx.get(f"{base}/directory/search", params={"q": "dupont"}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        refused = httpx.get(f"{base}/directory/search", params={"q": "dupont"})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many searches" in refused.json()["error"]
        fhir = httpx.get(f"{base}/fhir/Practitioner", params={"name": "dupont"})
        assert fhir.status_code == 429
        assert fhir.json()["issue"][0]["code"] == "throttled"
        assert httpx.get(f"{base}/directory/extraction").status_code == 200
