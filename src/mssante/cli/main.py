"""Entry point of the ``mssante`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mssante import __version__
from mssante.cli import account as account_cli
from mssante.cli import audit as audit_cli
from mssante.cli import authority as authority_cli
from mssante.cli import config as config_cli
from mssante.cli import db as db_cli
from mssante.cli import demo as demo_cli
from mssante.cli import directory as directory_cli
from mssante.cli import dns as dns_cli
from mssante.cli import mail as mail_cli
from mssante.cli import mailbox as mailbox_cli
from mssante.cli import oidc as oidc_cli
from mssante.cli import operator as operator_cli
from mssante.cli import patient as patient_cli
from mssante.cli import pki as pki_cli
from mssante.cli import publication as publication_cli
from mssante.cli import queue as queue_cli
from mssante.cli import send as send_cli
from mssante.cli import serve as serve_cli
from mssante.cli import trust as trust_cli
from mssante.cli.common import CONFIG_ENV, CliState
from mssante.errors import MssanteError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mssante")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help="Configuration file (TOML) for the verb that follows; a --config after the verb wins. "
    "Also from $MSSANTE_CONFIG.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """mssante: messagerie sécurisée de santé (MSSanté), opérateur et autorité.

    An MSSanté operator and trust-space authority. Every verb has --help.
    """
    ctx.obj = CliState(config_path=config_path)


for group in (
    config_cli.group,
    db_cli.group,
    audit_cli.group,
    pki_cli.group,
    trust_cli.group,
    authority_cli.group,
    operator_cli.group,
    account_cli.group,
    mail_cli.group,
    mailbox_cli.group,
    dns_cli.group,
    oidc_cli.group,
    directory_cli.group,
    patient_cli.group,
    queue_cli.group,
):
    cli.add_command(group)
directory_cli.group.add_command(publication_cli.outbox)  # docs/publication.md
cli.add_command(demo_cli.demo)
cli.add_command(serve_cli.serve)
cli.add_command(send_cli.send)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except MssanteError as exc:  # pragma: no cover - click usually handles via ClickException
        click.echo(f"mssante: {exc.public}", err=True)
        sys.exit(1)
