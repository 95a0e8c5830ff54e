"""Importing an extraction: idempotent, exact counts, byte-exact export, refusals audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from dirhelpers import line, org, person, write_extraction
from sqlalchemy import select, text, update

from mssante.audit.log import iter_entries, verify_chain
from mssante.config import DirectorySettings
from mssante.directory.export import export_extraction
from mssante.directory.extraction import HEADER, HeaderError
from mssante.directory.importer import ImportSummary, import_extraction
from mssante.directory.search import DirectorySearch
from mssante.store.db import Database
from mssante.store.models import DirectoryEntry, DirectoryImport, DirectorySource

SETTINGS = DirectorySettings()


def base_lines() -> list[str]:
    return [
        person("jean.dupont@medecin.mssante.fr", "DUPONT", "Jean"),
        person(
            "helene.lefevre@ch-lyon.mssante.fr",
            "LEFÈVRE",
            "Hélène",
            code_profession="60",
            libelle_profession="Infirmier",
        ),
        org(
            "cardiologie@chu-lyon.mssante.fr",
            "CENTRE HOSPITALIER UNIVERSITAIRE DE LYON",
            "Cardiologie",
        ),
        person("zoe.martin@sage-femme.mssante.fr", "MARTIN", "Zoé", type_bal="CAB"),
        line(
            type_bal="APP",
            adresse_bal="dpi@chu-lyon.mssante.fr",
            nom_exercice="",
            prenom_exercice="",
        ),
    ]


def run(db: Database, path: Path, **settings: int) -> ImportSummary:
    return import_extraction(db, path, SETTINGS.model_copy(update=settings), actor="test")


def entries(db: Database) -> dict[str, str]:
    with db.session() as s:
        return {a: r for a, r in s.execute(select(DirectoryEntry.address, DirectoryEntry.raw))}


def word_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM directory_words")).scalar_one())


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_import_then_export_gives_back_the_same_bytes(
    db: Database, tmp_path: Path, newline: str
) -> None:
    source = write_extraction(tmp_path / "in.txt", base_lines(), newline=newline)
    summary = run(db, source)
    assert (summary.lines, summary.added, summary.bad.total) == (5, 5, 0)
    out = export_extraction(db, tmp_path / "out.txt", actor="test")
    assert out.lines == 5
    assert (tmp_path / "out.txt").read_bytes() == source.read_bytes()


def test_export_keeps_the_file_order_after_a_reimport(db: Database, tmp_path: Path) -> None:
    lines = base_lines()
    run(db, write_extraction(tmp_path / "a.txt", lines))
    reordered = write_extraction(
        tmp_path / "b.txt", [lines[3], lines[0], lines[4], lines[1], lines[2]]
    )
    summary = run(db, reordered)
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (0, 0, 0, 5)
    export_extraction(db, tmp_path / "out.txt", actor="test")
    assert (tmp_path / "out.txt").read_bytes() == reordered.read_bytes()


def test_reimport_updates_adds_and_removes_exactly(db: Database, tmp_path: Path) -> None:
    lines = base_lines()
    first = run(db, write_extraction(tmp_path / "day1.txt", lines))
    assert first.added == 5
    changed = person(
        "jean.dupont@medecin.mssante.fr",
        "DUPONT",
        "Jean",
        code_postal="75013",
        l6_ligne_acheminement="75013 PARIS",
    )
    new = person("paul.durand@medecin.mssante.fr", "DURAND", "Paul")
    day2 = [changed, lines[1], lines[2], lines[4], new]  # Zoé Martin gone
    summary = run(db, write_extraction(tmp_path / "day2.txt", day2))
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (1, 1, 1, 3)
    stored = entries(db)
    assert set(stored) == {
        "jean.dupont@medecin.mssante.fr", "helene.lefevre@ch-lyon.mssante.fr",
        "cardiologie@chu-lyon.mssante.fr", "dpi@chu-lyon.mssante.fr", "paul.durand@medecin.mssante.fr",
    }  # fmt: skip
    assert stored["jean.dupont@medecin.mssante.fr"] == changed
    search = DirectorySearch(db, SETTINGS)
    assert [r.address for r in search.search("martin zo")] == []
    assert [r.city for r in search.search("dupont jean")] == ["PARIS"]
    again = run(db, write_extraction(tmp_path / "day2bis.txt", day2))
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 5)


def test_index_rows_follow_the_entries(db: Database, tmp_path: Path) -> None:
    run(db, write_extraction(tmp_path / "a.txt", base_lines()))
    before = word_count(db)
    run(db, write_extraction(tmp_path / "b.txt", base_lines()))
    assert word_count(db) == before > 0
    run(db, write_extraction(tmp_path / "c.txt", base_lines()[:1]))
    assert 0 < word_count(db) < before


def test_a_mailbox_type_never_changes(db: Database, tmp_path: Path) -> None:
    run(db, write_extraction(tmp_path / "a.txt", base_lines()))
    retyped = person(
        "jean.dupont@medecin.mssante.fr", "DUPONT", "Jean", type_bal="CAB", code_postal="75013"
    )
    summary = run(db, write_extraction(tmp_path / "b.txt", [retyped, *base_lines()[1:]]))
    assert summary.bad.counts == {"type_changed": 1}
    assert summary.bad.examples[0][0] == 2 and "PER → CAB" in summary.bad.examples[0][1]
    assert (summary.updated, summary.removed) == (0, 0)
    assert entries(db)["jean.dupont@medecin.mssante.fr"] == base_lines()[0]


def test_bad_lines_are_counted_and_do_not_stop_the_import(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    good = base_lines()
    body = [
        good[0].encode(),
        person("x@medecin.mssante.fr", "LEFÈVRE", "Zoé").encode("latin-1"),
        b"PER|trop@court.mssante.fr",
        (good[1] + "|").encode(),
        good[0].encode(),
        ("PER|" + "x" * 20000).encode(),
        good[2].encode(),
    ]
    path.write_bytes(HEADER.encode() + b"\n" + b"\n".join(body) + b"\n")
    summary = run(db, path)
    assert summary.added == 2
    assert summary.bad.counts == {
        "not_utf8": 1, "column_count": 1, "extra_separator": 1, "duplicate_address": 1, "too_long": 1,
    }  # fmt: skip
    assert [n for n, _ in summary.bad.examples] == [3, 4, 5, 6, 7]
    assert summary.as_dict()["bad_lines"] == 5
    assert any("ligne/line 3:" in t and "UTF-8" in t for t in summary.text())


def test_a_file_that_is_not_an_extraction_is_refused_and_audited(
    db: Database, tmp_path: Path
) -> None:
    path = write_extraction(
        tmp_path / "x.txt", base_lines(), header=HEADER.replace("Code postal", "CP")
    )
    with pytest.raises(HeaderError, match="colonne 29"):
        run(db, path)
    assert entries(db) == {}
    assert [e.event for e in iter_entries(db)] == ["directory.import_refused"]


def test_an_import_is_recorded_and_audited(db: Database, tmp_path: Path) -> None:
    summary = run(
        db, write_extraction(tmp_path / "Extraction_Correspondance_MSSante_1.txt", base_lines())
    )
    with db.session() as s:
        record = s.execute(select(DirectoryImport)).scalar_one()
    assert (record.file_name, record.sha256, record.added) == (summary.file, summary.sha256, 5)
    (entry,) = [e for e in iter_entries(db) if e.event == "directory.imported"]
    assert entry.context["sha256"] == summary.sha256 and entry.context["added"] == 5
    assert verify_chain(db).ok


def set_liste_rouge(db: Database, address: str) -> None:
    """What an operator's publication does (docs/publication.md), by hand."""
    with db.session() as s:
        s.execute(
            update(DirectoryEntry).where(DirectoryEntry.address == address).values(liste_rouge=True)
        )


