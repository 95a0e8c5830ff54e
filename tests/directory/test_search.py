"""Type-ahead search: words as prefixes, accents and case ignored, all words required, the
ranking rule, liste rouge hidden, and hostile input treated as plain text."""

from __future__ import annotations

from pathlib import Path

import pytest
from dirhelpers import line, org, person, write_extraction
from sqlalchemy import update

from mssante.config import DirectorySettings
from mssante.directory.importer import import_extraction
from mssante.directory.normalize import words
from mssante.directory.search import DirectorySearch, QueryError
from mssante.store.db import Database
from mssante.store.models import DirectoryEntry

CHU = "CENTRE HOSPITALIER UNIVERSITAIRE DE LYON"
LINES = [
    person("helene.lefevre@ch-lyon.mssante.fr", "LEFÈVRE", "Hélène"),
    person("h.lefevre2@medecin.mssante.fr", "LEFEVRE", "Hugo"),
    person("du.pont@medecin.mssante.fr", "DU", "Pont"),
    person("jean.dupont@medecin.mssante.fr", "DUPONT", "Jean"),
    person("anne.dupont@medecin.mssante.fr", "DUPONT", "Anne"),
    person("jean.dubois@medecin.mssante.fr", "DUBOIS", "Jean"),
    person("marc.martin-dupont@medecin.mssante.fr", "MARTIN-DUPONT", "Marc"),
    person(
        "paul.durand@chu-lyon.mssante.fr",
        "DURAND",
        "Paul",
        raison_sociale=CHU,
        identification_structure="1690000001",
    ),
    org("cardiologie@chu-lyon.mssante.fr", CHU, "Cardiologie"),
    org("urgences@chu-lyon.mssante.fr", CHU, "Urgences"),
    org(
        "dupont-secretariat@clinique-du-parc.mssante.fr",
        "CLINIQUE DUPONT",
        "Secrétariat",
        identification_structure="1690000002",
    ),
    person("xavier.zorglub@medecin.mssante.fr", "ZORGLUB", "Xavier"),
    line(
        adresse_bal="percent%underscore_@x.mssante.fr", nom_exercice="CENT", prenom_exercice="Pour"
    ),
]


@pytest.fixture
def search(db: Database, tmp_path: Path) -> DirectorySearch:
    settings = DirectorySettings()
    import_extraction(db, write_extraction(tmp_path / "e.txt", LINES), settings, actor="t")
    with db.session() as s:  # liste rouge (an operator's publication sets it; by hand here)
        s.execute(
            update(DirectoryEntry)
            .where(DirectoryEntry.address == "xavier.zorglub@medecin.mssante.fr")
            .values(liste_rouge=True)
        )
    import_extraction(db, write_extraction(tmp_path / "e2.txt", LINES), settings, actor="t")
    return DirectorySearch(db, settings)


def addresses(search: DirectorySearch, q: str, limit: int | None = None) -> list[str]:
    return [r.address for r in search.search(q, limit)]


@pytest.mark.parametrize(
    "q", ["lefevre", "LEFÈVRE", "Lefèvre", "lefev", "LEFÉV", "hélène", "HELENE"]
)
def test_accents_and_case_are_ignored(search: DirectorySearch, q: str) -> None:
    assert "helene.lefevre@ch-lyon.mssante.fr" in addresses(search, q)


def test_each_word_is_a_prefix_and_all_words_must_match(search: DirectorySearch) -> None:
    assert addresses(search, "dupont jean") == ["jean.dupont@medecin.mssante.fr"]
    assert addresses(search, "jean dup") == ["jean.dupont@medecin.mssante.fr"]
    assert addresses(search, "je dub") == ["jean.dubois@medecin.mssante.fr"]
    assert addresses(search, "dupont paul") == []
    assert addresses(search, "lef hu") == ["h.lefevre2@medecin.mssante.fr"]


def test_ranking_exact_word_first_then_completions_names_before_structures(
    search: DirectorySearch,
) -> None:
    assert addresses(search, "du") == [
        "du.pont@medecin.mssante.fr",  # "du", the whole word: a family name,
        "dupont-secretariat@clinique-du-parc.mssante.fr",  # then in an ORG's domain;
        "jean.dubois@medecin.mssante.fr",  # completions in the order of the word: dubois,
        "anne.dupont@medecin.mssante.fr",  # dupont (family names: Anne then Jean),
        "jean.dupont@medecin.mssante.fr",
        "marc.martin-dupont@medecin.mssante.fr",  # dupont as a second family word
        "paul.durand@chu-lyon.mssante.fr",  # (the clinic's "dupont" comes once, above); durand
    ]


