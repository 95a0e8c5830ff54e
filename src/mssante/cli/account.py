"""`mssante account`: create and inspect accounts and their mailboxes (operator admin)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import click

from mssante.audit.events import Actor
from mssante.auth.certificates import CertificateBinding, CertificateBindings
from mssante.auth.service import AuthService
from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)
from mssante.ops.accounts import Accounts, NewApplication, NewPerson
from mssante.pki.loading import load_certificate
from mssante.pki.names import dn_string


@click.group(name="account")
def group() -> None:
    """Accounts of this operator: professionals with their personal mailbox, and the software
    behind APP mailboxes."""


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
    node = node_from(config_path)  # a missing configuration is told before the prompt
    try:
        if password is None:
            password = click.prompt(
                "Mot de passe / password", hide_input=True, confirmation_prompt=True
            )
        view = Accounts(node.db).create_person(
            NewPerson(
                address, password, id_nat, last_name, first_name, profession_code=profession_code
            ),
            Actor(f"cli:{getpass.getuser()}", {"via": "cli"}),
            domains=node.settings.operator.domains,
        )
    finally:
        node.close()
    if as_json:
        print_json({"login": view.login, "id_nat": view.id_nat, "mailboxes": list(view.mailboxes)})
    else:
        click.echo(f"created {view.login} ({view.id_nat})")


# -- second factors and app passwords (docs/auth.md) ---------------------------------------------
def _cli_actor() -> Actor:
    return Actor(f"cli:{getpass.getuser()}", {"via": "cli"})


@group.group(name="totp")
def totp_group() -> None:
    """One-time codes (RFC 6238) for web logins: enrol a device, then confirm it."""


@totp_group.command(name="enrol")
@config_option
@click.argument("address")
@click.option(
    "--qr",
    "qr_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the QR code to this file (SVG if it ends in .svg, else PNG).",
)
@friendly_errors
def totp_enrol(config_path: Path | None, address: str, qr_path: Path | None) -> None:
    """Start TOTP enrolment for ADDRESS: prints the otpauth:// URI to scan or type in."""
    node = node_from(config_path)
    try:
        enrolment = AuthService(node.db, node.settings, node.audit).enrol_totp(
            address, _cli_actor()
        )
    finally:
        node.close()
    if qr_path is not None:
        if qr_path.suffix.lower() == ".svg":
            qr_path.write_text(enrolment.qr_svg(), encoding="utf-8")
        else:
            qr_path.write_bytes(enrolment.qr_png())
    click.echo(enrolment.uri)
    click.echo(
        f"Scan it (or the QR code) in an authenticator app, then: "
        f"mssante account totp confirm {enrolment.login} CODE",
        err=True,
    )


@totp_group.command(name="confirm")
@config_option
@click.argument("address")
@click.argument("code")
@friendly_errors
def totp_confirm(config_path: Path | None, address: str, code: str) -> None:
    """Activate the enrolled device of ADDRESS with a first CODE it shows."""
    node = node_from(config_path)
    try:
        AuthService(node.db, node.settings, node.audit).confirm_totp(address, code, _cli_actor())
    finally:
        node.close()
    click.echo(f"TOTP active for {address.strip().lower()}")


@totp_group.command(name="code")
@click.argument("secret")
@friendly_errors
def totp_code(secret: str) -> None:
    """Print the current code of a device key SECRET (base32), as an authenticator app would:
    for trying the demo without a phone. Never type a real account's key on a shared machine."""
    from mssante.auth import totp  # noqa: PLC0415 - keeps `mssante --help` fast

    key = "".join(secret.split()).upper()
    try:
        click.echo(totp.code_for(key, totp.step_at(time.time())))
    except (ValueError, TypeError) as exc:
        raise click.ClickException("not a base32 TOTP key / clé TOTP invalide") from exc


@group.group(name="app-password")
def app_password_group() -> None:
    """Passwords for mail programs (IMAP, submission), one per device; never for the web."""


@app_password_group.command(name="add")
@config_option
@json_option
@click.argument("address")
@click.option("--label", required=True, help="What it is for, e.g. 'Thunderbird bureau'.")
@friendly_errors
def app_password_add(config_path: Path | None, as_json: bool, address: str, label: str) -> None:
    """Create an app password for ADDRESS; it is printed this once only."""
    node = node_from(config_path)
    try:
        new = AuthService(node.db, node.settings, node.audit).add_app_password(
            address, label, _cli_actor()
        )
    finally:
        node.close()
    if as_json:
        print_json({**new.info.as_dict(), "password": new.password})
    else:
        click.echo(new.password)
        click.echo(f"app password '{new.info.label}' (id {new.info.id}): shown once", err=True)


@app_password_group.command(name="list")
@config_option
@json_option
@click.argument("address")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked ones.")
@friendly_errors
def app_password_list(
    config_path: Path | None, as_json: bool, address: str, include_revoked: bool
) -> None:
    """List the app passwords of ADDRESS: label, creation and last use (never the secret)."""
    node = node_from(config_path)
    try:
        infos = AuthService(node.db, node.settings, node.audit).list_app_passwords(
            address, include_revoked=include_revoked
        )
    finally:
        node.close()
    if as_json:
        print_json([i.as_dict() for i in infos])
        return
    for info in infos:
        used = info.last_used_at.isoformat(timespec="seconds") if info.last_used_at else "never"
        state = "" if info.active else "  (revoked)"
        click.echo(f"{info.id:>6}  {info.hint:<8}  {info.label}  last used: {used}{state}")


