"""`mssante queue`: the outbound queue as the operator sees it: list, show, retry, drop
(docs/queue.md)."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from mssante.cli.common import config_option, friendly_errors, json_option, node_from, print_json
from mssante.queue.admin import (
    UNFINISHED,
    ActionReport,
    ListFilter,
    MessageView,
    RecipientView,
    Selection,
    drop,
    list_messages,
    retry,
    show_message,
)
from mssante.runtime import Node
from mssante.store.models import QueueStatus

if TYPE_CHECKING:
    from mssante.queue.delivery import Notifier

_STATUS = click.Choice([s.value for s in QueueStatus])
_STATES = {
    QueueStatus.QUEUED: "en file / queued",
    QueueStatus.DEFERRED: "différé / deferred",
    QueueStatus.IN_FLIGHT: "en cours / in flight",
    QueueStatus.DELIVERED: "distribué / delivered",
    QueueStatus.FAILED: "échec / failed",
}
_WIDTH = 1000  # not on a terminal (a pipe, a log): rows are never wrapped, grep finds them whole


@click.group(name="queue")
def group() -> None:
    """La file d'envoi vers les autres opérateurs / the outbound queue: what waits, why, and
    the operator's retry and drop."""


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=_WIDTH)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _state(row: RecipientView) -> str:
    return "retiré / dropped" if row.dropped else _STATES[row.status]


def _selection(queue_ids: Sequence[int], domain: str, recipient: str) -> Selection:
    return Selection(tuple(queue_ids), domain, recipient)


# -- list ----------------------------------------------------------------------------------------


