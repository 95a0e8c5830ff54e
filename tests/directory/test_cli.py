"""`mssante directory …` as a user runs it: import, search, export, synth, with --json."""

from __future__ import annotations

import json
from pathlib import Path

from dirhelpers import config_file, org, person, write_extraction

from mssante.directory.extraction import HEADER
from support import run_mssante

LINES = [
    person("helene.lefevre@ch-lyon.mssante.fr", "LEFÈVRE", "Hélène"),
    org(
        "cardiologie@chu-lyon.mssante.fr", "CENTRE HOSPITALIER UNIVERSITAIRE DE LYON", "Cardiologie"
    ),
]


def test_import_search_export_round_trip(
    tmp_path: Path, database_settings: tuple[str, str]
) -> None:
    config = config_file(tmp_path, database_settings)
    source = write_extraction(
        tmp_path / "Extraction_Correspondance_MSSante_20261126.txt", [*LINES, "PER|bad"]
    )
    imported = run_mssante("directory", "import", str(source), "--config", str(config), "--json")
    assert imported.returncode == 0, imported.stderr
    summary = json.loads(imported.stdout)
    assert (summary["added"], summary["bad_lines"]) == (2, 1)
    assert summary["bad_line_examples"] == [
        {"line": 4, "reason": "2 colonnes au lieu de 31 / 2 columns instead of 31"}
    ]

    text = run_mssante("directory", "import", str(source), "--config", str(config))
    assert "0 ajoutées, 0 modifiées, 0 supprimées, 2 inchangées, 1 en erreur" in text.stdout
    assert "2 unchanged, 1 bad" in text.stdout

    found = run_mssante("directory", "search", "lefev hel", "--config", str(config), "--json")
    assert found.returncode == 0, found.stderr
    assert [r["address"] for r in json.loads(found.stdout)["results"]] == [
        "helene.lefevre@ch-lyon.mssante.fr"
    ]
    none = run_mssante("directory", "search", "zzz", "--config", str(config))
    assert "aucun résultat / no result" in none.stdout

    out = tmp_path / "export.txt"
    exported = run_mssante("directory", "export", str(out), "--config", str(config), "--json")
    assert json.loads(exported.stdout)["lines"] == 2
    assert out.read_text(encoding="utf-8") == HEADER + "\n" + "\n".join(LINES) + "\n"


def test_refusals_are_one_line(tmp_path: Path, database_settings: tuple[str, str]) -> None:
    config = config_file(tmp_path, database_settings)
    wrong = write_extraction(tmp_path / "x.txt", LINES, header=HEADER.replace("Pays", "Country"))
    result = run_mssante("directory", "import", str(wrong), "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: en-tête inattendu : colonne 31 « Country » au lieu de « Pays » / "
        "unexpected header: column 31 is 'Country', expected 'Pays'"
    )
    empty = run_mssante("directory", "search", "  ", "--config", str(config))
    assert empty.returncode == 1 and "vide" in empty.stderr and "Traceback" not in empty.stderr


def test_synth_writes_a_file_the_reader_accepts(tmp_path: Path) -> None:
    out = tmp_path / "synth.txt"
    result = run_mssante(
        "directory", "synth", "--lines", "500", "--output", str(out), "--seed", "7"
    )
    assert result.returncode == 0, result.stderr
    assert "500 lignes" in result.stdout
    assert out.read_text(encoding="utf-8").startswith(HEADER + "\n")
