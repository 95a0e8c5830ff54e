"""National identifiers: structure (IdNatStruct) and professional (idNat)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pki_helpers import whitelist_dns

from mssante.errors import MssanteError
from mssante.pki.ids import (
    IdNat,
    IdNatStruct,
    InvalidIdentifier,
    ProfessionalIdKind,
    StructureIdKind,
    luhn_key,
    luhn_valid,
    parse_id_nat,
    parse_id_nat_struct,
    siret_valid,
)

REAL_STRUCTURE_IDS = [
    ("341459958900028", StructureIdKind.SIRET, "41459958900028"),
    ("318310021300028", StructureIdKind.SIRET, "18310021300028"),
    ("1630013605", StructureIdKind.FINESS, "630013605"),
    ("344368557300034", StructureIdKind.SIRET, "44368557300034"),
    ("341518515600056", StructureIdKind.SIRET, "41518515600056"),
]


@pytest.mark.parametrize(("text", "kind", "value"), REAL_STRUCTURE_IDS)
def test_real_structure_ids_parse(text: str, kind: StructureIdKind, value: str) -> None:
    parsed = parse_id_nat_struct(text)
    assert parsed == IdNatStruct(kind, value)
    assert str(parsed) == text


def test_every_ou_of_the_real_whitelist_parses() -> None:
    ous = {dn.split(",OU=", 1)[1].split(",", 1)[0] for dn in whitelist_dns()}
    assert len(ous) > 20
    for ou in ous:
        assert str(parse_id_nat_struct(ou)) == ou


def test_other_kinds_parse() -> None:
    assert parse_id_nat_struct("2356000000").kind is StructureIdKind.SIREN  # La Poste SIREN
    assert parse_id_nat_struct("335600000000048").kind is StructureIdKind.SIRET  # La Poste, Luhn
    assert parse_id_nat_struct("335600000049837").kind is StructureIdKind.SIRET  # La Poste, sum
    assert parse_id_nat_struct("02A0000000").kind is StructureIdKind.ADELI_CABINET
    assert parse_id_nat_struct("075123456701").kind is StructureIdKind.ADELI_CABINET  # with rank
    assert parse_id_nat_struct("12A0000186").kind is StructureIdKind.FINESS  # Corsica: no key
    rpps = "1000290937" + luhn_key("1000290937")
    rang = rpps + "01" + "7"
    assert parse_id_nat_struct("4" + rang) == IdNatStruct(StructureIdKind.RPPS_RANG, rang)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("9123456789", "unknown prefix '9'"),
        ("341459958900027", "SIRET check key is wrong"),
        ("34145995890002", "SIRET must be 14 digits"),
        ("3414599589000A8", "SIRET must be 14 digits"),
        ("1630013606", "FINESS check key is wrong"),
        ("163001360", "FINESS must be 9 characters"),
        ("2123456789", "SIREN check key is wrong"),
        ("21234567", "SIREN must be 9 digits"),
        ("0123", "ADELI cabinet id"),
        ("4123", "RPPS-rang must be 14 digits"),
    ],
)
def test_bad_structure_ids_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        parse_id_nat_struct(text)
    assert message in caught.value.public
    assert "\n" not in caught.value.public
    assert isinstance(caught.value, MssanteError)


def test_professional_ids() -> None:
    assert parse_id_nat("810002909371") == IdNat(ProfessionalIdKind.RPPS, "10002909371")
    assert str(parse_id_nat("810002909371")) == "810002909371"
    assert parse_id_nat("0751234567").kind is ProfessionalIdKind.ADELI
    assert parse_id_nat(" 810101215225 ").value == "10101215225"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("810002909372", "RPPS check key is wrong"),
        ("81000290937", "RPPS must be 11 digits"),
        ("3341459958900028", "unknown prefix '3'"),
        ("07512345", "ADELI must be 9 characters"),
        ("", "empty"),
    ],
)
def test_bad_professional_ids_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message):
        parse_id_nat(text)


def test_dataclasses_validate_and_coerce_their_kind() -> None:
    assert IdNatStruct("3", "41459958900028").kind is StructureIdKind.SIRET  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifier, match="unknown kind"):
        IdNatStruct("7", "123")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifier):
        IdNat(ProfessionalIdKind.RPPS, "123")


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_luhn_key_makes_a_valid_number(digits: str) -> None:
    assert luhn_valid(digits + luhn_key(digits))


@given(st.text(alphabet="0123456789", min_size=1, max_size=30), st.data())
def test_luhn_detects_any_single_digit_error(digits: str, data: st.DataObject) -> None:
    number = digits + luhn_key(digits)
    position = data.draw(st.integers(0, len(number) - 1))
    replacement = data.draw(st.sampled_from([d for d in "0123456789" if d != number[position]]))
    assert not luhn_valid(number[:position] + replacement + number[position + 1 :])


@given(st.text(alphabet="0123456789", min_size=8, max_size=8))
def test_any_keyed_siren_round_trips(body: str) -> None:
    siren = body + luhn_key(body)
    assert str(parse_id_nat_struct("2" + siren)) == "2" + siren


@given(st.text(alphabet="0123456789", min_size=13, max_size=13))
def test_any_keyed_siret_round_trips(body: str) -> None:
    siret = body + luhn_key(body)
    assert siret_valid(siret)
    assert str(parse_id_nat_struct("3" + siret)) == "3" + siret


@given(st.text(max_size=20))
def test_parsers_raise_only_invalid_identifier(text: str) -> None:
    for parse in (parse_id_nat_struct, parse_id_nat):
        with contextlib.suppress(InvalidIdentifier):
            parse(text)


def test_luhn_rejects_non_digits() -> None:
    assert not luhn_valid("")
    assert not luhn_valid("12a4")
    with pytest.raises(InvalidIdentifier):
        luhn_key("12a")
