"""Distinguished names: the operator certificate form, RFC 4514 strings, comparison.

The whitelist lists each operator's certificate subject as an RFC 4514 string, most significant
RDN last::

    CN=smtp-1.sante.example.com,OU=341459958900028,O=EXAMPLE HEALTH,ST=Gironde (33),C=FR

:func:`dn_string` renders a certificate's subject in exactly that form (non-ASCII letters such as
``ô`` are not escaped). :func:`parse_dn` reads such a string back (RFC 4514 §3, with escapes and
``#`` hex values). :func:`normalise_dn` gives the form used to compare a presented certificate's
subject with a whitelist entry (RFC 5280 §7.1: case-insensitive matching after string
preparation, RDNs in the same order).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from mssante.errors import MssanteError
from mssante.pki.ids import IdNat, IdNatStruct, InvalidIdentifier, parse_id_nat, parse_id_nat_struct


class MalformedDN(MssanteError):
    """A distinguished name could not be read, or does not have the form required."""


class UnknownDepartement(MssanteError):
    """A département code that is not one of France's."""


# -- départements ------------------------------------------------------------------------------

DEPARTEMENTS: Mapping[str, str] = MappingProxyType(
    {
        "01": "Ain", "02": "Aisne", "03": "Allier", "04": "Alpes-de-Haute-Provence",
        "05": "Hautes-Alpes", "06": "Alpes-Maritimes", "07": "Ardèche", "08": "Ardennes",
        "09": "Ariège", "10": "Aube", "11": "Aude", "12": "Aveyron", "13": "Bouches-du-Rhône",
        "14": "Calvados", "15": "Cantal", "16": "Charente", "17": "Charente-Maritime",
        "18": "Cher", "19": "Corrèze", "2A": "Corse-du-Sud", "2B": "Haute-Corse",
        "21": "Côte-d'Or", "22": "Côtes-d'Armor", "23": "Creuse", "24": "Dordogne",
        "25": "Doubs", "26": "Drôme", "27": "Eure", "28": "Eure-et-Loir", "29": "Finistère",
        "30": "Gard", "31": "Haute-Garonne", "32": "Gers", "33": "Gironde", "34": "Hérault",
        "35": "Ille-et-Vilaine", "36": "Indre", "37": "Indre-et-Loire", "38": "Isère",
        "39": "Jura", "40": "Landes", "41": "Loir-et-Cher", "42": "Loire", "43": "Haute-Loire",
        "44": "Loire-Atlantique", "45": "Loiret", "46": "Lot", "47": "Lot-et-Garonne",
        "48": "Lozère", "49": "Maine-et-Loire", "50": "Manche", "51": "Marne",
        "52": "Haute-Marne", "53": "Mayenne", "54": "Meurthe-et-Moselle", "55": "Meuse",
        "56": "Morbihan", "57": "Moselle", "58": "Nièvre", "59": "Nord", "60": "Oise",
        "61": "Orne", "62": "Pas-de-Calais", "63": "Puy-de-Dôme", "64": "Pyrénées-Atlantiques",
        "65": "Hautes-Pyrénées", "66": "Pyrénées-Orientales", "67": "Bas-Rhin",
        "68": "Haut-Rhin", "69": "Rhône", "70": "Haute-Saône", "71": "Saône-et-Loire",
        "72": "Sarthe", "73": "Savoie", "74": "Haute-Savoie", "75": "Paris",
        "76": "Seine-Maritime", "77": "Seine-et-Marne", "78": "Yvelines", "79": "Deux-Sèvres",
        "80": "Somme", "81": "Tarn", "82": "Tarn-et-Garonne", "83": "Var", "84": "Vaucluse",
        "85": "Vendée", "86": "Vienne", "87": "Haute-Vienne", "88": "Vosges", "89": "Yonne",
        "90": "Territoire de Belfort", "91": "Essonne", "92": "Hauts-de-Seine",
        "93": "Seine-Saint-Denis", "94": "Val-de-Marne", "95": "Val-d'Oise",
        "971": "Guadeloupe", "972": "Martinique", "973": "Guyane", "974": "La Réunion",
        "975": "Saint-Pierre-et-Miquelon", "976": "Mayotte",
    }
)  # fmt: skip

_ST_LABEL = re.compile(r"(?P<name>\S.*) \((?P<code>[0-9]{2}|2[AB]|97[0-9])\)")


def departement_code(code: str) -> str:
    """The canonical code: ``"33"``, ``"2A"``, ``"971"``; ``"1"`` becomes ``"01"``."""
    cleaned = code.strip().upper()
    if len(cleaned) == 1 and cleaned.isdigit():
        cleaned = "0" + cleaned
    if cleaned not in DEPARTEMENTS:
        raise UnknownDepartement(f"unknown département code {code.strip()[:8]!r}")
    return cleaned


