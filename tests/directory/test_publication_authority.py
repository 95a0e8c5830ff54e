"""The authority's FHIR PATCH routes over real TLS: operators publish their mailboxes with their
IGC-Santé certificate (mutual TLS), within their own domains; every PATCH, accepted or refused,
is audited (docs/publication.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from publication_helpers import (
    DURAND,
    DURAND_ID_NAT,
    MARTIN,
    MARTIN_ID_NAT,
    NORD_DOMAIN,
    NORD_STRUCTURE,
    Certificates,
    RunningAuthority,
    authority_settings,
    client,
    database,
    delete,
    insert,
    make_certificates,
    organization,
    parameters,
    practitioner,
    replace_attribute,
    replace_whole,
    running_authority,
)
from sqlalchemy import select

from mssante.audit.log import iter_entries
from mssante.directory.extraction import COLUMN_COUNT, HEADER, parse_line
from mssante.directory.importer import import_extraction
from mssante.pki.ids import luhn_key
from mssante.store.models import DirectoryEntry, DirectorySource, DirectoryWord

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("publication-pki"))


@pytest.fixture
def authority_db(tmp_path: Path) -> Iterator[dict[str, str]]:
    with database(tmp_path, "authority") as db:
        yield db


@pytest.fixture
async def authority(
    certs: Certificates, tmp_path: Path, authority_db: dict[str, str]
) -> AsyncIterator[RunningAuthority]:
    settings = authority_settings(certs, tmp_path, authority_db)
    async with running_authority(settings, certs) as running:
        yield running


async def _patch(
    authority: RunningAuthority,
    http: httpx.AsyncClient,
    body: Any,
    params: dict[str, str],
    resource: str = "Practitioner",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.patch(
        f"{authority.fhir}/{resource}", params=params, content=content, headers=headers or FHIR
    )


def _entry(authority: RunningAuthority, address: str) -> DirectoryEntry | None:
    with authority.node.db.session() as session:
        return session.execute(
            select(DirectoryEntry).where(DirectoryEntry.address == address)
        ).scalar_one_or_none()


def _events(authority: RunningAuthority, prefix: str = "directory.patch") -> list[Any]:
    return [e for e in iter_entries(authority.node.db) if e.event.startswith(prefix)]


async def _search(authority: RunningAuthority, q: str) -> list[str]:
    async with client_without_certificate(authority) as http:
        answer = await http.get(f"{authority.url}/directory/search", params={"q": q})
    assert answer.status_code == 200, answer.text
    return [r["address"] for r in answer.json()["results"]]


def client_without_certificate(authority: RunningAuthority) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=False, timeout=30)


def _outcome(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["details"]["text"])


# -- accepted ----------------------------------------------------------------------------------


async def test_an_operator_publishes_a_mailbox_found_by_search(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.nord) as http:
        answer = await _patch(
            authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT)
        )
    assert answer.status_code == 200, answer.text
    resource = answer.json()
    assert resource["resourceType"] == "Practitioner"
    assert resource["identifier"] == [
        {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": MARTIN_ID_NAT}
    ]
    assert [t["value"] for t in resource["telecom"]] == [MARTIN]

    entry = _entry(authority, MARTIN)
    assert entry is not None and entry.source is DirectorySource.OPERATOR
    row = parse_line(entry.raw)
    assert len(entry.raw.split("|")) == COLUMN_COUNT
    assert (row.type_bal, row.adresse_bal, row.identification_nationale_pp) == (
        "PER",
        MARTIN,
        MARTIN_ID_NAT,
    )
    assert (row.type_identifiant_pp, row.identifiant_pp) == ("8", MARTIN_ID_NAT[1:])
    assert await _search(authority, "helene mart") == [MARTIN]

    [event] = _events(authority)
    assert (event.event, event.actor) == ("directory.patch_accepted", "HOPITAL NORD")
    assert event.context["changes"][0]["address"] == MARTIN


async def test_the_same_insert_twice_is_harmless(
    authority: RunningAuthority, certs: Certificates
) -> None:
    """An operator that lost the answer sends again: an insert is an upsert."""
    async with client(certs, certs.nord) as http:
        for _ in range(2):
            answer = await _patch(
                authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT)
            )
            assert answer.status_code == 200, answer.text
    with authority.node.db.session() as session:
        found = session.execute(
            select(DirectoryEntry).where(DirectoryEntry.id_nat_pp == MARTIN_ID_NAT)
        )
        assert len(found.all()) == 1


async def test_liste_rouge_hides_a_mailbox_from_search_and_extraction(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.nord) as http:
        await _patch(authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT))
        hidden = parameters(replace_attribute(MARTIN, "listeRouge", {"valueBoolean": True}))
        answer = await _patch(authority, http, hidden, practitioner(MARTIN_ID_NAT))
        assert answer.status_code == 200, answer.text
        assert await _search(authority, "martin") == []
        entry = _entry(authority, MARTIN)
        assert entry is not None and entry.liste_rouge
        with authority.node.db.session() as session:
            words = session.execute(select(DirectoryWord).where(DirectoryWord.entry_id == entry.id))
            assert words.all() == []
        async with client_without_certificate(authority) as public:
            extraction = await public.get(f"{authority.url}/directory/extraction")
        assert MARTIN not in extraction.text
        # Public FHIR reads do not show it either.
        async with client_without_certificate(authority) as public:
            bundle = await public.get(
                f"{authority.fhir}/Practitioner", params={"mailbox-mss": MARTIN}
            )
        assert bundle.json().get("entry", []) == []

        shown = parameters(replace_whole(MARTIN, liste_rouge=False))
        answer = await _patch(authority, http, shown, practitioner(MARTIN_ID_NAT))
        assert answer.status_code == 200, answer.text
    assert await _search(authority, "martin") == [MARTIN]


async def test_delete_removes_a_mailbox_and_a_second_delete_changes_nothing(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.nord) as http:
        await _patch(authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT))
        for _ in range(2):  # FHIRPath Patch: delete "if found"
            answer = await _patch(
                authority, http, parameters(delete(MARTIN)), practitioner(MARTIN_ID_NAT)
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["telecom"] == []
        assert _entry(authority, MARTIN) is None
        assert await _search(authority, "martin") == []
        again = parameters(replace_attribute(MARTIN, "listeRouge", {"valueBoolean": True}))
        answer = await _patch(authority, http, again, practitioner(MARTIN_ID_NAT))
    assert answer.status_code == 422
    assert "no mailbox" in _outcome(answer)


async def test_an_organisation_mailbox_takes_its_structure_and_service(
    authority: RunningAuthority, certs: Certificates
) -> None:
    address = f"cardiologie@{NORD_DOMAIN}"
    body = parameters(
        insert(address, "ORG", "Organization", service="Cardiologie", description="Secrétariat")
    )
    async with client(certs, certs.nord) as http:
        answer = await _patch(authority, http, body, organization(NORD_STRUCTURE), "Organization")
    assert answer.status_code == 200, answer.text
    entry = _entry(authority, address)
    assert entry is not None
    row = parse_line(entry.raw)
    assert (row.type_identifiant_structure, row.identification_structure) == (
        "1",
        NORD_STRUCTURE[1:],
    )
    assert (row.service_rattachement, row.raison_sociale) == ("Cardiologie", "HOPITAL NORD")
    point = answer.json()["telecom"][0]
    metadata = {e["url"]: e for e in point["extension"][1]["extension"]}
    assert metadata["description"]["valueString"] == "Secrétariat"
    assert await _search(authority, "cardiologie") == [address]


async def test_published_entries_survive_an_import_of_the_agency_file(
    authority: RunningAuthority, certs: Certificates, tmp_path: Path
) -> None:
    async with client(certs, certs.nord) as http:
        await _patch(authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT))
    fields = [""] * COLUMN_COUNT
    fields[:5] = ["PER", "jean.dupont@medecin.mssante.fr", "8", "10001234567", "810001234567"]
    fields[9:11] = ["DUPONT", "Jean"]
    extraction = tmp_path / "Extraction_Correspondance_MSSante_20261126000000.txt"
    extraction.write_text(HEADER + "\n" + "|".join(fields) + "\n", encoding="utf-8")
    settings = authority.node.settings
    import_extraction(authority.node.db, extraction, settings.directory, actor="test")
    assert _entry(authority, MARTIN) is not None
    assert await _search(authority, "martin") == [MARTIN]
    assert await _search(authority, "dupont") == ["jean.dupont@medecin.mssante.fr"]


# -- refused: who ------------------------------------------------------------------------------


async def test_without_a_client_certificate_it_is_401_but_reads_stay_public(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, None) as http:
        answer = await _patch(
            authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT)
        )
        whitelist = await http.get(f"{authority.url}/listeblanchemssante.xml")
    assert answer.status_code == 401
    assert "client certificate is required" in _outcome(answer)
    assert whitelist.status_code == 200
    [event] = _events(authority)
    assert (event.event, event.actor, event.context["status"]) == (
        "directory.patch_refused",
        "anonymous",
        401,
    )


@pytest.mark.parametrize(("which", "reason"), [("revoked", "revoked"), ("expired", "expired")])
async def test_a_revoked_or_expired_certificate_is_401(
    authority: RunningAuthority, certs: Certificates, which: str, reason: str
) -> None:
    async with client(certs, getattr(certs, which)) as http:
        answer = await _patch(
            authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT)
        )
    assert answer.status_code == 401
    assert reason in _outcome(answer)
    assert _entry(authority, MARTIN) is None
    [event] = _events(authority)
    assert event.context["status"] == 401
    assert "smtp.hopital-nord.mssante.test" in event.context["dn"]


async def test_a_certificate_no_operator_registered_is_403(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.stranger) as http:
        answer = await _patch(
            authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT)
        )
    assert answer.status_code == 403
    assert "not registered" in _outcome(answer)


async def test_an_operator_cannot_publish_another_operators_domain(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.sud) as http:
        answer = await _patch(
            authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT)
        )
        own = await _patch(authority, http, parameters(insert(DURAND)), practitioner(DURAND_ID_NAT))
    assert answer.status_code == 403
    assert f"domain {NORD_DOMAIN} is not one of this operator's" in _outcome(answer)
    assert own.status_code == 200
    assert _entry(authority, MARTIN) is None
    refused, accepted = _events(authority)
    assert (refused.event, refused.actor, refused.context["status"]) == (
        "directory.patch_refused", "CABINET SUD", 403,
    )  # fmt: skip
    assert accepted.event == "directory.patch_accepted"


# -- refused: what -----------------------------------------------------------------------------


async def test_bad_requests_are_refused_with_an_operation_outcome(
    authority: RunningAuthority, certs: Certificates
) -> None:
    unknown_op = [
        {"name": "type", "valueCode": "move"},
        {"name": "path", "valueString": "Practitioner.telecom"},
    ]
    no_mailbox = [
        {"name": "type", "valueCode": "delete"},
        {"name": "path", "valueString": "Practitioner.telecom"},
    ]
    cases: list[tuple[Any, dict[str, str], dict[str, str] | None, int, str]] = [
        (b"{oops", practitioner(MARTIN_ID_NAT), None, 400, "not valid JSON"),
        (parameters(unknown_op), practitioner(MARTIN_ID_NAT), None, 400, "unsupported operation"),
        (parameters(no_mailbox), practitioner(MARTIN_ID_NAT), None, 400, "names no mailbox"),
        (parameters(insert(MARTIN)), {}, None, 400, "identifier"),
        (
            parameters(insert(MARTIN)),
            {"identifier": "x|1", "_count": "1"},
            None,
            400,
            "unknown parameter",
        ),
        (
            parameters(insert(MARTIN)),
            {"identifier": "http://example.org|1"},
            None,
            400,
            "unknown system",
        ),
        (
            parameters(insert(MARTIN)),
            practitioner(MARTIN_ID_NAT),
            {"Content-Type": "text/plain"},
            415,
            "fhir+json",
        ),
    ]
    async with client(certs, certs.nord) as http:
        for body, params, headers, status, words in cases:
            answer = await _patch(authority, http, body, params, headers=headers)
            assert answer.status_code == status, (words, answer.text)
            assert words in _outcome(answer)
    assert len(_events(authority)) == len(cases)
    assert all(e.event == "directory.patch_refused" for e in _events(authority))


async def test_a_huge_body_is_413_before_it_is_read(
    authority: RunningAuthority, certs: Certificates
) -> None:
    huge = b'{"resourceType": "Parameters", "parameter": [' + b" " * 70_000 + b"]}"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked, counted as read
        for start in range(0, len(huge), 8192):
            yield huge[start : start + 8192]

    async with client(certs, certs.nord) as http:
        declared = await _patch(authority, http, huge, practitioner(MARTIN_ID_NAT))
        streamed = await http.patch(
            f"{authority.fhir}/Practitioner", params=practitioner(MARTIN_ID_NAT), content=chunks(),
            headers=FHIR,
        )  # fmt: skip
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert "larger than 65536 bytes" in _outcome(answer)


async def test_changing_a_type_or_an_address_is_422(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.nord) as http:
        await _patch(authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT))
        as_cab = await _patch(
            authority, http, parameters(replace_whole(MARTIN, "CAB")), practitioner(MARTIN_ID_NAT)
        )
        again_as_cab = await _patch(
            authority, http, parameters(insert(MARTIN, "CAB")), practitioner(MARTIN_ID_NAT)
        )
        attribute = parameters(replace_attribute(MARTIN, "type", {"valueCode": "CAB"}))
        by_attribute = await _patch(authority, http, attribute, practitioner(MARTIN_ID_NAT))
        moved = parameters(replace_whole(f"autre@{NORD_DOMAIN}"))
        moved["parameter"][0]["part"][1]["valueString"] = (
            f"Practitioner.telecom.where(value = '{MARTIN}')"
        )
        new_address = await _patch(authority, http, moved, practitioner(MARTIN_ID_NAT))
    for answer in (as_cab, again_as_cab, by_attribute):
        assert answer.status_code == 422, answer.text
        assert "type never changes" in _outcome(answer)
    assert new_address.status_code == 422
    assert "address never changes" in _outcome(new_address)
    entry = _entry(authority, MARTIN)
    assert entry is not None and entry.bal_type.value == "PER"


async def test_a_mailbox_is_on_one_resource_only(
    authority: RunningAuthority, certs: Certificates
) -> None:
    async with client(certs, certs.nord) as http:
        await _patch(authority, http, parameters(insert(MARTIN)), practitioner(MARTIN_ID_NAT))
        other = "8" + "1000100028" + luhn_key("1000100028")
        answer = await _patch(authority, http, parameters(insert(MARTIN)), practitioner(other))
    assert answer.status_code == 422
    assert "already in the directory for another professional" in _outcome(answer)


# -- refused: which resource -------------------------------------------------------------------


async def test_no_resource_is_404(authority: RunningAuthority, certs: Certificates) -> None:
    unknown = "8" + "1000900010" + luhn_key("1000900010")
    bad_key = MARTIN_ID_NAT[:-1] + str((int(MARTIN_ID_NAT[-1]) + 1) % 10)
    async with client(certs, certs.nord) as http:
        replace = await _patch(authority, http, parameters(delete(MARTIN)), practitioner(unknown))
        invalid = await _patch(authority, http, parameters(insert(MARTIN)), practitioner(bad_key))
    for answer in (replace, invalid):
        assert answer.status_code == 404, answer.text
        assert "no Practitioner with the identifier" in _outcome(answer)


def _siret(siren: str, nic: str) -> str:
    return siren + nic + luhn_key(siren + nic)


async def test_an_identifier_matching_several_resources_is_412(
    authority: RunningAuthority, certs: Certificates
) -> None:
    """A SIREN names every establishment (SIRET) of a company: two of them publish mailboxes,
    then a PATCH by the SIREN cannot tell which one is meant."""
    siren = "40483304" + luhn_key("40483304")
    first, second = _siret(siren, "0001"), _siret(siren, "0002")
    async with client(certs, certs.nord) as http:
        for number, siret in enumerate((first, second)):
            body = parameters(insert(f"accueil{number}@{NORD_DOMAIN}", "ORG", "Organization"))
            answer = await _patch(
                authority, http, body, {"identifier": f"http://sirene.fr|{siret}"}, "Organization"
            )
            assert answer.status_code == 200, answer.text
        body = parameters(delete(f"accueil0@{NORD_DOMAIN}", "Organization"))
        ambiguous = await _patch(
            authority, http, body, {"identifier": f"http://sirene.fr|{siren}"}, "Organization"
        )
        precise = await _patch(
            authority, http, body, {"identifier": f"http://sirene.fr|{first}"}, "Organization"
        )
    assert ambiguous.status_code == 412
    assert "matches 2 resources" in _outcome(ambiguous)
    assert ambiguous.json()["issue"][0]["code"] == "multiple-matches"
    assert precise.status_code == 200
