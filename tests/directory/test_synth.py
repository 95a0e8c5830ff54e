"""Synthetic extractions: the real format, deterministic for a seed, realistic in shape."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from mssante.directory.extraction import ExtractionReader, ExtractionRow, LineError
from mssante.directory.synth import write_synthetic


def rows(path: Path) -> list[ExtractionRow | LineError]:
    with path.open("rb") as stream:
        return [item for _, item in ExtractionReader(stream)]


def test_synthetic_lines_all_parse_and_addresses_are_unique(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    assert write_synthetic(path, 20_000, seed=3) == 20_000
    items = rows(path)
    assert len(items) == 20_000
    assert not [i for i in items if isinstance(i, LineError)]  # duplicates would be errors
    good = [i for i in items if isinstance(i, ExtractionRow)]
    types = Counter(r.type_bal for r in good)
    assert set(types) == {"PER", "ORG", "APP", "CAB"} and types["PER"] > 0.7 * len(good)
    professions = Counter(r.code_profession for r in good if r.type_bal == "PER")
    assert professions.most_common(1)[0][0] == "10"
    doctors = [r for r in good if r.code_profession == "10"]
    assert all(r.code_savoir_faire.startswith("SM") for r in doctors)
    assert any(
        r.code_savoir_faire == "SM54" and r.libelle_savoir_faire == "Médecine générale"
        for r in doctors
    )
    assert all(
        r.identification_nationale_pp == r.type_identifiant_pp + r.identifiant_pp
        for r in good
        if r.identifiant_pp
    )
    assert all(r.adresse_bal.endswith(".mssante.fr") for r in good)
    assert any(not r.prenom_exercice.isascii() for r in good)  # Hélène, Zoé…
    assert any("@medecin.mssante.fr" in r.adresse_bal for r in good)
    assert any(r.adresse_bal.split("@")[1].startswith("ch-") for r in good)


def test_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    write_synthetic(a, 3000, seed=11)
    write_synthetic(b, 3000, seed=11)
    write_synthetic(c, 3000, seed=12)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_progress_is_reported_in_batches(tmp_path: Path) -> None:
    seen: list[int] = []
    write_synthetic(tmp_path / "p.txt", 25_000, seed=1, progress=seen.append)
    assert sum(seen) == 25_000 and len(seen) == 3
    assert ExtractionReader(io.BytesIO((tmp_path / "p.txt").read_bytes()[:2000])) is not None
