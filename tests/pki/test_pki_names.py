"""Distinguished names: the whitelist's string form, parsing, comparison, départements."""

from __future__ import annotations

import contextlib
import re
import string

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from pki_helpers import whitelist_dns

from mssante.pki.ids import IdNatStruct, StructureIdKind
from mssante.pki.names import (
    DEPARTEMENTS,
    MalformedDN,
    UnknownDepartement,
    departement_from_label,
    departement_label,
    dn_matches,
    dn_string,
    normalise_dn,
    operator_subject,
    parse_dn,
    parse_operator_dn,
    person_id_nat,
    person_subject,
)

EXAMPLE_DN = "CN=smtp-1.sante.example.com,OU=341459958900028,O=EXAMPLE HEALTH,ST=Gironde (33),C=FR"


# -- départements ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("33", "Gironde (33)"),
        ("13", "Bouches-du-Rhône (13)"),
        ("63", "Puy-de-Dôme (63)"),
        ("31", "Haute-Garonne (31)"),
        ("22", "Côtes-d'Armor (22)"),
        ("2a", "Corse-du-Sud (2A)"),
        ("2B", "Haute-Corse (2B)"),
        ("1", "Ain (01)"),
        ("971", "Guadeloupe (971)"),
        ("976", "Mayotte (976)"),
    ],
)
def test_departement_labels(code: str, label: str) -> None:
    assert departement_label(code) == label


def test_the_table_has_every_departement() -> None:
    metropolitan = [f"{n:02d}" for n in range(1, 96) if n != 20] + ["2A", "2B"]
    overseas = ["971", "972", "973", "974", "975", "976"]
    assert sorted(DEPARTEMENTS) == sorted(metropolitan + overseas)


@pytest.mark.parametrize("code", ["20", "96", "00", "977", "", "Gironde"])
def test_unknown_departements_are_refused(code: str) -> None:
    with pytest.raises(UnknownDepartement):
        departement_label(code)


def test_every_st_of_the_real_whitelist_is_a_table_label() -> None:
    states = {re.search(r",ST=([^,]+),", dn)[1] for dn in whitelist_dns()}  # type: ignore[index]
    for state in states:
        assert departement_label(departement_from_label(state)) == state


# -- the whitelist's string form ---------------------------------------------------------------


def test_operator_subject_renders_as_the_whitelist_writes_it() -> None:
    name = operator_subject("smtp-1.sante.example.com", "341459958900028", "EXAMPLE HEALTH", "33")
    assert dn_string(name) == EXAMPLE_DN
    # ASN.1 order is the reverse: C first, CN last (RFC 4514 §2.1).
    assert [a.oid for a in name] == [
        NameOID.COUNTRY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.COMMON_NAME,
    ]


def test_non_ascii_letters_are_not_escaped() -> None:
    name = operator_subject("mss.ahsm.fr", "377563330800017", "ASSOCIATION", "63")
    assert dn_string(name).endswith(",ST=Puy-de-Dôme (63),C=FR")


@pytest.mark.parametrize("dn", whitelist_dns())
def test_real_whitelist_dns_round_trip_byte_for_byte(dn: str) -> None:
    name = parse_dn(dn)
    assert dn_string(name) == dn
    operator = parse_operator_dn(dn)
    assert str(operator) == dn
    assert (
        dn_string(
            operator_subject(
                operator.host, operator.structure_id, operator.organisation, operator.departement
            )
        )
        == dn
    )


def test_parse_operator_dn_gives_the_parts() -> None:
    operator = parse_operator_dn(EXAMPLE_DN)
    assert operator.host == "smtp-1.sante.example.com"
    assert operator.structure_id == IdNatStruct(StructureIdKind.SIRET, "41459958900028")
    assert operator.organisation == "EXAMPLE HEALTH"
    assert operator.state == "Gironde (33)"
    assert operator.departement == "33"
    assert operator.country == "FR"