def departement_label(code: str) -> str:
    """The ST value of an operator certificate: ``departement_label("33") == "Gironde (33)"``."""
    canonical = departement_code(code)
    return f"{DEPARTEMENTS[canonical]} ({canonical})"


def departement_from_label(label: str) -> str:
    """The code in an ST value such as ``Puy-de-Dôme (63)``; the name itself is not enforced."""
    match = _ST_LABEL.fullmatch(label.strip())
    if not match:
        raise UnknownDepartement(f"ST must read '<Département> (<code>)', got {label[:60]!r}")
    return departement_code(match["code"])


# -- attribute names ---------------------------------------------------------------------------

# Keywords read by parse_dn (upper-cased). RFC 4514 §3 lists the first nine; the others are the
# names OpenSSL prints, needed for the subjects of person certificates.
_KEYWORDS: Mapping[str, ObjectIdentifier] = MappingProxyType(
    {
        "CN": NameOID.COMMON_NAME,
        "L": NameOID.LOCALITY_NAME,
        "ST": NameOID.STATE_OR_PROVINCE_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "C": NameOID.COUNTRY_NAME,
        "STREET": NameOID.STREET_ADDRESS,
        "DC": NameOID.DOMAIN_COMPONENT,
        "UID": NameOID.USER_ID,
        "SERIALNUMBER": NameOID.SERIAL_NUMBER,
        "SN": NameOID.SURNAME,
        "SURNAME": NameOID.SURNAME,
        "GN": NameOID.GIVEN_NAME,
        "GIVENNAME": NameOID.GIVEN_NAME,
        "TITLE": NameOID.TITLE,
        "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    }
)

# How dn_string names the attributes RFC 4514 has no keyword for (as OpenSSL does).
_DISPLAY: Mapping[ObjectIdentifier, str] = MappingProxyType(
    {
        NameOID.SERIAL_NUMBER: "serialNumber",
        NameOID.SURNAME: "SN",
        NameOID.GIVEN_NAME: "GN",
        NameOID.TITLE: "title",
        NameOID.EMAIL_ADDRESS: "emailAddress",
    }
)
_STANDARD = MappingProxyType(
    {
        NameOID.COMMON_NAME: "CN",
        NameOID.LOCALITY_NAME: "L",
        NameOID.STATE_OR_PROVINCE_NAME: "ST",
        NameOID.ORGANIZATION_NAME: "O",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
        NameOID.COUNTRY_NAME: "C",
        NameOID.STREET_ADDRESS: "STREET",
        NameOID.DOMAIN_COMPONENT: "DC",
        NameOID.USER_ID: "UID",
    }
)
_NUMERIC_OID = re.compile(r"(?:OID\.)?([0-2](?:\.[0-9]+)+)", re.IGNORECASE)


def _label(oid: ObjectIdentifier) -> str:
    return _STANDARD.get(oid) or _DISPLAY.get(oid) or oid.dotted_string


def dn_string(name: x509.Name) -> str:
    """RFC 4514 string of ``name``, most significant RDN last, as the whitelist writes it."""
    return name.rfc4514_string(dict(_DISPLAY))


# -- RFC 4514 parsing --------------------------------------------------------------------------

_SPECIALS = frozenset(' "#+,;<=>\\')
_FORBIDDEN_UNESCAPED = frozenset('";<>')


class _Scanner:
    """A cursor over a DN string (RFC 4514 §3 grammar)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.pos += 1
        return char

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)


_Pair = tuple[ObjectIdentifier, str | bytes]  # one attribute: type and value


def parse_dn(text: str) -> x509.Name:
    """Read an RFC 4514 DN string (``CN=…,OU=…,C=FR``) into an :class:`x509.Name`.

    Attribute types are case-insensitive keywords or dotted OIDs; values may use ``\\,``-style
    and ``\\c3\\b4``-style escapes, or ``#`` followed by the hex of a BER string. Spaces around
    separators are ignored. Raises :class:`MalformedDN` naming the problem, including values
    a certificate cannot hold (a CN over 64 bytes, a C that is not two letters).
    """
    rdns = [_build_rdn(rdn) for rdn in _parse_rdns(text)]
    # RFC 4514 §2.1: the string starts with the last RDN of the sequence.
    return x509.Name(list(reversed(rdns)))


def _parse_rdns(text: str) -> list[list[_Pair]]:
    """The RDNs of ``text`` in string order (most significant last), as (type, value) pairs."""
    if not text.strip():
        raise MalformedDN("malformed DN: empty")
    scanner = _Scanner(text)
    rdns: list[list[_Pair]] = []
    while True:
        rdns.append(_parse_rdn(scanner))
        scanner.skip_spaces()
        if scanner.at_end():
            return rdns
        if scanner.take() != ",":
            raise MalformedDN(f"malformed DN: expected ',' at position {scanner.pos}")


def _parse_rdn(scanner: _Scanner) -> list[_Pair]:
    attributes = [_parse_attribute(scanner)]
    while scanner.peek() == "+":
        scanner.take()
        attributes.append(_parse_attribute(scanner))
    return attributes


def _build_rdn(pairs: list[_Pair]) -> x509.RelativeDistinguishedName:
    try:
        return x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in pairs])
    except ValueError as exc:
        labels = "+".join(_label(o) for o, _ in pairs)
        raise MalformedDN(f"malformed DN: {labels}: {exc}") from None


def _parse_attribute(scanner: _Scanner) -> _Pair:
    scanner.skip_spaces()
    start = scanner.pos
    while not scanner.at_end() and scanner.peek() not in "=,+":
        scanner.take()
    oid = _attribute_type(scanner.text[start : scanner.pos].strip())
    if scanner.take() != "=":
        raise MalformedDN(f"malformed DN: expected '=' after {_label(oid)}")
    scanner.skip_spaces()
    value = _hex_value(scanner) if scanner.peek() == "#" else _string_value(scanner, oid)
    if not value:
        raise MalformedDN(f"malformed DN: empty value for {_label(oid)}")
    return oid, value


def _attribute_type(text: str) -> ObjectIdentifier:
    if not text:
        raise MalformedDN("malformed DN: missing attribute type")
    known = _KEYWORDS.get(text.upper())
    if known is not None:
        return known
    numeric = _NUMERIC_OID.fullmatch(text)
    if numeric:
        return ObjectIdentifier(numeric.group(1))
    raise MalformedDN(f"malformed DN: unknown attribute type {text[:30]!r}")


def _string_value(scanner: _Scanner, oid: ObjectIdentifier) -> str:
    """An RFC 4514 ``string``: escapes decoded, unescaped trailing spaces dropped."""
    raw = bytearray()
    significant = 0  # length of raw up to the last character that is not an unescaped space
    while not scanner.at_end() and scanner.peek() not in ",+":
        char = scanner.take()
        if char == "\\":
            raw += _escaped(scanner)
            significant = len(raw)
            continue
        if char in _FORBIDDEN_UNESCAPED:
            raise MalformedDN(f"malformed DN: unescaped {char!r} in the value of {_label(oid)}")
        raw += char.encode("utf-8")
        if char != " ":
            significant = len(raw)
    try:
        return bytes(raw[:significant]).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedDN(f"malformed DN: escaped bytes of {_label(oid)} are not UTF-8") from None


def _escaped(scanner: _Scanner) -> bytes:
    char = scanner.take()
    if char in _SPECIALS:
        return char.encode("utf-8")
    pair = char + scanner.take()
    if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
        return bytes.fromhex(pair)
    raise MalformedDN(f"malformed DN: bad escape '\\{pair}' at position {scanner.pos}")


def _hex_value(scanner: _Scanner) -> str:
    """``#`` hexstring: the BER encoding of the value (RFC 4514 §2.4); must be a string type."""
    scanner.take()
    start = scanner.pos
    while not scanner.at_end() and scanner.peek() not in ",+ ":
        scanner.take()
    digits = scanner.text[start : scanner.pos]
    try:
        value = asn1_core.load(bytes.fromhex(digits), strict=True).native
    except (ValueError, TypeError):
        raise MalformedDN("malformed DN: bad '#' hex value") from None
    if not isinstance(value, str):
        raise MalformedDN("malformed DN: '#' hex value is not a string")
    return value


# -- comparison --------------------------------------------------------------------------------


def _prepare(value: str) -> str:
    """RFC 4518 string preparation, simplified: NFKC, case folding, insignificant spaces."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(folded.split()) or " "  # RFC 4518 §2.6.1: all spaces compare as one space


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in '\\"+,;<>' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    return out


def _normal_attribute(oid: ObjectIdentifier, value: str | bytes) -> str:
    label = (_STANDARD.get(oid) or _DISPLAY.get(oid) or "").upper() or oid.dotted_string
    text = "#" + value.hex() if isinstance(value, bytes) else _escape(_prepare(value))
    return f"{label}={text}"


def normalise_dn(dn: str | x509.Name) -> str:
    """Canonical text of a DN, for equality tests only (RFC 5280 §7.1).

    Attribute types upper-cased, values NFKC-normalised and case-folded with leading, trailing
    and repeated spaces removed, the attributes of a multi-valued RDN sorted; the order of the
    RDNs is kept. Two DNs match when their normal forms are equal.
    """
    if isinstance(dn, str):  # no x509.Name: a text DN need not fit a certificate to be compared
        rdns = _parse_rdns(dn)
    else:
        rdns = [[(a.oid, a.value) for a in rdn] for rdn in reversed(dn.rdns)]
    return ",".join("+".join(sorted(_normal_attribute(o, v) for o, v in rdn)) for rdn in rdns)


def dn_matches(left: str | x509.Name, right: str | x509.Name) -> bool:
    """True if two DNs name the same subject (see :func:`normalise_dn`)."""
    return normalise_dn(left) == normalise_dn(right)


# -- the operator certificate subject ---------------------------------------------------------

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_OPERATOR_ORDER = ("CN", "OU", "O", "ST", "C")


def check_host(host: str) -> str:
    """A host name (DNS labels). The whitelist has one single-label CN, so no dot is required."""
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise MalformedDN(f"not a valid host name: {host[:80]!r}")
    return host


@dataclass(frozen=True)
class OperatorDN:
    """The parts of an operator certificate's subject."""

    host: str
    structure_id: IdNatStruct
    organisation: str
    state: str
    country: str

    @property
    def departement(self) -> str:
        return departement_from_label(self.state)

    def to_name(self) -> x509.Name:
        return _operator_name(self.host, str(self.structure_id), self.organisation, self.state)

    def __str__(self) -> str:
        return dn_string(self.to_name())


def _operator_name(host: str, structure_id: str, organisation: str, state: str) -> x509.Name:
    try:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, state),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, structure_id),
                x509.NameAttribute(NameOID.COMMON_NAME, host),
            ]
        )
    except ValueError as exc:
        raise MalformedDN(f"cannot build the certificate subject: {exc}") from None


