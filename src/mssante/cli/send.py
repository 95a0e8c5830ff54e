"""`mssante send`: send a message from an account, over the operator's submission port (587,
STARTTLS, AUTH), exactly as a mail client would."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TextIO

import click

from mssante.cli.common import config_option, friendly_errors, settings_from
from mssante.config import Settings


@click.command()
@config_option
@click.option("--from", "sender", required=True, help="Your address (also your login).")
@click.option(
    "--as",
    "send_as",
    default="",
    help="Send as a shared or delegated mailbox you hold (From: it, Sender: you).",
)
@click.option(
    "--password",
    envvar="MSSANTE_PASSWORD",
    prompt="Mot de passe / password",
    hide_input=True,
    help="Your password (else asked for; or $MSSANTE_PASSWORD).",
)
@click.option("--to", "recipients", multiple=True, required=True, help="A recipient (repeatable).")
@click.option("--subject", default="", help="Subject / objet.")
@click.option("--body", default="", help="Text of the message (or --body-file).")
@click.option(
    "--body-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the text from a file ('-': stdin).",
)
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file to attach (repeatable).",
)
@friendly_errors
def send(
    config_path: Path | None,
    sender: str,
    send_as: str,
    password: str,
    recipients: tuple[str, ...],
    subject: str,
    body: str,
    body_file: TextIO | None,
    attachments: tuple[Path, ...],
) -> None:
    """Send a message through this operator's submission service."""
    settings = settings_from(config_path)
    msg = _compose(
        sender, recipients, subject, body_file.read() if body_file else body, attachments
    )
    if send_as:  # RFC 5322 §3.6.2: the mailbox is the author, the person its sender
        msg.replace_header("From", send_as)
        msg["Sender"] = sender
    try:
        refused = _submit(settings, sender, password, msg, envelope=send_as or sender)
    except smtplib.SMTPAuthenticationError:
        raise click.ClickException("identifiants refusés / login refused") from None
    except smtplib.SMTPRecipientsRefused as exc:
        lines = [
            f"{rcpt}: {code} {text.decode('utf-8', 'replace')}"
            for rcpt, (code, text) in exc.recipients.items()
        ]
        raise click.ClickException(
            "destinataires refusés / recipients refused:\n  " + "\n  ".join(lines)
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise click.ClickException(
            f"refusé / refused: {exc.smtp_code} {_text(exc.smtp_error)}"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach the submission service: {exc}") from None
    for rcpt, (code, text) in refused.items():
        click.echo(f"refusé / refused {rcpt}: {code} {text.decode('utf-8', 'replace')}", err=True)
    click.echo(f"envoyé / sent: {msg['Message-ID']}")


def _compose(
    sender: str, recipients: tuple[str, ...], subject: str, body: str, attachments: tuple[Path, ...]
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["X-MSS-NIL"] = "mssante-cli"  # the sending software's reference (client référentiel §3.8)
    msg.set_content(body or "\n")
    for path in attachments:
        msg.add_attachment(
            path.read_bytes(), maintype="application", subtype="octet-stream", filename=path.name
        )
    return msg


def _submit(
    settings: Settings, login: str, password: str, msg: EmailMessage, *, envelope: str
) -> dict[str, tuple[int, bytes]]:
    ctx = (
        ssl.create_default_context(cafile=str(settings.pki.trust_anchors[0]))
        if settings.pki.trust_anchors
        else ssl.create_default_context()
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    host = settings.smtp.listen_host
    ctx.check_hostname = host not in {
        "127.0.0.1",
        "::1",
        "localhost",
    }  # loopback: no host name to match
    with smtplib.SMTP(host, settings.smtp.submission_port, timeout=60) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(login, password)
        return smtp.send_message(msg, from_addr=envelope)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
