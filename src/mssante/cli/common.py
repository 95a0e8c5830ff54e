"""Pieces shared by the verb groups: the --config option, JSON output, error reporting, and the
one way a verb opens the node's database.

``--config`` is accepted before the verb (``mssante --config op.toml account list``, kept in
click's context object, :class:`CliState`) and after it (``mssante account list --config
op.toml``); the verb's own option wins, then the group's, then ``$MSSANTE_CONFIG``.

No verb silently creates a database (docs/configuration.md): without any configuration and
without a database where the defaults point, :func:`settings_from` refuses; and
:func:`node_from` opens an existing SQLite file only, unless the verb is one of those meant to
create it (``creates=True``: ``db upgrade``, ``serve``, ``directory import``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from sqlalchemy.engine import make_url

from mssante.config import Settings, load_settings
from mssante.errors import ConfigError, MssanteError
from mssante.logging import configure
from mssante.runtime import Node, open_node

P = ParamSpec("P")
R = TypeVar("R")

CONFIG_ENV = "MSSANTE_CONFIG"

NO_CONFIGURATION = (
    "aucune configuration : indiquez --config FICHIER (ou $MSSANTE_CONFIG), aucune base de "
    "données n'est créée sans elle / no configuration: give --config FILE (or $MSSANTE_CONFIG); "
    "no database is created without one"
)


@dataclass(frozen=True)
class CliState:
    """What the ``mssante`` group itself was given, for its verbs (click's context object)."""

    config_path: Path | None = None


_CONFIG_HELP = "Configuration file (TOML). Also before the verb, or from $MSSANTE_CONFIG."

# The verb's own --config. It reads no environment itself: the group does, so that a --config
# written before the verb beats $MSSANTE_CONFIG (see config_path_from).
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=_CONFIG_HELP,
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def config_path_from(config_path: Path | None) -> Path | None:
    """The configuration file a verb uses: its own --config, else the one given before the
    verb (or the group's $MSSANTE_CONFIG), else $MSSANTE_CONFIG (a group invoked alone)."""
    if config_path is not None:
        return config_path
    ctx = click.get_current_context(silent=True)
    state = ctx.find_object(CliState) if ctx is not None else None
    if state is not None and state.config_path is not None:
        return state.config_path
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    return Path(from_env) if from_env else None


def settings_from(config_path: Path | None) -> Settings:
    """The settings of a verb. Refuses when no configuration was given at all and no database
    exists where the defaults point (the current folder's mssante-data/): a verb run in the
    wrong folder must not start a new, empty node there."""
    path = config_path_from(config_path)
    settings = load_settings(path)
    if path is None and _unconfigured(settings):
        raise ConfigError(NO_CONFIGURATION)
    configure(settings.log)
    return settings


def node_from(config_path: Path | None, *, creates: bool = False) -> Node:
    """The node of a verb that reads or changes operator data. Its SQLite database must exist
    already, unless the verb is meant to create it (``creates``)."""
    return open_node(settings_from(config_path), create_if_missing=creates)


def _unconfigured(settings: Settings) -> bool:
    """True when nothing (file or environment) chose where the node's state lives, and no
    database is there: the defaults alone would create one in the current folder."""
    default_dir = Settings.model_fields["data_dir"].default
    if settings.database.url or settings.data_dir != default_dir:
        return False
    database = make_url(settings.database_url()).database
    return not database or not Path(database).exists()


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