def operator_subject(
    host: str, structure_id: IdNatStruct | str, organisation: str, departement_code: str
) -> x509.Name:
    """``CN=<host>,OU=<IdNatStruct>,O=<organisation>,ST=<Département (nn)>,C=FR``."""
    structure = (
        structure_id if isinstance(structure_id, IdNatStruct) else parse_id_nat_struct(structure_id)
    )
    if not organisation.strip():
        raise MalformedDN("the organisation name is empty")
    return _operator_name(
        check_host(host), str(structure), organisation.strip(), departement_label(departement_code)
    )


def _single_valued(name: x509.Name) -> Iterator[x509.NameAttribute[str | bytes]]:
    for rdn in reversed(name.rdns):
        attributes = list(rdn)
        if len(attributes) != 1:
            raise MalformedDN("operator DN must not have multi-valued RDNs")
        yield attributes[0]


def parse_operator_dn(dn: str | x509.Name) -> OperatorDN:
    """Check and split an operator DN of the form ``CN=…,OU=…,O=…,ST=… (nn),C=FR``."""
    name = parse_dn(dn) if isinstance(dn, str) else dn
    attributes = list(_single_valued(name))
    found = tuple(_label(a.oid) for a in attributes)
    if found != _OPERATOR_ORDER:
        raise MalformedDN(f"operator DN must be CN=…,OU=…,O=…,ST=…,C=FR; got {','.join(found)}")
    host, ou, organisation, state, country = (str(a.value) for a in attributes)
    if country != "FR":
        raise MalformedDN(f"operator DN must have C=FR, not C={country[:8]}")
    try:
        structure = parse_id_nat_struct(ou)
        departement_from_label(state)
    except (InvalidIdentifier, UnknownDepartement) as exc:
        raise MalformedDN(f"operator DN: {exc.public}") from None
    return OperatorDN(check_host(host), structure, organisation, state, country)


