"""`mssante mail`: look into a mailbox from the operator's side (admin and tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)
from mssante.mail.trace import parse_trace
from mssante.ops.mailstore import MailStore


@click.group(name="mail")
def group() -> None:
    """Messages in this operator's mailboxes."""


@group.command(name="list")
@config_option
@json_option
@click.argument("address")
@click.option("--folder", default="INBOX", show_default=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@friendly_errors
def list_(config_path: Path | None, as_json: bool, address: str, folder: str, limit: int) -> None:
    """List a mailbox's messages, newest first: UID, date, sender, subject, and how they came."""
    node = node_from(config_path)
    try:
        store = MailStore(node.db, node.blobs)
        rows = [
            (m, parse_trace(store.read(m.blob_sha256)))
            for m in store.list_messages(address, folder=folder, limit=limit)
        ]
    finally:
        node.close()
    if as_json:
        print_json([{**m.as_dict(), "trace": trace} for m, trace in rows])
        return
    if not rows:
        click.echo(f"{address} {folder}: aucun message / no messages")
    for m, trace in rows:
        via = (
            f"mutual TLS from {trace['dn']}"
            if trace.get("mutual-tls") == "yes"
            else trace.get("auth", "")
        )
        when = (m.date or m.internal_date).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{m.uid:>6}  {when}  {m.from_address:<34} {m.subject}")
        if via:
            click.echo(f"        via {via} ({trace.get('tls', '')})")


@group.command(name="show")
@config_option
@click.argument("address")
@click.argument("uid", type=int)
@click.option("--folder", default="INBOX", show_default=True)
@friendly_errors
def show(config_path: Path | None, address: str, uid: int, folder: str) -> None:
    """Print one message as stored (headers and body)."""
    node = node_from(config_path)
    try:
        store = MailStore(node.db, node.blobs)
        found = [
            m
            for m in store.list_messages(address, folder=folder, limit=1, before_uid=uid + 1)
            if m.uid == uid
        ]
        if not found:
            raise click.ClickException(f"no message {uid} in {address} {folder}")
        sys.stdout.buffer.write(store.read(found[0].blob_sha256))
    finally:
        node.close()
