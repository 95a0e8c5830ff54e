"""The extraction format (BRIEF §4): header check, streaming reader, bad lines, writer."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest
from dirhelpers import line, row, write_extraction

from mssante.directory.extraction import (
    COLUMN_COUNT,
    HEADER,
    HEADER_COLUMNS,
    ExtractionReader,
    ExtractionRow,
    ExtractionWriter,
    HeaderError,
    LineError,
    LineProblem,
    format_row,
    parse_line,
)


def read(data: bytes, **kwargs: int) -> list[tuple[int, ExtractionRow | LineError]]:
    return list(ExtractionReader(io.BytesIO(data), **kwargs))


def problems(data: bytes, **kwargs: int) -> list[tuple[int, str]]:
    return [
        (n, item.problem.value) for n, item in read(data, **kwargs) if isinstance(item, LineError)
    ]


def test_header_is_the_31_columns_of_the_brief() -> None:
    assert COLUMN_COUNT == 31 == len(HEADER_COLUMNS)
    assert HEADER.startswith("Type de BAL|Adresse BAL|Type Identifiant PP|")
    assert HEADER.endswith("|L6LIGNEACHEMINEMENT|Code postal|Département|Pays")


def test_good_lines_are_rows_numbered_from_two() -> None:
    data = f"{HEADER}\n{line()}\n{line(adresse_bal='b@x.mssante.fr')}\n".encode()
    items = read(data)
    assert [n for n, _ in items] == [2, 3]
    first = items[0][1]
    assert isinstance(first, ExtractionRow)
    assert first.nom_exercice == "DUPONT" and first.libelle_profession == "Médecin"
    assert first.line() == line()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            HEADER.replace("Adresse BAL", "Adresse"),
            "colonne 2 « Adresse » au lieu de « Adresse BAL »",
        ),
        (HEADER.replace("|Pays", ""), "colonne 31 « Pays » absente"),
        (HEADER + "|En trop", "32 colonnes au lieu de 31"),
        (
            HEADER.replace("Département", "Departement"),
            "column 30 is 'Departement', expected 'Département'",
        ),
        ("nimportequoi", "colonne 1 « nimportequoi » au lieu de « Type de BAL »"),
    ],
)
def test_a_wrong_header_is_refused_naming_the_first_differing_column(
    header: str, message: str
) -> None:
    with pytest.raises(HeaderError, match=message):
        ExtractionReader(io.BytesIO(f"{header}\n{line()}\n".encode()))


def test_empty_and_latin1_headers_are_refused() -> None:
    with pytest.raises(HeaderError, match="fichier vide"):
        ExtractionReader(io.BytesIO(b""))
    with pytest.raises(HeaderError, match="not UTF-8"):
        ExtractionReader(io.BytesIO(HEADER.encode("latin-1") + b"\n"))


def test_bad_lines_are_reported_with_number_and_reason_and_reading_goes_on() -> None:
    good = line()
    lines = [
        good,
        line(adresse_bal="latin@x.mssante.fr", nom_exercice="LEFÈVRE").encode("latin-1"),
        "PER|a@x.mssante.fr|8",
        line(adresse_bal="pipe@x.mssante.fr") + "|",
        line(type_bal="XYZ", adresse_bal="t@x.mssante.fr"),
        line(adresse_bal="JEAN.DUPONT@medecin.mssante.fr"),
        line(adresse_bal="ctl@x.mssante.fr", nom_exercice="DU\tPONT"),
        line(adresse_bal="pas-une-adresse"),
        line(adresse_bal="last@x.mssante.fr"),
    ]
    data = (
        HEADER.encode()
        + b"\n"
        + b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines)
        + b"\n"
    )
    assert problems(data) == [
        (3, "not_utf8"),
        (4, "column_count"),
        (5, "extra_separator"),
        (6, "unknown_type"),
        (7, "duplicate_address"),
        (8, "control_character"),
        (9, "bad_address"),
    ]
    reasons = {n: e.message for n, e in read(data) if isinstance(e, LineError)}
    assert "octet 0xC8" in reasons[3] and "Latin-1" in reasons[3]
    assert "3 colonnes au lieu de 31" in reasons[4]
    assert "un « | » de trop (32 colonnes au lieu de 31)" in reasons[5]
    assert "XYZ" in reasons[6]
    assert "déjà présente" in reasons[7]  # case does not make another address
    assert "U+0009" in reasons[8]
    last = read(data)[-1]
    assert last[0] == 10 and isinstance(last[1], ExtractionRow)


def test_an_enormous_line_is_skipped_without_being_held_in_memory() -> None:
    giant = "PER|" + "x" * 50_000_000  # 50 MB, no end of line for a long while
    data = f"{HEADER}\n{line()}\n{giant}\n{line(adresse_bal='after@x.mssante.fr')}\n".encode()
    tracemalloc.start()
    items = read(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(n, getattr(i, "problem", None)) for n, i in items] == [
        (2, None),
        (3, LineProblem.TOO_LONG),
        (4, None),
    ]
    assert peak < 8_000_000  # chunks of 1 MiB, never the 50 MB line


def test_the_line_cap_is_a_setting() -> None:
    data = f"{HEADER}\n{line(raison_sociale='X' * 1500)}\n".encode()
    assert problems(data, max_line_bytes=1024) == [(2, "too_long")]
    assert problems(data, max_line_bytes=2048) == []


def test_crlf_and_bom_are_understood_and_remembered() -> None:
    data = "\ufeff".encode() + f"{HEADER}\r\n{line()}\r\n".encode()
    reader = ExtractionReader(io.BytesIO(data))
    items = list(reader)
    assert reader.newline == "\r\n" and reader.bom
    assert isinstance(items[0][1], ExtractionRow) and items[0][1].pays == "FRANCE"


def test_last_line_without_end_of_line_is_read_and_the_file_is_hashed() -> None:
    import hashlib

    data = f"{HEADER}\n{line()}".encode()
    reader = ExtractionReader(io.BytesIO(data))
    assert len(list(reader)) == 1
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert reader.bytes_read == len(data)


def test_writer_round_trip_and_refusals(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    writer = ExtractionWriter(target)
    writer.write_line(format_row(row()))
    writer.commit()
    assert target.read_text(encoding="utf-8") == f"{HEADER}\n{line()}\n"
    assert parse_line(line()) == row()
    with pytest.raises(ValueError, match="nom_exercice"):
        format_row(row(nom_exercice="A|B"))
    with pytest.raises(ValueError, match="unknown mailbox type"):
        format_row(row(type_bal="ZZZ"))
    aborted = ExtractionWriter(tmp_path / "never.txt")
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_reading_a_file_streams(tmp_path: Path) -> None:
    path = write_extraction(
        tmp_path / "e.txt", [line(adresse_bal=f"p{i}@x.mssante.fr") for i in range(3000)]
    )
    with path.open("rb") as stream:
        reader = ExtractionReader(stream)
        count = sum(1 for _ in reader)
    assert count == 3000 and reader.bytes_read == path.stat().st_size