@pytest.mark.parametrize(
    ("dn", "message"),
    [
        ("OU=341459958900028,CN=h.example.fr,O=X,ST=Gironde (33),C=FR", "must be CN=…,OU=…"),
        ("CN=h.example.fr,OU=341459958900028,O=X,C=FR", "must be CN=…,OU=…"),
        ("CN=h.example.fr,OU=341459958900027,O=X,ST=Gironde (33),C=FR", "SIRET check key"),
        ("CN=h.example.fr,OU=341459958900028,O=X,ST=Gironde,C=FR", "ST must read"),
        ("CN=h.example.fr,OU=341459958900028,O=X,ST=Nowhere (20),C=FR", "unknown département"),
        ("CN=h.example.fr,OU=341459958900028,O=X,ST=Gironde (33),C=BE", "C=FR"),
        ("CN=not a host,OU=341459958900028,O=X,ST=Gironde (33),C=FR", "not a valid host name"),
        ("CN=h.example.fr+UID=x,OU=341459958900028,O=X,ST=Gironde (33),C=FR", "multi-valued"),
    ],
)
def test_parse_operator_dn_refuses_other_forms(dn: str, message: str) -> None:
    with pytest.raises(MalformedDN, match=re.escape(message)):
        parse_operator_dn(dn)


# -- RFC 4514 parsing --------------------------------------------------------------------------


def test_escapes_are_decoded() -> None:
    name = parse_dn(r"CN=a\,b\+c\\d\"e\3Bf,O=Puy-de-D\c3\b4me,OU=\#lead,L=\ spaced\ ")
    values = {a.oid: a.value for a in name}
    assert values[NameOID.COMMON_NAME] == 'a,b+c\\d"e;f'
    assert values[NameOID.ORGANIZATION_NAME] == "Puy-de-Dôme"
    assert values[NameOID.ORGANIZATIONAL_UNIT_NAME] == "#lead"
    assert values[NameOID.LOCALITY_NAME] == " spaced "


def test_escaped_values_render_back_escaped() -> None:
    text = r"CN=a\,b,O=GCS NORMAND'E-SANTE\, X"
    assert dn_string(parse_dn(text)) == text


def test_types_are_case_insensitive_and_spaces_around_separators_ignored() -> None:
    loose = (
        " cn = smtp-1.sante.example.com , ou=341459958900028,"
        "o=EXAMPLE HEALTH ,St=Gironde (33), c=FR "
    )
    assert dn_string(parse_dn(loose)) == EXAMPLE_DN


def test_hex_values_and_numeric_oids() -> None:
    assert dn_string(parse_dn("CN=#0c0568c3b47465")) == "CN=hôte"
    assert dn_string(parse_dn("2.5.4.3=x,OID.2.5.4.6=FR")) == "CN=x,C=FR"


def test_multi_valued_rdns() -> None:
    name = parse_dn("CN=a+SN=b,C=FR")
    assert len(name.rdns) == 2
    assert len(list(name.rdns[1])) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("CN", "expected '='"),
        ("=x", "missing attribute type"),
        ("CN=a,", "missing attribute type"),
        ("FOO=bar", "unknown attribute type"),
        ("CN=x;y", "unescaped ';'"),
        ("CN=a<b", "unescaped '<'"),
        (r"CN=\zz", "bad escape"),
        (r"CN=\c3", "not UTF-8"),
        ("CN=#zz", "bad '#' hex value"),
        ("CN=#020101", "not a string"),
        ("CN=#0c0568c3b4746500", "bad '#' hex value"),  # trailing byte
        ("CN=", "empty value"),
        ("C=FRA", "C"),
        ("CN=" + "x" * 65, "CN"),
    ],
)
def test_malformed_dns_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(MalformedDN) as caught:
        parse_dn(text)
    assert message in caught.value.public
    assert caught.value.public.startswith("malformed DN")


# -- comparison --------------------------------------------------------------------------------