@group.command(name="list")
@config_option
@json_option
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=_STATUS,
    help="Only recipients in this state (repeatable). Default: queued, deferred, in_flight.",
)
@click.option("--all", "every", is_flag=True, help="Every state, delivered and failed too.")
@click.option("--domain", default="", help="Only recipients in this domain.")
@click.option("--sender", default="", help="Only messages from this envelope sender.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@friendly_errors
def list_(
    config_path: Path | None,
    as_json: bool,
    statuses: tuple[str, ...],
    every: bool,
    domain: str,
    sender: str,
    limit: int,
) -> None:
    """Les messages en file / queued messages, oldest first, each recipient with its state,
    attempts, next attempt and last reply (the reason it waits or failed)."""
    if every and statuses:
        raise click.UsageError("--all ou --status, pas les deux / --all or --status, not both")
    chosen = frozenset(QueueStatus) if every else frozenset(QueueStatus(s) for s in statuses)
    wanted = ListFilter(chosen or UNFINISHED, domain.strip(), sender.strip(), limit)
    node = node_from(config_path)
    try:
        messages = list_messages(node.db, wanted)
    finally:
        node.close()
    if as_json:
        print_json([m.as_dict() for m in messages])
        return
    if not messages:
        click.echo("aucun message en file / no message in the queue")
        return
    _console().print(_list_table(messages))
    recipients = sum(len(m.recipients) for m in messages)
    click.echo(f"{len(messages)} message(s), {recipients} destinataire(s) / recipient(s)")


def _list_table(messages: Sequence[MessageView]) -> Table:
    table = Table(show_lines=False, expand=False)
    for title in (
        "N° / id",
        "Mis en file / queued",
        "Expéditeur / sender",
        "Destinataire / recipient",
        "État / state",
        "Essais / tries",
        "Prochain essai / next",
        "Dernière réponse / last reply",
    ):
        table.add_column(title, overflow="fold")
    for message in messages:
        first = True
        for row in message.recipients:
            head = (
                (str(message.id), _when(message.created_at), message.sender or "<>")
                if first
                else ("", "", "")
            )
            table.add_row(
                *head,
                row.address,
                _state(row),
                str(row.attempts),
                _when(row.next_attempt_at),
                row.reason,
            )
            first = False
    return table


# -- show ----------------------------------------------------------------------------------------


@group.command(name="show")
@config_option
@json_option
@click.argument("queue_id", type=click.IntRange(min=1))
@friendly_errors
def show(config_path: Path | None, as_json: bool, queue_id: int) -> None:
    """Un message et chacun de ses destinataires / one queued message and every recipient's
    state, attempts, last reply, remote MTA and next attempt."""
    node = node_from(config_path)
    try:
        message = show_message(node.db, queue_id)
    finally:
        node.close()
    if as_json:
        print_json(message.as_dict())
        return
    for label, value in (
        ("N° / id", str(message.id)),
        ("Message-ID", message.message_id),
        ("Expéditeur / sender", message.sender or "<> (avis de remise / delivery report)"),
        ("Compte / account", message.account),
        ("Taille / size", f"{message.size} octets / bytes"),
        ("Mis en file / queued", _when(message.created_at)),
        ("Contenu / body", f"sha256 {message.blob_sha256}"),
    ):
        click.echo(f"{label:<24} {value}")
    _console().print(_show_table(message.recipients))


def _show_table(recipients: Sequence[RecipientView]) -> Table:
    table = Table()
    for title in (
        "Destinataire / recipient",
        "État / state",
        "Essais / tries",
        "Prochain essai / next",
        "Dernière réponse / last reply",
        "MTA distant / remote MTA",
        "Pris par / claimed by",
        "Mis à jour / updated",
    ):
        table.add_column(title, overflow="fold")
    for row in recipients:
        table.add_row(
            row.address,
            _state(row),
            str(row.attempts),
            _when(row.next_attempt_at),
            row.reason,
            row.remote_mta,
            row.claimed_by,
            _when(row.updated_at),
        )
    return table


# -- retry and drop ------------------------------------------------------------------------------

_ids_argument = click.argument("queue_ids", nargs=-1, type=click.IntRange(min=1))
_domain_option = click.option(
    "--domain", default="", help="Only recipients in this domain (without ids: every message)."
)
_recipient_option = click.option("--recipient", default="", help="Only this recipient address.")


@group.command(name="retry")
@config_option
@json_option
@_ids_argument
@_domain_option
@_recipient_option
@friendly_errors
def retry_command(
    config_path: Path | None,
    as_json: bool,
    queue_ids: tuple[int, ...],
    domain: str,
    recipient: str,
) -> None:
    """Relancer maintenant / make deferred or failed recipients of QUEUE_IDS (or of --domain)
    due now; the running server sends them at its next poll. Dropped ones stay dropped."""
    node = node_from(config_path)
    try:
        report = retry(
            node.db,
            _selection(queue_ids, domain, recipient),
            actor=_actor(),
            now=datetime.now(UTC),
        )
    finally:
        node.close()
    _print_report(report, as_json, "relancé(s) / retried")


@group.command(name="drop")
@config_option
@json_option
@_ids_argument
@_domain_option
@_recipient_option
@click.option("--reason", default="", help="Why (kept in the audit log, shown in the DSN).")
@click.option(
    "--no-dsn", is_flag=True, help="Do not tell the sender (the default is a failure DSN)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def drop_command(
    config_path: Path | None,
    as_json: bool,
    queue_ids: tuple[int, ...],
    domain: str,
    recipient: str,
    reason: str,
    no_dsn: bool,
    yes: bool,
) -> None:
    """Retirer de la file / drop the waiting recipients of QUEUE_IDS (or of --domain) for
    good: they are marked failed and never sent; the sender gets a failure DSN (RFC 5321
    §6.1) unless --no-dsn. A recipient being delivered right now is left alone."""
    selection = _selection(queue_ids, domain, recipient)
    node = node_from(config_path)
    try:
        if not yes:
            click.confirm(
                "Retirer ces destinataires de la file, définitivement ? / "
                "Drop these recipients for good?",
                abort=True,
            )
        report = drop(
            node.db,
            selection,
            actor=_actor(),
            now=datetime.now(UTC),
            reason=reason,
            notifier=None if no_dsn else _notifier(node),
        )
    finally:
        node.close()
    _print_report(report, as_json, "retiré(s) / dropped")
    if not as_json and report.notices:
        click.echo(f"{report.notices} avis d'échec envoyé(s) / failure DSN(s) sent")


def _notifier(node: Node) -> Notifier:
    from mssante.ops.acceptance import Reports  # noqa: PLC0415
    from mssante.ops.bus import ChangeBus  # noqa: PLC0415
    from mssante.ops.mailstore import MailStore  # noqa: PLC0415
    from mssante.queue.delivery import Notifier  # noqa: PLC0415 - loads the delivery stack
    from mssante.queue.store import RetryPolicy  # noqa: PLC0415

    policy = RetryPolicy.from_settings(node.settings.smtp)
    # The report door of the acceptance path; no change bus in this process: the server's IMAP
    # and webmail sessions see the DSN at their next poll.
    reports = Reports(MailStore(node.db, node.blobs), ChangeBus().publish)
    return Notifier(node.settings, node.blobs, reports, policy)


def _print_report(report: ActionReport, as_json: bool, done: str) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    click.echo(f"{len(report.changed)} destinataire(s) {done}")
    for row in report.changed:
        click.echo(f"  {row.message_pk:>6}  {row.address}  {_state(row)}")
    for skipped in report.skipped:
        click.echo(
            f"  ignoré / skipped: {skipped.queue_id} {skipped.address} ({skipped.why})", err=True
        )