def test_liste_rouge_is_neither_searched_nor_exported(db: Database, tmp_path: Path) -> None:
    source = write_extraction(tmp_path / "a.txt", base_lines())
    run(db, source)
    search = DirectorySearch(db, SETTINGS)
    assert [r.address for r in search.search("dupont")] == ["jean.dupont@medecin.mssante.fr"]
    set_liste_rouge(db, "jean.dupont@medecin.mssante.fr")
    again = run(db, source)  # the flag survives an import; the index is rebuilt without it
    assert again.unchanged == 5
    assert search.search("dupont") == [] and search.search("jean.dupont@") == []
    assert search.search("dupont jean") == [] and search.search("jean dup") == []
    out = tmp_path / "out.txt"
    assert export_extraction(db, out, actor="test").lines == 4
    assert "jean.dupont@" not in out.read_text(encoding="utf-8")


def test_an_import_never_removes_an_operators_entry(db: Database, tmp_path: Path) -> None:
    run(db, write_extraction(tmp_path / "a.txt", base_lines()))
    published = person("anne.publique@medecin.mssante.fr", "PUBLIQUE", "Anne")
    with db.session() as s:
        s.add(
            DirectoryEntry(
                address="anne.publique@medecin.mssante.fr", bal_type="PER",
                source=DirectorySource.OPERATOR, ordinal=10**12, content_hash=0,
                sort_name="publique anne", search_text=" publique anne |  |  |  ",
                raw=published, liste_rouge=False,
            )
        )  # fmt: skip
    summary = run(db, write_extraction(tmp_path / "b.txt", base_lines()[1:]))
    assert summary.removed == 1  # jean.dupont, the extraction's
    assert "anne.publique@medecin.mssante.fr" in entries(db)
    search = DirectorySearch(db, SETTINGS)
    assert [r.address for r in search.search("publique an")] == ["anne.publique@medecin.mssante.fr"]
    out = tmp_path / "out.txt"
    export_extraction(db, out, actor="test")
    assert out.read_text(encoding="utf-8").endswith(published + "\n")
