"""`mssante oidc`: the local OpenID Connect provider standing in for Pro Santé Connect."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import click

from mssante.cli.common import config_option, friendly_errors, settings_from
from mssante.oidc.models import digest


@click.group(name="oidc")
def group() -> None:
    """The local OIDC provider (discovery, JWKS, authorization code + PKCE, refresh, revocation,
    introspection) that stands in for Pro Santé Connect (docs/oidc.md)."""


@group.command()
@config_option
@friendly_errors
def serve(config_path: Path | None) -> None:
    """Serve the provider over HTTPS until interrupted ([oidc] and [tls] of the configuration)."""
    from mssante.oidc.run import run_provider  # noqa: PLC0415 - loads the web stack

    settings = settings_from(config_path)
    asyncio.run(run_provider(settings))


@group.command(name="new-secret")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the secret (mode 0600; must not exist): a mail server's "
    "[oidc] client_secret_file.",
)
def new_secret(path: Path) -> None:
    """Make a resource server's secret; print the SHA-256 that the provider's
    [oidc] resource_servers lists for it."""
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists already") from None
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    click.echo(digest(secret))
