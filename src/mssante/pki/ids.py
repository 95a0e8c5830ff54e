"""National identifiers of health structures and professionals.

A structure's national id (``IdNatStruct``, carried in the OU of an operator certificate) is a
one-digit prefix followed by the number (ANS, CI-SIS "StructIdNat"):

====== ================== =======================================================
prefix kind               number
====== ================== =======================================================
``0``  ADELI cabinet      ADELI (9 characters) or ADELI-rang (9 + 2-digit rank)
``1``  FINESS             9 characters: département (2 digits, ``2A``/``2B``), 6
                          digits, a Luhn key (not checked for Corsica, ``2A``/``2B``)
``2``  SIREN              9 digits, Luhn key
``3``  SIRET              14 digits = SIREN + NIC, Luhn key (La Poste: or digit sum % 5)
``4``  RPPS-rang          14 digits = RPPS (11) + rank (2) + key (not checked)
====== ================== =======================================================

A professional's national id (``idNat``) is ``8`` + RPPS (11 digits ending in a Luhn key) or
``0`` + ADELI (9 characters, whose key is not public and so not checked).

Where the public definition of a key is uncertain, the key is not enforced: refusing a real
identifier is worse than accepting a mistyped one, which the directory catches anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from mssante.errors import MssanteError

_DIGITS = re.compile(r"[0-9]+")
# Two-digit département, or Corsica's 2A/2B, then seven digits.
_DEPT9 = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}")
_LA_POSTE_SIREN = "356000000"
_K = TypeVar("_K", bound=StrEnum)


class InvalidIdentifier(MssanteError):
    """A national identifier (structure or professional) does not have the expected form."""


class StructureIdKind(StrEnum):
    """The prefix digit of an IdNatStruct."""

    ADELI_CABINET = "0"
    FINESS = "1"
    SIREN = "2"
    SIRET = "3"
    RPPS_RANG = "4"


class ProfessionalIdKind(StrEnum):
    """The prefix digit of a professional's idNat."""

    ADELI = "0"
    RPPS = "8"


# -- check keys --------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` (ASCII digits only) ends in a correct Luhn (mod 10) key."""
    if not digits or not _DIGITS.fullmatch(digits):
        return False
    return _luhn_sum(digits) % 10 == 0


def luhn_key(digits: str) -> str:
    """The Luhn key to append to ``digits`` so that the result is :func:`luhn_valid`."""
    if not digits or not _DIGITS.fullmatch(digits):
        raise InvalidIdentifier("a Luhn key is computed over digits only")
    return str((10 - _luhn_sum(digits + "0") % 10) % 10)


