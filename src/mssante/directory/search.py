"""Type-ahead search over the directory (docs/directory.md, "Search"; decision 0009).

A query is cut into accent- and case-free words (``normalize.words``); each is a prefix, and
every word must match a word of the mailbox. At least one must match an *indexed* word (a
name, a structure's own mailbox, the address); the others may also match the mailbox's
context (a person's structure, the town, the operator's domain).

Ranking, by the **last** word (the one being typed): mailboxes whose every word matched
indexed words first; then the last word's matched word in alphabetical order (a whole word
before its completions: ``du``, ``dubois``, ``dupont``…); for the same word its weight (family
name, other names, structure, address, context); then the mailbox's key (phone-book order for
people), then its id.

How: ``directory_words`` holds (word, weight, sort_name, entry_id) in that order, so the first
rows of the range ``word >= p AND word < p+1`` are the answer: a range scan that stops after N
rows, however many mailboxes start with "ma". Several words: see :func:`_several_words`.

A query containing "@" is an address prefix (``jean.dupont@ch-``): a range on the address.
Liste rouge mailboxes are never indexed and never returned.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from mssante.config import DirectorySettings
from mssante.directory.extraction import ExtractionRow, parse_line
from mssante.directory.normalize import (
    GROUP_SEPARATOR,
    WEIGHT_CONTEXT,
    WEIGHT_FAMILY,
    WEIGHT_OTHER_NAME,
    best_match,
    city_of_line,
    parse_groups,
    prefix_upper_bound,
    words,
)
from mssante.errors import MssanteError
from mssante.store.db import Database

SCAN_CAP = 400  # index rows examined per word of a query of several words


class QueryError(MssanteError):
    """A search request that cannot be run (empty, too long, control characters, bad limit)."""


@dataclass(frozen=True)
class Query:
    """A checked query: its words, or an address prefix, and how many results."""

    words: tuple[str, ...]
    address_prefix: str
    limit: int


@dataclass(frozen=True)
class SearchResult:
    """One mailbox as a type-ahead shows it (display fields from the stored line)."""

    address: str
    type: str
    civilite: str
    nom: str
    prenom: str
    profession_code: str
    profession: str
    savoir_faire: str
    structure: str
    service: str
    postal_code: str
    city: str
    departement: str

    @classmethod
    def from_raw(cls, address: str, raw: str) -> SearchResult:
        row: ExtractionRow = parse_line(raw)
        return cls(
            address=address,
            type=row.type_bal,
            civilite=row.civilite_exercice,
            nom=row.nom_exercice,
            prenom=row.prenom_exercice,
            profession_code=row.code_profession,
            profession=row.libelle_profession,
            savoir_faire=row.libelle_savoir_faire,
            structure=row.raison_sociale or row.enseigne_commerciale,
            service=row.service_rattachement,
            postal_code=row.code_postal,
            city=city_of_line(row.l6_ligne_acheminement),
            departement=row.departement,
        )

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def parse_query(q: str | None, limit: str | int | None, settings: DirectorySettings) -> Query:
    """Check the caller's input; refusals are one line, French then English."""
    if q is None or not q.strip():
        raise QueryError("la recherche est vide / the search text is empty")
    if len(q) > settings.max_query_chars:
        raise QueryError(
            f"recherche trop longue (plus de {settings.max_query_chars} caractères) / "
            f"search text too long (over {settings.max_query_chars} characters)"
        )
    if any(unicodedata.category(c) == "Cc" for c in q):
        raise QueryError(
            "caractère de contrôle dans la recherche / control character in the search text"
        )
    count = _limit(limit, settings)
    if "@" in q:
        return Query((), q.strip().lower(), count)
    return Query(tuple(dict.fromkeys(words(q)))[: settings.max_query_words], "", count)


def _limit(limit: str | int | None, settings: DirectorySettings) -> int:
    if limit is None or limit == "":
        return settings.search_default_limit
    try:
        value = int(limit)
    except ValueError:
        value = 0
    if not 1 <= value <= settings.search_max_limit:
        raise QueryError(
            f"limit doit être un entier de 1 à {settings.search_max_limit} / "
            f"limit must be an integer from 1 to {settings.search_max_limit}"
        )
    return value


class DirectorySearch:
    """Runs checked queries against the store."""

    def __init__(self, db: Database, settings: DirectorySettings) -> None:
        self.db = db
        self.settings = settings

    def search(self, q: str | None, limit: str | int | None = None) -> list[SearchResult]:
        query = parse_query(q, limit, self.settings)
        with self.db.engine.connect() as conn:
            if query.address_prefix:
                rows = _by_address(conn, query.address_prefix, query.limit)
            elif query.words:
                rows = _by_words(conn, query.words, query.limit)
            else:
                rows = []
        return [SearchResult.from_raw(address, raw) for address, raw in rows]


# -- address prefix ------------------------------------------------------------------------------

