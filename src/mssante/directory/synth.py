"""Realistic synthetic extractions, in the real format (BRIEF §4), for tests and benchmarks.

Deterministic for a seed; streaming, with memory that does not grow with the number of lines
beyond a Bloom filter of 12 bits per line, which keeps addresses unique (a possible earlier use
of ``jean.martin@…`` gives ``jean.martin2@…``, as operators do).

Shares (of lines): PER 78 % (40 % of them in a hospital or clinic, the rest in practice with
their profession's domain, ``prenom.nom@medecin.mssante.fr``), ORG 12 % (a service or a
secretariat), CAB 6 %, APP 4 %.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from mssante.directory import synthdata as data
from mssante.directory.extraction import ExtractionRow, ExtractionWriter, format_row
from mssante.directory.normalize import fold

T = TypeVar("T")
_TYPE_SHARES = (("PER", 78), ("ORG", 12), ("CAB", 6), ("APP", 4))


class _Weighted(Generic[T]):
    """Draw from ``items`` with weights ``weights``, or 1/rank^exponent (Zipf) when none are
    given."""

    def __init__(
        self, items: Sequence[T], weights: Sequence[float] | None = None, exponent: float = 0.8
    ) -> None:
        self.items = list(items)
        if weights is None:
            weights = [1 / (rank + 1) ** exponent for rank in range(len(items))]
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]

    def pick(self, rng: random.Random) -> T:
        return self.items[bisect.bisect(self._cumulative, rng.random() * self._total)]


@dataclass(frozen=True)
class Structure:
    """A hospital, clinic, practice…: what its mailboxes share."""

    raison_sociale: str
    enseigne: str
    domain: str
    finess: str
    town: tuple[str, str, str]


class _Bloom:
    """A Bloom filter of byte strings (16 bits per item, 3 probes: 0.5 % false positives, which
    only cost an address an unneeded number): ``add`` says whether the item was possibly there."""

    def __init__(self, capacity: int) -> None:
        self._bits = max(1 << 16, capacity * 16)
        self._array = bytearray(self._bits // 8 + 1)

    def add(self, item: bytes) -> bool:
        digest = int.from_bytes(hashlib.blake2b(item, digest_size=15).digest(), "little")
        bits, array = self._bits, self._array
        one, two, three = digest % bits, (digest >> 40) % bits, (digest >> 80) % bits
        present = (
            (array[one >> 3] >> (one & 7)) & (array[two >> 3] >> (two & 7))
            & (array[three >> 3] >> (three & 7)) & 1
        )  # fmt: skip
        array[one >> 3] |= 1 << (one & 7)
        array[two >> 3] |= 1 << (two & 7)
        array[three >> 3] |= 1 << (three & 7)
        return bool(present)


class Synthesiser:
    """Yields :class:`ExtractionRow` s; one per call of :meth:`row`."""

    def __init__(self, seed: int, lines: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        self._bloom = _Bloom(lines)
        self._serial = itertools.count(1)
        self._last = _Weighted(data.LAST_NAMES, exponent=0.5)
        self._first = _Weighted(data.FIRST_NAMES, exponent=0.5)
        self._profession = _Weighted(data.PROFESSIONS, [w for *_, w in data.PROFESSIONS])
        self._specialty = _Weighted(data.SPECIALTIES, [w for *_, w in data.SPECIALTIES])
        self._type = _Weighted([t for t, _ in _TYPE_SHARES], [w for _, w in _TYPE_SHARES])
        self._town = _Weighted(data.TOWNS)
        self._slug: dict[str, str] = {}
        structures = self._make_structures()
        self._structures = _Weighted([s for s, _ in structures], [w for _, w in structures])

    # -- a row ---------------------------------------------------------------------------------
    def row(self) -> ExtractionRow:
        kind = self._type.pick(self.rng)
        if kind == "PER":
            return self._person()
        if kind == "CAB":
            return self._practice()
        return self._organisational(kind)

    def _person(self) -> ExtractionRow:
        code, label, _ = self._profession.pick(self.rng)
        first, last = self._given_name(), self._family_name()
        if self.rng.random() < 0.4:
            structure = self._structures.pick(self.rng)
            domain, service = structure.domain, self._maybe_service()
        else:
            structure, service = self._practice_structure(last), ""
            domain = data.LIBERAL_DOMAINS.get(code, data.OTHER_LIBERAL_DOMAIN)
        given, family = self._slugify(first), self._slugify(last)
        local = (f"{given}.{family}", f"{given[0]}.{family}", f"{given}-{family}")
        return self._professional_row(
            "PER", local=local, domain=domain, profession=(code, label), names=(first, last),
            structure=structure, service=service,
        )  # fmt: skip

    def _practice(self) -> ExtractionRow:
        code, label, _ = self._profession.pick(self.rng)
        first, last = self._given_name(), self._family_name()
        structure = self._practice_structure(last)
        domain = data.LIBERAL_DOMAINS.get(code, data.OTHER_LIBERAL_DOMAIN)
        family = self._slugify(last)
        local = (f"cabinet.{family}", f"cabinet.{family}.{self._slugify(structure.town[0])}")
        return self._professional_row(
            "CAB", local=local, domain=domain, profession=(code, label), names=(first, last),
            structure=structure, service="",
        )  # fmt: skip

    def _professional_row(
        self,
        kind: str,
        *,
        local: Sequence[str],
        domain: str,
        profession: tuple[str, str],
        names: tuple[str, str],
        structure: Structure,
        service: str,
    ) -> ExtractionRow:
        code, label = profession
        id_type, id_value = self._professional_id(code)
        specialty = self._specialty.pick(self.rng) if code == "10" else ("", "", 0)
        civility = ("DR" if self.rng.random() < 0.95 else "PR") if code in {"10", "40"} else ""
        return ExtractionRow(
            kind, self._unique(local, domain), id_type, id_value, id_type + id_value,
            "1" if structure.finess else "", structure.finess, service, civility,
            names[1], names[0], "C", "Civil", code, label, specialty[0], specialty[1],
            "O" if self.rng.random() < 0.8 else "N", structure.raison_sociale,
            structure.enseigne, *self._postal(structure.town),
        )  # fmt: skip

    def _organisational(self, kind: str) -> ExtractionRow:
        structure = self._structures.pick(self.rng)
        if kind == "APP":
            local, service = [self.rng.choice(data.APPLICATIONS)], ""
        else:
            service = self.rng.choice(data.SERVICES)
            slug = self._slugify(service)
            local = [slug, f"secretariat.{slug}", f"accueil.{slug}"]
        return ExtractionRow(
            kind, self._unique(local, structure.domain), "", "", "", "1", structure.finess,
            service, "", "", "", "", "", "", "", "", "", "O", structure.raison_sociale,
            structure.enseigne, *self._postal(structure.town),
        )  # fmt: skip

    # -- pieces --------------------------------------------------------------------------------
    def _family_name(self) -> str:
        """A name of the list, or (one in six) two of them joined: DUPONT-MOREAU."""
        name = self._last.pick(self.rng)
        if self.rng.random() < 1 / 6 and " " not in name:
            other = self._last.pick(self.rng)
            if other != name and " " not in other and "-" not in other + name:
                return f"{name}-{other}"
        return name

    def _given_name(self) -> str:
        """A first name of the list, or (one in ten) two joined: Marie-Zoé."""
        name = self._first.pick(self.rng)
        if self.rng.random() < 0.1 and "-" not in name:
            other = self._first.pick(self.rng)
            if other != name and "-" not in other:
                return f"{name}-{other}"
        return name

    def _professional_id(self, code: str) -> tuple[str, str]:
        """RPPS (type 8, 11 digits starting 10) or, for some non-physicians, ADELI (type 0)."""
        serial = next(self._serial)
        if code != "10" and self.rng.random() < 0.1:
            return "0", f"{self.rng.randrange(10, 98):02d}{serial % 10_000_000:07d}"
        return "8", f"10{serial % 1_000_000_000:09d}"

    def _postal(self, town: tuple[str, str, str]) -> tuple[str, ...]:
        name, postal, departement = town
        number = str(self.rng.randrange(1, 200))
        complement = "B" if self.rng.random() < 0.05 else ""
        street = (self.rng.choice(data.STREET_TYPES), self.rng.choice(data.STREET_NAMES))
        l6 = f"{postal} {name.upper()}"
        return ("", "", number, complement, *street, "", l6, postal, departement, "FRANCE")

    def _maybe_service(self) -> str:
        return self.rng.choice(data.SERVICES) if self.rng.random() < 0.5 else ""

    def _practice_structure(self, last: str) -> Structure:
        town = self._town.pick(self.rng)
        if self.rng.random() < 0.5:
            return Structure("", "", "", "", town)
        name = f"CABINET {last}"
        return Structure(name, "", "", "", town)

    def _make_structures(self) -> list[tuple[Structure, float]]:
        """Each town's hospitals, clinics, practices…, weighted by the kind's weight and the
        town's rank (big towns first in data.TOWNS)."""
        rng = random.Random(self.rng.random())  # noqa: S311 - test data, not secrets
        made: list[tuple[Structure, float]] = []
        for index, town in enumerate(data.TOWNS):
            town_weight = 1 / (index + 1) ** 0.5
            for kind, prefix, label, weight, count in data.STRUCTURE_KINDS:
                if kind == "CHU" and index >= 30:
                    continue
                for _ in range(count):
                    structure = self._structure(rng, town, prefix, label)
                    made.append((structure, town_weight * weight / count))
        return made

    def _structure(
        self, rng: random.Random, town: tuple[str, str, str], prefix: str, label: str
    ) -> Structure:
        city = town[0].upper()
        if label in {"clinique", "cabinet", "ehpad"}:
            name = rng.choice(data.CLINIC_NAMES)
            raison = f"{prefix} {name}"
            domain = f"{label}-{self._slugify(name)}-{self._slugify(city)}"
        else:
            raison = f"{prefix} {city}"
            domain = f"{label}-{self._slugify(city)}"
        enseigne = (
            raison.replace("CENTRE HOSPITALIER UNIVERSITAIRE", "CHU") if label == "chu" else ""
        )
        finess = f"{rng.randrange(10_000_000, 99_999_999)}{rng.randrange(10)}"
        return Structure(raison, enseigne, f"{domain}.mssante.fr", finess, town)

    def _slugify(self, text: str) -> str:
        slug = self._slug.get(text)
        if slug is None:
            folded = fold(text).replace("'", "")
            slug = self._slug[text] = "-".join(folded.replace("-", " ").split())
        return slug

    def _unique(self, locals_: Sequence[str], domain: str) -> str:
        """The first of ``locals_`` not used yet at ``domain``, else the first with a number
        (``jean.martin27@…``), as operators do; the Bloom filter tells used ones apart."""
        for local in locals_:
            address = f"{local}@{domain}"
            if not self._bloom.add(address.encode()):
                return address
        top = 10
        while True:
            address = f"{locals_[0]}{self.rng.randrange(2, top)}@{domain}"
            if not self._bloom.add(address.encode()):
                return address
            top = min(top * 2, 1_000_000_000)


def synthesize(lines: int, seed: int) -> Iterator[ExtractionRow]:
    """``lines`` rows, the same for the same seed."""
    maker = Synthesiser(seed, lines)
    for _ in range(lines):
        yield maker.row()


def write_synthetic(
    path: Path, lines: int, seed: int, progress: Callable[[int], None] | None = None
) -> int:
    """Write a synthetic extraction to ``path`` (atomically); returns the number of lines."""
    writer = ExtractionWriter(path)
    try:
        batch: list[str] = []
        for row in synthesize(lines, seed):
            batch.append(format_row(row))
            if len(batch) == 10_000:
                _flush(writer, batch, progress)
        _flush(writer, batch, progress)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.lines


def _flush(
    writer: ExtractionWriter, batch: list[str], progress: Callable[[int], None] | None
) -> None:
    writer.write_lines(batch)
    if progress is not None:
        progress(len(batch))
    batch.clear()