def test_structures_and_their_mailboxes(search: DirectorySearch) -> None:
    assert addresses(search, "cardio") == ["cardiologie@chu-lyon.mssante.fr"]
    assert addresses(search, "chu lyon urg") == ["urgences@chu-lyon.mssante.fr"]
    assert set(addresses(search, "centre hospitalier lyon")) == {
        "cardiologie@chu-lyon.mssante.fr",
        "urgences@chu-lyon.mssante.fr",
        "paul.durand@chu-lyon.mssante.fr",  # a person: by the structure, with the others
    }
    assert addresses(search, "durand chu") == ["paul.durand@chu-lyon.mssante.fr"]
    assert addresses(search, "chu") == [
        "cardiologie@chu-lyon.mssante.fr",
        "urgences@chu-lyon.mssante.fr",
    ]  # one word alone: a person's structure does not list them


def test_address_prefix(search: DirectorySearch) -> None:
    assert addresses(search, "jean.d") == [
        "jean.dubois@medecin.mssante.fr",
        "jean.dupont@medecin.mssante.fr",
    ]
    assert addresses(search, "JEAN.DUPONT@med") == ["jean.dupont@medecin.mssante.fr"]
    assert addresses(search, "dupont medecin") == [
        "anne.dupont@medecin.mssante.fr",
        "jean.dupont@medecin.mssante.fr",
        "marc.martin-dupont@medecin.mssante.fr",
    ]


def test_liste_rouge_is_never_returned(search: DirectorySearch) -> None:
    for q in ("zorglub", "xavier", "xavier.zorglub@", "zorglub xav", "zorglub medecin", "xav z"):
        assert addresses(search, q) == []


def test_limit(search: DirectorySearch) -> None:
    assert len(addresses(search, "du", 2)) == 2
    for bad in (0, 51, "abc", -1):
        with pytest.raises(QueryError, match="limit"):
            search.search("du", bad)


@pytest.mark.parametrize(
    "q",
    [
        "' OR 1=1 --",
        "'; DROP TABLE directory_entries; --",
        'dupont" OR "1"="1',
        "NEAR(dupont jean)",
        '"dupont"',
        "dupont*",
        "dupont AND jean",
        "-dupont",
        "^dupont",
        "dupont OR zzz",
        "%",
        "_",
        "%dupont%",
        "du_ont",
        "\\",
        "{dupont}",
    ],
)
def test_sql_fts_and_wildcard_syntax_is_plain_text(search: DirectorySearch, q: str) -> None:
    """Whatever the syntax, only the letters and digits count, each word a prefix: never an
    error, never a wildcard, never more than the same words typed plainly."""
    plain = " ".join(words(q))
    assert addresses(search, q) == (addresses(search, plain) if plain else [])


def test_hostile_strings_find_what_their_words_find(search: DirectorySearch) -> None:
    assert addresses(search, "' OR 1=1 --") == []  # "or", "1": nothing has both
    assert addresses(search, '"dupont" jean*') == ["jean.dupont@medecin.mssante.fr"]
    assert addresses(search, "dupont AND jean") == []  # "and" is a word like any other
    assert addresses(search, "%") == addresses(search, "_") == addresses(search, "\\") == []
    assert addresses(search, "du_ont") == []  # "du" and "ont": no "_" wildcard


def test_like_wildcards_in_an_address_prefix_are_literal(search: DirectorySearch) -> None:
    assert addresses(search, "percent%") == ["percent%underscore_@x.mssante.fr"]
    assert addresses(search, "%@") == []
    assert addresses(search, "_@") == []


@pytest.mark.parametrize("q", ["", "   ", None])
def test_empty_query_is_refused(search: DirectorySearch, q: str | None) -> None:
    with pytest.raises(QueryError, match="vide"):
        search.search(q)


@pytest.mark.parametrize("q", ["dup\x00ont", "dupont\n", "a\x1bb", "\x7f"])
def test_control_characters_are_refused(search: DirectorySearch, q: str) -> None:
    with pytest.raises(QueryError, match="contrôle"):
        search.search(q)


def test_a_very_long_query_is_refused(search: DirectorySearch) -> None:
    with pytest.raises(QueryError, match="trop longue"):
        search.search("dupont " * 50)
    assert addresses(search, "jean " * 10 + "dupont") == ["jean.dupont@medecin.mssante.fr"]
    # Six words are used, the others ignored (directory.max_query_words).
    assert addresses(search, "jean dupont j d jea dup zzzz") == ["jean.dupont@medecin.mssante.fr"]
