"""`mssante trust`: read a whitelist, and ask whether a domain (and a certificate DN) is trusted."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    print_json,
    settings_from,
)
from mssante.config import WhitelistSettings
from mssante.trust.keeper import XML_NAME
from mssante.trust.model import Whitelist, WhitelistDomain
from mssante.trust.xmlformat import WhitelistFormatError, format_date, parse_file

_NAME_COLUMN_MAX = 40


@click.group(name="trust")
def group() -> None:
    """The trust space's whitelist (liste blanche): inspect a list, check a domain."""


@group.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@friendly_errors
def inspect(file: Path, as_json: bool) -> None:
    """Read a whitelist FILE and print its date, its size and every domain with its DNs.

    An invalid file is refused with one line saying why (and where), and exit status 1.
    """
    whitelist = parse_file(file, max_bytes=WhitelistSettings().max_bytes)
    if as_json:
        print_json(_as_json(whitelist))
        return
    _print_table(whitelist)


@group.command()
@click.argument("domain")
@click.option("--dn", help="Subject DN of the peer's certificate (RFC 4514), checked too.")
@click.option(
    "--list",
    "list_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Whitelist file to check against. Default: the operator's current list (--config).",
)
@config_option
@json_option
@friendly_errors
def check(
    domain: str, dn: str | None, list_file: Path | None, config_path: Path | None, as_json: bool
) -> None:
    """Say whether DOMAIN (and, with --dn, a certificate DN) is trusted, and why not.

    Exit status 0 when trusted, 1 when not. Without --list, the list is the one the operator's
    keeper last accepted, in the whitelist cache folder of the configuration; it is read as
    stored (its signature was verified when it was accepted).
    """
    if list_file is not None and _config_on_command_line():
        raise click.UsageError("give --list or --config, not both")
    whitelist = _load_for_check(list_file, config_path)
    decision = whitelist.is_trusted(domain, dn) if dn is not None else whitelist.is_listed(domain)
    if as_json:
        print_json(
            {
                "domain": domain,
                "dn": dn,
                "trusted": decision.trusted,
                "reason": decision.reason.value if decision.reason else None,
                "message": decision.message,
                "list_generated_at": format_date(whitelist.generated_at),
            }
        )
    else:
        click.echo(("trusted: " if decision.trusted else "not trusted: ") + decision.message)
        if decision.trusted and dn is None:
            for listed in _listed_dns(whitelist.domain(domain)):
                click.echo(f"    listed DN: {listed}")
    sys.exit(0 if decision.trusted else 1)


def _config_on_command_line() -> bool:
    """--config written on the command line, after the verb or before it (not from the
    environment)."""
    ctx = click.get_current_context()
    return any(
        c.get_parameter_source("config_path") is click.core.ParameterSource.COMMANDLINE
        for c in (ctx, ctx.find_root())
    )


def _load_for_check(list_file: Path | None, config_path: Path | None) -> Whitelist:
    if list_file is not None:
        return parse_file(list_file, max_bytes=WhitelistSettings().max_bytes)
    settings = settings_from(config_path)
    cached = settings.whitelist_cache_dir() / XML_NAME
    if not cached.exists():
        raise WhitelistFormatError(
            "no whitelist accepted yet: the whitelist cache folder has no " + XML_NAME
        )
    return parse_file(cached, max_bytes=settings.whitelist.max_bytes)


def _listed_dns(entries: tuple[WhitelistDomain, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for entry in entries:
        for dn in entry.operator_dns:
            seen.setdefault(dn, None)
    return list(seen)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_table(whitelist: Whitelist) -> None:
    click.echo(
        f"whitelist generated {format_date(whitelist.generated_at)}: "
        f"{len(whitelist.domains)} entries, {len(whitelist.names())} distinct domains"
    )
    if not whitelist.domains:
        return
    width = min(max(len(d.name) for d in whitelist.domains), _NAME_COLUMN_MAX)
    click.echo("")
    click.echo(f"{'DOMAIN':<{width}}  {'UPDATED':<20}  DESCRIPTION")
    for entry in whitelist.domains:
        click.echo(
            f"{entry.name:<{width}}  {format_date(entry.updated_at):<20}  "
            f"{_one_line(entry.description)}"
        )
        for dn in entry.operator_dns:
            click.echo(f"    DN {dn}")


def _as_json(whitelist: Whitelist) -> dict[str, Any]:
    return {
        "generated_at": format_date(whitelist.generated_at),
        "entries": len(whitelist.domains),
        "distinct_domains": len(whitelist.names()),
        "domains": [
            {
                "name": entry.name,
                "description": entry.description,
                "operator_dns": list(entry.operator_dns),
                "responsable_contact": entry.responsable_contact,
                "support_contact": entry.support_contact,
                "updated_at": format_date(entry.updated_at),
            }
            for entry in whitelist.domains
        ],
    }
