"""`mssante account totp …` and `mssante account app-password …` on a real node database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from auth_helpers import LOGIN, PASSWORD, make_person
from click.testing import CliRunner

from mssante.audit.log import iter_entries
from mssante.auth import totp
from mssante.auth.service import password_hasher
from mssante.cli.main import cli
from mssante.config import AuthSettings
from mssante.store.db import Database, open_database
from support import is_postgres


@pytest.fixture
def node(tmp_path: Path, database_settings: tuple[str, str]) -> Iterator[tuple[Path, Database]]:
    url, schema = database_settings
    if not is_postgres():
        url = f"sqlite:///{tmp_path / 'data' / 'mssante.db'}"
    lines = [
        f'data_dir = "{tmp_path / "data"}"',
        "[operator]",
        'name = "HOPITAL NORD"',
        'domains = ["hopital-nord.mssante.test"]',
        "[auth]",
        "argon2_time_cost = 1",
        "argon2_memory_kib = 8",
        "throttle_base = 0.0",
    ]
    if is_postgres():
        lines += ["[database]", f'url = "{url}"', f'schema_name = "{schema}"']
    config = tmp_path / "node.toml"
    config.write_text("\n".join(lines) + "\n")
    db = open_database(url, schema=schema)
    make_person(db, password_hasher(AuthSettings(argon2_time_cost=1, argon2_memory_kib=8)))
    yield config, db
    db.dispose()


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_totp_enrol_then_confirm(node: tuple[Path, Database], tmp_path: Path) -> None:
    config, db = node
    qr = tmp_path / "qr.png"
    code, out, err = _run(
        "account", "totp", "enrol", LOGIN, "--config", str(config), "--qr", str(qr)
    )
    assert code == 0, err
    uri = out.strip()
    assert uri.startswith("otpauth://totp/") and "confirm" in err
    assert qr.read_bytes().startswith(b"\x89PNG")
    svg = tmp_path / "qr.svg"
    _run("account", "totp", "enrol", LOGIN, "--config", str(config), "--qr", str(svg))
    assert "<svg" in svg.read_text()
    # The second enrolment replaced the first: confirm with the newest secret.
    code, out, err = _run("account", "totp", "enrol", LOGIN, "--config", str(config))
    secret = parse_qs(urlparse(out.strip()).query)["secret"][0]

    bad, _, err = _run("account", "totp", "confirm", LOGIN, "000000", "--config", str(config))
    good_code = totp.code_for(secret, totp.step_at(time.time()))
    if good_code != "000000":
        assert bad == 1 and "not valid" in err
    code, out, err = _run("account", "totp", "confirm", LOGIN, good_code, "--config", str(config))
    assert code == 0, err
    assert "TOTP active" in out
    assert "auth.totp_enrolled" in [e.event for e in iter_entries(db)]


def test_app_password_add_list_revoke(node: tuple[Path, Database]) -> None:
    config, db = node
    code, out, err = _run(
        "account",
        "app-password",
        "add",
        LOGIN,
        "--label",
        "Thunderbird bureau",
        "--config",
        str(config),
    )
    assert code == 0, err
    password = out.strip()
    assert len(password) == 23 and "shown once" in err

    code, out, _ = _run("account", "app-password", "list", LOGIN, "--json", "--config", str(config))
    [listed] = json.loads(out)
    assert listed["label"] == "Thunderbird bureau" and listed["last_used_at"] is None
    assert password not in out
    code, out, _ = _run("account", "app-password", "list", LOGIN, "--config", str(config))
    assert "Thunderbird bureau" in out and "never" in out

    code, out, err = _run(
        "account", "app-password", "revoke", LOGIN, "Thunderbird bureau", "--config", str(config)
    )
    assert code == 0, err
    assert "revoked" in out
    code, out, _ = _run("account", "app-password", "list", LOGIN, "--json", "--config", str(config))
    assert json.loads(out) == []
    code, out, err = _run(
        "account", "app-password", "revoke", LOGIN, "Thunderbird bureau", "--config", str(config)
    )
    assert code == 1 and "no active app password" in err
    events = [e.event for e in iter_entries(db)]
    assert events.count("auth.app_password_created") == 1
    assert events.count("auth.app_password_revoked") == 1


def test_errors_are_one_line(node: tuple[Path, Database]) -> None:
    config, _ = node
    code, _, err = _run(
        "account", "app-password", "add", "nobody@x.test", "--label", "x", "--config", str(config)
    )
    assert code == 1 and err.strip() == "Error: no account nobody@x.test"
    code, _, err = _run(
        "account", "app-password", "add", LOGIN, "--json", "--label", " ", "--config", str(config)
    )
    assert code == 1 and "needs a label" in err
    assert PASSWORD not in err
