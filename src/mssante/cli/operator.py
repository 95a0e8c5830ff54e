"""`mssante operator`: the operator's own view of the trust space."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from mssante.auth.revocation import request_trust_refresh
from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)
from mssante.runtime import Node


@click.group(name="operator")
def group() -> None:
    """An operator's view of the trust space: its whitelist copy."""


@group.command(name="refresh-whitelist")
@config_option
@json_option
@friendly_errors
def refresh_whitelist(config_path: Path | None, as_json: bool) -> None:
    """Fetch the CRLs and the authority's whitelist now, verify them and keep them if good.

    On any failure the last good list stays in force; the outcome is audited either way.
    The running servers of the operator (same database) refresh theirs within a second too,
    and end the sessions of certificates now revoked (docs/revocation.md).
    Exit status 1 if the new list was not accepted.
    """
    from mssante.operator.whitelist_sync import WhitelistSync  # noqa: PLC0415

    node = node_from(config_path)
    try:
        sync = WhitelistSync(node.settings, node.audit)
        outcome = asyncio.run(sync.refresh_once())
        _ask_running_servers(node)
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


@group.command(name="refresh-crls")
@config_option
@json_option
@friendly_errors
def refresh_crls(config_path: Path | None, as_json: bool) -> None:
    """Fetch the CRLs now (``pki.crl_sources``), keeping the last valid one of each source.

    The running servers of the operator refresh theirs within a second too, and end the
    sessions of certificates now revoked (docs/revocation.md). Exit status 1 if a source
    has no valid CRL at all.
    """
    from mssante.operator.whitelist_sync import WhitelistSync  # noqa: PLC0415
    from mssante.pki.crl import RefreshStatus  # noqa: PLC0415

    node = node_from(config_path)
    try:
        outcomes = WhitelistSync(node.settings, node.audit).crls.refresh()
        _ask_running_servers(node)
    finally:
        node.close()
    if as_json:
        print_json([o.as_dict() for o in outcomes])
    else:
        for outcome in outcomes:
            click.echo(f"{outcome.status.value}: {outcome.source} {outcome.detail}".rstrip())
    if any(o.status is RefreshStatus.FAILED for o in outcomes):
        raise SystemExit(1)


def _ask_running_servers(node: Node) -> None:
    """A ``trust_refresh`` row: every running server's revocation watcher refreshes."""
    with node.db.session() as session:
        request_trust_refresh(session, actor="cli")
