"""Pieces shared by the verb groups: the --config option, JSON output, error reporting."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from mssante.config import Settings, load_settings
from mssante.errors import MssanteError
from mssante.logging import configure

P = ParamSpec("P")
R = TypeVar("R")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MSSANTE_CONFIG",
    help="Configuration file (TOML). Also from $MSSANTE_CONFIG.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def settings_from(config_path: Path | None) -> Settings:
    settings = load_settings(config_path)
    configure(settings.log)
    return settings


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the project's errors into a one-line message and exit status 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MssanteError as exc:
            raise click.ClickException(exc.public) from None

    return wrapper