_ADDRESS = """
SELECT address, raw FROM directory_entries
WHERE address >= :lo AND address < :hi AND liste_rouge = FALSE
ORDER BY address LIMIT :n
"""


def _by_address(conn: Connection, prefix: str, limit: int) -> list[tuple[str, str]]:
    params = {"lo": prefix, "hi": prefix_upper_bound(prefix), "n": limit}
    return [(r[0], r[1]) for r in conn.execute(text(_ADDRESS), params)]


# -- words ---------------------------------------------------------------------------------------

_COLUMNS = "w.word, w.weight, w.sort_name, w.entry_id, e.address, e.raw, e.search_text"
# The first :cap rows of a word's range, in index order (the ranking), then their mailboxes.
_SCAN = """
SELECT {columns} FROM (
  SELECT word, weight, sort_name, entry_id FROM directory_words
  WHERE word >= :lo AND word < :hi ORDER BY word, weight, sort_name, entry_id LIMIT :cap
) w JOIN directory_entries e ON e.id = w.entry_id WHERE 1 = 1 {filters}
ORDER BY w.word, w.weight, w.sort_name, w.entry_id
"""


@dataclass(frozen=True)
class _Candidate:
    key: tuple[Any, ...]
    address: str
    raw: str


def _by_words(conn: Connection, query_words: Sequence[str], limit: int) -> list[tuple[str, str]]:
    if len(query_words) == 1:
        found = _first_entries(conn, query_words[0], limit)
    else:
        found = _several_words(conn, query_words, limit)
    ranked = sorted(found.values(), key=lambda c: c.key)[:limit]
    return [(c.address, c.raw) for c in ranked]


def _several_words(
    conn: Connection, query_words: Sequence[str], limit: int
) -> dict[int, _Candidate]:
    """Drivers in turn, each bounded, every word filtering, until ``limit`` mailboxes match
    all words on names, structures or addresses (docs/directory.md, "Search"):

    1. the last word's range, in ranking order: if it gives ``limit`` such mailboxes, they are
       exactly the first ones by the rule (any better one would sort before them in the range);
    2. each word as a whole family name, the others as given names; each word but the last as
       a whole given name, the last as the family name's start (one seek each);
    3. each other word's range (first SCAN_CAP rows), for mailboxes where the last word is
       only in the context (a person's structure or town);
    4. the structures two words or more name together, and their mailboxes.

    Steps 2–4 stop as soon as ``limit`` mailboxes match every word on indexed words: beyond
    step 1, results are the best found, not provably the best (docs/directory.md, limits).
    """
    last, others = query_words[-1], list(query_words[:-1])
    found = _scan(conn, last, others, query_words, cap=SCAN_CAP, stop_after=limit)
    if _enough(found, limit):
        return found
    for word in query_words:
        rest = [w for w in query_words if w != word]
        found.update(_family_seek(conn, word, rest, query_words, limit))
    for word in others:
        found.update(_given_seek(conn, word, last, query_words, limit))
    if _enough(found, limit):
        return found
    for word in others:
        rest = [w for w in query_words if w != word]
        found.update(_scan(conn, word, rest, query_words, cap=SCAN_CAP))
        if _enough(found, limit):
            return found
    found.update(_by_structure(conn, query_words))
    return found


def _enough(found: dict[int, _Candidate], limit: int) -> bool:
    """``limit`` candidates whose every word is a name, structure or address word."""
    return sum(1 for c in found.values() if c.key[0] == 0) >= limit


def _first_entries(conn: Connection, word: str, limit: int) -> dict[int, _Candidate]:
    """The first ``limit`` distinct mailboxes of ``word``'s range: a mailbox with several
    words in the range counts once, at its first."""
    cap = limit * 2 + 4
    while True:
        sql, params = _words_sql(word, ())
        rows = conn.execute(text(sql), {**params, "cap": cap}).all()
        found = _candidates(rows, word, (word,))
        if len(found) >= limit or len(rows) < cap or cap >= SCAN_CAP * 64:
            return found  # enough, or the range has no more rows
        cap *= 8


def _scan(
    conn: Connection,
    word: str,
    others: Sequence[str],
    query_words: Sequence[str],
    *,
    cap: int,
    stop_after: int = 0,
) -> dict[int, _Candidate]:
    sql, params = _words_sql(word, others)
    rows = conn.execute(text(sql), {**params, "cap": cap})
    return _candidates(rows, word, query_words, stop_after)


_FAMILY = """
SELECT {columns} FROM directory_words w JOIN directory_entries e ON e.id = w.entry_id
WHERE w.word = :word AND w.weight = :weight AND w.sort_name >= :lo AND w.sort_name < :hi {filters}
ORDER BY w.sort_name, w.entry_id LIMIT :cap
"""


