"""`mssante demo`: a whole local trust space (authority + two operators) on loopback."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import click

from mssante.cli.common import friendly_errors
from mssante.config import LogSettings
from mssante.logging import configure


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's state (default: a new temporary folder).",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=10025,
    show_default=True,
    help="First loopback port; the authority uses it, operators the next tens.",
)
@click.option(
    "--exit-when-ready", is_flag=True, help="Stop once everything is up (for scripts and tests)."
)
@friendly_errors
def demo(directory: Path | None, base_port: int, exit_when_ready: bool) -> None:
    """Start a local trust space: an authority and two operators.

    Démarre un espace de confiance local : une autorité et deux opérateurs.
    """
    from mssante import demo as d  # noqa: PLC0415 - keeps `mssante --help` fast

    configure(LogSettings(level="WARNING"))
    root = directory or Path(tempfile.mkdtemp(prefix="mssante-demo-"))
    if root.exists() and any(root.iterdir()):
        raise click.ClickException(f"{root} is not empty: give an empty or new folder with --dir")
    root.mkdir(parents=True, exist_ok=True)
    layout = d.DemoLayout(root=root.resolve(), base_port=base_port)
    click.echo("Préparation de l'espace de confiance… / Preparing the trust space…")
    info = d.build(layout)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        d.start(layout, info, log_dir=layout.root / "logs")
        d.wait_until_operators_hold_the_list(info, layout)
        (layout.root / "demo.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
        _summary(info, layout.root)
        if not exit_when_ready:
            _wait(stopped)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans
        d.stop(layout)
        click.echo("Arrêté. / Stopped.")


def _wait(stopped: threading.Event) -> None:
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _summary(info: dict[str, Any], root: Path) -> None:
    click.echo("")
    click.echo("Espace de confiance MSSanté local prêt. / Local MSSanté trust space ready.")
    click.echo(
        f"  Autorité / authority     https://{info['authority']['https']}  (liste blanche: {info['whitelist_url']})"
    )
    click.echo(f"  Pro Santé Connect (local) {info['oidc']['discovery']}")
    for op in info["operators"]:
        click.echo(f"  Opérateur / operator     {op['domain']:<28} config {op['config']}")
        ends = op["endpoints"]
        click.echo(f"      Webmail {op['webmail']}")
        click.echo(
            f"      IMAP {ends['imap']} (STARTTLS), {ends['imaps']} (TLS);"
            f" SMTP submission {ends['submission']} (STARTTLS), {ends['submissions']} (TLS)"
        )
    click.echo(f"  PKI de test / test PKI   {info['pki']['dir']}")
    click.echo(f"  Tout est décrit dans / everything is in   {root / 'demo.json'}")
    click.echo("")
    nord, sud = info["operators"][0], info["operators"][1]
    me = sys.argv[0] if Path(sys.argv[0]).name == "mssante" else "mssante"
    sender, recipient = nord["accounts"][0], sud["accounts"][0]
    click.echo("Comptes / accounts:")
    for op in info["operators"]:
        for acc in op["accounts"]:
            click.echo(f"  {acc['address']:<48} mot de passe / password: {acc['password']}")
    click.echo("")
    click.echo("Essayez / try:")
    click.echo(
        f"  Webmail: {nord['webmail']} (certificat de test : acceptez l'avertissement du "
        "navigateur / test certificate: accept the browser's warning). À la première connexion, "
        "enregistrez le code TOTP (application d'authentification, ou "
        f"`{me} account totp code CLÉ`) / at first login, enrol the TOTP code."
    )
    click.echo(
        f"  MSSANTE_PASSWORD='{sender['password']}' {me} send --config {nord['config']} "
        f"--from {sender['address']} --to {recipient['address']} --subject 'Bonjour' --body 'Premier message'"
    )
    click.echo(f"  {me} mail list {recipient['address']} --config {sud['config']}")
    click.echo(f"  {me} audit list --config {nord['config']}")
    click.echo("Ctrl-C pour arrêter / to stop.")
