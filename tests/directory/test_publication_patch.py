"""The FHIR PATCH body, read without I/O (mssante.directory.fhirpatch): the API description's
own examples are understood; everything else is refused with its status and issue code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from publication_helpers import METADATA_URL, delete, insert, parameters, replace_attribute

from mssante.directory.fhirpatch import (
    MailboxData,
    OpKind,
    PatchError,
    Target,
    delete_parameters,
    insert_parameters,
    parse_patch,
    replace_parameters,
)

TYPE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
ADDRESS = "prenom.nom@domain.mssante.fr"


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _refused(resource: str, document: Any) -> PatchError:
    with pytest.raises(PatchError) as caught:
        parse_patch(resource, document if isinstance(document, bytes) else _body(document))
    return caught.value


# -- the examples of data/openapi-balmss.yaml, copied as they are -------------------------------

INSERT_BAL_PER = {  # paths /Practitioner, example insertBALPER
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "insert"},
                {"name": "path", "valueString": "Practitioner.telecom"},
                {"name": "index", "valueInteger": 0},
                {
                    "name": "value",
                    "valueContactPoint": {
                        "system": "email",
                        "value": ADDRESS,
                        "rank": 1,
                        "extension": [
                            {
                                "url": METADATA_URL,
                                "extension": [
                                    {
                                        "url": "type",
                                        "valueCodeableConcept": {
                                            "coding": [{"system": TYPE_SYSTEM, "code": "PER"}]
                                        },
                                    },
                                    {"url": "listeRouge", "valueBoolean": False},
                                ],
                            }
                        ],
                    },
                },
            ],
        }
    ],
}

REPLACE_LISTE_ROUGE = {  # example replaceBALPERAttribute
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {
                    "name": "path",
                    "valueString": f"Practitioner.telecom.where(value = '{ADDRESS}')"
                    f".extension('{METADATA_URL}').extension('listeRouge').value",
                },
                {"name": "value", "valueBoolean": True},
            ],
        }
    ],
}

REPLACE_RANK = {  # example replaceRankBALPER
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {
                    "name": "path",
                    "valueString": f"Practitioner.telecom.where(value = '{ADDRESS}').rank",
                },
                {"name": "value", "valueInteger": 1},
            ],
        }
    ],
}

INSERT_BAL_ORG = {  # path /Organization, example insertBAL
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "insert"},
                {"name": "path", "valueString": "Organization.telecom"},
                {"name": "index", "valueInteger": 0},
                {
                    "name": "value",
                    "valueContactPoint": {
                        "system": "email",
                        "value": "structure@domain.mssante.fr",
                        "rank": 1,
                        "extension": [
                            {
                                "url": METADATA_URL,
                                "extension": [
                                    {
                                        "url": "type",
                                        "valueCodeableConcept": {
                                            "coding": [{"system": TYPE_SYSTEM, "code": "ORG"}]
                                        },
                                    },
                                    {"url": "listeRouge", "valueBoolean": False},
                                    {
                                        "url": "description",
                                        "valueString": "BAL principale de la structure",
                                    },
                                    {"url": "service", "valueString": "Service des admissions"},
                                    {"url": "responsible", "valueString": "Responsable de la BAL"},
                                ],
                            }
                        ],
                    },
                },
            ],
        }
    ],
}


def test_the_api_examples_are_understood() -> None:
    [op] = parse_patch("Practitioner", _body(INSERT_BAL_PER))
    assert (op.kind, op.target, op.address) == (OpKind.INSERT, Target.MAILBOX, ADDRESS)
    assert op.mailbox == MailboxData(ADDRESS, "PER", liste_rouge=False, rank=1)

    [op] = parse_patch("Practitioner", _body(REPLACE_LISTE_ROUGE))
    assert (op.kind, op.target, op.attribute, op.value) == (
        OpKind.REPLACE, Target.ATTRIBUTE, "listeRouge", True,
    )  # fmt: skip

    [op] = parse_patch("Practitioner", _body(REPLACE_RANK))
    assert (op.target, op.value) == (Target.RANK, 1)

    [op] = parse_patch("Organization", _body(INSERT_BAL_ORG))
    assert op.mailbox == MailboxData(
        "structure@domain.mssante.fr", "ORG", description="BAL principale de la structure",
        service="Service des admissions", responsible="Responsable de la BAL", rank=1,
    )  # fmt: skip

    [op] = parse_patch("Practitioner", _body(parameters(delete(ADDRESS))))
    assert (op.kind, op.target, op.address) == (OpKind.DELETE, Target.MAILBOX, ADDRESS)


def test_what_operators_write_is_what_the_authority_reads() -> None:
    mailbox = MailboxData(
        "Cardio@CH.mssante.fr".lower(), "ORG", liste_rouge=True, description="Cardio"
    )
    for body, kind in (
        (insert_parameters(mailbox), OpKind.INSERT),
        (replace_parameters(mailbox), OpKind.REPLACE),
    ):
        [op] = parse_patch("Organization", _body(body))
        assert (op.kind, op.mailbox) == (kind, mailbox)
    [op] = parse_patch("Organization", _body(delete_parameters("ORG", mailbox.address)))
    assert (op.kind, op.address) == (OpKind.DELETE, mailbox.address)


def test_the_type_may_also_be_a_plain_code() -> None:
    """The schema (MailboxMSSMetadata) says valueCode where the examples say a CodeableConcept."""
    document = json.loads(json.dumps(INSERT_BAL_PER))
    metadata = document["parameter"][0]["part"][3]["valueContactPoint"]["extension"][0]
    metadata["extension"][0] = {"url": "type", "valueCode": "CAB"}
    [op] = parse_patch("Practitioner", _body(document))
    assert op.mailbox is not None and op.mailbox.type == "CAB"


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "issue"),
    [
        (b"{not json", "structure"),
        (b"\xff\xfe", "structure"),
        (b"[" * 100_000, "structure"),  # deep nesting is refused, not a crash
        (_body({"resourceType": "Patient"}), "structure"),
        (_body({"resourceType": "Parameters", "parameter": []}), "required"),
        (
            _body({"resourceType": "Parameters", "parameter": [{"name": "op", "part": []}]}),
            "structure",
        ),
    ],
)
def test_malformed_bodies_are_400(body: bytes, issue: str) -> None:
    refusal = _refused("Practitioner", body)
    assert (refusal.status, refusal.issue) == (400, issue)


def test_unknown_operations_are_400() -> None:
    for code in ("add", "move", "remove", "INSERT"):
        parts = [
            {"name": "type", "valueCode": code},
            {"name": "path", "valueString": "Practitioner.telecom"},
        ]
        refusal = _refused("Practitioner", parameters(parts))
        assert (refusal.status, refusal.issue) == (400, "not-supported"), code
        assert "unknown or unsupported operation" in refusal.public


def test_a_patch_that_names_no_mailbox_is_400() -> None:
    for path in (
        "Practitioner.telecom",
        "Practitioner.name",
        "Practitioner.telecom.where(system = 'email')",
    ):
        parts = [{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": path}]
        refusal = _refused("Practitioner", parameters(parts))
        assert refusal.status == 400
        assert "names no mailbox" in refusal.public, path


def test_a_path_about_another_resource_is_400() -> None:
    refusal = _refused("Organization", parameters(delete(ADDRESS, resource="Practitioner")))
    assert refusal.status == 400
    assert "not Organization" in refusal.public


def test_changing_an_address_is_422() -> None:
    whole = parameters(insert("autre@domain.mssante.fr"))
    whole["parameter"][0]["part"][0]["valueCode"] = "replace"
    whole["parameter"][0]["part"][1]["valueString"] = (
        f"Practitioner.telecom.where(value = '{ADDRESS}')"
    )
    del whole["parameter"][0]["part"][2]  # no index for a replace
    refusal = _refused("Practitioner", whole)
    assert (refusal.status, refusal.issue) == (422, "business-rule")
    assert "never changes" in refusal.public

    value_path = [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": f"Practitioner.telecom.where(value = '{ADDRESS}').value"},
        {"name": "value", "valueString": "autre@domain.mssante.fr"},
    ]
    assert _refused("Practitioner", parameters(value_path)).status == 422


def test_deleting_a_type_is_422_and_bad_values_are_400() -> None:
    deleting_type = [
        {"name": "type", "valueCode": "delete"},
        {
            "name": "path",
            "valueString": f"Practitioner.telecom.where(value = '{ADDRESS}')"
            f".extension('{METADATA_URL}').extension('type').value",
        },
    ]
    assert _refused("Practitioner", parameters(deleting_type)).status == 422
    for name, value in (
        ("listeRouge", {"valueString": "oui"}),
        ("type", {"valueCode": "XYZ"}),
        ("description", {"valueString": "a | b"}),
        ("description", {"valueString": "x" * 501}),
        ("unknown", {"valueString": "x"}),
    ):
        refusal = _refused("Practitioner", parameters(replace_attribute(ADDRESS, name, value)))
        assert refusal.status == 400, name


def test_contact_points_are_checked() -> None:
    for change in (
        {"system": "phone"},
        {"value": "not-an-address"},
        {"value": "a'b@domain.mssante.fr"},  # a quote would break the FHIRPath of later PATCHes
        {"rank": 0},
        {"unexpected": 1},
        {
            "extension": [
                {"url": METADATA_URL, "extension": [{"url": "listeRouge", "valueBoolean": False}]}
            ]
        },
    ):
        document = json.loads(json.dumps(INSERT_BAL_PER))
        document["parameter"][0]["part"][3]["valueContactPoint"].update(change)
        assert _refused("Practitioner", document).status == 400, change


def test_operations_are_capped() -> None:
    many = parameters(*[delete(f"n{i}@domain.mssante.fr") for i in range(101)])
    refusal = _refused("Practitioner", many)
    assert (refusal.status, refusal.issue) == (400, "too-costly")