def test_normal_form_ignores_case_and_insignificant_spaces() -> None:
    presented = (
        "cn=SMTP-1.sante.example.com,ou=341459958900028,o=example  health,st=gironde (33),c=fr"
    )
    assert dn_matches(presented, EXAMPLE_DN)
    assert normalise_dn(EXAMPLE_DN) == (
        "CN=smtp-1.sante.example.com,OU=341459958900028,O=example health,ST=gironde (33),C=fr"
    )


def test_normal_form_keeps_order_and_values() -> None:
    assert not dn_matches(
        "OU=341459958900028,CN=smtp-1.sante.example.com,O=EXAMPLE HEALTH,ST=Gironde (33),C=FR",
        EXAMPLE_DN,
    )
    assert not dn_matches(EXAMPLE_DN.replace("smtp-1", "smtp-2"), EXAMPLE_DN)
    assert not dn_matches(EXAMPLE_DN.replace("Gironde", "Gironde X"), EXAMPLE_DN)
    assert not dn_matches(EXAMPLE_DN.replace("Dôme", "Dome"), EXAMPLE_DN.replace("Gironde", "Dôme"))


def test_a_certificate_subject_matches_its_whitelist_dn() -> None:
    dn = "CN=smtpmss.sante-ra.fr,OU=1630013605,O=GCS SARA,ST=Puy-de-Dôme (63),C=FR"
    name = operator_subject("smtpmss.sante-ra.fr", "1630013605", "GCS SARA", "63")
    assert dn_matches(name, dn)


def test_text_dns_compare_even_when_no_certificate_could_hold_them() -> None:
    long_cn = "CN=" + "a" * 70 + ",C=FRA"
    with pytest.raises(MalformedDN):
        parse_dn(long_cn)
    assert dn_matches(long_cn, long_cn.upper())


def test_multi_valued_rdn_order_does_not_matter() -> None:
    assert dn_matches("CN=a+SN=b,C=FR", "SN=b+CN=a,C=FR")


# -- person subjects ---------------------------------------------------------------------------


def test_person_subject_carries_the_id_nat() -> None:
    name = person_subject("810002909371", "Dupont", "Jeanne", "CABINET DUPONT")
    assert dn_string(name) == (
        "CN=810002909371,serialNumber=810002909371,GN=Jeanne,SN=DUPONT,O=CABINET DUPONT,C=FR"
    )
    assert str(person_id_nat(name)) == "810002909371"
    assert str(person_id_nat(parse_dn(dn_string(name)))) == "810002909371"


def test_person_id_nat_reads_a_cn_with_a_suffix_and_refuses_none() -> None:
    assert str(person_id_nat(parse_dn("CN=810002909371/DUPONT/Jeanne,C=FR"))) == "810002909371"
    with pytest.raises(MalformedDN, match="no professional idNat"):
        person_id_nat(parse_dn(EXAMPLE_DN))


# -- properties --------------------------------------------------------------------------------

_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40
)
# cryptography limits a CN to 64 bytes of UTF-8.
_CN = _VALUE.filter(lambda v: len(v.encode("utf-8")) <= 64)


@given(cn=_CN, organisation=_VALUE, unit=_VALUE)
def test_any_name_round_trips_through_its_string(cn: str, organisation: str, unit: str) -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    parsed = parse_dn(dn_string(name))
    assert [(a.oid, a.value) for a in parsed] == [(a.oid, a.value) for a in name]
    assert normalise_dn(parsed) == normalise_dn(name)


@given(st.text(max_size=80))
def test_parse_dn_raises_only_malformed_dn(text: str) -> None:
    with contextlib.suppress(MalformedDN):
        parse_dn(text)


@given(cn=_CN)
def test_normal_form_is_idempotent(cn: str) -> None:
    once = normalise_dn(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    assert normalise_dn(once) == once


@given(cn=st.text(alphabet=string.ascii_letters + string.digits + " .-", min_size=1, max_size=60))
def test_normal_form_is_blind_to_ascii_case_and_outer_spaces(cn: str) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f" {cn.swapcase()}  ")])
    assert dn_matches(name, other)
