"""`mssante directory outbox`: the operator's mailbox changes waiting for the authority, or
refused by it (docs/publication.md)."""

from __future__ import annotations

from pathlib import Path

import click

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)
from mssante.directory.outbox import OutboxRow, outbox_counts, outbox_rows


@click.command(name="outbox")
@config_option
@json_option
@click.option("--all", "include_sent", is_flag=True, help="Also list the changes already sent.")
@click.option("--limit", default=1000, show_default=True, help="Rows listed at most.")
@friendly_errors
def outbox(config_path: Path | None, as_json: bool, include_sent: bool, limit: int) -> None:
    """Publications en attente ou refusées / mailbox changes pending or refused by the
    authority (oldest first)."""
    node = node_from(config_path)
    try:
        rows = outbox_rows(node.db, include_sent=include_sent, limit=limit)
        counts = outbox_counts(node.db)
    finally:
        node.close()
    if as_json:
        print_json({"counts": counts, "rows": [r.as_dict() for r in rows]})
        return
    click.echo(
        f"{counts['pending']} en attente / pending, {counts['failed']} refusées / refused, "
        f"{counts['sent']} envoyées / sent"
    )
    for row in rows:
        click.echo(_line(row))


def _line(row: OutboxRow) -> str:
    when = row.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") if row.next_attempt_at else ""
    answer = f"HTTP {row.last_status}" if row.last_status else ("" if not row.attempts else "—")
    text = f"{row.id:>6}  {row.status:<8} {row.operation:<8} {row.address}  {row.resource}"
    text += f"  tries {row.attempts}"
    if when:
        text += f"  next {when}"
    if answer or row.last_error:
        text += f"  {answer} {row.last_error}".rstrip()
    return text
