"""No verb silently creates a database (docs/configuration.md).

Without any configuration, and no database where the defaults point (./mssante-data), every
verb that touches a node's state refuses in one line and leaves the folder as it was. With a
configuration whose SQLite file does not exist yet, only the verbs meant to create it do
(``db upgrade``, ``serve``, ``directory import``); the others say so and create nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import DOMAIN, PASSWORD, SENDER, SENDER_ID_NAT, run, write_config

from mssante.cli.common import CONFIG_ENV, NO_CONFIGURATION
from mssante.store.db import open_database
from support import drop_schema, is_postgres, new_schema_name, selected_database_url

ADDRESS = f"paul.durand@{DOMAIN}"
ACCOUNT_ADD = (
    "account", "add", "--address", SENDER, "--id-nat", SENDER_ID_NAT,
    "--last-name", "Martin", "--first-name", "Hélène",
)  # fmt: skip

# Verbs that read or change a node's state, and those that create it: none may start a node
# in the current folder without being told where.
VERBS = [
    ("mail", "list", ADDRESS),
    ("mail", "show", ADDRESS, "1"),
    (*ACCOUNT_ADD, "--password", PASSWORD),
    ACCOUNT_ADD,  # refused before the password is asked for
    ("account", "totp", "enrol", ADDRESS),
    ("account", "app-password", "list", ADDRESS),
    ("audit", "list"),
    ("audit", "verify"),
    ("queue", "list"),
    ("queue", "retry", "1"),
    ("mailbox", "members", f"accueil@{DOMAIN}"),
    ("patient", "opposition", "list"),
    ("directory", "search", "durand"),
    ("directory", "outbox"),
    ("operator", "refresh-whitelist"),
    ("authority", "operator", "list"),
    ("db", "upgrade"),
    ("serve",),
    ("oidc", "serve"),
]


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder, empty, and no configuration in the environment."""
    for name in (CONFIG_ENV, "MSSANTE_DATA_DIR", "MSSANTE_DATABASE__URL"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "here"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("args", VERBS, ids=lambda a: " ".join(a[:3]))
def test_no_configuration_is_refused_and_nothing_created(
    empty_folder: Path, args: tuple[str, ...]
) -> None:
    result = run(*args)
    assert result.code == 1, result.out
    assert result.err.strip() == f"Error: {NO_CONFIGURATION}"
    assert "Mot de passe" not in result.out
    assert os.listdir(empty_folder) == []


def test_mail_list_without_config_says_how(empty_folder: Path) -> None:
    result = run("mail", "list", ADDRESS)
    assert result.code == 1
    assert result.err.startswith("Error: aucune configuration : indiquez --config FICHIER")
    assert "no configuration: give --config FILE" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_an_existing_default_database_is_still_used(empty_folder: Path) -> None:
    """A node kept in ./mssante-data, as earlier versions made it, is used as before."""
    open_database(f"sqlite:///{empty_folder / 'mssante-data' / 'mssante.db'}").dispose()
    result = run("audit", "list", "--json")
    assert result.code == 0, result.err
    assert result.out.strip() == "[]"


# -- a configuration whose database does not exist yet -------------------------------------------


@pytest.fixture
def fresh_config(empty_folder: Path) -> Path:
    """A configuration naming a data folder that does not exist (SQLite, its default file)."""
    return write_config(
        empty_folder.parent / "op.toml", empty_folder.parent / "data", None, [DOMAIN]
    )


@pytest.mark.parametrize(
    "args",
    [
        ("mail", "list", ADDRESS),
        ("audit", "list"),
        ("queue", "list"),
        ("queue", "show", "1"),
        (*ACCOUNT_ADD, "--password", PASSWORD),
        ("patient", "opposition", "list"),
        ("directory", "search", "durand"),
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_a_missing_database_is_created_only_by_its_verbs(
    fresh_config: Path, args: tuple[str, ...]
) -> None:
    data = fresh_config.parent / "data"
    database = data / "mssante.db"
    refused = run(*args, "--config", str(fresh_config))
    assert refused.code == 1, refused.out
    assert refused.err.strip() == (
        f"Error: base de données introuvable : {database} ; « mssante db upgrade --config "
        f"FICHIER » la crée / database not found: {database}; 'mssante db upgrade --config "
        "FILE' creates it"
    )
    assert not data.exists()

    created = run("db", "upgrade", "--config", str(fresh_config))
    assert created.code == 0, created.err
    assert database.exists()
    again = run(*args, "--config", str(fresh_config))
    assert "base de données introuvable" not in again.err


def test_the_environment_counts_as_configuration(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$MSSANTE_DATA_DIR chose where the node lives: no 'no configuration' refusal, but its
    database must exist all the same."""
    data = empty_folder.parent / "elsewhere"
    monkeypatch.setenv("MSSANTE_DATA_DIR", str(data))
    result = run("mail", "list", ADDRESS)
    assert result.code == 1
    assert result.err.startswith(f"Error: base de données introuvable : {data / 'mssante.db'}")
    assert not data.exists() and os.listdir(empty_folder) == []


@pytest.mark.skipif(not is_postgres(), reason="PostgreSQL only")
def test_a_configured_postgresql_database_is_used_as_given(empty_folder: Path) -> None:
    """On PostgreSQL the database is its administrator's to create; a configuration naming it
    is explicit, and the schema is brought up to date as before."""
    schema = new_schema_name()
    config = write_config(
        empty_folder.parent / "pg.toml",
        empty_folder.parent / "data",
        (selected_database_url(), schema),
        [DOMAIN],
    )
    try:
        result = run("audit", "list", "--json", "--config", str(config))
        assert result.code == 0, result.err
    finally:
        drop_schema(schema)
