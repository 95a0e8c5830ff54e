"""`mssante config`: print a sample configuration, check a configuration file."""

from __future__ import annotations

from pathlib import Path

import click

from mssante.cli.common import (
    config_option,
    config_path_from,
    friendly_errors,
    json_option,
    print_json,
)
from mssante.config import load_settings, sample_toml


@click.group(name="config")
def group() -> None:
    """Configuration files: an annotated sample, and a check of yours."""


@group.command()
def sample() -> None:
    """Print an annotated configuration file with every field and its default."""
    click.echo(sample_toml(), nl=False)


@group.command()
@config_option
@json_option
@friendly_errors
def show(config_path: Path | None, as_json: bool) -> None:
    """Check a configuration and print it as it will be used (file, then environment)."""
    settings = load_settings(config_path_from(config_path))
    data = settings.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key} = {value}")
