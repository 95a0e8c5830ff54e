"""Whitelist lookups: domains case-insensitively, DNs in canonical form, one-line reasons."""

from __future__ import annotations

import time

import pytest
from trust_helpers import small_whitelist, utc

from mssante.trust.model import TrustRefusal, Whitelist, WhitelistDomain

SMTP1 = "CN=smtp-1.ch-exemple.fr,OU=1330000000,O=CH EXEMPLE,ST=Gironde (33),C=FR"
GRADES = "CN=mss.grades.fr,OU=2123456789,O=GRADES,ST=Paris (75),C=FR"


def test_listed_domain_and_dn_are_trusted() -> None:
    decision = small_whitelist().is_trusted("ch-exemple.mssante.fr", SMTP1)
    assert decision.trusted
    assert decision.reason is None


def test_dn_of_any_entry_of_the_domain_is_trusted() -> None:
    """The real list repeats a domain once per operator: each operator's DN counts."""
    assert small_whitelist().is_trusted("ch-exemple.mssante.fr", GRADES).trusted


def test_domain_lookup_ignores_case_and_a_final_dot() -> None:
    whitelist = small_whitelist()
    assert len(whitelist.domain("CH-Exemple.MSSANTE.fr.")) == 2
    assert whitelist.is_trusted("CH-EXEMPLE.mssante.fr", SMTP1).trusted
    assert whitelist.domain("absent.mssante.fr") == ()


@pytest.mark.parametrize(
    "spelling",
    [
        "cn=smtp-1.ch-exemple.fr, ou=1330000000, o=CH EXEMPLE, st=Gironde (33), c=FR",
        "CN = smtp-1.ch-exemple.fr , OU = 1330000000 , O = CH EXEMPLE , ST=Gironde (33),C=FR",
        "CN=smtp-1.ch-exemple.fr,OU=1330000000,O=CH\\20EXEMPLE,ST=Gironde (33),C=FR",
        "2.5.4.3=smtp-1.ch-exemple.fr,OU=1330000000,O=CH EXEMPLE,ST=Gironde (33),C=FR",
    ],
    ids=["lower-case-types", "spaces", "hex-escape", "oid"],
)
def test_dn_comparison_uses_the_canonical_form(spelling: str) -> None:
    assert small_whitelist().is_trusted("ch-exemple.mssante.fr", spelling).trusted


def test_unlisted_domain_is_refused_with_its_reason() -> None:
    decision = small_whitelist().is_trusted("pirate.example.com", SMTP1)
    assert not decision.trusted
    assert decision.reason is TrustRefusal.DOMAIN_NOT_LISTED
    assert decision.message == "domain 'pirate.example.com' is not on the whitelist"


def test_dn_listed_for_another_domain_is_refused() -> None:
    decision = small_whitelist().is_trusted("medecin.mssante.fr", SMTP1)
    assert not decision.trusted
    assert decision.reason is TrustRefusal.DN_NOT_LISTED
    assert decision.message == (
        f"certificate DN '{SMTP1}' is not listed for domain 'medecin.mssante.fr'"
    )


def test_other_dn_for_a_listed_domain_is_refused() -> None:
    other = SMTP1.replace("smtp-1", "smtp-9")
    decision = small_whitelist().is_trusted("ch-exemple.mssante.fr", other)
    assert decision.reason is TrustRefusal.DN_NOT_LISTED


def test_a_dn_that_differs_only_by_its_order_is_refused() -> None:
    reordered = "C=FR,ST=Gironde (33),O=CH EXEMPLE,OU=1330000000,CN=smtp-1.ch-exemple.fr"
    assert not small_whitelist().is_trusted("ch-exemple.mssante.fr", reordered).trusted


def test_malformed_dn_is_refused_not_raised() -> None:
    decision = small_whitelist().is_trusted("ch-exemple.mssante.fr", "CN=x,,")
    assert decision.reason is TrustRefusal.DN_NOT_LISTED
    assert "is not a valid DN" in decision.message


def test_messages_stay_on_one_line() -> None:
    decision = small_whitelist().is_trusted("evil\r\nX-Injected: 1", "CN=a\nb,C=FR")
    assert "\n" not in decision.message and "\r" not in decision.message
    assert "\\x0d\\x0a" in decision.message


def test_is_listed_checks_the_domain_only() -> None:
    whitelist = small_whitelist()
    assert whitelist.is_listed("medecin.mssante.fr").trusted
    assert whitelist.is_listed("x.fr").reason is TrustRefusal.DOMAIN_NOT_LISTED


def test_names_are_distinct_and_in_order() -> None:
    assert small_whitelist().names() == ("ch-exemple.mssante.fr", "medecin.mssante.fr")
    assert len(small_whitelist()) == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "invalid domain name"),
        ("name", " a.fr", "invalid domain name"),
        ("operator_dns", (), "lists no operator certificate DN"),
        ("operator_dns", (" CN=x,C=FR",), "invalid DN"),
        ("updated_at", utc(2025, 1, 1, 0, 0, 0).replace(tzinfo=None), "has no time zone"),
    ],
)
def test_invalid_entries_cannot_be_made(field: str, value: object, message: str) -> None:
    values: dict[str, object] = {
        "name": "a.mssante.fr",
        "description": "",
        "operator_dns": ("CN=x,C=FR",),
        "responsable_contact": "",
        "support_contact": "",
        "updated_at": utc(2025, 1, 1, 0, 0, 0),
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        WhitelistDomain(**values)  # type: ignore[arg-type]


def test_a_list_with_a_malformed_dn_cannot_be_made() -> None:
    entry = WhitelistDomain("a.fr", "", ("CN=x,,",), "", "", utc(2025, 1, 1, 0, 0, 0))
    with pytest.raises(ValueError, match="malformed DN"):
        Whitelist(utc(2025, 1, 1, 0, 0, 0), (entry,))


def test_lookups_use_an_index() -> None:
    """A real list has about 9,000 entries; a lookup must not scan them."""
    entries = tuple(
        WhitelistDomain(
            f"d{i}.mssante.fr",
            "",
            (f"CN=smtp.d{i}.fr,OU={i},O=OP {i},ST=Paris (75),C=FR",),
            "",
            "",
            utc(2025, 1, 1, 0, 0, 0),
        )
        for i in range(9000)
    )
    whitelist = Whitelist(utc(2025, 1, 1, 0, 0, 0), entries)
    started = time.perf_counter()
    for i in range(0, 9000, 3):
        assert whitelist.is_listed(f"d{i}.mssante.fr").trusted
    assert time.perf_counter() - started < 0.5
