"""Helpers of the directory tests: extraction lines and files, a node on the test database."""

from __future__ import annotations

from pathlib import Path

from mssante.config import DatabaseSettings, Settings
from mssante.directory.extraction import HEADER, ExtractionRow

_DEFAULTS = ExtractionRow(
    "PER", "jean.dupont@medecin.mssante.fr", "8", "10001234567", "810001234567", "", "", "",
    "DR", "DUPONT", "Jean", "C", "Civil", "10", "Médecin", "SM54", "Médecine générale", "O",
    "", "", "", "", "12", "", "R", "DE LA RÉPUBLIQUE", "", "69003 LYON", "69003", "69",
    "FRANCE",
)  # fmt: skip


def row(**changes: str) -> ExtractionRow:
    """A valid row (Dr Jean DUPONT, médecin in Lyon) with ``changes``."""
    return _DEFAULTS._replace(**changes)


def line(**changes: str) -> str:
    return row(**changes).line()


def person(address: str, nom: str, prenom: str, **changes: str) -> str:
    return line(adresse_bal=address, nom_exercice=nom, prenom_exercice=prenom, **changes)


def org(address: str, raison: str, service: str = "", **changes: str) -> str:
    base = {
        "type_bal": "ORG", "adresse_bal": address, "type_identifiant_pp": "",
        "identifiant_pp": "", "identification_nationale_pp": "", "civilite_exercice": "",
        "nom_exercice": "", "prenom_exercice": "", "code_profession": "",
        "libelle_profession": "", "code_savoir_faire": "", "libelle_savoir_faire": "",
        "categorie_profession": "", "libelle_categorie_profession": "",
        "type_identifiant_structure": "1", "identification_structure": "1690000001",
        "raison_sociale": raison, "service_rattachement": service,
    }  # fmt: skip
    base.update(changes)
    return line(**base)


def write_extraction(
    path: Path, lines: list[str], *, newline: str = "\n", header: str = HEADER
) -> Path:
    path.write_bytes((newline.join([header, *lines]) + newline).encode())
    return path


def node_settings(tmp_path: Path, database_settings: tuple[str, str]) -> Settings:
    url, schema = database_settings
    return Settings(data_dir=tmp_path, database=DatabaseSettings(url=url, schema_name=schema))


def config_file(tmp_path: Path, database_settings: tuple[str, str]) -> Path:
    """A node's configuration file on the test database (for the command line)."""
    url, schema = database_settings
    path = tmp_path / "node.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[database]\nurl = "{url}"\nschema_name = "{schema}"\n'
    )
    return path
