"""`--config` before the verb, after it, or from $MSSANTE_CONFIG: each verb uses the right
operator's database. Two operators here, one with a queued message, one without."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import PEER, OperatorNode, make_operator, run

from mssante.cli.common import CONFIG_ENV
from support import drop_schema


@pytest.fixture
def two(
    tmp_path: Path, database_settings: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OperatorNode, OperatorNode]]:
    """Operator "busy" has one queued message; operator "idle" has none. The test runs in an
    empty folder with no $MSSANTE_CONFIG."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "idle").mkdir()
    busy = make_operator(tmp_path / "busy", database_settings)
    idle = make_operator(tmp_path / "idle", _other_database(tmp_path, database_settings))
    busy.submit([f"anne@{PEER}"])
    monkeypatch.chdir(tmp_path)
    yield busy, idle
    busy.db.dispose()
    idle.db.dispose()


def _other_database(tmp_path: Path, database_settings: tuple[str, str]) -> tuple[str, str]:
    url, schema = database_settings
    if not schema:  # SQLite: make_operator puts it under its own data folder
        return url, ""
    return url, schema + "_b"


@pytest.fixture(autouse=True)
def _drop_second_schema(database_settings: tuple[str, str]) -> Iterator[None]:
    yield
    if database_settings[1]:
        drop_schema(database_settings[1] + "_b")


def _queued(out: str) -> int:
    return len(json.loads(out))


def test_config_after_the_verb(two: tuple[OperatorNode, OperatorNode]) -> None:
    busy, idle = two
    assert _queued(run("queue", "list", "--json", "--config", str(busy.config)).out) == 1
    assert _queued(run("queue", "list", "--json", "--config", str(idle.config)).out) == 0


def test_config_before_the_verb(two: tuple[OperatorNode, OperatorNode]) -> None:
    busy, idle = two
    before = run("--config", str(busy.config), "queue", "list", "--json")
    assert before.code == 0, before.err
    assert _queued(before.out) == 1
    assert _queued(run("--config", str(idle.config), "queue", "list", "--json").out) == 0
    # Any verb, at any depth: a group of groups too.
    audit = run("--config", str(busy.config), "audit", "list", "--json")
    assert audit.code == 0, audit.err
    assert "queue.message_queued" in [e["event"] for e in json.loads(audit.out)]
    shown = run("--config", str(busy.config), "config", "show", "--json")
    assert json.loads(shown.out)["data_dir"] == str(busy.settings.data_dir)


def test_the_verbs_own_config_wins(two: tuple[OperatorNode, OperatorNode]) -> None:
    busy, idle = two
    both = run(
        "--config", str(idle.config), "queue", "list", "--json", "--config", str(busy.config)
    )
    assert both.code == 0, both.err
    assert _queued(both.out) == 1


def test_config_from_the_environment(
    two: tuple[OperatorNode, OperatorNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    busy, idle = two
    monkeypatch.setenv(CONFIG_ENV, str(busy.config))
    assert _queued(run("queue", "list", "--json").out) == 1
    # What is written on the command line, before or after the verb, beats the environment.
    assert _queued(run("--config", str(idle.config), "queue", "list", "--json").out) == 0
    assert _queued(run("queue", "list", "--json", "--config", str(idle.config)).out) == 0


def test_a_missing_file_is_refused_in_one_line(two: tuple[OperatorNode, OperatorNode]) -> None:
    for args in (
        ("--config", "nowhere.toml", "queue", "list"),
        ("queue", "list", "--config", "nowhere.toml"),
    ):
        result = run(*args)
        assert result.code == 1
        assert result.err.strip() == "Error: configuration file not found: nowhere.toml"
    assert not Path("nowhere.toml").exists() and not Path("mssante-data").exists()
