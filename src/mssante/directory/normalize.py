"""Accent- and case-free words, the unit of directory search (docs/directory.md, "Search").

``fold``: NFKD, combining marks dropped, casefold, and the few Latin letters that NFKD does not
split (œ, æ, ø…) spelled out: "Hélène LEFÈVRE-Œuvray" → "helene lefevre-oeuvray". ``words``:
the runs of letters and digits of the folded text; everything else separates words, so a query
can never carry SQL, LIKE or FTS syntax into the store: ``' OR 1=1 --`` is the words "or", "1",
"1".

A mailbox's words come in four groups, stored as ``search_text`` = `` g0 | g1 | g2 | g3 ``:

- 0, names: nom and prénom d'exercice (PER, CAB);
- 1, structure: raison sociale, enseigne, service — for the structure's own mailboxes (ORG,
  APP, CAB);
- 2, address: the words of the address's local part (and, for ORG and APP, of the operator's
  part of the domain: ``chu-lyon``) not already in 0 or 1;
- 3, context: what narrows a search but does not start one — a PER mailbox's structure, the
  town, the operator's part of the domain (``ch-lyon``, ``medecin``).

Groups 0–2 are indexed (a row per word in ``directory_words``, weight = group); group 3 is only
tested, with ``LIKE '% word%'``, on candidates found through the index. Indexing everyone's
structure and town would list a whole hospital's staff under "chu" and double the index
(docs/decisions/0009-directory-search.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType

from mssante.directory.extraction import ExtractionRow

_SPELLED = MappingProxyType(
    str.maketrans(
        {
            "œ": "oe",
            "æ": "ae",
            "ø": "o",
            "ß": "ss",
            "đ": "d",
            "ð": "d",
            "ł": "l",
            "þ": "th",
            "ı": "i",
        }
    )
)
_WORD = re.compile(r"[^\W_]+")
GROUP_SEPARATOR = "|"
_TRUST_SPACE_SUFFIX = ".mssante.fr"  # BRIEF §4: addresses are <local>@<operator>.mssante.fr


def fold(text: str) -> str:
    """Lower case, without accents (NFKD, combining marks dropped, casefold)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().translate(_SPELLED)


MAX_WORD = 64  # longer words are cut (the index's column); a prefix of them still matches


def words(text: str) -> list[str]:
    """The folded words of ``text``, in order (duplicates kept)."""
    found: list[str] = _WORD.findall(fold(text))
    if any(len(word) > MAX_WORD for word in found):
        return [word[:MAX_WORD] for word in found]
    return found


@dataclass(frozen=True)
class Indexed:
    """What the search needs of one mailbox: its alphabetical key and its grouped words."""

    sort_name: str
    search_text: str
    city: str
    names: list[str]  # group 0
    structure: list[str]  # group 1 (empty for PER: their structure is context)
    address: list[str]  # group 2

    def word_rows(self, entry_id: int) -> list[tuple[str, int, str, int]]:
        """This mailbox's rows of ``directory_words`` (groups 0–2, with their weights)."""
        return word_rows([self.names, self.structure, self.address], self.sort_name, entry_id)


def word_rows(
    groups: list[list[str]], sort_name: str, entry_id: int
) -> list[tuple[str, int, str, int]]:
    """Rows of ``directory_words`` for indexed groups 0–2: the weight of a word is
    :func:`weight` of its place."""
    names, structure, address = groups[0], groups[1], groups[2]
    rows = [(w, WEIGHT_OTHER_NAME, sort_name, entry_id) for w in names]
    if rows:
        rows[0] = (names[0], WEIGHT_FAMILY, sort_name, entry_id)
    rows += [(w, WEIGHT_STRUCTURE, sort_name, entry_id) for w in structure]
    rows += [(w, WEIGHT_ADDRESS, sort_name, entry_id) for w in address]
    return rows


# Weights, the second key of the ranking: the family name's (first) word, the other names
# (prénom, the rest of a compound name), structure, address, context (never indexed).
WEIGHT_FAMILY, WEIGHT_OTHER_NAME, WEIGHT_STRUCTURE, WEIGHT_ADDRESS, WEIGHT_CONTEXT = 0, 1, 2, 3, 4


def best_match(groups: list[list[str]], prefix: str) -> tuple[str, int] | None:
    """The entry's smallest (word, weight) where the word starts with ``prefix`` (``groups``:
    :func:`parse_groups`): the key by which it ranks for that prefix, as in the index."""
    found = []
    for group_number, group in enumerate(groups):
        for position, word in enumerate(group):
            if word.startswith(prefix):
                found.append((word, _weight(group_number, position)))
    return min(found) if found else None


def _weight(group: int, position: int) -> int:
    if group == 0:
        return WEIGHT_FAMILY if position == 0 else WEIGHT_OTHER_NAME
    return (WEIGHT_STRUCTURE, WEIGHT_ADDRESS, WEIGHT_CONTEXT)[group - 1]