@app_password_group.command(name="revoke")
@config_option
@click.argument("address")
@click.argument("label_or_id")
@friendly_errors
def app_password_revoke(config_path: Path | None, address: str, label_or_id: str) -> None:
    """Revoke the app password of ADDRESS named LABEL_OR_ID (its label or its id)."""
    node = node_from(config_path)
    try:
        info = AuthService(node.db, node.settings, node.audit).revoke_app_password(
            address, label_or_id, _cli_actor()
        )
    finally:
        node.close()
    click.echo(f"revoked app password '{info.label}' (id {info.id})")


@group.command(name="disable")
@config_option
@click.argument("login")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def disable(config_path: Path | None, login: str, yes: bool) -> None:
    """Disable the account LOGIN: no new login, and every session open with it ends within
    seconds, in the running server too (IMAP, submission, webmail: docs/revocation.md)."""
    if not yes:
        click.confirm(f"Désactiver le compte {login} ? / Disable account {login}?", abort=True)
    node = node_from(config_path)
    try:
        Accounts(node.db).disable(login, _cli_actor())
    finally:
        node.close()
    click.echo(f"compte désactivé / account disabled: {login.strip().lower()}")


# -- APP mailboxes and their organisation certificates (docs/auth.md) ---------------------------
@group.command(name="add-app")
@config_option
@json_option
@click.option("--address", required=True, help="The APP mailbox address (also the login).")
@click.option(
    "--structure-id", required=True, help="IdNatStruct of the structure the mailbox belongs to."
)
@click.option("--description", default="", help="What the software is (a lab system, a PACS).")
@friendly_errors
def add_app(
    config_path: Path | None, as_json: bool, address: str, structure_id: str, description: str
) -> None:
    """Create an application account and its APP mailbox; it logs in with an organisation
    certificate: bind one with 'mssante account certificate bind'."""
    node = node_from(config_path)
    try:
        view = Accounts(node.db).create_application(
            NewApplication(address, structure_id, description),
            _cli_actor(),
            domains=node.settings.operator.domains,
        )
    finally:
        node.close()
    if as_json:
        print_json({"login": view.login, "kind": view.kind, "mailboxes": list(view.mailboxes)})
    else:
        click.echo(f"created APP account {view.login}")


@group.group(name="certificate")
def certificate_group() -> None:
    """Organisation certificates that open an APP account (SASL EXTERNAL), by subject DN."""


def _binding_line(binding: CertificateBinding) -> str:
    used = binding.last_used_at.isoformat(timespec="seconds") if binding.last_used_at else "never"
    state = "" if binding.active else "  (unbound)"
    return f"{binding.id:>6}  {binding.dn}  last used: {used}{state}"


@certificate_group.command(name="bind")
@config_option
@json_option
@click.argument("address")
@click.option("--dn", help="The certificate's subject DN (RFC 4514, as 'mssante pki' prints it).")
@click.option(
    "--cert",
    "cert_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Or a PEM/DER certificate file: its subject DN is bound.",
)
@friendly_errors
def certificate_bind(
    config_path: Path | None,
    as_json: bool,
    address: str,
    dn: str | None,
    cert_path: Path | None,
) -> None:
    """Let organisation certificates with this subject DN open the APP account ADDRESS.

    The DN survives the certificate's renewal; the certificate must still verify (chain, dates,
    revocation) at each login."""
    if (dn is None) == (cert_path is None):
        raise click.UsageError("give exactly one of --dn and --cert")
    subject = dn_string(load_certificate(cert_path).subject) if cert_path else str(dn)
    node = node_from(config_path)
    try:
        binding = CertificateBindings(node.db).bind(address, subject, _cli_actor())
    finally:
        node.close()
    if as_json:
        print_json(binding.as_dict())
    else:
        click.echo(f"bound {binding.dn} to {binding.login} (id {binding.id})")


@certificate_group.command(name="unbind")
@config_option
@json_option
@click.argument("address")
@click.argument("dn_or_id")
@friendly_errors
def certificate_unbind(
    config_path: Path | None, as_json: bool, address: str, dn_or_id: str
) -> None:
    """Stop the certificate DN_OR_ID (its DN, or the binding's id) opening ADDRESS."""
    node = node_from(config_path)
    try:
        binding = CertificateBindings(node.db).unbind(address, dn_or_id, _cli_actor())
    finally:
        node.close()
    if as_json:
        print_json(binding.as_dict())
    else:
        click.echo(f"unbound {binding.dn} from {binding.login} (id {binding.id})")


@certificate_group.command(name="list")
@config_option
@json_option
@click.argument("address")
@click.option("--all", "include_revoked", is_flag=True, help="Include unbound ones.")
@friendly_errors
def certificate_list(
    config_path: Path | None, as_json: bool, address: str, include_revoked: bool
) -> None:
    """List the certificate DNs bound to ADDRESS, with their last use."""
    node = node_from(config_path)
    try:
        bindings = CertificateBindings(node.db).listing(address, include_revoked=include_revoked)
    finally:
        node.close()
    if as_json:
        print_json([b.as_dict() for b in bindings])
        return
    for binding in bindings:
        click.echo(_binding_line(binding))
