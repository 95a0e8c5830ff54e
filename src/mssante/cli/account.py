"""`mssante account`: create and inspect accounts and their mailboxes (operator admin)."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    print_json,
    settings_from,
)
from mssante.ops.accounts import Accounts, Actor, NewPerson
from mssante.runtime import open_node


@click.group(name="account")
def group() -> None:
    """Accounts of this operator: professionals with their personal mailbox."""


@group.command(name="add")
@config_option
@json_option
@click.option("--address", required=True, help="The personal mailbox address (also the login).")
@click.option("--id-nat", required=True, help="The professional's national id: 8+RPPS or 0+ADELI.")
@click.option("--last-name", required=True)
@click.option("--first-name", required=True)
@click.option("--profession-code", default="", help="Profession code (e.g. 10 for a physician).")
@click.option(
    "--password",
    envvar="MSSANTE_NEW_PASSWORD",
    help="Initial password (else asked for; or $MSSANTE_NEW_PASSWORD).",
)
@friendly_errors
def add(
    config_path: Path | None,
    as_json: bool,
    address: str,
    id_nat: str,
    last_name: str,
    first_name: str,
    profession_code: str,
    password: str | None,
) -> None:
    """Create a professional's account and personal (PER) mailbox."""
    if password is None:
        password = click.prompt(
            "Mot de passe / password", hide_input=True, confirmation_prompt=True
        )
    node = open_node(settings_from(config_path))
    try:
        view = Accounts(node.db).create_person(
            NewPerson(
                address, password, id_nat, last_name, first_name, profession_code=profession_code
            ),
            Actor(f"cli:{getpass.getuser()}", {"via": "cli"}),
        )
    finally:
        node.close()
    if as_json:
        print_json({"login": view.login, "id_nat": view.id_nat, "mailboxes": list(view.mailboxes)})
    else:
        click.echo(f"created {view.login} ({view.id_nat})")