def parse_groups(search_text: str) -> list[list[str]]:
    """``search_text`` back into its four lists of words (groups 0–3)."""
    return [group.split() for group in search_text.split(GROUP_SEPARATOR)]


INDEXED_GROUPS = 3  # groups 0, 1, 2 have rows in directory_words; group 3 does not
_ORGANISATIONAL = frozenset({"ORG", "APP"})


class Indexer:
    """Computes :class:`Indexed` for rows. Names, structures, towns and domains repeat across
    hundreds of thousands of lines, so their words are remembered (bounded; one indexer per
    import): per line, only the address's local part is split afresh."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self._cache: dict[str, tuple[list[str], str]] = {}
        self._cache_size = cache_size

    def index(self, row: ExtractionRow) -> Indexed:
        kind = row[0]
        family, given = self._field(row[9]), self._field(row[10])
        names = _unique(family + given) if given else family
        names_text = " ".join(names)
        structure, structure_text = self._group(
            f"s{row[18]}\x1f{row[19]}\x1f{row[7]}", *row[18:20], row[7]
        )
        local, _, domain = row[1].lower().partition("@")
        place, place_text = self._place(row[27], domain)
        if kind == "PER":
            structure, structure_text, place_text = [], "", f"{structure_text} {place_text}"
        found = words(local)
        if kind in _ORGANISATIONAL:  # "chu-lyon", "labo-x": the domain names the structure
            found = _unique(found + self._domain(domain))
        address = [w for w in found if w not in names and w not in structure] if found else found
        text = f" {names_text} | {structure_text} | {' '.join(address)} | {place_text} "
        city = place[0] if place else ""
        key = person_sort_name(family, given) if names else sort_name(structure or address)
        return Indexed(key, text, city, names, structure, address)

    def _field(self, text: str) -> list[str]:
        if not text:
            return []
        found = self._cache.get(text)
        if found is None:
            found = self._remember(text, (words(text), ""))
        return found[0]

    def _group(self, key: str, *fields: str) -> tuple[list[str], str]:
        found = self._cache.get(key)
        if found is None:
            group = _unique([w for field in fields if field for w in words(field)])
            found = self._remember(key, (group, " ".join(group)))
        return found

    def _place(self, l6: str, domain: str) -> tuple[list[str], str]:
        """Town and domain words; the first item is the town, folded (for FHIR address-city)."""
        key = f"p{l6}\x1f{domain}"
        found = self._cache.get(key)
        if found is None:
            town = " ".join(words(city_of_line(l6)))[:200]
            place = words(l6) + _domain_words(domain)
            found = self._remember(key, ([town], " ".join(place)))
        return found

    def _domain(self, domain: str) -> list[str]:
        key = "@" + domain  # a field's text never starts with "@" and is also a domain
        found = self._cache.get(key)
        if found is None:
            found = self._remember(key, (_domain_words(domain), ""))
        return found[0]

    def _remember(self, key: str, value: tuple[list[str], str]) -> tuple[list[str], str]:
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = value
        return value


def _unique(found: list[str]) -> list[str]:
    return list(dict.fromkeys(found)) if len(found) > 1 else found


def _domain_words(domain: str) -> list[str]:
    """The operator's part of a domain: ``ch-lyon.mssante.fr`` → ch, lyon."""
    if domain.endswith(_TRUST_SPACE_SUFFIX):
        return words(domain[: -len(_TRUST_SPACE_SUFFIX)])
    return words(domain.rpartition(".")[0])


def structure_words(row: ExtractionRow) -> list[str]:
    """A structure's words: raison sociale, enseigne and town (directory_structures)."""
    found = words(row.raison_sociale) + words(row.enseigne_commerciale)
    return _unique(found + words(city_of_line(row.l6_ligne_acheminement)))


def city_of_line(l6: str) -> str:
    """The town: the L6 line ("ligne d'acheminement", ``69003 LYON``) without its postal code."""
    line = l6.strip()
    head, _, rest = line.partition(" ")
    return rest.strip() if head.isdigit() and rest else line


def sort_name(words_: list[str]) -> str:
    """Alphabetical key of results for a structure's or an address's words; 64 characters at
    most (then the entry's id decides)."""
    return " ".join(words_)[:64]


def person_sort_name(family: list[str], given: list[str]) -> str:
    """A person's key, in phone-book order: the family name's words joined by "-", a space,
    then the given names: "martin marie" < "martin-abgrall aude" (" " sorts before "-"). A
    search can seek "martin marie…" within the family name's index range."""
    return f"{'-'.join(family)} {' '.join(given)}".strip()[:64]


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix`` (code point order,
    which is both SQLite's BINARY and PostgreSQL's "C" collation on UTF-8)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix + "\U0010ffff"
    return prefix[:-1] + chr(last + 1)
