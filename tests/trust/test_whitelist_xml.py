"""The whitelist's XML format: the real sample, safe parsing, clear refusals, exact writing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trust_helpers import APTA78_DN, small_whitelist, utc

from mssante.trust.model import Whitelist, WhitelistDomain
from mssante.trust.xmlformat import (
    NAMESPACE,
    WhitelistFormatError,
    _parse_xml,
    parse,
    parse_file,
    write,
)

LIMIT = 50_000_000

DN = "CN=smtp.exemple.fr,OU=1330000000,O=EXEMPLE,ST=Gironde (33),C=FR"
_DOMAIN = """        <Domaine>
            <Nom>{name}</Nom>
            <Description>Un domaine</Description>
            <DNCertificatOperateur>{dn}</DNCertificatOperateur>
            <ResponsableContact>05 00 00 00 00, dsi@exemple.fr</ResponsableContact>
            <SupportContact>05 00 00 00 01, support@exemple.fr</SupportContact>
            <DateMAJ>2025-01-22T15:41:55Z</DateMAJ>
        </Domaine>
"""


class _Domain:
    @staticmethod
    def format(name: str) -> str:
        return _DOMAIN.format(name=name, dn=DN)


DOMAIN = _Domain()


def document(body: str | None = None, *, namespace: str = NAMESPACE, prolog: str = "") -> bytes:
    """A small document in the real layout; ``body`` replaces the domains."""
    if body is None:
        body = DOMAIN.format(name="a.mssante.fr") + DOMAIN.format(name="b.mssante.fr")
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{prolog}<ListeBlancheMSSante{xmlns}>\n'
        "    <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>\n"
        "    <ListeDomaines>\n"
        f"{body}"
        "    </ListeDomaines>\n"
        "</ListeBlancheMSSante>\n"
    ).encode()


def refusal(data: bytes, max_bytes: int = LIMIT) -> str:
    with pytest.raises(WhitelistFormatError) as caught:
        parse(data, max_bytes=max_bytes)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the real sample -------------------------------------------------------------------------------


def test_truncated_real_sample_is_refused_with_a_clear_message(sample_bytes: bytes) -> None:
    assert refusal(sample_bytes) == (
        "whitelist is truncated: the root element <ListeBlancheMSSante> is not closed "
        "(the data ends at line 4961)"
    )


def test_closed_real_sample_parses_into_all_619_entries(closed_sample: bytes) -> None:
    whitelist = parse(closed_sample, max_bytes=LIMIT)
    assert len(whitelist.domains) == 619
    assert sum(len(d.operator_dns) for d in whitelist.domains) == 619
    assert whitelist.generated_at == utc(2025, 3, 13, 14, 54, 10)
    (apta78,) = whitelist.domain("apta78.mssante.fr")
    assert apta78.operator_dns == (APTA78_DN,)
    assert apta78.description == (
        "Domaine de messagerie MSSanté géré par le GRADeS SESAN pour l'APTA 78"
    )
    assert apta78.updated_at == utc(2025, 1, 22, 15, 41, 55)
    first = whitelist.domains[0]
    assert first.name == "nddtestasmae.mssante.fr"
    assert first.responsable_contact == "08 10  61 50 50, medimail.diffusion@mipih.fr"
    assert first.operator_dns == (
        "CN=medimail-asip.mipih.fr,OU=318310021300028,O=GIP MIPIH,ST=Haute-Garonne (31),C=FR",
    )


def test_real_sample_repeats_domains_once_per_operator(closed_sample: bytes) -> None:
    whitelist = parse(closed_sample, max_bytes=LIMIT)
    assert len(whitelist.names()) == 516
    entries = whitelist.domain("15-20.mssante.fr")
    assert len(entries) == 5
    for dn in (
        "CN=mss.enovacom.fr,OU=344368557300034,O=ENOVACOM,ST=Bouches-du-Rhône (13),C=FR",
        "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR",
    ):
        assert whitelist.is_trusted("15-20.mssante.fr", dn).trusted


def test_real_sample_keeps_escaped_text(closed_sample: bytes) -> None:
    whitelist = parse(closed_sample, max_bytes=LIMIT)
    texts = [d.description for d in whitelist.domains] + [
        d.responsable_contact for d in whitelist.domains
    ]
    assert any("AGE & VIE" in t for t in texts)
    assert any("</ResponsableContact" in t for t in texts)
    assert any("\n" in t for t in texts)  # a description on two lines


def test_writing_the_closed_sample_gives_it_back_byte_for_byte(closed_sample: bytes) -> None:
    assert write(parse(closed_sample, max_bytes=LIMIT)) == closed_sample


# -- refusals --------------------------------------------------------------------------------------


def test_truncated_inside_an_element_names_it(closed_sample: bytes) -> None:
    cut = closed_sample[: closed_sample.index(b"GIP MIPIH")]
    message = refusal(cut)
    assert message.startswith("whitelist is truncated: the data ends at line 7 inside ")
    assert "<DNCertificatOperateur> (opened at line 7)" in message
    assert "root element is not closed" in message


def test_malformed_xml_gives_the_reason_and_line() -> None:
    data = document().replace(b"</Description>", b"</Descriptio>", 1)
    message = refusal(data)
    assert message.startswith("whitelist is not well-formed XML: Opening and ending tag mismatch")
    assert message.endswith("(line 6)")


def test_wrong_namespace_says_which_was_found_and_which_is_expected() -> None:
    message = refusal(document(namespace="urn:example:other"))
    assert message == (
        "<ListeBlancheMSSante> at line 1 is in namespace 'urn:example:other', "
        "expected namespace 'https://listeblanche.mssante.fr/schema'"
    )


def test_missing_namespace_is_refused() -> None:
    assert "is in no namespace, expected namespace" in refusal(document(namespace=""))


def test_wrong_root_is_refused() -> None:
    data = document().replace(b"ListeBlancheMSSante", b"ListeNoire")
    assert refusal(data) == (
        "the root element is <ListeNoire>, expected <ListeBlancheMSSante> (line 1)"
    )


def test_missing_element_names_the_domain_and_the_element() -> None:
    body = DOMAIN.format(name="a.mssante.fr") + DOMAIN.format(name="b.mssante.fr").replace(
        "            <SupportContact>05 00 00 00 01, support@exemple.fr</SupportContact>\n", ""
    )
    assert refusal(document(body)) == "domain 'b.mssante.fr' (line 12) has no <SupportContact>"


def test_missing_generation_date_is_refused() -> None:
    data = document().replace(
        b"    <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>\n", b""
    )
    assert refusal(data) == "the root element (line 1) has no <DateDeGeneration>"


def test_domain_without_dn_is_refused() -> None:
    body = "\n".join(
        line for line in DOMAIN.format(name="a.mssante.fr").split("\n") if "DNCert" not in line
    )
    assert refusal(document(body)) == (
        "domain 'a.mssante.fr' (line 4) has no <DNCertificatOperateur>"
    )


def test_bad_date_is_refused() -> None:
    data = document().replace(b"2025-01-22T15:41:55Z", b"22/01/2025", 1)
    assert refusal(data) == (
        "domain 'a.mssante.fr' (line 4): <DateMAJ> at line 10 is not a date-time like "
        "2025-03-13T14:54:10Z: '22/01/2025'"
    )


def test_impossible_date_is_refused() -> None:
    data = document().replace(b"2025-03-13T14:54:10Z", b"2025-02-30T14:54:10Z", 1)
    assert "<DateDeGeneration> at line 2 is not a date-time" in refusal(data)


def test_invalid_dn_is_refused() -> None:
    data = document().replace(b"OU=1330000000,", b"OU1330000000,", 1)
    assert refusal(data) == (
        "domain 'a.mssante.fr' (line 4): <DNCertificatOperateur> at line 7 is not a valid DN: "
        "malformed DN: unknown attribute type 'OU1330000000': "
        "'CN=smtp.exemple.fr,OU1330000000,O=EXEMPLE,ST=Gironde (33),C=FR'"
    )


def test_empty_domain_name_is_refused() -> None:
    assert refusal(document(DOMAIN.format(name="  "))) == (
        "the domain at line 4 has an invalid <Nom>: ''"
    )


def test_repeated_single_element_is_refused() -> None:
    body = DOMAIN.format(name="a.mssante.fr").replace(
        "<Nom>a.mssante.fr</Nom>", "<Nom>a.mssante.fr</Nom><Nom>c.mssante.fr</Nom>"
    )
    assert refusal(document(body)) == ("the domain at line 4 has more than one <Nom> (line 5)")


def test_unknown_element_is_refused() -> None:
    body = DOMAIN.format(name="a.mssante.fr").replace("<Nom>", "<Couleur>bleu</Couleur><Nom>")
    assert refusal(document(body)) == (
        "unexpected element <Couleur> at line 5, in the domain at line 4"
    )


def test_element_in_text_is_refused() -> None:
    body = DOMAIN.format(name="a.mssante.fr").replace(
        "<Description>Un domaine</Description>", "<Description><b>x</b></Description>"
    )
    assert "must contain text only" in refusal(document(body))


def test_stray_text_is_refused() -> None:
    data = document().replace(b"<ListeDomaines>", b"<ListeDomaines>du texte", 1)
    assert refusal(data) == "unexpected text 'du texte' in <ListeDomaines> (near line 3)"


def test_too_large_is_refused_before_parsing() -> None:
    data = document()
    assert refusal(data, max_bytes=len(data) - 1) == (
        f"whitelist is too large: more than {len(data) - 1} bytes (the configured limit)"
    )


def test_empty_document_is_refused() -> None:
    assert refusal(b"") == "whitelist is empty"
    assert refusal(b"  \n") == "whitelist is empty"


def test_not_utf8_is_refused() -> None:
    data = document().replace(b"Un domaine", b"Un domaine \xe9", 1)
    assert refusal(data) == "whitelist is not valid UTF-8 (line 6)"


def test_other_declared_encoding_is_refused() -> None:
    data = document().replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"')
    assert refusal(data) == "whitelist must be encoded in UTF-8, it declares 'ISO-8859-1'"


def test_utf16_document_is_refused() -> None:
    data = document().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert refusal(data).startswith("whitelist")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WhitelistFormatError) as caught:
        parse_file(tmp_path / "absent.xml", max_bytes=LIMIT)
    assert str(caught.value) == "cannot read whitelist absent.xml: No such file or directory"


def test_parse_file_reads_no_more_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(document())
    with pytest.raises(WhitelistFormatError, match="too large"):
        parse_file(path, max_bytes=1024)


# -- XXE and entity expansion ----------------------------------------------------------------------

XXE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE ListeBlancheMSSante [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    f'<ListeBlancheMSSante xmlns="{NAMESPACE}">\n'
    "    <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>\n"
    "    <ListeDomaines>\n"
    + DOMAIN.format(name="a.mssante.fr").replace("Un domaine", "&xxe;")
    + "    </ListeDomaines>\n</ListeBlancheMSSante>\n"
).encode()

LAUGHS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE ListeBlancheMSSante [\n'
    '<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
    f'<ListeBlancheMSSante xmlns="{NAMESPACE}">\n'
    "    <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>\n"
    "    <ListeDomaines>\n"
    + DOMAIN.format(name="a.mssante.fr").replace("Un domaine", "&lol9;")
    + "    </ListeDomaines>\n</ListeBlancheMSSante>\n"
).encode()


def test_external_entity_is_refused_and_never_read() -> None:
    message = refusal(XXE)
    assert message == "whitelist refused: it contains a DOCTYPE, which is not allowed (line 2)"
    assert "root:" not in message


def test_entity_expansion_bomb_is_refused_at_once() -> None:
    started = time.monotonic()
    message = refusal(LAUGHS)
    assert message == "whitelist refused: it contains a DOCTYPE, which is not allowed (line 2)"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("data", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_the_xml_parser_itself_resolves_no_entity(data: bytes) -> None:
    """Second line of defence, should a DOCTYPE get past the byte check: the parser resolves
    nothing (libxml2 even stops the bomb itself) and the document is still refused."""
    started = time.monotonic()
    with pytest.raises(WhitelistFormatError) as caught:
        _parse_xml(data)
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert "root:" not in message
    assert "DOCTYPE" in message or "amplification" in message


# -- writing ---------------------------------------------------------------------------------------


def test_written_format_matches_the_real_layout() -> None:
    text = write(small_whitelist()).decode()
    assert text.startswith(
        '<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante '
        'xmlns="https://listeblanche.mssante.fr/schema">\n'
        "    <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>\n"
        "    <ListeDomaines>\n"
        "        <Domaine>\n"
        "            <Nom>ch-exemple.mssante.fr</Nom>\n"
        "            <Description>Centre hospitalier d'exemple — Hôpital &amp; Cie "
        "&lt;Nord&gt;</Description>\n"
    )
    assert text.endswith("    </ListeDomaines>\n</ListeBlancheMSSante>\n")


def test_writer_refuses_characters_xml_cannot_hold() -> None:
    bad = WhitelistDomain(
        "x.mssante.fr", "bip\x07", ("CN=x,C=FR",), "", "", utc(2025, 1, 1, 0, 0, 0)
    )
    with pytest.raises(WhitelistFormatError) as caught:
        write(Whitelist(utc(2025, 1, 1, 0, 0, 0), (bad,)))
    assert str(caught.value) == (
        "cannot write domain 'x.mssante.fr': <Description> holds U+0007, which XML does not allow"
    )


def test_round_trip_of_a_small_list() -> None:
    whitelist = small_whitelist()
    assert parse(write(whitelist), max_bytes=LIMIT) == whitelist


FRENCH = st.text(
    alphabet=st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list("éèêëàâäîïôöùûüçÉÈÀÇŒœæ’«»—–€")
        + list(" &<>\"'()/,.;:-_@#\n\t\r")
    ),
    max_size=60,
)
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
ORGANISATION = st.text(
    alphabet=st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZéèàçôÉ &'()-.")),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() == s and s[:1] not in ("#", " "))
DATES = st.datetimes(
    min_value=utc(2000, 1, 1, 0, 0, 0).replace(tzinfo=None),
    max_value=utc(2099, 12, 31, 0, 0, 0).replace(tzinfo=None),
).map(lambda d: d.replace(tzinfo=utc(2000, 1, 1, 0, 0, 0).tzinfo))


@st.composite
def dns(draw: st.DrawFn) -> str:
    host = ".".join(draw(st.lists(LABEL, min_size=2, max_size=4)))
    organisation = draw(ORGANISATION)
    return f"CN={host},OU={draw(st.integers(1, 10**14))},O={organisation},ST=Gironde (33),C=FR"


@st.composite
def whitelists(draw: st.DrawFn) -> Whitelist:
    names = draw(st.lists(LABEL, min_size=0, max_size=6))
    domains = tuple(
        WhitelistDomain(
            name=f"{name}.mssante.fr",
            description=draw(FRENCH),
            operator_dns=tuple(draw(st.lists(dns(), min_size=1, max_size=3))),
            responsable_contact=draw(FRENCH),
            support_contact=draw(FRENCH),
            updated_at=draw(DATES),
        )
        for name in names
    )
    return Whitelist(generated_at=draw(DATES), domains=domains)


@given(whitelists())
@settings(max_examples=150, deadline=None)
def test_parse_of_write_gives_the_same_list(whitelist: Whitelist) -> None:
    assert parse(write(whitelist), max_bytes=LIMIT) == whitelist


def test_error_on_a_one_line_document_is_not_taken_for_truncation() -> None:
    one_line = b"".join(line.strip() for line in document().split(b"\n"))
    assert parse(one_line, max_bytes=LIMIT).names() == ("a.mssante.fr", "b.mssante.fr")
    broken = one_line.replace(b"</Description>", b"</Descriptio>", 1)
    assert refusal(broken).startswith("whitelist is not well-formed XML: Opening and ending tag")
    assert refusal(one_line[:-30]).startswith("whitelist is truncated: the data ends at line 1")