# -- person certificates -----------------------------------------------------------------------


def person_subject(
    id_nat: IdNat | str, last_name: str, first_name: str, organisation: str | None = None
) -> x509.Name:
    """Subject of a CPS-like authentication certificate (see docs/pki.md).

    ``CN=<idNat>,serialNumber=<idNat>,GN=<first name>,SN=<LAST NAME>[,O=<organisation>],C=FR``
    """
    ident = str(id_nat if isinstance(id_nat, IdNat) else parse_id_nat(id_nat))
    if not last_name.strip() or not first_name.strip():
        raise MalformedDN("a person's last and first names must not be empty")
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation.strip()))
    attributes += [
        x509.NameAttribute(NameOID.SURNAME, last_name.strip().upper()),
        x509.NameAttribute(NameOID.GIVEN_NAME, first_name.strip()),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, ident),
        x509.NameAttribute(NameOID.COMMON_NAME, ident),
    ]
    return x509.Name(attributes)


def person_id_nat(name: x509.Name) -> IdNat:
    """The professional's idNat in a person certificate's subject (serialNumber, else CN)."""
    for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
        for attribute in name.get_attributes_for_oid(oid):
            candidate = str(attribute.value).split("/", 1)[0]
            try:
                return parse_id_nat(candidate)
            except InvalidIdentifier:
                continue
    raise MalformedDN("the certificate subject carries no professional idNat")