def _luhn_sum(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total


def siret_valid(siret: str) -> bool:
    """SIRET key: Luhn; La Poste's establishments may instead have a digit sum multiple of 5."""
    if len(siret) != 14 or not _DIGITS.fullmatch(siret):
        return False
    if siret.startswith(_LA_POSTE_SIREN) and sum(int(c) for c in siret) % 5 == 0:
        return True
    return luhn_valid(siret)


def _coerce(enum: type[_K], kind: object, what: str) -> _K:
    try:
        return enum(str(kind))
    except ValueError:
        raise InvalidIdentifier(f"invalid {what} identifier: unknown kind {kind!r}") from None


# -- structure ids -----------------------------------------------------------------------------


def _check_finess(value: str) -> str | None:
    if not _DEPT9.fullmatch(value):
        return "FINESS must be 9 characters: a département (2 digits, 2A or 2B) then 7 digits"
    if value[:2] not in ("2A", "2B") and not luhn_valid(value):
        return "FINESS check key is wrong"
    return None


def _check_siren(value: str) -> str | None:
    if len(value) != 9 or not _DIGITS.fullmatch(value):
        return "SIREN must be 9 digits"
    if not luhn_valid(value):
        return "SIREN check key is wrong"
    return None


def _check_siret(value: str) -> str | None:
    if len(value) != 14 or not _DIGITS.fullmatch(value):
        return "SIRET must be 14 digits"
    if not siret_valid(value):
        return "SIRET check key is wrong"
    return None


def _check_adeli_cabinet(value: str) -> str | None:
    if len(value) not in (9, 11) or not _DEPT9.fullmatch(value[:9]):
        return (
            "ADELI cabinet id must be an ADELI number (9 characters) with an optional 2-digit rank"
        )
    if len(value) == 11 and not _DIGITS.fullmatch(value[9:]):
        return "ADELI cabinet rank must be 2 digits"
    return None


def _check_rpps_rang(value: str) -> str | None:
    if len(value) != 14 or not _DIGITS.fullmatch(value):
        return "RPPS-rang must be 14 digits (RPPS, 2-digit rank, key)"
    return _check_rpps(value[:11])


_STRUCTURE_CHECKS: Mapping[StructureIdKind, Callable[[str], str | None]] = MappingProxyType(
    {
        StructureIdKind.ADELI_CABINET: _check_adeli_cabinet,
        StructureIdKind.FINESS: _check_finess,
        StructureIdKind.SIREN: _check_siren,
        StructureIdKind.SIRET: _check_siret,
        StructureIdKind.RPPS_RANG: _check_rpps_rang,
    }
)


@dataclass(frozen=True)
class IdNatStruct:
    """A structure's national identifier; ``str()`` gives the prefixed form, e.g. ``3414...``."""

    kind: StructureIdKind
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _coerce(StructureIdKind, self.kind, "structure"))
        problem = _STRUCTURE_CHECKS[self.kind](self.value)
        if problem:
            raise InvalidIdentifier(f"invalid structure identifier: {problem}")

    def __str__(self) -> str:
        return f"{self.kind.value}{self.value}"


def parse_id_nat_struct(text: str) -> IdNatStruct:
    """Parse a prefixed IdNatStruct such as ``341459958900028`` or ``1630013605``."""
    cleaned = text.strip()
    if not cleaned:
        raise InvalidIdentifier("invalid structure identifier: empty")
    try:
        kind = StructureIdKind(cleaned[0])
    except ValueError:
        raise InvalidIdentifier(
            f"invalid structure identifier: unknown prefix {cleaned[0]!r} "
            "(expected 0 ADELI, 1 FINESS, 2 SIREN, 3 SIRET or 4 RPPS-rang)"
        ) from None
    return IdNatStruct(kind, cleaned[1:])


# -- professional ids --------------------------------------------------------------------------


def _check_rpps(value: str) -> str | None:
    if len(value) != 11 or not _DIGITS.fullmatch(value):
        return "RPPS must be 11 digits"
    if not luhn_valid(value):
        return "RPPS check key is wrong"
    return None


def _check_adeli(value: str) -> str | None:
    if not _DEPT9.fullmatch(value):
        return "ADELI must be 9 characters: a département (2 digits, 2A or 2B) then 7 digits"
    return None


_PROFESSIONAL_CHECKS: Mapping[ProfessionalIdKind, Callable[[str], str | None]] = MappingProxyType(
    {
        ProfessionalIdKind.ADELI: _check_adeli,
        ProfessionalIdKind.RPPS: _check_rpps,
    }
)


@dataclass(frozen=True)
class IdNat:
    """A professional's national identifier; ``str()`` gives the prefixed form (``8`` + RPPS)."""

    kind: ProfessionalIdKind
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _coerce(ProfessionalIdKind, self.kind, "professional"))
        problem = _PROFESSIONAL_CHECKS[self.kind](self.value)
        if problem:
            raise InvalidIdentifier(f"invalid professional identifier: {problem}")

    def __str__(self) -> str:
        return f"{self.kind.value}{self.value}"


def parse_id_nat(text: str) -> IdNat:
    """Parse a prefixed professional idNat such as ``810002909371`` (8 + RPPS)."""
    cleaned = text.strip()
    if not cleaned:
        raise InvalidIdentifier("invalid professional identifier: empty")
    try:
        kind = ProfessionalIdKind(cleaned[0])
    except ValueError:
        raise InvalidIdentifier(
            f"invalid professional identifier: unknown prefix {cleaned[0]!r} "
            "(expected 8 RPPS or 0 ADELI)"
        ) from None
    return IdNat(kind, cleaned[1:])
