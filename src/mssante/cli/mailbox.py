"""`mssante mailbox`: shared ORG mailboxes and delegated PER mailboxes (docs/delegation.md)."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from mssante.audit.events import Actor
from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)
from mssante.ops.accounts import Accounts
from mssante.ops.delegation import AccessUse, Delegations, Member
from mssante.store.models import AccessRight

_RIGHT = click.Choice([r.value for r in AccessRight])
# What each level allows (ops/rights.py decides; docs/delegation.md has the table).
_RIGHT_HELP = (
    "read: list, read, mark as read, nothing else (lire seulement); "
    "file: read, flag, delete, file into folders (lire et classer); "
    "send: file, and send on the mailbox's behalf with Sender: (classer et envoyer)."
)
_UNTIL = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"])


@click.group(name="mailbox")
def group() -> None:
    """Shared (ORG) mailboxes and delegations: who else may read a mailbox or send as it."""


def _actor() -> Actor:
    return Actor(f"cli:{getpass.getuser()}", {"via": "cli"})


def _until(value: datetime | None) -> datetime | None:
    """A date alone means through that day (UTC); a time without zone is UTC."""
    if value is None:
        return None
    if value.hour == value.minute == value.second == 0:
        value += timedelta(days=1)
    return value.replace(tzinfo=UTC)


def _run(config_path: Path | None, work: Callable[[Delegations], Any]) -> Any:
    node = node_from(config_path)
    try:
        return work(Delegations(node.db))
    finally:
        node.close()


def _member_json(m: Member) -> dict[str, Any]:
    return {
        "login": m.login,
        "right": m.right,
        "granted_by": m.granted_by,
        "granted_at": m.granted_at.isoformat(),
        "expires_at": m.expires_at.isoformat() if m.expires_at else None,
        "active": m.active,
    }


def _use_json(u: AccessUse) -> dict[str, Any]:
    return {"at": u.at.isoformat(), "event": u.event, "actor": u.actor, "context": u.context}


@group.command(name="create-org")
@config_option
@click.argument("address")
@click.option("--description", default="", help="What the mailbox is for (a service, a team).")
@friendly_errors
def create_org(config_path: Path | None, address: str, description: str) -> None:
    """Create an organisational (ORG) mailbox; then grant it to its members."""
    node = node_from(config_path)
    try:
        domains = node.settings.operator.domains  # only a domain this operator serves
        created = Delegations(node.db).create_org(address, description, _actor(), domains=domains)
    finally:
        node.close()
    click.echo(f"created ORG mailbox {created}")


@group.command(name="grant")
@config_option
@click.argument("address")
@click.option("--to", "login", required=True, help="The login given access.")
@click.option("--right", type=_RIGHT, required=True, help=_RIGHT_HELP)
@click.option("--until", type=_UNTIL, help="Access ends by itself then (UTC).")
@friendly_errors
def grant(
    config_path: Path | None, address: str, login: str, right: str, until: datetime | None
) -> None:
    """Let LOGIN use the mailbox ADDRESS: read it, file its mail, or send on its behalf."""
    member = _run(
        config_path,
        lambda d: d.grant(address, login, AccessRight(right), _actor(), until=_until(until)),
    )
    click.echo(f"{member.login} may {member.right} {address.lower()}")


@group.command(name="delegate")
@config_option
@click.argument("owner_address")
@click.option("--to", "login", required=True, help="The secretary's or replacement's login.")
@click.option("--right", type=_RIGHT, required=True, help=_RIGHT_HELP)
@click.option("--until", type=_UNTIL, help="The delegation ends by itself then (UTC).")
@friendly_errors
def delegate(
    config_path: Path | None, owner_address: str, login: str, right: str, until: datetime | None
) -> None:
    """The owner of a personal mailbox lends it to LOGIN (run on the owner's behalf)."""
    member = _run(
        config_path,
        lambda d: d.delegate(
            owner_address, login, AccessRight(right), _actor(), until=_until(until)
        ),
    )
    click.echo(f"{member.login} may {member.right} {owner_address.lower()}")


@group.command(name="revoke")
@config_option
@click.argument("address")
@click.option("--from", "login", required=True, help="The login whose access ends now.")
@friendly_errors
def revoke(config_path: Path | None, address: str, login: str) -> None:
    """End LOGIN's access to the mailbox ADDRESS."""
    _run(config_path, lambda d: d.revoke(address, login, _actor()))
    click.echo(f"{login.lower()} no longer has access to {address.lower()}")


@group.command(name="members")
@config_option
@json_option
@click.argument("address")
@friendly_errors
def members(config_path: Path | None, as_json: bool, address: str) -> None:
    """Every grant on the mailbox ADDRESS, active or ended."""
    found: list[Member] = _run(config_path, lambda d: d.members(address))
    if as_json:
        print_json([_member_json(m) for m in found])
        return
    for m in found:
        until = m.expires_at.isoformat() if m.expires_at else "-"
        state = "active" if m.active else "ended"
        click.echo(f"{m.login}\t{m.right}\tuntil {until}\t{state}\tby {m.granted_by}")


@group.command(name="access-log")
@config_option
@json_option
@click.argument("address")
@friendly_errors
def access_log(config_path: Path | None, as_json: bool, address: str) -> None:
    """Grants, revocations and every use of ADDRESS by someone other than its owner."""
    uses: list[AccessUse] = _run(config_path, lambda d: d.access_log(address))
    if as_json:
        print_json([_use_json(u) for u in uses])
        return
    for u in uses:
        click.echo(f"{u.at.isoformat()}\t{u.event}\t{u.actor}")


def _run_accounts(config_path: Path | None, work: Callable[[Accounts], Any]) -> Any:
    node = node_from(config_path)
    try:
        return work(Accounts(node.db))
    finally:
        node.close()


@group.command(name="liste-rouge")
@config_option
@click.argument("address")
@click.option(
    "--off", "off", is_flag=True, help="Take the mailbox off liste rouge (published again)."
)
@friendly_errors
def liste_rouge(config_path: Path | None, address: str, off: bool) -> None:
    """Put the mailbox ADDRESS on liste rouge: not published in the national directory (its
    entry is withdrawn from search and from the extraction), still reachable by mail. The
    change goes to the authority by the directory publication (docs/publication.md)."""
    changed = _run_accounts(config_path, lambda a: a.set_liste_rouge(address, not off, _actor()))
    state = "off liste rouge (published)" if off else "on liste rouge (not published)"
    click.echo(f"{address.lower()} {'is now' if changed else 'was already'} {state}")


@group.command(name="close")
@config_option
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def close(config_path: Path | None, address: str, yes: bool) -> None:
    """Close the mailbox ADDRESS: no one can log in to it or send as it any more, its entry
    leaves the national directory, and its address is never given to anyone else. Its mail
    is kept."""
    if not yes:
        click.confirm(f"Close {address.lower()} for good?", abort=True)
    _run_accounts(config_path, lambda a: a.close_mailbox(address, _actor()))
    click.echo(f"{address.lower()} closed; its directory entry is being withdrawn")
