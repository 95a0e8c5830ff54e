"""`mssante patient`: patients' oppositions to the exchange of their data (BRIEF §7)."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mssante.audit.events import Actor
from mssante.cli.common import config_option, friendly_errors, node_from
from mssante.mail.patient import InsKind
from mssante.ops.patients import Oppositions

_KIND = click.Choice([k.name for k in InsKind])


@click.group(name="patient")
def group() -> None:
    """Patients: record or lift an opposition to exchanges about them."""


@group.group(name="opposition")
def opposition_group() -> None:
    """While an opposition stands, mail about the patient is refused (and audited)."""


def _run(config_path: Path | None, work: Callable[[Oppositions], Any]) -> Any:
    node = node_from(config_path)
    try:
        return work(Oppositions(node.db))
    finally:
        node.close()


def _actor() -> Actor:
    return Actor(f"cli:{getpass.getuser()}", {"via": "cli"})


@opposition_group.command(name="add")
@config_option
@click.argument("ins")
@click.option("--kind", type=_KIND, default="NIR", show_default=True, help="NIR, NIA or TEST_NIR")
@click.option("--note", default="", help="How it was expressed (kept in the audit log).")
@friendly_errors
def add(config_path: Path | None, ins: str, kind: str, note: str) -> None:
    """Record the opposition of the patient with this INS (15 characters, key included)."""
    value = _run(config_path, lambda o: o.record(ins, _actor(), note=note, kind=InsKind[kind]))
    click.echo(f"opposition enregistrée / recorded: {value}")


@opposition_group.command(name="remove")
@config_option
@click.argument("ins")
@click.option("--kind", type=_KIND, default="NIR", show_default=True)
@friendly_errors
def remove(config_path: Path | None, ins: str, kind: str) -> None:
    """Lift the opposition of the patient with this INS."""
    _run(config_path, lambda o: o.lift(ins, _actor(), kind=InsKind[kind]))
    click.echo("opposition levée / lifted")


@opposition_group.command(name="list")
@config_option
@friendly_errors
def listing(config_path: Path | None) -> None:
    """Every opposition recorded here."""
    for item in _run(config_path, lambda o: o.listing()):
        when = item.recorded_at.strftime("%Y-%m-%d %H:%M")
        click.echo(f"{item.ins}  {when}  {item.recorded_by}  {item.note}")
