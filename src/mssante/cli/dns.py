"""`mssante dns`: what to publish so that clients configure themselves (docs/autoconfig.md)."""

from __future__ import annotations

from pathlib import Path

import click

from mssante.autoconfig.dns import zone_records, zone_text
from mssante.autoconfig.document import config_xml
from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    print_json,
    settings_from,
)
from mssante.config import Settings
from mssante.errors import ConfigError


@click.group(name="dns")
def group() -> None:
    """DNS records and client autoconfiguration of this operator's domains."""


@group.command(name="records")
@config_option
@json_option
@click.argument("domain")
@friendly_errors
def records(config_path: Path | None, as_json: bool, domain: str) -> None:
    """Print the zone lines to publish for DOMAIN: MX, SRV (RFC 6186, RFC 8314), autoconfig."""
    settings = _settings_for(config_path, domain)
    if as_json:
        print_json([r.as_dict() for r in zone_records(settings, domain)])
    else:
        click.echo(zone_text(settings, domain), nl=False)


@group.command(name="autoconfig")
@config_option
@click.argument("domain")
@friendly_errors
def autoconfig(config_path: Path | None, domain: str) -> None:
    """Print the config-v1.1.xml document served to Thunderbird for DOMAIN."""
    settings = _settings_for(config_path, domain)
    click.echo(config_xml(settings, domain.strip().lower().rstrip(".")).decode(), nl=False)


def _settings_for(config_path: Path | None, domain: str) -> Settings:
    settings = settings_from(config_path)
    ours = {d.strip().lower().rstrip(".") for d in settings.operator.domains}
    if domain.strip().lower().rstrip(".") not in ours:
        raise ConfigError(
            f"{domain} is not one of this operator's domains (operator.domains in the configuration)"
        )
    return settings
