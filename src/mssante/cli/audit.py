"""`mssante audit`: read and verify the hash-chained audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mssante.audit.log import iter_entries, verify_chain
from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)


@click.group(name="audit")
def group() -> None:
    """The audit log: every action on the trust space and its mailboxes."""


@group.command()
@config_option
@json_option
@friendly_errors
def verify(config_path: Path | None, as_json: bool) -> None:
    """Check that no entry was altered or removed; name each one that was. Exit 1 if any."""
    node = node_from(config_path)
    report = verify_chain(node.db)
    node.close()
    if as_json:
        print_json(
            {
                "entries": report.entries,
                "ok": report.ok,
                "problems": [p.__dict__ for p in report.problems],
            }
        )
    elif report.ok:
        click.echo(f"audit log intact: {report.entries} entries, chain verified")
    else:
        for problem in report.problems:
            click.echo(f"TAMPERED: {problem.message}")
        click.echo(f"{len(report.problems)} problem(s) in {report.entries} entries", err=True)
    sys.exit(0 if report.ok else 1)


@group.command(name="list")
@config_option
@json_option
@click.option("--since", type=int, default=0, help="Only entries after this sequence number.")
@click.option("--event", "events", multiple=True, help="Only these events (repeatable).")
@friendly_errors
def list_(config_path: Path | None, as_json: bool, since: int, events: tuple[str, ...]) -> None:
    """List audit entries, oldest first."""
    node = node_from(config_path)
    rows = [e for e in iter_entries(node.db, since_seq=since) if not events or e.event in events]
    node.close()
    if as_json:
        print_json(
            [
                {
                    "seq": e.seq,
                    "at": e.at.isoformat(),
                    "event": e.event,
                    "actor": e.actor,
                    "target": e.target,
                    "context": e.context,
                }
                for e in rows
            ]
        )
        return
    for e in rows:
        click.echo(f"{e.seq:>6}  {e.at:%Y-%m-%d %H:%M:%S}  {e.event:<32} {e.actor}  →  {e.target}")
