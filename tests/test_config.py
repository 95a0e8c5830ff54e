from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mssante.config import Role, Settings, load_settings, sample_toml
from mssante.errors import ConfigError


def test_sample_is_valid_toml_and_loads_to_the_defaults(tmp_path: Path) -> None:
    text = sample_toml()
    tomllib.loads(text)
    path = tmp_path / "sample.toml"
    path.write_text(text)
    loaded = load_settings(path)
    defaults = Settings()
    assert loaded.role == defaults.role
    assert loaded.whitelist.refresh_seconds == 86400
    assert loaded.data_dir == tmp_path / "mssante-data"  # relative to the file's folder


def test_every_field_is_documented() -> None:
    text = sample_toml()
    for name, field in Settings.model_fields.items():
        assert field.description or f"[{name}]" in text, name


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('role = "authority"\n[log]\nlevel = "DEBUG"\n')
    monkeypatch.setenv("MSSANTE_LOG__LEVEL", "WARNING")
    settings = load_settings(path)
    assert settings.role is Role.AUTHORITY
    assert settings.log.level == "WARNING"


def test_database_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    assert settings.database_url() == f"sqlite:///{tmp_path / 'mssante.db'}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("role = [", "not valid TOML"),
        ('role = "king"', "invalid configuration at 'role'"),
        (
            "[whitelist]\nrefresh_seconds = 5",
            "invalid configuration at 'whitelist.refresh_seconds'",
        ),
        ("unknown_key = 1", "invalid configuration at 'unknown_key'"),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nope.toml")
