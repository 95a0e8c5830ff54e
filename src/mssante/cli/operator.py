"""`mssante operator`: the operator's own view of the trust space."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    print_json,
    settings_from,
)
from mssante.runtime import open_node


@click.group(name="operator")
def group() -> None:
    """An operator's view of the trust space: its whitelist copy."""


@group.command(name="refresh-whitelist")
@config_option
@json_option
@friendly_errors
def refresh_whitelist(config_path: Path | None, as_json: bool) -> None:
    """Fetch the authority's whitelist now, verify it and keep it if good.

    On any failure the last good list stays in force; the outcome is audited either way.
    Exit status 1 if the new list was not accepted.
    """
    from mssante.operator.whitelist_sync import WhitelistSync  # noqa: PLC0415

    node = open_node(settings_from(config_path))
    try:
        sync = WhitelistSync(node.settings, node.audit)
        outcome = asyncio.run(sync.refresh_once())
    finally:
        node.close()
    held = outcome.whitelist
    summary = {
        "status": outcome.status.value,
        "reason": outcome.reason,
        "domains_in_force": len(held.domains) if held else 0,
        "generated_at": held.generated_at.isoformat() if held else None,
    }
    if as_json:
        print_json(summary)
    elif outcome.ok:
        click.echo(
            f"whitelist {outcome.status.value}: {summary['domains_in_force']} domains in force"
        )
    else:
        kept = f"{summary['domains_in_force']} domains" if held else "no list"
        click.echo(f"whitelist {outcome.status.value}: {outcome.reason} (kept: {kept})")
    if not outcome.ok:
        raise SystemExit(1)