def _family_seek(
    conn: Connection, word: str, others: Sequence[str], query_words: Sequence[str], limit: int
) -> dict[int, _Candidate]:
    """``word`` as a whole family name, the other words as the start of the given names: one
    seek in the index, whose rows are in phone-book order ("martin marie…"), the first few."""
    prefix = f"{word} {' '.join(others)}"
    return _seek(conn, word, WEIGHT_FAMILY, prefix, query_words, limit=limit)


def _given_seek(
    conn: Connection, word: str, family: str, query_words: Sequence[str], limit: int
) -> dict[int, _Candidate]:
    """``word`` as a whole given name, ``family`` as the start of the family name ("jean du"
    → DUBOIS Jean, DUPONT Jean): the given name's rows are in family-name order."""
    return _seek(conn, word, WEIGHT_OTHER_NAME, family, query_words, limit=limit)


def _seek(
    conn: Connection,
    word: str,
    weight: int,
    prefix: str,
    query_words: Sequence[str],
    *,
    limit: int,
) -> dict[int, _Candidate]:
    params = {
        "word": word, "weight": weight, "lo": prefix, "hi": prefix_upper_bound(prefix),
        "cap": limit * 2,
    }  # fmt: skip
    sql = _FAMILY.format(columns=_COLUMNS, filters="")
    return _candidates(conn.execute(text(sql), params), word, query_words)


_STRUCTURES = """
SELECT structure_id FROM directory_structure_words WHERE word >= :lo AND word < :hi
LIMIT :cap
"""
_AT_STRUCTURES = """
SELECT e.id AS entry_id, e.sort_name, e.address, e.raw, e.search_text
FROM directory_entries e WHERE e.structure_id IN ({ids}) AND e.liste_rouge = FALSE {filters}
LIMIT :cap
"""
_STRUCTURE_CAP = 200  # structures per word: more means the word says little
_STRUCTURE_ROWS = 300  # mailboxes taken from the structures a query names


def _by_structure(conn: Connection, query_words: Sequence[str]) -> dict[int, _Candidate]:
    """Mailboxes of the structures that two words or more of the query name together
    ("cardiologie chu lyon": the structures with "chu" and "lyon", then their mailboxes that
    have all three words). One word alone says too little of a structure: the word scans
    cover it."""
    sets = [ids for ids in (_structures(conn, word) for word in query_words) if ids]
    chosen = set.intersection(*sets) if len(sets) > 1 else set()
    if not chosen:
        return {}
    params: dict[str, Any] = {f"s{i}": sid for i, sid in enumerate(sorted(chosen))}
    marks = ", ".join(f":{key}" for key in params)
    filters = []
    for index, word in enumerate(query_words):
        params[f"f{index}"] = f"% {word}%"
        filters.append(f"AND e.search_text LIKE :f{index}")
    params["cap"] = _STRUCTURE_ROWS
    sql = _AT_STRUCTURES.format(ids=marks, filters=" ".join(filters))
    return _candidates(conn.execute(text(sql), params), None, query_words)


def _structures(conn: Connection, word: str) -> set[str]:
    """Structures with a word starting with ``word``; none when too many to say much."""
    params = {"lo": word, "hi": prefix_upper_bound(word), "cap": _STRUCTURE_CAP + 1}
    found = {r[0] for r in conn.execute(text(_STRUCTURES), params)}
    return found if len(found) <= _STRUCTURE_CAP else set()


def _candidates(
    rows: Any, word: str | None, query_words: Sequence[str], stop_after: int = 0
) -> dict[int, _Candidate]:
    """Rows to candidates keyed by the ranking rule (module docstring): from the row itself
    when it is the last word's index row, else from the entry's words. Rows of the last word's
    range come in ranking order: after ``stop_after`` candidates whose words are all names,
    structures or addresses, no later row can rank before them."""
    last = query_words[-1]
    found: dict[int, _Candidate] = {}
    complete = 0
    for row in rows:
        if stop_after and complete >= stop_after:
            break
        if row.entry_id in found:
            continue
        text_ = row.search_text
        indexed = text_[: text_.rfind(GROUP_SEPARATOR)]  # groups 0–2: " w w | w | w "
        in_context = sum(f" {w}" not in indexed for w in query_words)
        if word == last:
            match: tuple[str, int] | None = (row.word, row.weight)
        else:
            match = best_match(parse_groups(text_), last)
        rank = match or (last, WEIGHT_CONTEXT)
        key = (in_context, *rank, row.sort_name, row.entry_id)
        found[row.entry_id] = _Candidate(key, row.address, row.raw)
        complete += in_context == 0
    return found


def _words_sql(word: str, others: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Each other word is a bound parameter ``% word%``: words are letters and digits only
    (normalize.words), so no LIKE wildcard can come from the query."""
    params: dict[str, Any] = {"lo": word, "hi": prefix_upper_bound(word)}
    filters = []
    for index, other in enumerate(others):
        params[f"f{index}"] = f"% {other}%"
        filters.append(f"AND e.search_text LIKE :f{index}")
    return _SCAN.format(columns=_COLUMNS, filters=" ".join(filters)), params
